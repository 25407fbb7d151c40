/**
 * `tinyquant inspect FILE [--json]`: what a tqm model costs, per op (kind, bits, parameters, stored
 * bytes, MACs, bit-operations, the engine's multiplies or shifts and adds, activation memory)
 * and in total.
 */
import { statSync } from 'node:fs';
import { modelReport } from '../export/report.js';
import { formatReport } from '../export/report-text.js';
import { readTqm } from '../export/tqm-file.js';
import { type CommandSpec, UsageError, flag, parseOrHelp } from './args.js';
import { readingInput } from './errors.js';

export const INSPECT: CommandSpec = {
  name: 'inspect',
  summary: 'per-layer bits, sizes, MACs and bit-operations of an exported model',
  synopsis: 'FILE.tqm [--json]',
  options: { json: { type: 'boolean', description: 'print the report as JSON' } },
};

export async function inspectCommand(argv: string[]): Promise<void> {
  const args = parseOrHelp(INSPECT, argv);
  if (!args) return;
  if (args.positionals.length !== 1) throw new UsageError(`inspect: expected one file (usage: tinyquant inspect ${INSPECT.synopsis})`);
  const file = args.positionals[0];
  const model = readingInput(() => readTqm(file));
  const report = modelReport(model);
  const bytes = statSync(file).size;
  console.log(flag(args, 'json') ? JSON.stringify({ file, fileBytes: bytes, ...report }) : formatReport(file, bytes, report));
}
