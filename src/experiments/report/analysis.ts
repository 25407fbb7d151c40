/**
 * The parts of a report that need the models themselves: cost per configuration (`modelCost`:
 * packed weight size, bit-operations) and, from each configuration's final checkpoint, histograms
 * of what one layer's quantizers receive (its weights; its input activations on a batch of test
 * images) with the quantization levels drawn over them.
 *
 * Inputs are captured at the fused fake-quantize op itself (the backend's `quantize`), so each
 * histogram is in the domain the levels live in: the levels of a spec are at
 * `offset + scale * q` for its normalized levels q (for DoReFa weights that domain is tanh(w)).
 */
import { join } from 'node:path';
import type { QuantSpec } from '../../backend/backend.js';
import { getBackend } from '../../backend/index.js';
import { createEvalLoader } from '../../data/index.js';
import type { Module } from '../../nn/module.js';
import { modelCost } from '../../graph/cost.js';
import { quantizedLayers } from '../../quant/quantize.js';
import type { Role, TensorQuantizer } from '../../quant/quantizer.js';
import { Tensor, noGrad, tidy } from '../../tensor/tensor.js';
import { numClasses } from '../../export/checkpoint-model.js';
import { inputShapeOf, readCheckpoint } from '../../train/checkpoint.js';
import type { TrainConfig } from '../../train/config.js';
import { loadConfigDataset } from '../../train/dataset.js';
import { buildModel } from '../../train/trainer.js';
import type { ConfigSummary, ReportModel, RunData, Study } from './model.js';

export interface HistogramPanel {
  readonly method: string;
  readonly bits: string;
  readonly runId: string;
  readonly layer: string;
  readonly role: Role;
  /** What the x axis is. */
  readonly domain: string;
  readonly lo: number;
  readonly hi: number;
  readonly counts: readonly number[];
  /** Level positions inside [lo, hi], in the input domain. */
  readonly levels: readonly number[];
  /** Number of levels of the quantizer (2^bits for most methods). */
  readonly levelCount: number;
  /** Clipping bounds in the input domain (null: none on that side). */
  readonly clip: readonly [number | null, number | null];
  /** Share of the non-zero values beyond the clipping bounds (zeros, e.g. after ReLU, stay zero). */
  readonly clipped: number;
}

export interface CostRow {
  readonly method: string;
  readonly bits: string;
  /** Conv/linear weights packed at their bit-widths. */
  readonly weightBytes: number;
  /** Plus everything else (batch norm, biases, quantizer scalars) as float32. */
  readonly storedBytes: number;
  readonly macs: number;
  readonly bops: number;
}

export interface StudyAnalysis {
  readonly histograms: readonly HistogramPanel[];
  readonly costs: readonly CostRow[];
  readonly notes: readonly string[];
}

const BINS = 60;
const BATCH = 256;
/** Values kept for the quantiles that choose the histogram range. */
const QUANTILE_SAMPLE = 200_000;

type SampleShape = readonly [number, number, number];
/** For a checkpoint that tells neither (see inputShapeOf): CIFAR's, the study's data. */
const CIFAR_SHAPE: SampleShape = [3, 32, 32];

function costRow(config: TrainConfig, classes: number, shape: SampleShape, label: { method: string; bits: string }): CostRow {
  const { model } = buildModel(config, { classes: new Array<string>(classes).fill(''), channels: shape[0] });
  const c = modelCost(model, shape);
  return { ...label, weightBytes: c.weightBytes, storedBytes: c.weightBytes + 4 * c.otherParams, macs: c.macs, bops: c.bops };
}

/** Classes of a run's model, from its checkpoint's classifier. */
interface Capture {
  values: Float32Array;
  spec: QuantSpec;
}

/** Replace obj[key] until the returned function restores it (own property or inherited method alike). */
function patch<T extends object, K extends keyof T>(obj: T, key: K, value: T[K]): () => void {
  const own = Object.prototype.hasOwnProperty.call(obj, key);
  const original = obj[key];
  obj[key] = value;
  return () => {
    if (own) obj[key] = original;
    else delete obj[key];
  };
}

/** Run `forward` and capture the first input of each of `layer`'s quantizers to the fused op. */
function captureInputs(layer: { weightQuantizer: TensorQuantizer | null; actQuantizer: TensorQuantizer | null }, forward: () => void): Partial<Record<Role, Capture>> {
  const be = getBackend();
  const captured: Partial<Record<Role, Capture>> = {};
  let current: Role | null = null;
  const quantize = be.quantize;
  const restores = [
    patch(be, 'quantize', (x, spec) => {
      if (current && !captured[current]) captured[current] = { values: be.download(x), spec };
      return quantize.call(be, x, spec);
    }),
  ];
  for (const q of [layer.weightQuantizer, layer.actQuantizer]) {
    if (!q) continue;
    const apply = q.apply;
    restores.push(
      patch(q, 'apply', (x, path) => {
        current = q.role;
        try {
          return apply.call(q, x, path);
        } finally {
          current = null;
        }
      }),
    );
  }
  try {
    forward();
  } finally {
    for (const restore of restores) restore();
  }
  return captured;
}

function quantile(sorted: Float32Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.floor(p * (sorted.length - 1))))];
}

/** Normalized levels of a spec between xnLo and xnHi (grid levels are enumerated in that window). */
function normalizedLevels(spec: QuantSpec, xnLo: number, xnHi: number): number[] {
  let base: number[];
  if (spec.levels) base = [...spec.levels];
  else {
    const lo = Math.max(spec.symmetric ? 0 : spec.lo, spec.symmetric ? 0 : xnLo);
    const hi = Math.min(spec.hi, spec.symmetric ? Math.max(Math.abs(xnLo), Math.abs(xnHi)) : xnHi);
    base = [];
    for (let k = Math.ceil(lo * spec.steps); k <= Math.floor(hi * spec.steps) && base.length < 1024; k++) base.push(k / spec.steps);
  }
  const all = spec.symmetric ? [...base, ...base.map((v) => -v)] : base;
  return [...new Set(all)].sort((a, b) => a - b);
}

function histogram(capture: Capture, meta: Omit<HistogramPanel, 'lo' | 'hi' | 'counts' | 'levels' | 'clip' | 'clipped' | 'levelCount' | 'domain'>, levelCount: number, domain: string): HistogramPanel {
  const { values, spec } = capture;
  const offset = spec.offset[0];
  const scale = spec.scale[0];
  const toInput = (q: number): number => offset + scale * q;
  const step = Math.max(1, Math.floor(values.length / QUANTILE_SAMPLE));
  const sample = Float32Array.from({ length: Math.floor(values.length / step) }, (_, i) => values[i * step]).sort();
  const clip: [number | null, number | null] = [Number.isFinite(spec.lo) ? toInput(spec.lo) : null, Number.isFinite(spec.hi) ? toInput(spec.hi) : null];
  let lo = Math.min(quantile(sample, 0.001), clip[0] ?? Infinity);
  let hi = Math.max(quantile(sample, 0.999), clip[1] ?? -Infinity);
  const pad = (hi - lo) * 0.04 || 1;
  [lo, hi] = [lo - pad, hi + pad];
  const counts = new Array<number>(BINS).fill(0);
  let [clipped, nonZero] = [0, 0];
  for (const v of values) {
    const bin = Math.floor(((v - lo) / (hi - lo)) * BINS);
    if (bin >= 0 && bin < BINS) counts[bin]++;
    if (v === 0) continue;
    nonZero++;
    if ((clip[0] !== null && v < clip[0]) || (clip[1] !== null && v > clip[1])) clipped++;
  }
  const xn = [(lo - offset) / scale, (hi - offset) / scale].sort((a, b) => a - b);
  const levels = normalizedLevels(spec, xn[0], xn[1]).map(toInput).filter((x) => x >= lo && x <= hi);
  return { ...meta, domain, lo, hi, counts, levels, levelCount, clip, clipped: clipped / Math.max(1, nonZero) };
}

/** The layer drawn: the middle one of those the method quantizes (not the 8-bit first/last layers). */
function histogramLayer(model: Module): [string, ReturnType<typeof quantizedLayers>[number][1]] | null {
  const layers = quantizedLayers(model).filter(([, l]) => l.weightQuantizer !== null && l.weightQuantizer.method !== 'int8' && l.actQuantizer !== null);
  return layers[Math.floor(layers.length / 2)] ?? null;
}

async function testBatch(config: TrainConfig): Promise<{ images: Float32Array; shape: number[] } | null> {
  try {
    const test = await loadConfigDataset(config, 'test');
    const loader = createEvalLoader(test, { batchSize: BATCH, normalization: config.normalization, workers: 0 });
    try {
      for await (const b of loader.epoch(0)) return { images: b.images, shape: [b.size, b.channels, b.height, b.width] };
      return null;
    } finally {
      await loader.close();
    }
  } catch {
    return null;
  }
}

function panelsOf(summary: ConfigSummary, run: RunData, resultsDir: string, batch: { images: Float32Array; shape: number[] } | null): HistogramPanel[] {
  const checkpoint = readCheckpoint(join(resultsDir, run.record.dir));
  const config = checkpoint.meta?.config ?? run.config!;
  const shape = inputShapeOf(checkpoint, config) ?? CIFAR_SHAPE;
  const { model } = buildModel(config, { classes: new Array<string>(numClasses(checkpoint.state)).fill(''), channels: shape[0] });
  model.loadStateDict(checkpoint.state, { source: checkpoint.source });
  model.eval();
  const chosen = histogramLayer(model);
  if (!chosen) return [];
  const [path, layer] = chosen;
  const input = batch ?? { images: new Float32Array(shape[0] * shape[1] * shape[2]), shape: [1, ...shape] };
  const captured = captureInputs(layer, () => tidy(() => noGrad(() => void model.call(Tensor.fromArray(input.images, input.shape)))));
  const panels: HistogramPanel[] = [];
  for (const q of [layer.weightQuantizer, layer.actQuantizer]) {
    const capture = q && captured[q.role];
    if (!q || !capture || (q.role === 'activation' && !batch)) continue;
    const form = q.integerForm();
    const domain = q.role === 'weight' ? (q.method === 'uniform' && q.bits > 1 ? 'tanh(weight)' : 'weight') : `input activation (${input.shape[0]} test images)`;
    panels.push(histogram(capture, { method: summary.method, bits: summary.bits, runId: run.record.id, layer: path, role: q.role }, form.codes.length, domain));
  }
  return panels;
}

async function analyzeStudy(study: Study, resultsDir: string, log: (m: string) => void): Promise<StudyAnalysis> {
  const notes: string[] = [];
  const anyRun = study.configs.flatMap((c) => c.runs)[0];
  if (!anyRun?.config) return { histograms: [], costs: [], notes: ['no finished quantized runs'] };
  const checkpoint = readCheckpoint(join(resultsDir, anyRun.record.dir));
  const classes = numClasses(checkpoint.state);
  const shape = inputShapeOf(checkpoint, checkpoint.meta?.config ?? anyRun.config) ?? CIFAR_SHAPE;
  const costs = [costRow({ ...anyRun.config, method: 'float', wbits: 32, abits: 32 }, classes, shape, { method: 'float', bits: 'float' })];
  for (const c of study.configs) if (c.runs[0]?.config) costs.push(costRow(c.runs[0].config, classes, shape, { method: c.method, bits: c.bits }));
  const batch = await testBatch(anyRun.config);
  if (!batch) notes.push('test images not available: activation histograms left out');
  const histograms: HistogramPanel[] = [];
  for (const c of study.configs) {
    const run = c.runs[0];
    if (!run) continue;
    try {
      histograms.push(...panelsOf(c, run, resultsDir, batch));
    } catch (e) {
      notes.push(`${run.record.id}: no histogram (${(e as Error).message})`);
    }
  }
  log(`${study.model}/${study.dataset}: ${histograms.length} histograms, ${costs.length} cost rows`);
  return { histograms, costs, notes };
}

/** Histograms and costs of every study (keyed like `model|dataset`). */
export async function analyze(report: ReportModel, log: (m: string) => void = () => {}): Promise<Map<string, StudyAnalysis>> {
  const out = new Map<string, StudyAnalysis>();
  for (const s of report.studies) out.set(`${s.model}|${s.dataset}`, await analyzeStudy(s, report.resultsDir, log));
  return out;
}
