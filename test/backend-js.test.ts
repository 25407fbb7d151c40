/**
 * The pure-TypeScript backend: finite-difference gradient checks of every op with a backward,
 * forward values against direct (naive) definitions, batch-norm running statistics, optimizer
 * steps against hand-computed values, the quantizer test vectors of quant-methods.md §8, memory
 * accounting and argument validation.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BatchNormParams, Conv2dParams, Pool2dParams, QuantSpec, Shape } from '../src/backend/backend.js';
import { QUANT_SUMS, numel } from '../src/backend/backend.js';
import { gemmAccumulate, rowMajor, transposeOf, type StridedMatrix } from '../src/backend/js/gemm.js';
import { JsBackend, type JsBuf, roundHalfEven } from '../src/backend/js/index.js';
import { Rng } from '../src/util/rng.js';
import {
  type ConvConfig,
  type GradCase,
  assertClose,
  conv,
  convGradCase,
  gradCheck,
  input,
  positivePattern,
  randomArray,
  take,
  unaryCase,
  withBackend,
} from './backend-helpers.js';

// ---- direct definitions used as forward references ------------------------------------------------

function naiveConv2d(x: Float32Array, xs: Shape, w: Float32Array, ws: Shape, bias: Float32Array | null, p: Conv2dParams): Float64Array {
  const [n, c, h, wd] = xs;
  const [o, cg, kh, kw] = ws;
  const oh = Math.floor((h + 2 * p.padding[0] - kh) / p.stride[0]) + 1;
  const ow = Math.floor((wd + 2 * p.padding[1] - kw) / p.stride[1]) + 1;
  const og = o / p.groups;
  const y = new Float64Array(n * o * oh * ow);
  for (let b = 0; b < n; b++)
    for (let oc = 0; oc < o; oc++)
      for (let yy = 0; yy < oh; yy++)
        for (let xx = 0; xx < ow; xx++) {
          let s = bias ? bias[oc] : 0;
          const group = Math.floor(oc / og);
          for (let ic = 0; ic < cg; ic++)
            for (let i = 0; i < kh; i++)
              for (let j = 0; j < kw; j++) {
                const iy = yy * p.stride[0] - p.padding[0] + i;
                const ix = xx * p.stride[1] - p.padding[1] + j;
                if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                s += x[((b * c + group * cg + ic) * h + iy) * wd + ix] * w[((oc * cg + ic) * kh + i) * kw + j];
              }
          y[((b * o + oc) * oh + yy) * ow + xx] = s;
        }
  return y;
}

function naiveMatmul(m: number, n: number, k: number, a: StridedMatrix, b: StridedMatrix): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let kk = 0; kk < k; kk++) {
        s += a.data[a.offset + i * a.rowStride + kk * a.colStride] * b.data[b.offset + kk * b.rowStride + j * b.colStride];
      }
      c[i * n + j] = s;
    }
  return c;
}

// ---- the tests --------------------------------------------------------------------------------------

describe('js backend: memory', () => {
  it('upload and download copy, liveBytes counts allocations minus frees', () => {
    const be = new JsBackend();
    const src = Float32Array.of(1, 2, 3, 4, 5, 6);
    const a = be.upload(src, [2, 3]);
    assert.equal(be.liveBytes(), 24);
    src[0] = 99;
    const out = be.download(a);
    assert.deepEqual(Array.from(out), [1, 2, 3, 4, 5, 6]);
    out[1] = 99;
    assert.equal(be.download(a)[1], 2);
    const z = be.zeros([4]);
    const c = be.clone(a);
    const r = be.reshape(a, [3, 2]);
    assert.deepEqual(r.shape, [3, 2]);
    assert.equal(be.liveBytes(), 24 + 16 + 24 + 24);
    be.free(a);
    assert.deepEqual(Array.from(be.download(r)), [1, 2, 3, 4, 5, 6], 'reshape copies');
    assert.deepEqual(Array.from(be.download(c)), [1, 2, 3, 4, 5, 6], 'clone copies');
    assert.deepEqual(Array.from(be.download(z)), [0, 0, 0, 0]);
    [z, c, r].forEach((b) => be.free(b));
    assert.equal(be.liveBytes(), 0);
  });

  it('rejects use after free, double free and foreign buffers', () => {
    const be = new JsBackend();
    const a = be.upload(Float32Array.of(1, 2), [2]);
    be.free(a);
    assert.throws(() => be.relu(a), /relu: input \[2\] was already freed/);
    assert.throws(() => be.free(a), /free: buffer \[2\] was already freed/);
    assert.throws(() => be.relu({ shape: [2], backend: 'native' } as unknown as JsBuf), /relu: input is not a js backend buffer \(backend native\)/);
    const x = be.upload(new Float32Array(8).fill(1), [4, 2]);
    const ones = be.upload(Float32Array.of(1, 1), [2]);
    const zeros = be.zeros([2]);
    const rv = be.upload(Float32Array.of(1, 1), [2]);
    const p: BatchNormParams = { eps: 1e-5, momentum: 0.1, relu: false };
    const { y, saved } = be.batchNormTrain(x, ones, zeros, zeros, rv, p);
    be.freeSaved(saved);
    assert.throws(() => be.batchNormBackward(y, x, y, ones, saved, p), /batchNormBackward: saved batch-norm state was already freed/);
    assert.throws(() => be.freeSaved(saved), /freeSaved/);
    [x, ones, zeros, rv, y].forEach((b) => be.free(b));
    assert.equal(be.liveBytes(), 0);
  });

  it('counts saved batch-norm state until freeSaved', () => {
    const be = new JsBackend();
    const x = be.upload(Float32Array.of(1, 2, 3, 4, 5, 6), [3, 2]);
    const ones = be.upload(Float32Array.of(1, 1), [2]);
    const running = [be.zeros([2]), be.zeros([2])];
    const beforeForward = be.liveBytes();
    const { y, saved } = be.batchNormTrain(x, ones, ones, running[0], running[1], { eps: 1e-5, momentum: 0.1, relu: false });
    be.free(y);
    assert.ok(be.liveBytes() > beforeForward, 'the saved state is counted');
    be.freeSaved(saved);
    assert.equal(be.liveBytes(), beforeForward);
    [x, ones, ...running].forEach((b) => be.free(b));
    assert.equal(be.liveBytes(), 0);
  });
});

describe('js backend: argument validation names the op and the shapes', () => {
  const be = new JsBackend();
  const buf = (shape: Shape): JsBuf => be.zeros(shape);
  const conv: Conv2dParams = { stride: [1, 1], padding: [1, 1], groups: 1 };
  const bn: BatchNormParams = { eps: 1e-5, momentum: 0.1, relu: false };
  const cases: [string, () => unknown, RegExp][] = [
    ['conv2d channels', () => be.conv2d(buf([8, 4, 32, 32]), buf([16, 3, 3, 3]), null, conv),
      /^Error: conv2d: weight \[16, 3, 3, 3\] expects 3 input channels per group, input is \[8, 4, 32, 32\]$/],
    ['conv2d groups', () => be.conv2d(buf([1, 4, 5, 5]), buf([6, 2, 3, 3]), null, { ...conv, groups: 3 }),
      /conv2d: groups 3 must divide the input channels \(input \[1, 4, 5, 5\]\) and the output channels \(weight \[6, 2, 3, 3\]\)/],
    ['conv2d bias', () => be.conv2d(buf([1, 3, 5, 5]), buf([16, 3, 3, 3]), buf([8]), conv), /conv2d: bias must be \[16\], got \[8\]/],
    ['conv2d stride', () => be.conv2d(buf([1, 3, 5, 5]), buf([4, 3, 3, 3]), null, { ...conv, stride: [0, 1] }), /conv2d: stride must be two integers >= 1/],
    ['conv2d kernel too large', () => be.conv2d(buf([1, 3, 2, 2]), buf([4, 3, 5, 5]), null, { ...conv, padding: [0, 0] }),
      /conv2d: kernel 5x5 is larger than the padded input \[1, 3, 2, 2\]/],
    ['conv2dBackwardData gradient', () => be.conv2dBackwardData(buf([1, 4, 4, 4]), buf([4, 3, 3, 3]), [1, 3, 5, 5], conv),
      /conv2dBackwardData: gradient of the output of input \[1, 3, 5, 5\] \* weight \[4, 3, 3, 3\] must be \[1, 4, 5, 5\], got \[1, 4, 4, 4\]/],
    ['batchNorm channels', () => be.batchNormTrain(buf([2, 4, 3, 3]), buf([3]), buf([4]), buf([4]), buf([4]), bn),
      /batchNormTrain: gamma \[3\] does not match the 4 channels of input \[2, 4, 3, 3\]/],
    ['batchNorm single value', () => be.batchNormTrain(buf([1, 2]), buf([2]), buf([2]), buf([2]), buf([2]), bn),
      /batchNormTrain: expected more than 1 value per channel in training, input is \[1, 2\]/],
    ['batchNorm momentum', () => be.batchNormInfer(buf([2, 2]), buf([2]), buf([2]), buf([2]), buf([2]), { ...bn, momentum: 1.5 }),
      /batchNormInfer: momentum must be in \[0, 1\], got 1.5/],
    ['avgPool padding', () => be.avgPool2d(buf([1, 1, 8, 8]), { kernel: [3, 3], stride: [1, 1], padding: [2, 2] }),
      /avgPool2d: padding \[2, 2\] must be at most half of kernel \[3, 3\]/],
    ['linear features', () => be.linear(buf([2, 4]), buf([3, 5]), null), /linear: weight \[3, 5\] expects 5 input features, input is \[2, 4\]/],
    ['shortcut gradient', () => be.shortcutPadBackward(buf([1, 8, 4, 4]), [1, 4, 8, 8], 2, 6),
      /shortcutPadBackward: gradient \[1, 8, 4, 4\] does not fit input \[1, 4, 8, 8\] with stride 2 and 6 channels padded before/],
    ['labels', () => be.softmaxCrossEntropy(buf([2, 5]), Int32Array.of(0, 5), 0),
      /softmaxCrossEntropy: label 5 of row 1 is outside \[0, 5\) for logits \[2, 5\]/],
    ['label count', () => be.softmaxCrossEntropy(buf([2, 5]), Int32Array.of(0), 0), /softmaxCrossEntropy: 1 labels for logits \[2, 5\]/],
    ['smoothing', () => be.softmaxCrossEntropy(buf([2, 5]), Int32Array.of(0, 1), 1.5), /softmaxCrossEntropy: label smoothing must be in \[0, 1\]/],
    ['add shapes', () => be.add(buf([2, 3]), buf([3, 2])), /add: a \[2, 3\] and b \[3, 2\] must have the same shape/],
    ['reshape size', () => be.reshape(buf([2, 3]), [4]), /reshape: cannot reshape \[2, 3\] to \[4\]/],
    ['upload size', () => be.upload(new Float32Array(5), [2, 3]), /upload: 5 values do not fill shape \[2, 3\]/],
    ['bad shape', () => be.zeros([2, -1]), /zeros: requested shape \[2, -1\] must list non-negative integers/],
    ['stats channels', () => be.stats(buf([3, 4]), 2), /stats: dimension 0 of input \[3, 4\] does not split into 2 channels/],
    ['sgd nesterov', () => be.sgdStep(buf([2]), buf([2]), buf([2]), { lr: 0.1, momentum: 0.9, dampening: 0.1, weightDecay: 0, nesterov: true }),
      /sgdStep: Nesterov momentum requires momentum > 0 and dampening 0/],
    ['sgd buffer', () => be.sgdStep(buf([2]), buf([2]), null, { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false }),
      /sgdStep: momentum 0.9 needs a momentum buffer, got null/],
    ['adam step', () => be.adamStep(buf([2]), buf([2]), buf([2]), buf([2]), { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: false, step: 0 }),
      /adamStep: step must be a positive integer \(1-based\), got 0/],
    ['adam shapes', () => be.adamStep(buf([2]), buf([2]), buf([3]), buf([2]), { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: false, step: 1 }),
      /adamStep: parameter \[2\] and first moment \[3\] must have the same shape/],
    ['quantize channels', () => be.quantize(buf([3, 4]), quantSpec({ channels: 2, scale: [1, 1] })),
      /quantize: dimension 0 of input \[3, 4\] does not split into 2 channels/],
    ['quantize levels', () => be.quantize(buf([4]), quantSpec({ levels: Float32Array.of(0, 0.5, 0.25) })),
      /quantize: spec.levels must be finite and strictly increasing; level 2 is 0.25/],
    ['quantize scale', () => be.quantize(buf([4]), quantSpec({ scale: [0] })), /quantize: spec.scale\[0\] is 0/],
    ['quantize range', () => be.quantize(buf([4]), quantSpec({ lo: 1, hi: 1 })), /quantize: spec.lo 1 must be below spec.hi 1/],
    ['quantizeBackward shapes', () => be.quantizeBackward(buf([4]), buf([5]), quantSpec({})),
      /quantizeBackward: input \[4\] and gradient \[5\] must have the same shape/],
  ];
  for (const [name, call, message] of cases) {
    it(name, () => assert.throws(call, (e: unknown) => e instanceof Error && message.test(String(e))));
  }
});

describe('js backend: elementwise ops and reductions', () => {
  it('computes the elementwise ops, keeping NaN through relu', () => {
    withBackend((be) => {
      const a = be.upload(Float32Array.of(-1.5, 0, 2, NaN), [4]);
      const b = be.upload(Float32Array.of(1, -3, 0.5, 1), [4]);
      assert.deepEqual(Array.from(take(be, be.add(a, b))), [-0.5, -3, 2.5, NaN]);
      assert.deepEqual(Array.from(take(be, be.mul(a, b))), [-1.5, -0, 1, NaN]);
      assert.deepEqual(Array.from(take(be, be.addRelu(a, b))), [0, 0, 2.5, NaN]);
      assert.deepEqual(Array.from(take(be, be.relu(a))), [0, 0, 2, NaN]);
      assert.deepEqual(Array.from(take(be, be.affine(a, 2, 1))), [-2, 1, 5, NaN]);
      const y = be.relu(a);
      assert.deepEqual(Array.from(take(be, be.reluBackward(b, y))), [0, 0, 0.5, 0], 'gradient passes only where y > 0');
      const t = be.tanh(b);
      assertClose(take(be, be.tanhBackward(b, t)), [1, -3, 0.5, 1].map((v) => v * (1 - Math.tanh(v) ** 2)), 1e-6, 'tanhBackward');
      be.axpyInPlace(b, a, -2);
      assert.deepEqual(Array.from(be.download(b)), [4, -3, -3.5, NaN]);
      assert.equal(be.countNonFinite(b), 1);
      [a, b, y, t].forEach((x) => be.free(x));
    });
  });

  it('computes per-channel statistics, dot products and non-finite counts in float64', () => {
    withBackend((be) => {
      const x = be.upload(Float32Array.of(1, -2, 3, 0.5, 4, -6), [2, 3]);
      assert.deepEqual(Array.from(be.stats(x, 2)), [2, 14, -2, 3, 6, -1.5, 52.25, -6, 4, 10.5]);
      assert.deepEqual(Array.from(be.stats(x, 1)), [0.5, 66.25, -6, 4, 16.5]);
      const big = be.upload(new Float32Array(1 << 16).fill(0.1), [1 << 16]);
      // float32 accumulation would be off by ~1e-3 relative at this length
      assert.ok(Math.abs(be.dot(big, big) - 65536 * Math.fround(0.1) ** 2) < 1e-9);
      const bad = be.upload(Float32Array.of(Infinity, 1, NaN, -Infinity), [4]);
      assert.equal(be.countNonFinite(bad), 3);
      [x, big, bad].forEach((b) => be.free(b));
    });
  });
});

describe('js backend: blocked matrix multiply', () => {
  it('matches a direct triple loop for edge sizes, blocking boundaries and transposed operands', () => {
    const rng = new Rng(7);
    for (const [m, n, k] of [[1, 1, 1], [5, 7, 3], [13, 9, 300], [6, 600, 20], [37, 530, 270]]) {
      const a = randomArray(rng, m * k);
      const b = randomArray(rng, k * n);
      for (const [aView, bView] of [
        [rowMajor(a, 0, k), rowMajor(b, 0, n)],
        [transposeOf(a, 0, m), transposeOf(b, 0, k)],
      ]) {
        const c = new Float64Array(m * n).fill(0.5);
        gemmAccumulate(m, n, k, aView, bView, c, 0, n);
        const expected = naiveMatmul(m, n, k, aView, bView).map((v) => v + 0.5);
        assertClose(c, expected, 1e-13, `gemm ${m}x${n}x${k}`);
      }
    }
  });
});

const CONV_GRAD_CONFIGS: ConvConfig[] = [
  { name: 'stride 1, padding 1, bias', x: [2, 3, 5, 4], w: [4, 3, 3, 3], p: conv(1, 1), bias: true },
  { name: 'stride 1, padding 1, no bias', x: [1, 2, 4, 4], w: [3, 2, 3, 3], p: conv(1, 1), bias: false },
  { name: 'stride 2, padding 1', x: [2, 2, 6, 5], w: [3, 2, 3, 3], p: conv(2, 1), bias: false },
  { name: 'stride 2, padding 1, bias', x: [1, 3, 5, 5], w: [2, 3, 3, 3], p: conv(2, 1), bias: true },
  { name: 'no padding', x: [1, 2, 5, 5], w: [2, 2, 3, 3], p: conv(1, 0), bias: true },
  { name: 'groups 2, bias', x: [2, 4, 4, 4], w: [6, 2, 3, 3], p: conv(1, 1, 2), bias: true },
  { name: 'groups 2, no bias', x: [1, 4, 4, 4], w: [4, 2, 3, 3], p: conv(1, 0, 2), bias: false },
  { name: 'depthwise, bias', x: [2, 3, 4, 4], w: [3, 1, 3, 3], p: conv(1, 1, 3), bias: true },
  { name: 'depthwise x2, stride 2', x: [1, 2, 5, 5], w: [4, 1, 3, 3], p: conv(2, 1, 2), bias: false },
  { name: 'pointwise (1x1, no im2col)', x: [2, 3, 3, 3], w: [4, 3, 1, 1], p: conv(1, 0), bias: true },
  { name: 'pointwise, stride 2', x: [1, 4, 5, 5], w: [2, 4, 1, 1], p: conv(2, 0), bias: false },
  { name: 'rectangular kernel, stride and padding', x: [1, 2, 6, 5], w: [3, 2, 3, 2], p: conv([2, 1], [0, 1]), bias: true },
];

describe('js backend: convolution', () => {
  const configs: ConvConfig[] = [
    ...CONV_GRAD_CONFIGS,
    // K = 32 * 9 = 288 > the GEMM's depth block, P = 24 * 24 = 576 > its column block
    { name: 'large (crosses GEMM blocks)', x: [1, 32, 24, 24], w: [8, 32, 3, 3], p: conv(1, 1), bias: true },
    { name: 'ResNet stage-1 like', x: [2, 16, 8, 8], w: [16, 16, 3, 3], p: conv(1, 1), bias: false },
  ];
  for (const c of configs) {
    it(`forward matches the direct definition: ${c.name}`, () => {
      const rng = new Rng(11);
      const x = randomArray(rng, numel(c.x));
      const w = randomArray(rng, numel(c.w));
      const bias = c.bias ? randomArray(rng, c.w[0]) : null;
      withBackend((be) => {
        const [xb, wb] = [be.upload(x, c.x), be.upload(w, c.w)];
        const bb = bias ? be.upload(bias, [c.w[0]]) : null;
        const y = take(be, be.conv2d(xb, wb, bb, c.p));
        assertClose(y, naiveConv2d(x, c.x, w, c.w, bias, c.p), 1e-6, c.name);
        [xb, wb, ...(bb ? [bb] : [])].forEach((b) => be.free(b));
      });
    });
  }

  it('backward passes are the adjoints of the forward on large shapes: <conv(x, w), g> = <x, gx> = <w, gw>', () => {
    const rng = new Rng(12);
    for (const c of [configs.at(-2)!, { name: 'strided groups', x: [2, 8, 9, 9], w: [8, 4, 3, 3], p: conv(2, 1, 2), bias: false }]) {
      withBackend((be) => {
        const x = be.upload(randomArray(rng, numel(c.x)), c.x);
        const w = be.upload(randomArray(rng, numel(c.w)), c.w);
        const y = be.conv2d(x, w, null, c.p);
        const g = be.upload(randomArray(rng, numel(y.shape)), y.shape);
        const gx = be.conv2dBackwardData(g, w, c.x, c.p);
        const { gw } = be.conv2dBackwardWeights(g, x, c.w, false, c.p);
        const reference = be.dot(y, g);
        assert.ok(Math.abs(be.dot(x, gx) - reference) <= 1e-5 * Math.abs(reference) + 1e-4, 'data adjoint');
        assert.ok(Math.abs(be.dot(w, gw) - reference) <= 1e-5 * Math.abs(reference) + 1e-4, 'weight adjoint');
        [x, w, y, g, gx, gw].forEach((b) => be.free(b));
      });
    }
  });
});

describe('js backend: finite-difference gradient checks', () => {
  CONV_GRAD_CONFIGS.forEach((c, i) => it(`conv2d ${c.name}`, () => gradCheck(convGradCase(new Rng(100 + i), c), 200 + i)));

  const batchNormCase = (rng: Rng, shape: Shape, relu: boolean): GradCase => {
    const channels = shape[1];
    const p: BatchNormParams = { eps: 1e-5, momentum: 0.1, relu };
    const train = (be: JsBackend, [x, gamma, beta]: JsBuf[]) => {
      const running = [be.zeros([channels]), be.upload(new Float32Array(channels).fill(1), [channels])];
      const r = be.batchNormTrain(x, gamma, beta, running[0], running[1], p);
      running.forEach((b) => be.free(b));
      return r;
    };
    return {
      inputs: [input(rng, 'x', shape, 1.5, 0.3), input(rng, 'gamma', [channels], 0.3, 1), input(rng, 'beta', [channels], 0.5)],
      forward: (be, bufs) => {
        const { y, saved } = train(be, bufs);
        be.freeSaved(saved);
        return take(be, y);
      },
      backward: (be, bufs, r) => {
        const { y, saved } = train(be, bufs);
        const gy = be.upload(r, y.shape);
        const g = be.batchNormBackward(gy, bufs[0], y, bufs[1], saved, p);
        be.freeSaved(saved);
        [y, gy].forEach((b) => be.free(b));
        return [take(be, g.gx), take(be, g.gGamma), take(be, g.gBeta)];
      },
      pattern: relu ? positivePattern : undefined,
    };
  };
  it('batch norm 2d, training', () => gradCheck(batchNormCase(new Rng(1), [3, 2, 3, 3], false), 1));
  it('batch norm 2d, training, fused ReLU', () => gradCheck(batchNormCase(new Rng(2), [3, 2, 3, 3], true), 2));
  it('batch norm 1d, training', () => gradCheck(batchNormCase(new Rng(3), [6, 4], false), 3));
  it('batch norm 1d, training, fused ReLU', () => gradCheck(batchNormCase(new Rng(4), [6, 4], true), 4));

  const pools: [string, Shape, Pool2dParams][] = [
    ['kernel 3, stride 2, padding 1', [2, 2, 7, 7], { kernel: [3, 3], stride: [2, 2], padding: [1, 1] }],
    ['kernel 2, stride 2, odd width', [1, 2, 6, 5], { kernel: [2, 2], stride: [2, 2], padding: [0, 0] }],
    ['rectangular', [1, 1, 5, 6], { kernel: [3, 2], stride: [1, 2], padding: [1, 1] }],
  ];
  pools.forEach(([name, shape, p], i) => it(`avgPool2d ${name}`, () => gradCheck(
    unaryCase(new Rng(20 + i), shape, (be, x) => be.avgPool2d(x, p), (be, gy, x) => be.avgPool2dBackward(gy, x.shape, p)), 20 + i)));
  it('globalAvgPool', () => gradCheck(
    unaryCase(new Rng(30), [2, 3, 4, 5], (be, x) => be.globalAvgPool(x), (be, gy, x) => be.globalAvgPoolBackward(gy, x.shape)), 30));
  it('shortcutPad, stride 2', () => gradCheck(
    unaryCase(new Rng(31), [2, 3, 5, 5], (be, x) => be.shortcutPad(x, 2, 2, 1), (be, gy, x) => be.shortcutPadBackward(gy, x.shape, 2, 2)), 31));
  it('shortcutPad, stride 1', () => gradCheck(
    unaryCase(new Rng(32), [1, 2, 3, 4], (be, x) => be.shortcutPad(x, 1, 0, 3), (be, gy, x) => be.shortcutPadBackward(gy, x.shape, 1, 0)), 32));
  it('relu', () => gradCheck(unaryCase(new Rng(33), [3, 7], (be, x) => be.relu(x), (be, gy, _x, y) => be.reluBackward(gy, y), positivePattern), 33));
  it('tanh', () => gradCheck(unaryCase(new Rng(34), [3, 7], (be, x) => be.tanh(x), (be, gy, _x, y) => be.tanhBackward(gy, y)), 34));
  it('affine', () => gradCheck(unaryCase(new Rng(35), [3, 7], (be, x) => be.affine(x, -1.7, 0.3), (be, gy) => be.affine(gy, -1.7, 0)), 35));

  it('addRelu', () => {
    const rng = new Rng(36);
    gradCheck({
      inputs: [input(rng, 'a', [4, 5]), input(rng, 'b', [4, 5])],
      forward: (be, [a, b]) => take(be, be.addRelu(a, b)),
      backward: (be, [a, b], r) => {
        const y = be.addRelu(a, b);
        const gy = be.upload(r, y.shape);
        const g = take(be, be.reluBackward(gy, y));
        [y, gy].forEach((x) => be.free(x));
        return [g, g];
      },
      pattern: positivePattern,
    }, 36);
  });

  for (const withBias of [true, false]) {
    it(`linear${withBias ? ' with bias' : ''}`, () => {
      const rng = new Rng(withBias ? 40 : 41);
      const inputs = [input(rng, 'x', [4, 6]), input(rng, 'w', [3, 6], 0.5)];
      if (withBias) inputs.push(input(rng, 'bias', [3]));
      gradCheck({
        inputs,
        forward: (be, [x, w, b]) => take(be, be.linear(x, w, b ?? null)),
        backward: (be, [x, w], r) => {
          const gy = be.upload(r, [4, 3]);
          const gx = take(be, be.linearBackwardData(gy, w));
          const { gw, gb } = be.linearBackwardWeights(gy, x, withBias);
          be.free(gy);
          return [gx, take(be, gw), gb ? take(be, gb) : null];
        },
      }, withBias ? 40 : 41);
    });
  }

  for (const smoothing of [0, 0.1]) {
    it(`softmaxCrossEntropy, label smoothing ${smoothing}`, () => {
      const rng = new Rng(50);
      const labels = Int32Array.of(0, 3, 1, 1, 2);
      gradCheck({
        inputs: [input(rng, 'logits', [5, 4], 2)],
        forward: (be, [logits]) => {
          const { loss, probs } = be.softmaxCrossEntropy(logits, labels, smoothing);
          be.free(probs);
          return Float64Array.of(loss);
        },
        backward: (be, [logits], r) => {
          const { probs } = be.softmaxCrossEntropy(logits, labels, smoothing);
          const g = take(be, be.softmaxCrossEntropyBackward(probs, labels, smoothing, r[0]));
          be.free(probs);
          return [g];
        },
      }, 51);
    });
  }
});

describe('js backend: batch normalization values', () => {
  /** Per-channel mean and biased variance in float64, straight from the definition. */
  function channelMoments(x: Float32Array, shape: Shape): { mean: number[]; variance: number[] } {
    const [n, c] = shape;
    const inner = numel(shape.slice(2));
    const mean: number[] = [];
    const variance: number[] = [];
    for (let ch = 0; ch < c; ch++) {
      const values: number[] = [];
      for (let b = 0; b < n; b++) for (let i = 0; i < inner; i++) values.push(x[(b * c + ch) * inner + i]);
      const m = values.reduce((s, v) => s + v, 0) / values.length;
      mean.push(m);
      variance.push(values.reduce((s, v) => s + (v - m) ** 2, 0) / values.length);
    }
    return { mean, variance };
  }

  for (const shape of [[4, 3, 2, 2], [5, 3]] as Shape[]) {
    it(`training output and running statistics follow PyTorch, input ${shape.join('x')}`, () => {
      const rng = new Rng(60);
      const channels = shape[1];
      const count = numel(shape) / channels;
      const x = randomArray(rng, numel(shape), 2, 1);
      const gamma = randomArray(rng, channels, 0.2, 1);
      const beta = randomArray(rng, channels);
      const rm0 = randomArray(rng, channels);
      const rv0 = randomArray(rng, channels, 0.1, 1);
      const p: BatchNormParams = { eps: 1e-3, momentum: 0.25, relu: false };
      const { mean, variance } = channelMoments(x, shape);
      withBackend((be) => {
        const bufs = [be.upload(x, shape), be.upload(gamma, [channels]), be.upload(beta, [channels]), be.upload(rm0, [channels]), be.upload(rv0, [channels])];
        const { y, saved } = be.batchNormTrain(bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], p);
        be.freeSaved(saved);
        const inner = count / shape[0];
        const expectedY = Array.from(x, (v, i) => {
          const c = Math.floor(i / inner) % channels;
          return ((v - mean[c]) / Math.sqrt(variance[c] + p.eps)) * gamma[c] + beta[c];
        });
        assertClose(take(be, y), expectedY, 1e-6, 'normalized output (biased variance)');
        assertClose(be.download(bufs[3]), mean.map((m, c) => 0.75 * rm0[c] + 0.25 * m), 1e-6, 'running mean');
        assertClose(be.download(bufs[4]), variance.map((v, c) => 0.75 * rv0[c] + 0.25 * v * count / (count - 1)), 1e-6,
          'running variance (unbiased)');
        const inferred = take(be, be.batchNormInfer(bufs[0], bufs[1], bufs[2], bufs[3], bufs[4], { ...p, relu: true }));
        const rm = be.download(bufs[3]);
        const rv = be.download(bufs[4]);
        const expectedInfer = Array.from(x, (v, i) => {
          const c = Math.floor(i / inner) % channels;
          return Math.max(0, ((v - rm[c]) / Math.sqrt(rv[c] + p.eps)) * gamma[c] + beta[c]);
        });
        assertClose(inferred, expectedInfer, 1e-6, 'inference with running statistics and fused ReLU');
        bufs.forEach((b) => be.free(b));
      });
    });
  }
});

describe('js backend: softmax cross-entropy values', () => {
  it('computes loss, probabilities and the arg-max hits (ties: lowest index)', () => {
    withBackend((be) => {
      const logits = be.upload(Float32Array.of(1, 1, 0, 2, 0, 5, 3, 3, 3), [3, 3]);
      const labels = Int32Array.of(1, 2, 0);
      const { loss, probs, correct } = be.softmaxCrossEntropy(logits, labels, 0.2);
      assert.equal(correct, 2, 'row 0 ties -> index 0 (label 1 misses); row 1 hits; row 2 ties -> index 0 hits');
      const rows = [[1, 1, 0], [2, 0, 5], [3, 3, 3]];
      let expected = 0;
      rows.forEach((row, r) => {
        const lse = Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
        const nll = row.map((v) => lse - v);
        expected += 0.8 * nll[labels[r]] + (0.2 / 3) * nll.reduce((s, v) => s + v, 0);
      });
      assert.ok(Math.abs(loss - expected / 3) < 1e-12, `loss ${loss} vs ${expected / 3}`);
      const p = take(be, probs);
      assertClose(p.slice(6), [1 / 3, 1 / 3, 1 / 3], 1e-7, 'uniform row');
      be.free(logits);
    });
  });
});

describe('js backend: optimizer steps (hand-computed, PyTorch semantics)', () => {
  const grads = [[0.5, -1], [0.25, 0.5], [-0.5, 0.25]];

  function runSgd(p: { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean }): number[][] {
    return withBackend((be) => {
      const param = be.upload(Float32Array.of(1, -2), [2]);
      const velocity = p.momentum > 0 ? be.zeros([2]) : null;
      const trajectory = grads.map((g, step) => {
        const grad = be.upload(Float32Array.from(g), [2]);
        // PyTorch's first step sets v = g: a zero buffer with dampening 0 does exactly that
        be.sgdStep(param, grad, velocity, { ...p, dampening: step === 0 ? 0 : p.dampening });
        be.free(grad);
        return Array.from(be.download(param));
      });
      [param, ...(velocity ? [velocity] : [])].forEach((b) => be.free(b));
      return trajectory;
    });
  }

  it('plain SGD: p -= lr * g', () => {
    const t = runSgd({ lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false });
    assertClose(t.flat(), [0.95, -1.9, 0.925, -1.95, 0.975, -1.975], 1e-6, 'plain');
  });

  it('SGD with momentum 0.9, dampening 0.5, weight decay 0.1', () => {
    // step 1: d = g + 0.1 p = [0.6, -1.2], v = d, p = [0.94, -1.88]
    // step 2: d = [0.344, 0.312], v = 0.9 v + 0.5 d = [0.712, -0.924], p = [0.8688, -1.7876]
    // step 3: d = [-0.41312, 0.07124], v = [0.43424, -0.79598], p = [0.825376, -1.708002]
    const t = runSgd({ lr: 0.1, momentum: 0.9, dampening: 0.5, weightDecay: 0.1, nesterov: false });
    assertClose(t.flat(), [0.94, -1.88, 0.8688, -1.7876, 0.825376, -1.708002], 1e-6, 'momentum');
  });

  it('SGD with Nesterov momentum 0.9', () => {
    // v1 = [0.5, -1], step = g + 0.9 v = [0.95, -1.9]; v2 = [0.7, -0.4], step [0.88, 0.14]; v3 = [0.13, -0.11], step [-0.383, 0.151]
    const t = runSgd({ lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: true });
    assertClose(t.flat(), [0.905, -1.81, 0.817, -1.824, 0.8553, -1.8391], 1e-6, 'nesterov');
  });

  function runAdam(decoupled: boolean): { trajectory: number[][]; m: number[]; v: number[] } {
    return withBackend((be) => {
      const param = be.upload(Float32Array.of(1, -2), [2]);
      const [m, v] = [be.zeros([2]), be.zeros([2])];
      const trajectory = grads.map((g, i) => {
        const grad = be.upload(Float32Array.from(g), [2]);
        be.adamStep(param, grad, m, v, { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, decoupled, step: i + 1 });
        be.free(grad);
        return Array.from(be.download(param));
      });
      const result = { trajectory, m: Array.from(take(be, m)), v: Array.from(take(be, v)) };
      be.free(param);
      return result;
    });
  }

  it('Adam with L2 weight decay (added to the gradient) and bias correction', () => {
    // Step 1 after bias correction is lr * d / (|d| + eps) with d = g + 0.1 p = [0.6, -1.2]: p = [0.9, -1.9].
    // Steps 2 and 3 evaluated from m = b1 m + (1 - b1) d, v = b2 v + (1 - b2) d^2,
    // p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    const r = runAdam(false);
    assertClose(r.trajectory.flat(), [0.9, -1.9, 0.80500977, -1.85374726, 0.77551151, -1.82137200], 1e-6, 'adam');
    assertClose(r.m, [0.0372500977, -0.0628374727], 1e-6, 'first moment');
    assertClose(r.v, [0.000650744191, 0.00153730177], 1e-6, 'second moment');
  });

  it('AdamW (decoupled weight decay: p *= 1 - lr * wd)', () => {
    // Step 1: p = [1, -2] * 0.99 - 0.1 * sign(g) = [0.89, -1.88].
    const r = runAdam(true);
    assertClose(r.trajectory.flat(), [0.89, -1.88, 0.78788204, -1.83456630, 0.76892491, -1.81008175], 1e-6, 'adamw');
    assertClose(r.m, [0.013, -0.011], 1e-6, 'first moment');
  });
});

// ---- quantization: the test vectors of quant-methods.md §8 ------------------------------------------

interface SpecOptions {
  readonly channels?: number;
  readonly scale?: number[];
  readonly offset?: number[];
  readonly outScale?: number[];
  readonly outOffset?: number[];
  readonly lo?: number;
  readonly hi?: number;
  readonly symmetric?: boolean;
  readonly levels?: Float32Array | null;
  readonly steps?: number;
  readonly loInclusive?: boolean;
  readonly hiInclusive?: boolean;
  readonly passClipped?: boolean;
  readonly delta?: number;
}

/** A QuantSpec; per-channel arrays given with one value are repeated for every channel. */
function quantSpec(o: SpecOptions): QuantSpec {
  const channels = o.channels ?? 1;
  const perChannel = (v: number[] | undefined, fallback: number): Float32Array =>
    Float32Array.from({ length: channels }, (_, c) => (v === undefined ? fallback : v.length === 1 ? v[0] : v[c]));
  return {
    channels,
    scale: perChannel(o.scale, 1),
    offset: perChannel(o.offset, 0),
    outScale: perChannel(o.outScale, 1),
    outOffset: perChannel(o.outOffset, 0),
    lo: o.lo ?? 0,
    hi: o.hi ?? 1,
    symmetric: o.symmetric ?? false,
    levels: o.levels ?? null,
    steps: o.steps ?? 1,
    loInclusive: o.loInclusive ?? true,
    hiInclusive: o.hiInclusive ?? true,
    passClipped: o.passClipped ?? false,
    delta: o.delta ?? 0,
  };
}

/** APoT level sets of quant-methods.md §1.2 (B = magnitude bits), as numerators over D. */
function apotLevels(budget: 1 | 2 | 3 | 4 | 5): Float32Array {
  const table: Record<number, [number, number[]]> = {
    1: [1, [0, 1]],
    2: [4, [0, 1, 2, 4]],
    3: [10, [0, 1, 2, 3, 4, 6, 8, 10]],
    4: [48, [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]],
    5: [100, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 17, 20, 21, 24, 28, 32, 34, 36, 38, 48, 52, 64, 65, 68, 69, 72, 76, 96, 100]],
  };
  const [denominator, numerators] = table[budget];
  return Float32Array.from(numerators, (n) => n / denominator);
}

interface QuantResult {
  readonly y: number[];
  readonly gx: number[];
  /** sums[k][c] */
  readonly sums: number[][];
}

function runQuant(x: number[], spec: QuantSpec, gy: number[] = x.map(() => 1)): QuantResult {
  return withBackend((be) => {
    const xb = be.upload(Float32Array.from(x), [x.length]);
    const gb = be.upload(Float32Array.from(gy), [x.length]);
    const y = Array.from(take(be, be.quantize(xb, spec)));
    const { gx, sums } = be.quantizeBackward(xb, gb, spec);
    [xb, gb].forEach((b) => be.free(b));
    const byKind = Array.from({ length: QUANT_SUMS }, (_, k) => Array.from({ length: spec.channels }, (_, c) => sums[c * QUANT_SUMS + k]));
    return { y, gx: Array.from(take(be, gx)), sums: byKind };
  });
}

/**
 * Gradient of the output scale for y = alpha * Q(x / alpha) (APoT, LSQ), from the sums:
 * inside q - xn (sum 2), lo below the range (sum 3), hi above it (sum 4).
 */
function scaleGradient(r: QuantResult, spec: QuantSpec): number[] {
  return r.sums[2].map((s2, c) => s2 + spec.lo * r.sums[3][c] + spec.hi * r.sums[4][c]);
}

/** One channel per element, so the per-channel sums are per-element derivatives. */
function perElement(x: number[], o: SpecOptions): QuantSpec {
  return quantSpec({ ...o, channels: x.length });
}

const QUANT_TOL = 2e-6;

describe('js backend: quantization test vectors (quant-methods.md §8)', () => {
  it('T14: roundHalfEven', () => {
    const got = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 0.49999999999999994, -0.2, 3.5000001].map(roundHalfEven);
    assert.deepEqual(got, [0, 2, 2, -0, -2, -2, 0, 0, -0, 4]);
    assert.ok(Object.is(roundHalfEven(-0.5), -0), '-0.5 rounds to -0 as in PyTorch');
    assert.deepEqual([NaN, Infinity, -Infinity].map(roundHalfEven), [NaN, Infinity, -Infinity]);
  });

  const apotWeight = (alpha: number, levels: Float32Array, passClipped: boolean, x: number[]): SpecOptions & { x: number[] } => ({
    x, scale: [alpha], outScale: [alpha], lo: -1, hi: 1, symmetric: true, levels, passClipped,
  });

  it('T2: APoT weights, 4 bits, alpha 2 (CIFAR and ImageNet weight-gradient rules)', () => {
    const x = [-3.0, -1.3, -0.46, 0.0, 0.06, 0.13, 0.33, 0.52, 0.9, 1.5, 2.5];
    for (const passClipped of [true, false]) {
      const spec = perElement(x, apotWeight(2, apotLevels(3), passClipped, x));
      const r = runQuant(x, spec);
      assertClose(r.y, [-2.0, -1.2, -0.4, 0.0, 0.0, 0.2, 0.4, 0.6, 0.8, 1.6, 2.0], QUANT_TOL, 'T2 forward');
      assertClose(scaleGradient(r, spec), [-1, 0.05, 0.03, 0, -0.03, 0.035, 0.035, 0.04, -0.05, 0.05, 1], 1e-5, 'T2 d/dalpha');
      const inside = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0];
      assert.deepEqual(r.gx, passClipped ? x.map(() => 1) : inside, 'T2 d/dw');
    }
  });

  it('T3: APoT weights, 3 bits, alpha 1.5', () => {
    const x = [-2.0, -0.9, -0.2, 0.1, 0.3, 0.55, 1.2, 1.6];
    const spec = perElement(x, apotWeight(1.5, apotLevels(2), true, x));
    const r = runQuant(x, spec);
    assertClose(r.y, [-1.5, -0.75, -0.375, 0, 0.375, 0.375, 1.5, 1.5], QUANT_TOL, 'T3 forward');
    assertClose(scaleGradient(r, spec), [-1, 0.1, -0.116667, -0.066667, 0.05, -0.116667, 0.2, 1], 5e-6, 'T3 d/dalpha');
  });

  it('T4: APoT weights, 2 bits (ternary by rounding), alpha 0.7', () => {
    const x = [-1.0, -0.36, -0.34, 0, 0.2, 0.36, 0.69, 0.71, 1.4];
    for (const symmetric of [false, true]) {
      const spec = perElement(x, { scale: [0.7], outScale: [0.7], lo: -1, hi: 1, steps: 1, symmetric, passClipped: true });
      const r = runQuant(x, spec);
      assertClose(r.y, [-0.7, -0.7, 0, 0, 0, 0.7, 0.7, 0.7, 0.7], QUANT_TOL, 'T4 forward');
      assertClose(scaleGradient(r, spec), [-1, -0.485714, 0.485714, 0, -0.285714, 0.485714, 0.014286, 1, 1], 5e-6, 'T4 d/dalpha');
      assert.deepEqual(r.gx, x.map(() => 1), 'T4 d/dw (unmasked)');
    }
  });

  it('T5: APoT weights, 5 bits, alpha 2.5', () => {
    const x = [-0.05, 0.3, 1.0, 1.75, 2.2];
    const r = runQuant(x, quantSpec(apotWeight(2.5, apotLevels(4), true, x)));
    assertClose(r.y, [-0.0520833, 0.3125, 0.9375, 1.71875, 2.5], QUANT_TOL, 'T5 forward');
  });

  it('T6: APoT activations, 2/3/4 bits at alpha 2, 5 bits at alpha 1', () => {
    const a = [0, 0.05, 0.33, 0.74, 1.1, 1.45, 1.9, 2.0, 2.6];
    const expected: [1 | 2 | 3 | 4 | 5, number[], number[]][] = [
      [2, [0, 0, 0.5, 0.5, 1, 1, 2, 2, 2], [0, -0.025, 0.085, -0.12, -0.05, -0.225, 0.05, 0, 1]],
      [3, [0, 0, 0.4, 0.8, 1.2, 1.6, 2, 2, 2], [0, -0.025, 0.035, 0.03, 0.05, 0.075, 0.05, 0, 1]],
      [4, [0, 0.0416667, 0.333333, 0.75, 1, 1.5, 2, 2, 2], [0, -0.0041667, 0.0016667, 0.005, -0.05, 0.025, 0.05, 0, 1]],
    ];
    for (const [bits, y, dAlpha] of expected) {
      const spec = perElement(a, { scale: [2], outScale: [2], lo: 0, hi: 1, levels: apotLevels(bits) });
      const r = runQuant(a, spec);
      assertClose(r.y, y, QUANT_TOL, `T6 ${bits}-bit forward`);
      assertClose(scaleGradient(r, spec), dAlpha, 5e-6, `T6 ${bits}-bit d/dalpha`);
      assert.deepEqual(r.gx, [1, 1, 1, 1, 1, 1, 1, 1, 0], `T6 ${bits}-bit d/da (a = alpha passes)`);
    }
    const a5 = [0.013, 0.094, 0.181, 0.49, 0.66, 0.9, 1.3];
    const r = runQuant(a5, quantSpec({ lo: 0, hi: 1, levels: apotLevels(5) }));
    assertClose(r.y, [0.01, 0.10, 0.17, 0.48, 0.65, 0.96, 1.0], QUANT_TOL, 'T6 5-bit forward');
  });

  it('APoT level projection: exact midpoints go to the lower level', () => {
    const r = runQuant([0.75, 0.375, -0.75, 0.125], quantSpec({ lo: -1, hi: 1, symmetric: true, levels: apotLevels(2) }));
    assert.deepEqual(r.y, [0.5, 0.25, -0.5, 0]);
  });

  it('T8: EWGS weights, W2, l = -1, u = 1, delta 0.2', () => {
    const w = [-1.5, -0.6, -0.2, 0.1, 0.4, 0.9, 1.2];
    const g = [0.5, -0.3, 0.2, 0.4, -0.1, 0.25, -0.6];
    const [l, u] = [-1, 1];
    const spec = quantSpec({ scale: [u - l], offset: [l], lo: 0, hi: 1, steps: 3, outScale: [2], outOffset: [-1], delta: 0.2 });
    const r = runQuant(w, spec, g);
    assertClose(r.y, [-1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1, 1], QUANT_TOL, 'T8 forward');
    assertClose(r.gx, [0, -0.308, 0.202667, 0.390667, -0.099333, 0.2475, 0], 5e-6, 'T8 dL/dw');
    // xn = (w - l) / (u - l): d xn/dl = (xn - 1) / (u - l), d xn/du = -xn / (u - l), dL/dxn = outScale * g'
    const [s0, s1] = [r.sums[0][0], r.sums[1][0]];
    assert.ok(Math.abs((2 / (u - l)) * (s1 - s0) - -0.033575) < 1e-6, `T8 dL/dl ${(2 / (u - l)) * (s1 - s0)}`);
    assert.ok(Math.abs((-2 / (u - l)) * s1 - -0.399925) < 1e-6, `T8 dL/du ${(-2 / (u - l)) * s1}`);
  });

  it('T9: EWGS activations, A1, l = 0, u = 2, delta 0.001 (the tie at 0.5 rounds to 0)', () => {
    const a = [0, 0.4, 0.99, 1.0, 1.01, 1.7, 2.5];
    const g = [0.3, -0.2, 0.1, 0.7, -0.4, 0.5, 0.9];
    const spec = quantSpec({ scale: [2], offset: [0], lo: 0, hi: 1, steps: 1, delta: 0.001 });
    const r = runQuant(a, spec, g);
    assert.deepEqual(r.y, [0, 0, 0, 0, 1, 1, 1]);
    const gXn = [0.3, -0.19996, 0.100049, 0.70035, -0.400198, 0.499925];
    assertClose(r.gx, [...gXn.map((v) => v / 2), 0], 5e-6, 'T9 dL/da');
  });

  it('T11: LSQ weights (2 bits) and activations (4 bits), strict clip bounds', () => {
    const v = [-0.31, -0.14, -0.04, 0.06, 0.12, 0.26];
    const wSpec = perElement(v, { scale: [0.1], outScale: [0.1], lo: -2, hi: 1, steps: 1, loInclusive: false, hiInclusive: false });
    const w = runQuant(v, wSpec);
    assertClose(w.y, [-0.2, -0.1, 0, 0.1, 0.1, 0.1], QUANT_TOL, 'T11 weight forward');
    assertClose(scaleGradient(w, wSpec), [-2, 0.4, 0.4, 0.4, 1, 1], 5e-6, 'T11 weight d/ds');
    assert.deepEqual(w.gx, [0, 1, 1, 1, 0, 0], 'T11 weight d/dv');
    const a = [0, 0.1, 0.37, 1.2, 3.74, 4.0, 5.0];
    const aSpec = perElement(a, { scale: [0.25], outScale: [0.25], lo: 0, hi: 15, steps: 1, loInclusive: false, hiInclusive: false });
    const act = runQuant(a, aSpec);
    assertClose(act.y, [0, 0, 1, 5, 15, 15, 15].map((q) => q * 0.25), QUANT_TOL, 'T11 activation forward');
    assertClose(scaleGradient(act, aSpec), [0, -0.4, -0.48, 0.2, 0.04, 15, 15], 5e-6, 'T11 activation d/ds');
    assert.deepEqual(act.gx, [0, 1, 1, 1, 1, 0, 0], 'T11 activation d/dv');
  });

  it('T12: PACT, k = 2, alpha 3 (0 <= a < alpha passes; d/dalpha = sum above)', () => {
    const a = [-0.5, 0.4, 0.6, 1.6, 2.4, 2.99, 3.0, 4.2];
    const spec = perElement(a, { scale: [3], outScale: [3], lo: 0, hi: 1, steps: 3, hiInclusive: false });
    const r = runQuant(a, spec);
    assertClose(r.y, [0, 0, 1, 2, 2, 3, 3, 3], QUANT_TOL, 'T12 forward');
    assert.deepEqual(r.gx, [0, 1, 1, 1, 1, 1, 0, 0], 'T12 d/da');
    assert.deepEqual(r.sums[4], [0, 0, 0, 0, 0, 0, 1, 1], 'T12 d/dalpha');
  });

  it('T13: DoReFa weights, k = 2, through tanh', () => {
    const w = [-0.8, -0.3, -0.05, 0.02, 0.25, 0.6];
    withBackend((be) => {
      const wb = be.upload(Float32Array.from(w), [w.length]);
      const t = be.tanh(wb);
      const m = Math.max(...Array.from(be.download(t), Math.abs));
      const spec = quantSpec({ scale: [2 * m], offset: [-m], lo: 0, hi: 1, steps: 3, outScale: [2], outOffset: [-1] });
      assertClose(take(be, be.quantize(t, spec)), [-1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1], QUANT_TOL, 'T13 forward');
      [wb, t].forEach((b) => be.free(b));
    });
  });

  it('per-channel chunks of dimension 0, and an unbounded range (lo = -Infinity, hi = Infinity)', () => {
    const x = [-3.3, 7.6, 0.26, -0.74];
    const spec = quantSpec({ channels: 2, scale: [0.5, 0.25], outScale: [0.5, 0.25], lo: -Infinity, hi: Infinity, steps: 1 });
    const r = runQuant(x, spec, [1, 2, 3, 4]);
    assertClose(r.y, [-3.5, 7.5, 0.25, -0.75], QUANT_TOL, 'forward');
    assert.deepEqual(r.gx, [1, 2, 3, 4]);
    assert.deepEqual(r.sums[3], [0, 0], 'nothing below an infinite bound');
    assert.deepEqual(r.sums[4], [0, 0], 'nothing above an infinite bound');
    assertClose(r.sums[0], [3, 7], 1e-12, 'sum of g inside');
  });
});
