/**
 * EWGS's Hessian-based backward scaling factor (spec §2.3):
 *   delta = max(0, mean over batches of (Tr(H) / N) / (3 std(g_xq)))
 * per quantizer, with H the Hessian of the loss w.r.t. the quantizer's discrete values x_q and
 * Tr(H) estimated by Hutchinson's method (Rademacher v, v^T H v averaged, up to 50 samples, with
 * the reference's early stop).
 *
 * Hessian-vector products are central finite differences of gradients,
 *   H v ~ (g(x_q + eps v) - g(x_q - eps v)) / (2 eps),
 * taken on the network linearized around the batch's base pass: every quantizer's output is its
 * base output plus its straight-through Jacobian times the change of its input (no downstream
 * rounding threshold is ever crossed, unlike a plain perturbed forward pass), and its backward uses
 * the base pass's rounding errors and clip masks. That is the network the reference differentiates
 * twice: its double backward treats the saved rounding errors and masks as constants, so the
 * remaining curvature comes from batch norm and the softmax cross-entropy, as here.
 *
 * Two estimators: 'joint' perturbs every quantizer at once with independent vectors (cross terms
 * vanish in expectation: the same expected value as the per-quantizer trace, two passes per
 * sample for all quantizers); 'per-quantizer' perturbs one at a time exactly like the reference
 * (two passes per sample per quantizer). Batch-norm running statistics are restored after the
 * perturbed passes, so they are updated once per batch, as in the reference.
 */
import type { Buf, QuantSpec } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import type { Module } from '../nn/module.js';
import * as ops from '../tensor/ops.js';
import { Tensor, backward, keep, record, tidy } from '../tensor/tensor.js';
import { Rng } from '../util/rng.js';
import { StopRequested, stopPoint } from '../util/stop.js';
import { EwgsQuantizer } from './ewgs.js';
import { allQuantizers } from './quantize.js';

export interface HessianOptions {
  readonly estimator?: 'joint' | 'per-quantizer';
  readonly maxSamples?: number;
  /** Finite-difference step in units of x_q (which lies in [0, 1]). */
  readonly eps?: number;
  /** Added to the denominator 3 std(g_xq) (the reference has none; issue #6 of its repo). */
  readonly denominatorEps?: number;
  readonly seed?: number;
  /**
   * Aborting stops the estimation at the next sample with {@link StopRequested}, leaving the model as
   * it found it (batch-norm statistics and deltas unchanged).
   */
  readonly signal?: AbortSignal;
}

export interface DeltaEstimate {
  readonly layer: string;
  readonly role: 'weight' | 'activation';
  /** Tr(H)/N and std(g_xq) per batch, and the resulting delta. */
  readonly batches: { traceOverN: number; gradStd: number; samples: number }[];
  readonly delta: number;
}

export interface BatchInput {
  readonly images: Float32Array;
  readonly labels: Int32Array;
  readonly shape: readonly number[];
}

/** delta from per-batch (Tr(H)/N, std(g_xq)) pairs: the mean of the ratios over 3 std, clipped at 0. */
export function combineDelta(batches: readonly { traceOverN: number; gradStd: number }[], denominatorEps = 1e-12): number {
  const ratios = batches.map((b) => b.traceOverN / (3 * b.gradStd + denominatorEps));
  return Math.max(0, ratios.reduce((a, b) => a + b, 0) / ratios.length);
}

/** The reference's early stop: relative change of the running mean below 1e-3. */
function converged(previous: number, current: number): boolean {
  return Math.abs(current - previous) / (previous + 1e-6) < 1e-3;
}

interface Probe {
  readonly quantizer: EwgsQuantizer;
  readonly layer: string;
  base: { x: Tensor; y: Tensor; spec: QuantSpec } | null;
  /** Rademacher direction of the current sample (x_q's shape), or null when not perturbed. */
  direction: Buf | null;
  /** Sign of the current perturbation (+eps or -eps). */
  step: number;
  /** v . g_xq seen by the last backward. */
  projected: number;
  gradStd: number;
}

/** Linearized forward of a quantizer around its base pass, plus a perturbation of x_q. */
function linearized(probe: Probe, x: Tensor): Tensor {
  const be = getBackend();
  const base = probe.base!;
  const outScale = probe.quantizer.outScale;
  const ste: QuantSpec = { ...base.spec, delta: 0 };
  const change = be.affine(x.buf, 1, 0);
  be.axpyInPlace(change, base.x.buf, -1);
  const y = be.quantizeBackward(base.x.buf, change, ste).gx;
  be.free(change);
  be.axpyInPlace(y, base.y.buf, 1);
  if (probe.direction) be.axpyInPlace(y, probe.direction, probe.step * outScale);
  // The quantizer's parameters are inputs only so that the node is recorded even when x needs no
  // gradient (the image entering the first quantized layer): they receive none.
  const params = probe.quantizer.parameters.map(([, p]) => p);
  return record('ewgsLinearized', y, [x, ...params], (g) => {
    if (probe.direction) probe.projected = outScale * be.dot(g, probe.direction);
    const { gx } = be.quantizeBackward(base.x.buf, g, base.spec);
    return [gx, ...params.map(() => null)];
  });
}

function rademacher(shape: readonly number[], rng: Rng): Buf {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i += 32) {
    const bits = rng.nextU32();
    for (let k = 0; k < 32 && i + k < n; k++) v[i + k] = (bits >>> k) & 1 ? 1 : -1;
  }
  return getBackend().upload(v, shape);
}

/** Run forward + backward on the batch (train mode), with the quantizers in their current probe state. */
function pass(model: Module, batch: BatchInput): void {
  tidy(() => backward(ops.crossEntropy(model.call(Tensor.fromArray(batch.images, batch.shape)), batch.labels).loss));
}

function clearGradients(model: Module): void {
  for (const p of model.parameters()) {
    p.grad?.dispose();
    p.grad = null;
  }
}

/**
 * Estimate and set delta for every EWGS quantizer of the model from the given batches (the
 * reference uses the first 3 batches of a fresh, shuffled, augmented pass over the training set).
 * Leaves parameter gradients cleared and batch-norm running statistics updated once per batch.
 */
export async function estimateEwgsDelta(model: Module, batches: readonly BatchInput[], opts: HessianOptions = {}): Promise<DeltaEstimate[]> {
  const maxSamples = opts.maxSamples ?? 50;
  const eps = opts.eps ?? 1e-3;
  const rng = new Rng(opts.seed ?? 0);
  const probes: Probe[] = allQuantizers(model)
    .filter((e): e is [string, EwgsQuantizer] => e[1] instanceof EwgsQuantizer)
    .map(([layer, quantizer]) => ({ quantizer, layer, base: null, direction: null, step: 0, projected: 0, gradStd: 0 }));
  if (probes.length === 0) return [];
  const runningStats = [...model.namedBuffers()].filter(([name]) => /running_(mean|var)$/.test(name)).map(([, t]) => t);
  const perBatch = probes.map(() => [] as { traceOverN: number; gradStd: number; samples: number }[]);
  const atStart = runningStats.map((t) => t.toArray());
  const wasTraining = model.training;
  model.train();
  try {
    for (const batch of batches) {
      await stopPoint(opts.signal);
      recordBase(model, batch, probes);
      const saved = runningStats.map((t) => t.toArray());
      const groups = opts.estimator === 'per-quantizer' ? probes.map((p) => [p]) : [probes];
      for (const group of groups) {
        const traces = await hutchinson(model, batch, probes, group, { maxSamples, eps, rng, signal: opts.signal });
        group.forEach((p, i) => {
          const n = p.base!.y.size;
          perBatch[probes.indexOf(p)].push({ traceOverN: traces[i].mean / n, gradStd: p.gradStd, samples: traces[i].samples });
        });
      }
      runningStats.forEach((t, i) => t.assign(saved[i]));
      for (const p of probes) releaseBase(p);
    }
  } catch (e) {
    if (e instanceof StopRequested) runningStats.forEach((t, i) => t.assign(atStart[i]));
    throw e;
  } finally {
    for (const p of probes) {
      releaseBase(p);
      p.quantizer.probe = null;
    }
    clearGradients(model);
    model.train(wasTraining);
  }
  return probes.map((p, i) => {
    const delta = combineDelta(perBatch[i], opts.denominatorEps);
    p.quantizer.delta = delta;
    return { layer: p.layer, role: p.quantizer.role, batches: perBatch[i], delta };
  });
}

/** The ordinary pass: keep each quantizer's input, output and spec; measure std(g_xq). */
function recordBase(model: Module, batch: BatchInput, probes: Probe[]): void {
  const be = getBackend();
  for (const p of probes) {
    p.quantizer.probe = {
      apply: (x, layer) => {
        const y = p.quantizer.applyDirect(x, layer);
        // Kept out of the pass's memory scope: the perturbed passes need them.
        p.base = { x: keep(new Tensor(be.clone(x.buf))), y: keep(new Tensor(be.clone(y.buf))), spec: p.quantizer.lastSpec! };
        return y;
      },
      observe: (g) => {
        const [sum, sumSq] = be.stats(g, 1);
        const n = g.shape.reduce((a, b) => a * b, 1);
        const k = p.quantizer.outScale;
        p.gradStd = k * Math.sqrt(Math.max(0, (sumSq - (sum * sum) / n) / (n - 1)));
      },
    };
  }
  pass(model, batch);
  clearGradients(model);
  for (const p of probes) if (!p.base) throw new Error(`${p.layer}: EWGS quantizer was not reached by the forward pass`);
  for (const p of probes) p.quantizer.probe = { apply: (x) => linearized(p, x), observe: () => {} };
}

function releaseBase(p: Probe): void {
  p.base?.x.dispose();
  p.base?.y.dispose();
  p.base = null;
  if (p.direction) getBackend().free(p.direction);
  p.direction = null;
}

/** Hutchinson samples of v^T H v for the quantizers of `group`, perturbed together. */
async function hutchinson(
  model: Module,
  batch: BatchInput,
  all: Probe[],
  group: Probe[],
  o: { maxSamples: number; eps: number; rng: Rng; signal?: AbortSignal },
): Promise<{ mean: number; samples: number }[]> {
  const be = getBackend();
  const state = group.map(() => ({ sum: 0, samples: 0, done: false }));
  for (let s = 0; s < o.maxSamples && state.some((t) => !t.done); s++) {
    if (s > 0) await stopPoint(o.signal);
    for (const p of group) p.direction = rademacher(p.base!.y.shape, o.rng);
    const projections: number[][] = [];
    for (const step of [o.eps, -o.eps]) {
      for (const p of all) p.step = group.includes(p) ? step : 0;
      pass(model, batch);
      clearGradients(model);
      projections.push(group.map((p) => p.projected));
    }
    group.forEach((p, i) => {
      be.free(p.direction!);
      p.direction = null;
      const t = state[i];
      if (t.done) return;
      const sample = (projections[0][i] - projections[1][i]) / (2 * o.eps);
      const before = t.samples > 0 ? t.sum / t.samples : 0;
      t.sum += sample;
      t.samples++;
      if (t.samples >= 2 && converged(before, t.sum / t.samples)) t.done = true;
    });
  }
  return state.map((t) => ({ mean: t.sum / t.samples, samples: t.samples }));
}
