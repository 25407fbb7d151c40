/**
 * Agreement of the integer engine with the fake-quantized model it was lowered from, on labelled
 * uint8 images: the share of images with the same top-1 class, both accuracies, and how far the
 * engine's logits (times their scale) are from the float ones.
 */
import type { Normalization } from '../data/augment.js';
import type { ImageDataset } from '../data/dataset.js';
import type { Module } from '../nn/module.js';
import { Tensor, noGrad, tidy } from '../tensor/tensor.js';
import { Rng } from '../util/rng.js';
import { normalizeImages } from './calibrate.js';
import { type Arithmetic, IntegerEngine } from './engine.js';
import { argmax } from './int-ops.js';
import type { IntegerModel } from './ir.js';
import type { DeploymentPlan } from './plan.js';
import { simulatedForward } from './simulate.js';

export interface AgreementResult {
  readonly images: number;
  /** Images whose top-1 class is the same in both, in percent. */
  readonly sameTop1: number;
  readonly fakeQuantTop1: number;
  readonly integerTop1: number;
  /** Mean over images of max |float logit - scale * integer logit|, relative to the largest |float logit| of the image. */
  readonly meanRelativeLogitError: number;
  readonly engineImagesPerSecond: number;
  /** Both models' logits, image after image (only with `keepLogits`). */
  readonly logits?: { readonly fakeQuant: Float32Array; readonly integer: Int32Array };
}

/** Anything that runs a lowered model on uint8 images stored back to back. */
export interface IntegerInference {
  inferBatch(images: Uint8Array, count: number): Int32Array;
}

export interface AgreementOptions {
  /** Only the first `limit` images (default all). */
  readonly limit?: number;
  readonly batch?: number;
  readonly arithmetic?: Arithmetic;
  /**
   * What computes the integer logits (default: the TypeScript IntegerEngine, the one engine built
   * synchronously and the one with `arithmetic`); e.g. deployed.ts's fastestIntegerEngine (the
   * host int8 path, else the wasm kernels), bit-identical and much faster.
   */
  readonly engine?: IntegerInference;
  /** Return both models' logits too, to compare other implementations with (compareLogits). */
  readonly keepLogits?: boolean;
  /**
   * The plan the integer model was lowered with: the fake-quantized model then runs with the
   * deployment simulated (what a run evaluates and reports), else as trained.
   */
  readonly plan?: DeploymentPlan;
  readonly progress?: (done: number, total: number) => void;
}

/** A model's forward: its own, or its graph with the deployment simulated (simulate.ts). */
export type Forward = (x: Tensor) => Tensor;

/** Float logits of a model for normalized images `x` of `shape` (batch first). */
function logitsOf(forward: Forward, x: Float32Array, shape: number[]): Float32Array {
  return tidy(() => noGrad(() => forward(Tensor.fromArray(x, shape)).toArray()));
}

/** Run `use` with the model in eval mode, restoring its training flag after. */
function inEvalMode<T>(model: Module, use: () => T): T {
  const wasTraining = model.training;
  model.eval();
  try {
    return use();
  } finally {
    model.train(wasTraining);
  }
}

/** Float logits of the fake-quantized model (eval mode) for `count` uint8 images. */
export function fakeQuantLogits(
  model: Module,
  images: Uint8Array,
  count: number,
  shape: readonly [number, number, number],
  norm: Normalization,
  batch = 200,
  forward: Forward = (x) => model.call(x),
): Float32Array {
  const size = shape[0] * shape[1] * shape[2];
  let out: Float32Array | null = null;
  return inEvalMode(model, () => {
    for (let start = 0; start < count; start += batch) {
      const n = Math.min(batch, count - start);
      const x = normalizeImages(images.subarray(start * size, (start + n) * size), n, shape[0], norm);
      const logits = logitsOf(forward, x, [n, ...shape]);
      out ??= new Float32Array(count * (logits.length / n));
      out.set(logits, start * (logits.length / n));
    }
    return out ?? new Float32Array(0);
  });
}

/**
 * How stable the fake-quantized model itself is: the share of images (in percent) whose top-1
 * class stays the same when every normalized input value moves by uniform noise in [-eps, eps].
 * Quantized networks are discontinuous (a value crossing a threshold jumps a whole level), so this
 * is the agreement any finite-precision implementation of the same model can expect.
 */
export function perturbedTop1(model: Module, data: ImageDataset, normalization: Normalization, eps: number, limit = data.count, seed = 0): number {
  const count = Math.min(limit, data.count);
  const shape = [data.channels, data.height, data.width] as const;
  const size = shape[0] * shape[1] * shape[2];
  const rng = new Rng(seed);
  let same = 0;
  inEvalMode(model, () => {
    for (let start = 0; start < count; start += 200) {
      const n = Math.min(200, count - start);
      const x = normalizeImages(data.images.subarray(start * size, (start + n) * size), n, shape[0], normalization);
      const noisy = Float32Array.from(x, (v) => v + eps * (2 * rng.next() - 1));
      const [a, b] = [x, noisy].map((input) => logitsOf((t) => model.call(t), input, [n, ...shape]));
      const classes = a.length / n;
      for (let i = 0; i < n; i++) same += argmax(a, i * classes, classes) === argmax(b, i * classes, classes) ? 1 : 0;
    }
  });
  return (100 * same) / count;
}

export function measureAgreement(model: Module, ir: IntegerModel, data: ImageDataset, opts: AgreementOptions = {}): AgreementResult {
  const count = Math.min(opts.limit ?? data.count, data.count);
  const shape = [data.channels, data.height, data.width] as const;
  const size = shape[0] * shape[1] * shape[2];
  const classes = ir.tensors[ir.output].shape[0];
  const normalization = ir.meta.normalization;
  const engine = opts.engine ?? new IntegerEngine(ir, { arithmetic: opts.arithmetic });
  const scale = ir.tensors[ir.output].scale;
  let [same, fakeCorrect, intCorrect, errorSum, engineMs] = [0, 0, 0, 0, 0];
  const batch = opts.batch ?? 200;
  const forward = opts.plan ? simulatedForward(model, shape, opts.plan, ir) : undefined;
  const kept = opts.keepLogits ? { fakeQuant: new Float32Array(count * classes), integer: new Int32Array(count * classes) } : undefined;
  for (let start = 0; start < count; start += batch) {
    const n = Math.min(batch, count - start);
    const pixels = data.images.subarray(start * size, (start + n) * size);
    const float = fakeQuantLogits(model, pixels, n, shape, normalization, n, forward);
    const t0 = performance.now();
    const ints = engine.inferBatch(pixels, n);
    engineMs += performance.now() - t0;
    kept?.fakeQuant.set(float, start * classes);
    kept?.integer.set(ints, start * classes);
    for (let i = 0; i < n; i++) {
      const label = data.labels[start + i];
      const a = argmax(float, i * classes, classes);
      const b = argmax(ints, i * classes, classes);
      same += a === b ? 1 : 0;
      fakeCorrect += a === label ? 1 : 0;
      intCorrect += b === label ? 1 : 0;
      let [err, top] = [0, 1e-12];
      for (let k = i * classes; k < (i + 1) * classes; k++) {
        err = Math.max(err, Math.abs(float[k] - scale * ints[k]));
        top = Math.max(top, Math.abs(float[k]));
      }
      errorSum += err / top;
    }
    opts.progress?.(start + n, count);
  }
  const pct = (v: number): number => (100 * v) / count;
  return {
    images: count,
    sameTop1: pct(same),
    fakeQuantTop1: pct(fakeCorrect),
    integerTop1: pct(intCorrect),
    meanRelativeLogitError: errorSum / count,
    engineImagesPerSecond: count / (engineMs / 1000),
    ...(kept && { logits: kept }),
  };
}

/** How one implementation's logits compare with another's on the same images. */
export interface LogitComparison {
  readonly images: number;
  /** Images whose top-1 class (first maximum) is the same in both, in percent. */
  readonly sameTop1: number;
  /** Images whose logits are all exactly equal (bit-identical, for integer logits). */
  readonly identicalImages: number;
}

/**
 * Compare two implementations' logits, `classes` per image, on the first `count` images (default:
 * all of `a`; `b` may hold more, e.g. when `a` ran on a subset).
 */
export function compareLogits(a: ArrayLike<number>, b: ArrayLike<number>, classes: number, count = a.length / classes): LogitComparison {
  if (!Number.isInteger(count) || count < 1 || a.length < count * classes || b.length < count * classes) {
    throw new RangeError(`compareLogits: ${count} images of ${classes} logits need ${count * classes} values, got ${a.length} and ${b.length}`);
  }
  let [same, identical] = [0, 0];
  for (let n = 0; n < count; n++) {
    const at = n * classes;
    let equal = true;
    for (let k = at; k < at + classes; k++) equal &&= a[k] === b[k];
    identical += equal ? 1 : 0;
    same += argmax(a, at, classes) === argmax(b, at, classes) ? 1 : 0;
  }
  return { images: count, sameTop1: (100 * same) / count, identicalImages: identical };
}

/** Top-1 accuracy in percent of logits (`classes` per image) against the first labels. */
export function top1Accuracy(logits: ArrayLike<number>, labels: ArrayLike<number>, classes: number): number {
  const count = logits.length / classes;
  if (!Number.isInteger(count) || count < 1 || labels.length < count) throw new RangeError(`top1Accuracy: ${logits.length} logits of ${classes} classes with ${labels.length} labels`);
  let correct = 0;
  for (let n = 0; n < count; n++) correct += argmax(logits, n * classes, classes) === labels[n] ? 1 : 0;
  return (100 * correct) / count;
}

/** What an integer model must reach against its fake-quantized model (issue targets of the deployment plan). */
export interface AgreementTargets {
  /** Least share of images with the same top-1 class, in percent. */
  readonly sameTop1: number;
  /** Largest |integer top-1 - fake-quant top-1|, in points. */
  readonly top1Gap: number;
}

/** 99.5 % same top-1 at 4 bits and more, 99 % below; top-1 within 0.2 points. */
export function agreementTargets(bits: { readonly wbits: number; readonly abits: number }): AgreementTargets {
  return { sameTop1: Math.min(bits.wbits, bits.abits) >= 4 ? 99.5 : 99, top1Gap: 0.2 };
}

/** The targets an agreement misses, one sentence each (none: all met). */
export function missedTargets(a: Pick<AgreementResult, 'sameTop1' | 'fakeQuantTop1' | 'integerTop1'>, bits: { readonly wbits: number; readonly abits: number }): string[] {
  const t = agreementTargets(bits);
  const missed: string[] = [];
  if (a.sameTop1 < t.sameTop1) missed.push(`same top-1 ${a.sameTop1.toFixed(2)}% is below ${t.sameTop1}%`);
  const gap = Math.abs(a.integerTop1 - a.fakeQuantTop1);
  if (gap > t.top1Gap + 1e-9) missed.push(`integer top-1 ${a.integerTop1.toFixed(2)}% is ${gap.toFixed(2)} points from the fake-quantized ${a.fakeQuantTop1.toFixed(2)}% (at most ${t.top1Gap})`);
  return missed;
}
