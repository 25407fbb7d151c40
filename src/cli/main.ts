#!/usr/bin/env node
/** The `tinyquant` command line. */
import { UsageError } from './args.js';
import { benchCommand } from './bench.js';
import { evalCommand } from './eval.js';
import { trainCommand } from './train.js';

const commands: Record<string, (argv: string[]) => void | Promise<void>> = {
  train: trainCommand,
  eval: evalCommand,
  bench: benchCommand,
};

const USAGE = `usage: tinyquant <command> [options]

commands:
  train         train a model (float or quantization-aware); --help for the options
  eval          accuracy of a checkpoint on a test set
  bench train   measure training (or --eval inference) speed on synthetic data`;

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h') {
    console.log(USAGE);
    return;
  }
  const command = commands[name];
  if (!command) throw new UsageError(`unknown command "${name}"\n${USAGE}`);
  await command(rest);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  const err = e as Error;
  console.error(`tinyquant: ${e instanceof UsageError ? err.message : (err.stack ?? err.message)}`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
});
