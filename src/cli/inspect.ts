/**
 * `tinyquant inspect FILE [--json]`: what a tqm model costs, per op (kind, bits, parameters, stored
 * bytes, MACs, bit-operations, the engine's multiplies or shifts and adds, activation memory)
 * and in total.
 */
import { statSync } from 'node:fs';
import { type ModelReport, modelReport } from '../export/report.js';
import { readTqm } from '../export/tqm-file.js';
import { type CommandSpec, UsageError, flag, parseOrHelp } from './args.js';
import { readingInput } from './errors.js';

export const INSPECT: CommandSpec = {
  name: 'inspect',
  summary: 'per-layer bits, sizes, MACs and bit-operations of an exported model',
  synopsis: 'FILE.tqm [--json]',
  options: { json: { type: 'boolean', description: 'print the report as JSON' } },
};

function human(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')).join('\n');
}

/** The human-readable report. */
export function formatReport(file: string, fileBytes: number, r: ModelReport): string {
  const m = r.model;
  const input = r.layers.find((l) => l.kind !== 'input')?.inputBits ?? 8;
  const header = ['layer', 'kind', 'W/A bits', 'params', 'stored B', 'MACs', 'BOPs', 'multiplies', 'shifts', 'adds', 'act. mem B'];
  const rows = r.layers.map((l) => [
    l.name,
    l.kind,
    `${l.weightBits ?? '-'}/${l.inputBits}`,
    String(l.params),
    String(l.storedBytes),
    human(l.macs),
    human(l.bops),
    human(l.multiplies),
    human(l.shifts),
    human(l.adds),
    String(l.activationBytes),
  ]);
  const t = r.totals;
  rows.push(['total', '', '', String(t.params), String(t.storedBytes), human(t.macs), human(t.bops), human(t.multiplies), human(t.shifts), human(t.adds), `peak ${t.peakActivationBytes}`]);
  return [
    `${file}: ${m.model}, ${m.method} W${m.wbits}A${m.abits}, first/last ${m.firstLast}, int${input} input, int${m.residualBits} residual stream, ${m.classes.length} classes`,
    `file ${fileBytes} bytes; packed weights ${t.weightBytes} bytes; ${human(t.requantizations)} requantizations per inference`,
    'multiplies: the multiply path (dense); shifts and adds: the shift-add path (terms summed per power of two, one shift per power)',
    '',
    table([header, ...rows]),
    ...(m.notes.length ? ['', 'notes:', ...m.notes.map((n) => `  - ${n}`)] : []),
  ].join('\n');
}

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
