/**
 * The ops of the small-device model zoo (MLPerf Tiny's ResNet-8, DS-CNN, MobileNetV1): max pooling
 * and the clipped ReLU (ReLU6), and the convolution and average-pooling shapes those nets use
 * (non-square kernels, per-axis stride and padding, depthwise and grouped, strided 1x1).
 * Finite-difference gradient checks on the js backend, PyTorch's tie, NaN and padding rules of max
 * pooling, the native backend against js (plain and blocked inputs, and a conv -> maxPool -> conv
 * chain whose activations stay blocked), and the tape ops and layers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Pool2dParams, Shape } from '../src/backend/backend.js';
import { numel } from '../src/backend/backend.js';
import { JsBackend } from '../src/backend/js/index.js';
import { withBackend as withDefaultBackend } from '../src/backend/index.js';
import { AvgPool2d, ClippedReLU, MaxPool2d, ReLU6 } from '../src/index.js';
import { Tensor, backward } from '../src/tensor/tensor.js';
import { Rng } from '../src/util/rng.js';
import {
  type ConvConfig,
  type GradCase,
  type Input,
  type Values,
  conv,
  convGradCase,
  gradCheck,
  input,
  pool,
  take,
  unaryCase,
  withBackend,
} from './backend-helpers.js';
import { type Pair, Twin, skip } from './native-twin.js';

/**
 * Distinct values 0.01 apart in random order: no window holds two values closer than the finite
 * difference step, so no perturbation changes a window's winner.
 */
function separated(rng: Rng, name: string, shape: Shape): Input {
  const n = numel(shape);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return { name, shape, data: Float32Array.from(order, (k) => (k - n / 2) * 0.01) };
}

function maxPoolCase(rng: Rng, shape: Shape, p: Pool2dParams): GradCase {
  return {
    ...unaryCase(rng, shape, (be, x) => be.maxPool2d(x, p), (be, gy, x) => be.maxPool2dBackward(gy, x, p)),
    inputs: [separated(rng, 'x', shape)],
  };
}

/** Which side of each clipping point every output lies on. */
const clipPattern = (ceiling: number) => (out: Values): string =>
  Array.from(out, (v) => (v <= 0 ? '0' : v >= Math.fround(ceiling) ? '2' : '1')).join('');

function clippedReluCase(rng: Rng, shape: Shape, ceiling: number): GradCase {
  return {
    ...unaryCase(rng, shape, (be, x) => be.clippedRelu(x, ceiling), (be, gy, _x, y) => be.clippedReluBackward(gy, y, ceiling), clipPattern(ceiling)),
    inputs: [input(rng, 'x', shape, ceiling, ceiling / 3)],
  };
}

const MAX_POOLS: [string, Shape, Pool2dParams][] = [
  ['kernel 3, stride 2, padding 1', [2, 2, 7, 7], pool(3, 2, 1)],
  ['kernel 2, stride 2, odd width', [1, 3, 6, 5], pool(2, 2, 0)],
  ['non-square kernel [3, 2], stride [2, 1], padding [1, 0]', [1, 2, 7, 5], pool([3, 2], [2, 1], [1, 0])],
  ['kernel 3, stride 1 (overlapping windows)', [1, 2, 5, 4], pool(3, 1, 1)],
];

/** The shapes of the zoo's convolutions (DS-CNN's 10x4 stem, MobileNet's depthwise and pointwise layers). */
const ZOO_CONVS: ConvConfig[] = [
  { name: 'kernel 10x4, stride [2, 1], padding [5, 1], bias', x: [1, 2, 12, 6], w: [3, 2, 10, 4], p: conv([2, 1], [5, 1]), bias: true },
  { name: 'kernel 1x3, padding [0, 1]', x: [2, 3, 4, 6], w: [2, 3, 1, 3], p: conv(1, [0, 1]), bias: false },
  { name: 'kernel 3x1, stride [1, 2]', x: [1, 2, 5, 6], w: [3, 2, 3, 1], p: conv([1, 2], 0), bias: true },
  { name: 'depthwise 3x3, stride 2, padding 1', x: [2, 4, 5, 5], w: [4, 1, 3, 3], p: conv(2, 1, 4), bias: true },
  { name: 'depthwise, channel multiplier 2, kernel [3, 1]', x: [1, 3, 5, 4], w: [6, 1, 3, 1], p: conv(1, [1, 0], 3), bias: false },
  { name: 'groups 2, stride [2, 1]', x: [1, 4, 6, 5], w: [6, 2, 3, 3], p: conv([2, 1], 1, 2), bias: true },
  { name: 'groups 4, non-square kernel', x: [1, 8, 5, 5], w: [8, 2, 2, 3], p: conv(1, [1, 0], 4), bias: false },
  { name: '1x1, stride 2, odd sizes', x: [2, 3, 5, 7], w: [4, 3, 1, 1], p: conv(2, 0), bias: true },
  { name: '1x1, stride [1, 2]', x: [1, 4, 3, 5], w: [3, 4, 1, 1], p: conv([1, 2], 0), bias: false },
];

const ZOO_AVG_POOLS: [string, Shape, Pool2dParams][] = [
  ['kernel 3, stride 2 (kernel != stride), no padding', [1, 2, 7, 6], pool(3, 2, 0)],
  ['kernel [3, 2], stride [2, 3], padding [1, 1]', [2, 2, 7, 8], pool([3, 2], [2, 3], [1, 1])],
  ['kernel 4, stride 1, padding 2', [1, 1, 5, 5], pool(4, 1, 2)],
  ['kernel [1, 3], stride [1, 2], padding [0, 1]', [1, 3, 3, 7], pool([1, 3], [1, 2], [0, 1])],
];

describe('zoo ops on the js backend: finite-difference gradient checks', () => {
  MAX_POOLS.forEach(([name, shape, p], i) => it(`maxPool2d ${name}`, () => gradCheck(maxPoolCase(new Rng(300 + i), shape, p), 300 + i)));
  it('clippedRelu, ceiling 6 (ReLU6)', () => gradCheck(clippedReluCase(new Rng(310), [3, 8], 6), 310));
  it('clippedRelu, ceiling 0.3 (not a float32 value)', () => gradCheck(clippedReluCase(new Rng(311), [2, 3, 2, 3], 0.3), 311));
  ZOO_CONVS.forEach((c, i) => it(`conv2d ${c.name}`, () => gradCheck(convGradCase(new Rng(320 + i), c), 320 + i)));
  ZOO_AVG_POOLS.forEach(([name, shape, p], i) => it(`avgPool2d ${name}`, () => gradCheck(
    unaryCase(new Rng(340 + i), shape, (be, x) => be.avgPool2d(x, p), (be, gy, x) => be.avgPool2dBackward(gy, x.shape, p)), 340 + i)));
});

describe('zoo ops on the js backend: max pooling and clipped ReLU semantics', () => {
  const run = (x: number[], shape: Shape, p: Pool2dParams, gy?: number[]) => withBackend((be) => {
    const xb = be.upload(Float32Array.from(x), shape);
    const y = be.maxPool2d(xb, p);
    const g = be.upload(gy ? Float32Array.from(gy) : new Float32Array(numel(y.shape)).fill(1), y.shape);
    const gx = take(be, be.maxPool2dBackward(g, xb, p));
    be.free(xb);
    be.free(g);
    return { y: Array.from(take(be, y)), gx: Array.from(gx) };
  });

  it('padding never wins: an all-negative input pools to its own maxima', () => {
    const r = run([-3, -2, -5, -4], [1, 1, 2, 2], pool(2, 1, 1));
    assert.deepEqual(r.y, [-3, -2, -2, -3, -2, -2, -5, -4, -4]);
  });

  it('ties: each window sends its gradient to its first maximum (rows, then columns)', () => {
    // Every value equal; windows 2x2 at stride 1 start at (0,0), (0,1), (1,0), (1,1).
    const r = run(Array(9).fill(1), [1, 1, 3, 3], pool(2, 1, 0), [1, 10, 100, 1000]);
    assert.deepEqual(r.gx, [1, 10, 0, 100, 1000, 0, 0, 0, 0]);
    // A padded window's first real position wins the tie: with padding 1 the first window is x[0, 0] alone.
    const padded = run([7, 7, 7, 7], [1, 1, 2, 2], pool(3, 2, 1));
    assert.deepEqual(padded.gx, [1, 0, 0, 0]);
  });

  it('NaN wins its window, and the gradient goes to the last NaN', () => {
    const r = run([1, NaN, 5, NaN], [1, 1, 2, 2], pool(2, 2, 0));
    assert.ok(Number.isNaN(r.y[0]));
    assert.deepEqual(r.gx, [0, 0, 0, 1]);
  });

  it('clippedRelu clips at 0 and the ceiling; the gradient is 0 at and beyond both', () => withBackend((be) => {
    const x = be.upload(Float32Array.of(-1, 0, 0.5, 6, 7, NaN), [6]);
    const y = be.clippedRelu(x, 6);
    const g = be.upload(new Float32Array(6).fill(2), [6]);
    assert.deepEqual(Array.from(be.download(y)), [0, 0, 0.5, 6, 6, NaN]);
    // NaN passes the gradient, as PyTorch's hardtanh backward (which tests x <= min || x >= max).
    assert.deepEqual(Array.from(take(be, be.clippedReluBackward(g, y, 6))), [0, 0, 2, 0, 0, 2]);
    [x, y, g].forEach((b) => be.free(b));
  }));

  it('rejects bad arguments with the op named', () => withBackend((be) => {
    const x = be.upload(new Float32Array(16), [1, 1, 4, 4]);
    assert.throws(() => be.clippedRelu(x, 0), /clippedRelu: ceiling must be a positive finite number, got 0/);
    assert.throws(() => be.clippedRelu(x, Infinity), /clippedRelu: ceiling must be a positive finite number/);
    assert.throws(() => be.clippedRelu(x, 1e-50), /clippedRelu: ceiling must be a positive finite number, got 1e-50/, '0 as a float32');
    assert.throws(() => be.maxPool2d(x, pool(2, 2, 2)), /maxPool2d: padding \[2, 2\] must be at most half of kernel/);
    const wrong = be.upload(new Float32Array(9), [1, 1, 3, 3]);
    assert.throws(() => be.maxPool2dBackward(wrong, x, pool(2, 2, 0)), /maxPool2dBackward: gradient for input \[1, 1, 4, 4\]/);
    be.free(x);
    be.free(wrong);
  }));
});

describe('zoo ops: tape ops and layers', () => {
  it('MaxPool2d, ReLU6 and ClippedReLU layers run their tape ops forward and backward', () => withDefaultBackend(new JsBackend(), () => {
    const x = Tensor.fromArray(Float32Array.of(-1, 3, 8, 2, 0.5, 7, 1, 4, 5), [1, 1, 3, 3], true);
    const pooled = new MaxPool2d(2, 1).call(x);
    assert.deepEqual(Array.from(pooled.toArray()), [3, 8, 4, 7]);
    const relu6 = new ReLU6();
    assert.equal(relu6.ceiling, 6);
    const y = new ClippedReLU(5).call(relu6.call(pooled));
    assert.deepEqual(Array.from(y.toArray()), [3, 5, 4, 5]);
    backward(y, Tensor.fromArray([1, 1, 1, 1], y.shape));
    // Only the outputs 3 and 4 lie inside both (0, 6) and (0, 5): the maxima x[0, 1] and x[2, 1].
    assert.deepEqual(Array.from(x.grad!.toArray()), [0, 1, 0, 0, 0, 0, 0, 1, 0]);
  }));

  it('pooling layers take [h, w] pairs and name themselves in errors', () => {
    assert.deepEqual(new MaxPool2d([3, 2], [2, 1], [1, 0]).params, { kernel: [3, 2], stride: [2, 1], padding: [1, 0] });
    assert.deepEqual(new AvgPool2d(3, 2).params, { kernel: [3, 3], stride: [2, 2], padding: [0, 0] });
    assert.throws(() => new MaxPool2d(2, 2, 2), /MaxPool2d: padding \[2, 2\] must be at most half of kernel \[2, 2\]/);
    assert.throws(() => new AvgPool2d(0), /AvgPool2d: kernel must be two integers >= 1, got \[0, 0\]/);
    assert.throws(() => new MaxPool2d([3, 2], [1, 0.5]), /MaxPool2d: stride must be two integers >= 1, got \[1, 0.5\]/);
    assert.throws(() => new ClippedReLU(-1), /ClippedReLU: ceiling must be a positive finite number, got -1/);
  });
});

describe('zoo ops: native backend against js', { skip }, () => {
  const inputPair = (t: Twin, shape: Shape, blocked: boolean, scale = 1, shift = 0): Pair =>
    blocked ? t.blockedPair(shape, scale, shift) : t.randomPair(shape, scale, shift);

  /** Values on a coarse grid (steps of 0.5): many ties inside every window. */
  const tiedPair = (t: Twin, shape: Shape, blocked: boolean): Pair => {
    // + 0: no -0, which the blocked copy would turn into +0
    const values = Float32Array.from(t.random(shape, 2), (v) => Math.round(v * 2) / 2 + 0);
    return blocked ? t.blockedPairOf(values, shape) : t.pair(values, shape);
  };

  const maxPools: [string, Shape, Pool2dParams, boolean][] = [
    ['kernel 3 stride 2 padding 1, blocked', [2, 16, 9, 9], pool(3, 2, 1), true],
    ['kernel 2 stride 2, blocked, 24 channels', [2, 24, 8, 6], pool(2, 2, 0), true],
    ['non-square [3, 2] stride [1, 2] padding [1, 1], plain odd sizes', [2, 3, 7, 5], pool([3, 2], [1, 2], [1, 1]), false],
    ['kernel 3 stride 1 padding 1, plain, 5 channels', [3, 5, 6, 6], pool(3, 1, 1), false],
  ];
  for (const [name, shape, p, blocked] of maxPools) {
    for (const ties of [false, true]) {
      it(`maxPool2d forward and backward: ${name}${ties ? ', with ties' : ''}`, () => {
        const t = new Twin(400);
        const x = ties ? tiedPair(t, shape, blocked) : inputPair(t, shape, blocked);
        const y = t.nat.maxPool2d(x.nat, p);
        if (blocked) assert.equal(t.nat.layoutOf(y), t.nat.layoutOf(x.nat), 'the output stays in the input layout');
        // Forward is a selection: exact.
        assert.deepEqual(t.nat.download(y), take(t.js, t.js.maxPool2d(x.js, p)), 'maxPool2d');
        const gy = inputPair(t, y.shape, blocked);
        // With ties, a gradient sent to another position than js's would differ by O(1).
        t.agree(t.js.maxPool2dBackward(gy.js, x.js, p), t.nat.maxPool2dBackward(gy.nat, x.nat, p), 'maxPool2dBackward');
        t.nat.free(y);
        t.free(x, gy);
        t.done();
      });
    }
  }

  for (const [ceiling, blocked] of [[6, true], [0.3, false]] as const) {
    it(`clippedRelu forward and backward are exact: ceiling ${ceiling}, ${blocked ? 'blocked' : 'plain'}`, () => {
      const t = new Twin(410);
      const shape = [2, 16, 5, 5];
      const x = inputPair(t, shape, blocked, ceiling, ceiling / 3);
      const y = t.nat.clippedRelu(x.nat, ceiling);
      const yJs = t.js.clippedRelu(x.js, ceiling);
      assert.deepEqual(t.nat.download(y), t.js.download(yJs), 'clippedRelu');
      const gy = inputPair(t, shape, blocked);
      const gx = t.nat.clippedReluBackward(gy.nat, y, ceiling);
      assert.deepEqual(t.nat.download(gx), take(t.js, t.js.clippedReluBackward(gy.js, yJs, ceiling)), 'clippedReluBackward');
      [y, gx].forEach((b) => t.nat.free(b));
      t.js.free(yJs);
      t.free(x, gy);
      t.done();
    });
  }

  const convs: (ConvConfig & { blocked: boolean })[] = [
    ...ZOO_CONVS.map((c) => ({ ...c, blocked: false })),
    { name: 'DS-CNN stem 1->64 10x4 stride 2 padding [5, 1]', x: [2, 1, 49, 10], w: [64, 1, 10, 4], p: conv(2, [5, 1]), bias: true, blocked: false },
    { name: 'depthwise 3x3 64 channels stride 2, blocked', x: [2, 64, 9, 9], w: [64, 1, 3, 3], p: conv(2, 1, 64), bias: true, blocked: true },
    { name: 'depthwise, multiplier 2 (16->32), blocked', x: [2, 16, 6, 6], w: [32, 1, 3, 3], p: conv(1, 1, 16), bias: false, blocked: true },
    { name: 'groups 4 (32->32) 3x3 stride 1 (no Winograd with groups), blocked', x: [2, 32, 8, 8], w: [32, 8, 3, 3], p: conv(1, 1, 4), bias: true, blocked: true },
    { name: '32->32 3x3 stride 1 padding [1, 0] (Winograd candidate), blocked', x: [2, 32, 8, 7], w: [32, 32, 3, 3], p: conv(1, [1, 0]), bias: false, blocked: true },
    { name: '32->32 3x3 stride 1 padding 2 on 4x4 (Winograd candidate), blocked', x: [1, 32, 4, 4], w: [32, 32, 3, 3], p: conv(1, 2), bias: true, blocked: true },
    { name: '32->32 3x3 stride [1, 2] (not Winograd), blocked', x: [2, 32, 8, 9], w: [32, 32, 3, 3], p: conv([1, 2], 1), bias: false, blocked: true },
    { name: '1x1 stride 2 pointwise 32->64, blocked', x: [2, 32, 9, 9], w: [64, 32, 1, 1], p: conv(2, 0), bias: true, blocked: true },
  ];
  for (const c of convs) {
    it(`conv2d forward and both backward passes: ${c.name}`, () => {
      const t = new Twin(420);
      const x = inputPair(t, c.x, c.blocked);
      const w = t.randomPair(c.w, 0.3);
      const b = c.bias ? t.randomPair([c.w[0]], 0.5) : null;
      const y = t.nat.conv2d(x.nat, w.nat, b?.nat ?? null, c.p);
      const yShape = y.shape;
      t.agree(t.js.conv2d(x.js, w.js, b?.js ?? null, c.p), y, 'conv2d');
      const gy = inputPair(t, yShape, c.blocked);
      t.agree(t.js.conv2dBackwardData(gy.js, w.js, c.x, c.p), t.nat.conv2dBackwardData(gy.nat, w.nat, c.x, c.p), 'conv2dBackwardData');
      const ref = t.js.conv2dBackwardWeights(gy.js, x.js, c.w, c.bias, c.p);
      const got = t.nat.conv2dBackwardWeights(gy.nat, x.nat, c.w, c.bias, c.p);
      t.agree(ref.gw, got.gw, 'conv2dBackwardWeights gw');
      if (ref.gb && got.gb) t.agree(ref.gb, got.gb, 'conv2dBackwardWeights gb');
      t.free(x, w, gy, ...(b ? [b] : []));
      t.done();
    });
  }

  for (const [name, shape, p] of ZOO_AVG_POOLS) {
    for (const blocked of [false, true]) {
      it(`avgPool2d forward and backward: ${name}, ${blocked ? 'blocked' : 'plain'}`, () => {
        const t = new Twin(430);
        const wide = blocked ? [shape[0], 16, shape[2], shape[3]] : shape;
        const x = inputPair(t, wide, blocked);
        const y = t.nat.avgPool2d(x.nat, p);
        const gy = inputPair(t, y.shape, blocked);
        t.agree(t.js.avgPool2d(x.js, p), y, 'avgPool2d');
        t.agree(t.js.avgPool2dBackward(gy.js, wide, p), t.nat.avgPool2dBackward(gy.nat, wide, p), 'avgPool2dBackward');
        t.free(x, gy);
        t.done();
      });
    }
  }

  it('a conv -> maxPool -> ReLU6 -> depthwise conv chain keeps native activations blocked and agrees with js, forward and backward', () => {
    const t = new Twin(440);
    const x = t.randomPair([2, 3, 12, 10]);
    const w1 = t.randomPair([16, 3, 3, 3], 0.4);
    const w2 = t.randomPair([16, 1, 3, 1], 0.4);
    const c1 = conv(1, 1);
    const c2 = conv([2, 1], [1, 0], 16);
    const mp = pool(3, 2, 1);
    // forward, both sides
    const h1 = { js: t.js.conv2d(x.js, w1.js, null, c1), nat: t.nat.conv2d(x.nat, w1.nat, null, c1) };
    const h2 = { js: t.js.maxPool2d(h1.js, mp), nat: t.nat.maxPool2d(h1.nat, mp) };
    const h3 = { js: t.js.clippedRelu(h2.js, 6), nat: t.nat.clippedRelu(h2.nat, 6) };
    const y = { js: t.js.conv2d(h3.js, w2.js, null, c2), nat: t.nat.conv2d(h3.nat, w2.nat, null, c2) };
    for (const h of [h1, h2, h3]) assert.match(t.nat.layoutOf(h.nat), /^aBcd(8|16)b$/, 'activations stay blocked');
    t.agree(t.js.clone(y.js), t.nat.clone(y.nat), 'chain output');
    // backward, both sides, from the same upstream gradient
    const gy = t.randomPair(y.js.shape);
    const g3 = { js: t.js.conv2dBackwardData(gy.js, w2.js, h3.js.shape, c2), nat: t.nat.conv2dBackwardData(gy.nat, w2.nat, h3.js.shape, c2) };
    const gw2 = { js: t.js.conv2dBackwardWeights(gy.js, h3.js, w2.js.shape, false, c2).gw, nat: t.nat.conv2dBackwardWeights(gy.nat, h3.nat, w2.js.shape, false, c2).gw };
    const g2 = { js: t.js.clippedReluBackward(g3.js, h3.js, 6), nat: t.nat.clippedReluBackward(g3.nat, h3.nat, 6) };
    const g1 = { js: t.js.maxPool2dBackward(g2.js, h1.js, mp), nat: t.nat.maxPool2dBackward(g2.nat, h1.nat, mp) };
    assert.match(t.nat.layoutOf(g1.nat), /^aBcd(8|16)b$/, 'the max-pool gradient is in its input layout');
    const gx = { js: t.js.conv2dBackwardData(g1.js, w1.js, x.js.shape, c1), nat: t.nat.conv2dBackwardData(g1.nat, w1.nat, x.js.shape, c1) };
    const gw1 = { js: t.js.conv2dBackwardWeights(g1.js, x.js, w1.js.shape, false, c1).gw, nat: t.nat.conv2dBackwardWeights(g1.nat, x.nat, w1.js.shape, false, c1).gw };
    t.agree(gx.js, gx.nat, 'gradient of the input');
    t.agree(gw1.js, gw1.nat, 'gradient of the first weight');
    t.agree(gw2.js, gw2.nat, 'gradient of the depthwise weight');
    t.free(x, w1, w2, h1, h2, h3, y, gy, g3, g2, g1);
    t.done();
  });

  it('rejects bad arguments with the op named', () => {
    const t = new Twin(450);
    const x = t.randomPair([1, 2, 4, 4]);
    assert.throws(() => t.nat.clippedRelu(x.nat, -2), /clippedRelu: ceiling must be a positive finite number, got -2/);
    assert.throws(() => t.nat.maxPool2d(x.nat, pool(2, 2, 2)), /maxPool2d: padding \(2, 2\) must be at most half the kernel/);
    const wrong = t.randomPair([1, 2, 3, 3]);
    assert.throws(() => t.nat.maxPool2dBackward(wrong.nat, x.nat, pool(2, 2, 0)), /maxPool2dBackward: gy has shape \[1, 2, 3, 3\], expected \[1, 2, 2, 2\]/);
    t.free(x, wrong);
    t.done();
  });
});
