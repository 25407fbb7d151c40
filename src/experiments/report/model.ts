/**
 * What a report says, computed from a results directory: per model/dataset ("study") the float
 * baseline, every method x bit-width over seeds (final and best epoch), the published numbers with
 * their own baselines, training curves, the fairness checks and the generated findings. The
 * renderers (Markdown, HTML) only format this.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TrainConfig } from '../../train/config.js';
import type { EpochMetrics, RunFingerprint } from '../../train/trainer.js';
import { TINYQUANT_VERSION } from '../../package.js';
import { type GridMethod, bitsLabel } from '../grid.js';
import { type ResultsIndex, ResultsError, type RunOutcome, type RunRecord, didNotFinish, readOutcome, readResultsIndex, readRunConfig } from '../results.js';
import { type PublishedResult, publishedFor } from './published.js';

export interface RunData {
  readonly record: RunRecord;
  readonly config: TrainConfig | null;
  readonly metrics: readonly EpochMetrics[];
  readonly outcome: RunOutcome | null;
  /** Evaluation jobs: the checkpoint they evaluated. */
  readonly checkpoint?: RunOutcome['checkpoint'];
}

export interface Stat {
  readonly mean: number;
  /** Sample standard deviation over seeds; null with one seed. */
  readonly std: number | null;
  readonly n: number;
}

/** One method at one bit-width on one model/dataset, over its finished seeds. */
export interface ConfigSummary {
  readonly method: GridMethod;
  readonly wbits: number;
  readonly abits: number;
  readonly bits: string;
  readonly runs: readonly RunData[];
  /** Final top-1 of the fake-quantized model (with its deployment simulated, for runs that evaluated a device). */
  readonly final: Stat;
  /** Final top-1 of the integer model on the same images, over the runs that evaluated it. */
  readonly device: Stat;
  /** Share of test images where the integer model's top-1 class is the fake-quantized model's, in percent. */
  readonly agreement: Stat;
  readonly best: Stat;
  /** 1-based epoch of the best test accuracy, mean over seeds. */
  readonly bestEpoch: Stat;
  readonly published: readonly { result: PublishedResult; top1: number }[];
}

export interface FloatBaseline {
  readonly top1: number;
  readonly n: number;
  readonly runId: string;
  readonly how: string;
}

export interface Study {
  readonly model: string;
  readonly dataset: string;
  readonly float: FloatBaseline | null;
  /** Float runs of the grid's `float` method (fine-tuned or trained with the recipe). */
  readonly floatRuns: ConfigSummary | null;
  readonly configs: readonly ConfigSummary[];
  /** Bit-width labels present, most bits first. */
  readonly bitLabels: readonly string[];
  readonly methods: readonly GridMethod[];
}

export interface FairnessGroup {
  readonly model: string;
  readonly dataset: string;
  readonly seed: number;
  readonly runs: readonly { readonly id: string; readonly fingerprint: RunFingerprint | null; readonly fromShared: boolean }[];
  /** Null: not required by the grid (or nothing to compare). */
  readonly sameStart: boolean | null;
  readonly sameDataOrder: boolean | null;
  readonly problems: readonly string[];
}

export interface ReportModel {
  readonly resultsDir: string;
  readonly index: ResultsIndex;
  /** A scale smaller than the grid's full one: its name, shown upper-case, and what it is. */
  readonly scale: { readonly label: string; readonly note: string } | null;
  readonly generated: string;
  readonly tinyquant: string;
  readonly runs: readonly RunData[];
  readonly studies: readonly Study[];
  readonly fairness: readonly FairnessGroup[];
  readonly findings: readonly string[];
}

function readMetrics(file: string): EpochMetrics[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as EpochMetrics);
}

export function loadRuns(resultsDir: string, index: ResultsIndex): RunData[] {
  return index.runs.map((record) => {
    const final = readOutcome(resultsDir, record.id);
    return {
      record,
      config: readRunConfig(resultsDir, record.id),
      metrics: readMetrics(join(resultsDir, record.dir, 'metrics.jsonl')),
      outcome: record.status === 'finished' ? (final ?? record.outcome ?? null) : null,
      ...(final?.checkpoint && { checkpoint: final.checkpoint }),
    };
  });
}

export function stat(values: readonly number[]): Stat {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / Math.max(1, n);
  const std = n > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1)) : null;
  return { mean, std, n };
}

function summarize(model: string, dataset: string, method: GridMethod, wbits: number, abits: number, runs: RunData[]): ConfigSummary {
  const done = runs.filter((r) => r.outcome !== null);
  const bits = method === 'float' ? 'float' : bitsLabel({ wbits, abits });
  return {
    method,
    wbits,
    abits,
    bits,
    runs: done,
    final: stat(done.map((r) => r.outcome!.top1)),
    device: stat(done.flatMap((r) => (r.outcome!.device ? [r.outcome!.device.top1] : []))),
    agreement: stat(done.flatMap((r) => (r.outcome!.device ? [r.outcome!.device.sameTop1] : []))),
    best: stat(done.map((r) => r.outcome!.bestTop1 ?? r.outcome!.top1)),
    bestEpoch: stat(done.map((r) => (r.outcome!.bestEpoch ?? 0) + 1)),
    published: method === 'float' ? [] : publishedFor(model, dataset, method, bits),
  };
}

function floatBaseline(runs: RunData[], floatRuns: ConfigSummary | null, starts: Set<string>): FloatBaseline | null {
  const evaluated = runs.find((r) => r.record.kind === 'evaluate' && r.outcome);
  if (evaluated) {
    return { top1: evaluated.outcome!.top1, n: evaluated.outcome!.n, runId: evaluated.record.id, how: `the starting checkpoint, evaluated on the same ${evaluated.outcome!.n} test images` };
  }
  // A float run the quantized runs start from (its best epoch is what they load), else the float runs' mean.
  const start = runs.find((r) => starts.has(r.record.id) && r.record.method === 'float' && r.outcome);
  if (start) {
    const o = start.outcome!;
    return { top1: o.bestTop1 ?? o.top1, n: o.n, runId: start.record.id, how: `float run ${start.record.id} (best epoch, the checkpoint the quantized runs start from)` };
  }
  if (floatRuns && floatRuns.runs.length > 0) {
    return { top1: floatRuns.final.mean, n: floatRuns.runs[0].outcome!.n, runId: floatRuns.runs[0].record.id, how: `float runs of the grid (final epoch, mean of ${floatRuns.final.n})` };
  }
  return null;
}

function bitsOrder(a: { wbits: number; abits: number }, b: { wbits: number; abits: number }): number {
  return b.wbits - a.wbits || b.abits - a.abits;
}

export function buildStudies(runs: RunData[]): Study[] {
  const keys = [...new Set(runs.map((r) => `${r.record.model}|${r.record.dataset}`))];
  const starts = new Set(runs.flatMap((r) => (r.record.startsFrom.startsWith('run:') ? [r.record.startsFrom.slice(4)] : [])));
  return keys.map((key) => {
    const [model, dataset] = key.split('|');
    const mine = runs.filter((r) => r.record.model === model && r.record.dataset === dataset);
    const training = mine.filter((r) => r.record.kind === 'train');
    const methods: GridMethod[] = [...new Set(training.map((r) => r.record.method).filter((m) => m !== 'float'))];
    const cells = [...new Map(training.filter((r) => r.record.method !== 'float').map((r) => [`${r.record.method}|${r.record.wbits}|${r.record.abits}`, r.record])).values()];
    cells.sort((a, b) => bitsOrder(a, b) || methods.indexOf(a.method) - methods.indexOf(b.method));
    const configs = cells.map((c) =>
      summarize(model, dataset, c.method, c.wbits, c.abits, training.filter((r) => r.record.method === c.method && r.record.wbits === c.wbits && r.record.abits === c.abits)),
    );
    const floatTrain = training.filter((r) => r.record.method === 'float');
    const floatRuns = floatTrain.length > 0 ? summarize(model, dataset, 'float', 32, 32, floatTrain) : null;
    return {
      model,
      dataset,
      float: floatBaseline(mine, floatRuns, starts),
      floatRuns,
      configs,
      bitLabels: [...new Set(configs.map((c) => c.bits))],
      methods,
    };
  });
}

/**
 * Runs of one model/dataset/seed: those starting from the shared start must have equal start-weight
 * hashes (when the grid asks for it), and all must see the same data order.
 */
export function checkFairness(runs: RunData[], rules: ResultsIndex['grid']['fairness']): FairnessGroup[] {
  const quantized = runs.filter((r) => r.record.kind === 'train' && r.record.method !== 'float');
  const keys = [...new Set(quantized.map((r) => `${r.record.model}|${r.record.dataset}|${r.record.seed}`))];
  return keys.map((key) => {
    const [model, dataset, seedText] = key.split('|');
    const group = quantized.filter((r) => `${r.record.model}|${r.record.dataset}|${r.record.seed}` === key);
    const shared = sharedStart(group);
    const members = group.map((r) => ({ id: r.record.id, fingerprint: r.outcome?.fingerprint ?? null, fromShared: r.record.startsFrom === shared }));
    const withPrint = members.filter((m) => m.fingerprint !== null);
    const problems: string[] = [];
    const distinct = (pick: (f: RunFingerprint) => string, subset: typeof withPrint): number => new Set(subset.map((m) => pick(m.fingerprint!))).size;
    const startSet = withPrint.filter((m) => m.fromShared);
    const sameStart = !rules.sameStart || startSet.length < 2 ? null : distinct((f) => f.startWeights, startSet) === 1;
    const sameDataOrder = !rules.sameDataOrder || withPrint.length < 2 ? null : distinct((f) => f.dataOrder, withPrint) === 1;
    if (sameStart === false) problems.push(`start weights differ among ${startSet.length} runs that start from ${shared}`);
    if (sameDataOrder === false) problems.push(`data order differs among ${withPrint.length} runs`);
    const missing = members.length - withPrint.length;
    if (missing > 0) problems.push(`${missing} run(s) have no fingerprint (not finished)`);
    return { model, dataset, seed: Number(seedText), runs: members, sameStart, sameDataOrder, problems };
  });
}

/** The start most runs of a group share (the grid's start point rather than a progressive chain). */
function sharedStart(group: RunData[]): string {
  const counts = new Map<string, number>();
  for (const r of group) counts.set(r.record.startsFrom, (counts.get(r.record.startsFrom) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '';
}

export function formatStat(s: Stat, digits = 2): string {
  if (s.n === 0) return '–';
  return s.std === null ? s.mean.toFixed(digits) : `${s.mean.toFixed(digits)} ± ${s.std.toFixed(digits)}`;
}

function seedsNote(s: Stat): string {
  return s.n === 1 ? 'one seed, so no spread' : `${s.n} seeds`;
}

/** A drop from float beyond which a configuration is called out as collapsed. */
const COLLAPSE_POINTS = 20;

/** "1.20 points below float" / "0.40 points above float". */
function versusFloat(value: number, float: number): string {
  const d = value - float;
  return `${Math.abs(d).toFixed(2)} points ${d < 0 ? 'below' : 'above'} float`;
}

/** How a lead compares with the seed spread of the two methods (nothing to say with one seed). */
function spreadVerdict(gap: number, a: Stat, b: Stat): string {
  if (a.std === null || b.std === null) return '';
  return gap > Math.max(a.std, b.std) ? '; larger than the seed spread' : '; within the seed spread';
}

/** The scale of a grid's results when it is not the full grid. */
function reducedScale(index: ResultsIndex): ReportModel['scale'] {
  const { scale, scaleNote } = index.grid;
  return scale === 'full' ? null : { label: scale.toUpperCase(), note: scaleNote };
}

/** Short, generated statements: who wins at each bit-width and by how much, and the W4A4 check. */
export function findings(studies: readonly Study[], index: ResultsIndex): string[] {
  const out: string[] = [];
  const scale = reducedScale(index);
  if (scale) out.push(`${scale.label} scale: ${scale.note}.`);
  for (const s of studies) {
    const where = `${s.model} / ${s.dataset}`;
    if (s.float) out.push(`${where}: float baseline ${s.float.top1.toFixed(2)}% (${s.float.how}).`);
    for (const bits of s.bitLabels) {
      const candidates = s.configs.filter((c) => c.bits === bits && c.final.n > 0);
      if (candidates.length === 0) continue;
      // Methods compare on the accuracy the device delivers, where every run measured it.
      const onDevice = candidates.every((c) => c.device.n === c.final.n);
      const score = (c: ConfigSummary): Stat => (onDevice ? c.device : c.final);
      const ranked = [...candidates].sort((a, b) => score(b).mean - score(a).mean);
      const [first, second] = ranked;
      let text = `${where}, ${bits}: ${first.method} leads with ${formatStat(score(first))}% ${onDevice ? 'on device' : 'final'} (${seedsNote(score(first))})`;
      if (second) {
        const gap = score(first).mean - score(second).mean;
        text += `, ${gap.toFixed(2)} points ahead of ${second.method} (${formatStat(score(second))}%${spreadVerdict(gap, score(first), score(second))})`;
      }
      if (s.float) text += `; ${versusFloat(score(first).mean, s.float.top1)}`;
      const last = ranked[ranked.length - 1];
      if (ranked.length > 2) text += `; last is ${last.method} at ${formatStat(score(last))}%`;
      out.push(`${text}.`);
    }
    const deployed = s.configs.filter((c) => c.agreement.n > 0);
    if (deployed.length > 0) {
      const same = deployed.flatMap((c) => c.runs.flatMap((r) => (r.outcome?.device ? [r.outcome.device.sameTop1] : [])));
      const gaps = deployed.flatMap((c) => c.runs.flatMap((r) => (r.outcome?.device ? [Math.abs(r.outcome.device.top1 - r.outcome.top1)] : [])));
      const [lo, hi] = [Math.min(...same).toFixed(2), Math.max(...same).toFixed(2)];
      const gap = Math.max(...gaps).toFixed(2);
      out.push(
        `${where}: on device (the integer model) against the fake-quantized model with its deployment simulated: the same top-1 class on ` +
          `${lo === hi ? lo : `${lo}-${hi}`} % of the test images, ${gap === '0.00' ? 'the same top-1' : `top-1 within ${gap} points`}, over ${same.length} runs.`,
      );
    }
    const collapsed = s.float ? s.configs.filter((c) => c.final.n > 0 && s.float!.top1 - c.final.mean > COLLAPSE_POINTS) : [];
    if (collapsed.length > 0) {
      out.push(`${where}: ${collapsed.map((c) => `${c.method} ${c.bits} (${formatStat(c.final)}%)`).join(', ')} end more than ${COLLAPSE_POINTS} points below float.`);
    }
    for (const method of ['apot', 'ewgs'] as const) {
      const c = s.configs.find((x) => x.method === method && x.wbits === 4 && x.abits === 4 && x.final.n > 0);
      if (!c || !s.float) continue;
      const within = s.float.top1 - c.final.mean <= 2;
      out.push(
        `${where}: ${method} W4A4 ends ${versusFloat(c.final.mean, s.float.top1)} (final ${formatStat(c.final)}% vs ${s.float.top1.toFixed(2)}%; ` +
          `best epoch ${formatStat(c.best)}%): ${within ? 'within' : 'NOT within'} 2 points of float.`,
      );
    }
  }
  return out;
}

export function buildReportModel(resultsDir: string): ReportModel {
  const index = readResultsIndex(resultsDir);
  if (!index) throw new ResultsError(`${resultsDir}: no results.json here (run a grid into it first: tinyquant run GRID --out ${resultsDir})`);
  const runs = loadRuns(resultsDir, index);
  const studies = buildStudies(runs);
  const failed = runs.filter((r) => didNotFinish(r.record.status));
  const extra = failed.length > 0 ? [`${failed.length} run(s) did not finish: ${failed.map((r) => `${r.record.id} (${r.record.status})`).join(', ')}.`] : [];
  return {
    resultsDir,
    index,
    scale: reducedScale(index),
    generated: new Date().toISOString(),
    tinyquant: TINYQUANT_VERSION,
    runs,
    studies,
    fairness: checkFairness(runs, index.grid.fairness),
    findings: [...findings(studies, index), ...extra],
  };
}
