/** The report's tables as plain rows of text, rendered by both the Markdown and the HTML writer. */
import { formatDuration } from '../../train/progress.js';
import type { CostRow } from './analysis.js';
import { type ConfigSummary, type FairnessGroup, type ReportModel, type RunData, type Study, formatStat } from './model.js';

export interface Table {
  readonly header: readonly string[];
  readonly rows: readonly (readonly string[])[];
  /** Columns aligned right (numbers). */
  readonly numeric?: readonly number[];
}

function delta(value: number, reference: number): string {
  const d = value - reference;
  return `${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(2)}`;
}

function published(c: ConfigSummary): string {
  if (c.published.length === 0) return '–';
  return c.published.map((p) => `${p.top1.toFixed(2)} (FP ${p.result.float}, ${delta(p.top1, p.result.float)}; ${p.result.source})`).join('; ');
}

/** One row per method x bit-width: final and best epoch over seeds, against our float and the published numbers. */
export function accuracyTable(s: Study): Table {
  const rows = s.configs.map((c) => [
    c.method,
    c.bits,
    String(c.final.n),
    formatStat(c.final),
    c.device.n ? formatStat(c.device) : '–',
    c.agreement.n ? formatStat(c.agreement) : '–',
    formatStat(c.best),
    c.bestEpoch.n ? c.bestEpoch.mean.toFixed(1) : '–',
    s.float && c.final.n ? delta(c.final.mean, s.float.top1) : '–',
    published(c),
  ]);
  if (s.floatRuns && s.floatRuns.final.n > 0) {
    const f = s.floatRuns;
    rows.unshift(['float (grid runs)', 'W32A32', String(f.final.n), formatStat(f.final), '–', '–', formatStat(f.best), f.bestEpoch.mean.toFixed(1), s.float ? delta(f.final.mean, s.float.top1) : '–', '–']);
  }
  if (s.float) rows.unshift(['float baseline', 'W32A32', '–', s.float.top1.toFixed(2), '–', '–', '–', '–', '0.00', '–']);
  return {
    header: ['method', 'bits', 'seeds', 'fake-quant top-1 %', 'on device top-1 %', 'same top-1 %', 'best top-1 %', 'best epoch', 'Δ final vs our float', 'published top-1 (its own FP, Δ; source)'],
    rows,
    numeric: [2, 3, 4, 5, 6, 7, 8],
  };
}

/** Methods x bit-widths, final top-1 mean ± std of the fake-quantized model or of the integer model on device: the overview. */
export function pivotTable(s: Study, which: 'final' | 'device' = 'final'): Table {
  return {
    header: ['method', ...s.bitLabels],
    rows: s.methods.map((m) => [m, ...s.bitLabels.map((b) => {
      const c = s.configs.find((x) => x.method === m && x.bits === b);
      return c && c[which].n ? formatStat(c[which]) : '–';
    })]),
    numeric: s.bitLabels.map((_, i) => i + 1),
  };
}

export function costTable(rows: readonly CostRow[]): Table {
  return {
    header: ['method', 'bits', 'packed conv/linear weights (KiB)', 'stored model (KiB)', 'MACs (M)', 'bit-operations (G)'],
    rows: rows.map((r) => [r.method, r.bits, (r.weightBytes / 1024).toFixed(1), (r.storedBytes / 1024).toFixed(1), (r.macs / 1e6).toFixed(2), (r.bops / 1e9).toFixed(2)]),
    numeric: [2, 3, 4, 5],
  };
}

export function shortHash(h: string | undefined): string {
  return h ? h.slice(0, 12) : '–';
}

function verdict(v: boolean | null): string {
  return v === null ? 'not required' : v ? 'same ✓' : 'DIFFERENT ✗';
}

export function fairnessSummaryTable(groups: readonly FairnessGroup[]): Table {
  return {
    header: ['model', 'dataset', 'seed', 'runs', 'start weights', 'data order', 'problems'],
    rows: groups.map((g) => [g.model, g.dataset, String(g.seed), String(g.runs.length), verdict(g.sameStart), verdict(g.sameDataOrder), g.problems.join('; ') || '–']),
  };
}

export function fingerprintTable(report: ReportModel): Table {
  const rows = report.runs
    .filter((r) => r.record.kind === 'train')
    .map((r) => {
      const f = r.outcome?.fingerprint;
      return [r.record.id, r.record.startsFrom.replace(/^checkpoint:.*\//, 'checkpoint:'), shortHash(f?.startWeights), shortHash(f?.dataOrder), shortHash(f?.config)];
    });
  for (const r of report.runs.filter((x) => x.checkpoint)) {
    rows.unshift([r.record.id, `${r.checkpoint!.path.replace(/^.*\//, '')} (file sha256)`, shortHash(r.checkpoint!.sha256), '–', '–']);
  }
  return { header: ['run', 'starts from', 'start weights', 'data order', 'config'], rows };
}

function outcomeText(r: RunData): [string, string] {
  if (!r.outcome) return ['–', '–'];
  return [r.outcome.top1.toFixed(2), r.outcome.bestTop1 === undefined ? '–' : `${r.outcome.bestTop1.toFixed(2)} (e${(r.outcome.bestEpoch ?? 0) + 1})`];
}

export function runsTable(report: ReportModel): Table {
  return {
    header: ['run', 'status', 'final top-1 %', 'best top-1 %', 'epochs', 'time', 'error'],
    rows: report.runs.map((r) => [
      r.record.id,
      r.record.status,
      ...outcomeText(r),
      r.config ? String(r.config.epochs) : '–',
      r.record.seconds === undefined ? '–' : formatDuration(r.record.seconds),
      r.record.error ? r.record.error.slice(0, 300) : '',
    ]),
    numeric: [2, 3, 4],
  };
}

/** The recipe of the runs of a study, as `field: value` for the fields that matter to a reader. */
export function recipeLines(s: Study): string[] {
  const run = s.configs.flatMap((c) => c.runs).find((r) => r.config);
  if (!run?.config) return [];
  const c = run.config;
  const lines = [
    `model ${c.model}, ${c.dataset}, normalization ${c.normalization}, first/last layers ${c.firstLast}`,
    `${c.epochs} epoch(s)${c.method !== 'float' && c.deploy.finalEpochs > 0 ? ` + ${c.deploy.finalEpochs} of final phase (deployment simulated, batch norm frozen, lr x ${c.deploy.finalLr})` : ''}, batch ${c.batch}, ${c.optimizer} lr ${c.lr}${c.optimizer === 'sgd' ? ` momentum ${c.momentum}` : ''}, weight decay ${c.weightDecay}, schedule ${c.schedule.kind}`,
    `training images: ${c.trainSubset > 0 ? `a fixed subset of ${c.trainSubset}` : 'all'}; test images: ${c.testSubset > 0 ? `a fixed subset of ${c.testSubset}` : 'all'}`,
  ];
  if (c.paramGroups.length) lines.push(`parameter groups: ${c.paramGroups.map((g) => `${g.name} (${g.match}) lr ${g.lr} wd ${g.weightDecay}`).join('; ')}`);
  const differing = new Set(s.configs.flatMap((x) => x.runs).filter((r) => r.config && JSON.stringify({ ...r.config, method: 0, wbits: 0, abits: 0, seed: 0, init: 0, ewgs: 0 }) !== JSON.stringify({ ...c, method: 0, wbits: 0, abits: 0, seed: 0, init: 0, ewgs: 0 })).map((r) => r.record.method));
  lines.push(differing.size === 0 ? 'every method and bit-width uses this recipe' : `methods with their own recipe: ${[...differing].join(', ')} (see each run's config.json)`);
  return lines;
}
