#!/usr/bin/env node
/** The `tinyquant` command line. */
import { UsageError } from './args.js';
import { benchCommand } from './bench.js';
import { demoCommand } from './demo.js';
import { evalCommand } from './eval.js';
import { exportCommand } from './export.js';
import { inspectCommand } from './inspect.js';
import { reportCommand } from './report.js';
import { runCommand } from './run.js';
import { trainCommand } from './train.js';

const commands: Record<string, (argv: string[]) => void | Promise<void>> = {
  demo: demoCommand,
  train: trainCommand,
  eval: evalCommand,
  run: runCommand,
  report: reportCommand,
  export: exportCommand,
  inspect: inspectCommand,
  bench: benchCommand,
};

const USAGE = `usage: tinyquant <command> [options]

commands:
  demo          the kiots2023 study at --quick scale from the shipped float model, with its report
  train         train a model (float or quantization-aware)
  eval          accuracy of a checkpoint on a test set
  run           run an experiment grid (a preset name or a YAML/JSON file); skips finished runs
  report        render a results directory as Markdown and one self-contained HTML page
  export        export a trained checkpoint (tqm, c, onnx)
  inspect       per-layer bits, sizes, MACs and bit-operations of an exported model
  bench train   measure training (or --eval inference) speed on synthetic data
  bench int     host int8 (oneDNN) speed and agreement of an exported .tqm against the TypeScript engine`;

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

/** Errors print as their message alone; the stack only with TINYQUANT_DEBUG=1 (for reports of a bug). */
const debug = process.env.TINYQUANT_DEBUG === '1';

main(process.argv.slice(2)).catch((e: unknown) => {
  const err = e instanceof Error ? e : new Error(String(e));
  console.error(`tinyquant: ${debug && !(e instanceof UsageError) ? (err.stack ?? err.message) : err.message}`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
});
