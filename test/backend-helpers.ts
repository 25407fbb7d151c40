/**
 * Shared helpers of the backend tests (no tests here): comparisons, the js backend's
 * finite-difference gradient check and its one-input case, parameter shorthands.
 */
import assert from 'node:assert/strict';
import type { Conv2dParams, Pool2dParams, Shape } from '../src/backend/backend.js';
import { numel } from '../src/backend/backend.js';
import { JsBackend, type JsBuf } from '../src/backend/js/index.js';
import { Rng } from '../src/util/rng.js';

export type Values = Float32Array | Float64Array;

export function randomArray(rng: Rng, n: number, scale = 1, shift = 0): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal() * scale + shift);
}

export function maxAbs(v: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < v.length; i++) m = Math.max(m, Math.abs(v[i]));
  return m;
}

/** max |a - b| / max(max |b|, floor); fails on NaN. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>, floor = 1e-6): number {
  assert.equal(actual.length, expected.length, 'length mismatch');
  let diff = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    diff = Number.isNaN(d) ? Infinity : Math.max(diff, d);
  }
  return diff / Math.max(maxAbs(expected), floor);
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  const err = relativeError(actual, expected);
  assert.ok(err <= tol, `${what}: relative error ${err.toExponential(2)} > ${tol}\n  got      ${fmt(actual)}\n  expected ${fmt(expected)}`);
}

export function fmt(v: ArrayLike<number>): string {
  return Array.from(v, (x) => Number(x.toPrecision(6))).slice(0, 12).join(', ') + (v.length > 12 ? ', ...' : '');
}

/** Runs fn with a fresh backend and checks that everything it allocated was freed. */
export function withBackend<T>(fn: (be: JsBackend) => T): T {
  const be = new JsBackend();
  const result = fn(be);
  assert.equal(be.liveBytes(), 0, 'the test leaked backend memory');
  return result;
}

/** Downloads and frees a buffer. */
export function take(be: JsBackend, b: JsBuf): Float32Array {
  const v = be.download(b);
  be.free(b);
  return v;
}

// ---- finite-difference gradient checks ----------------------------------------------------------

export interface Input {
  readonly name: string;
  readonly shape: Shape;
  readonly data: Float32Array;
  /** false: not differentiated by this op (labels, running statistics...). */
  readonly differentiable?: boolean;
}

export interface GradCase {
  readonly inputs: Input[];
  /** Output values; must free everything it allocates. */
  forward(be: JsBackend, x: JsBuf[]): Values;
  /** Gradient of sum(r * forward) for each input (null where not differentiable); frees its temporaries. */
  backward(be: JsBackend, x: JsBuf[], r: Float32Array): (Float32Array | null)[];
  /**
   * An activation pattern of the output (e.g. which ReLU outputs are positive): a coordinate whose
   * perturbation changes the pattern straddles a kink, and central differences are meaningless there.
   */
  pattern?(out: Values): string;
}

export const FD_STEP = 1e-3;
/**
 * Central differences of L = sum(r * f(x)) with float32 outputs have an absolute error of about
 * 1e-7 * sum|r * f| / (2 * step) and a truncation error of O(step^2); 2e-3 relative to the largest
 * gradient leaves a margin of ~10x over the worst case seen here, while any wrong term in a
 * backward formula gives errors of order 1.
 */
export const FD_TOL = 2e-3;

export function projection(out: Values, r: Float32Array): number {
  let s = 0;
  for (let i = 0; i < out.length; i++) s += r[i] * out[i];
  return s;
}

export function gradCheck(c: GradCase, seed: number): void {
  withBackend((be) => {
    // an independent stream: a projection r correlated with the inputs can hide errors (for batch
    // norm, r affine in x makes the true gradient vanish)
    const rng = Rng.derive(seed, 0x9d);
    const evaluate = (data: Float32Array[]): Values => {
      const bufs = c.inputs.map((input, i) => be.upload(data[i], input.shape));
      const out = c.forward(be, bufs);
      bufs.forEach((b) => be.free(b));
      return out;
    };
    const base = c.inputs.map((i) => i.data);
    const y0 = evaluate(base);
    const r = randomArray(rng, y0.length);
    const bufs = c.inputs.map((input) => be.upload(input.data, input.shape));
    const analytic = c.backward(be, bufs, r);
    bufs.forEach((b) => be.free(b));
    c.inputs.forEach((input, k) => {
      const grad = analytic[k];
      if (input.differentiable === false) return;
      assert.ok(grad, `no gradient for ${input.name}`);
      assert.equal(grad.length, input.data.length, `gradient of ${input.name} has the wrong size`);
      const numeric: number[] = [];
      const compared: number[] = [];
      for (let i = 0; i < input.data.length; i++) {
        const plus = input.data.slice();
        const minus = input.data.slice();
        plus[i] = Math.fround(input.data[i] + FD_STEP);
        minus[i] = Math.fround(input.data[i] - FD_STEP);
        const yPlus = evaluate(base.map((d, j) => (j === k ? plus : d)));
        const yMinus = evaluate(base.map((d, j) => (j === k ? minus : d)));
        if (c.pattern && c.pattern(yPlus) !== c.pattern(yMinus)) continue;
        numeric.push((projection(yPlus, r) - projection(yMinus, r)) / (plus[i] - minus[i]));
        compared.push(grad[i]);
      }
      assert.ok(compared.length >= input.data.length / 2, `${input.name}: too many coordinates straddle a kink`);
      const scale = Math.max(maxAbs(numeric), 1e-3);
      let worst = 0;
      for (let i = 0; i < numeric.length; i++) worst = Math.max(worst, Math.abs(numeric[i] - compared[i]) / scale);
      assert.ok(worst <= FD_TOL, `gradient of ${input.name}: error ${worst.toExponential(2)} relative to ${scale.toExponential(2)}\n  numeric  ${fmt(numeric)}\n  analytic ${fmt(compared)}`);
    });
  });
}

export function positivePattern(out: Values): string {
  return Array.from(out, (v) => (v > 0 ? '1' : '0')).join('');
}

export function input(rng: Rng, name: string, shape: Shape, scale = 1, shift = 0): Input {
  return { name, shape, data: randomArray(rng, numel(shape), scale, shift) };
}

/** A one-input case: forward(x), and backward(gy, x, y) with y the forward output. */
export const unaryCase = (rng: Rng, shape: Shape, forward: (be: JsBackend, x: JsBuf) => JsBuf,
backward: (be: JsBackend, gy: JsBuf, x: JsBuf, y: JsBuf) => JsBuf, pattern?: GradCase['pattern']): GradCase => ({
  inputs: [input(rng, 'x', shape)],
  forward: (be, [x]) => take(be, forward(be, x)),
  backward: (be, [x], r) => {
    const y = forward(be, x);
    const gy = be.upload(r, y.shape);
    const gx = take(be, backward(be, gy, x, y));
    [y, gy].forEach((b) => be.free(b));
    return [gx];
  },
  pattern,
});

/** Convolution parameters; a number means the same on both axes. */
export const conv = (stride: number | [number, number], padding: number | [number, number], groups = 1): Conv2dParams => ({
  stride: typeof stride === 'number' ? [stride, stride] : stride,
  padding: typeof padding === 'number' ? [padding, padding] : padding,
  groups,
});

/** Pooling parameters; a number means the same on both axes. */
export const pool = (kernel: number | [number, number], stride: number | [number, number], padding: number | [number, number]): Pool2dParams => ({
  kernel: typeof kernel === 'number' ? [kernel, kernel] : kernel,
  stride: typeof stride === 'number' ? [stride, stride] : stride,
  padding: typeof padding === 'number' ? [padding, padding] : padding,
});

export interface ConvConfig {
  readonly name: string;
  readonly x: Shape;
  readonly w: Shape;
  readonly p: Conv2dParams;
  readonly bias: boolean;
}

/** conv2d with x, w (and bias): forward, and both backward passes for the gradient check. */
export function convGradCase(rng: Rng, c: ConvConfig): GradCase {
  const inputs = [input(rng, 'x', c.x), input(rng, 'w', c.w, 0.5)];
  if (c.bias) inputs.push(input(rng, 'bias', [c.w[0]]));
  const run = (be: JsBackend, [x, w, b]: JsBuf[]): JsBuf => be.conv2d(x, w, b ?? null, c.p);
  return {
    inputs,
    forward: (be, bufs) => take(be, run(be, bufs)),
    backward: (be, bufs, r) => {
      const [x, w] = bufs;
      const y = run(be, bufs);
      const gy = be.upload(r, y.shape);
      be.free(y);
      const gx = take(be, be.conv2dBackwardData(gy, w, x.shape, c.p));
      const { gw, gb } = be.conv2dBackwardWeights(gy, x, w.shape, c.bias, c.p);
      be.free(gy);
      return [gx, take(be, gw), gb ? take(be, gb) : null];
    },
  };
}
