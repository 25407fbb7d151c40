/**
 * The human-readable text of a model report (`tinyquant inspect`, and the browser page's per-layer
 * table): Node-free so that `tinyquant/engine` can export it.
 */
import type { ModelReport } from './report.js';

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
