/**
 * The commands of `tinyquant`, each with its spec (src/cli/args.ts) and what runs it; main.ts
 * dispatches through this table and `tinyquant help` prints from it.
 */
import type { CommandSpec } from './args.js';
import { BENCH_TRAIN, benchTrainCommand } from './bench.js';
import { BENCH_INT, benchIntCommand } from '../export/host/bench-int.js';
import { DEMO, demoCommand } from './demo.js';
import { EVAL, evalCommand } from './eval.js';
import { EXPORT, exportCommand } from './export.js';
import { INSPECT, inspectCommand } from './inspect.js';
import { REPORT, reportCommand } from './report.js';
import { RUN, runCommand } from './run.js';
import { TRAIN, trainCommand } from './train.js';
import { WORKER, workerCommand } from './worker.js';

export interface Command {
  readonly spec: CommandSpec;
  readonly run: (argv: string[]) => void | Promise<void>;
}

export const COMMANDS: readonly Command[] = [
  { spec: DEMO, run: demoCommand },
  { spec: TRAIN, run: trainCommand },
  { spec: EVAL, run: evalCommand },
  { spec: RUN, run: runCommand },
  { spec: WORKER, run: workerCommand },
  { spec: REPORT, run: reportCommand },
  { spec: EXPORT, run: exportCommand },
  { spec: INSPECT, run: inspectCommand },
  { spec: BENCH_TRAIN, run: benchTrainCommand },
  { spec: BENCH_INT, run: benchIntCommand },
];

/** The command `argv` starts with (one word, or two for `bench train|int`) and the arguments after it. */
export function findCommand(argv: readonly string[]): { command: Command; rest: string[] } | null {
  for (const words of [2, 1]) {
    const name = argv.slice(0, words).join(' ');
    const command = COMMANDS.find((c) => c.spec.name === name);
    if (command) return { command, rest: argv.slice(words) };
  }
  return null;
}

/** Commands whose name starts with `prefix` ('bench' -> bench train, bench int). */
export function commandsUnder(prefix: string): readonly Command[] {
  return COMMANDS.filter((c) => c.spec.name.split(' ')[0] === prefix);
}

export function commandList(commands: readonly Command[] = COMMANDS): string {
  const width = Math.max(...commands.map((c) => c.spec.name.length)) + 2;
  return commands.map((c) => `  ${c.spec.name.padEnd(width)}${c.spec.summary}`).join('\n');
}
