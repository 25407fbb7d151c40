/**
 * The native backend (oneDNN addon) against the js reference backend: every op forward and
 * backward on realistic shapes with a relative error of at most 1e-4, blocked layouts flowing from
 * op to op through a ResNet chain, memory accounting, argument validation (bad input throws, the
 * process survives) and determinism. Skipped, with the reason, when the addon is not built.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BatchNormParams, Conv2dParams, QuantSpec, Shape } from '../src/backend/backend.js';
import { QUANT_SUMS, numel } from '../src/backend/backend.js';
import { JsBackend, type JsBuf } from '../src/backend/js/index.js';
import { type NativeBackend, type NativeBuf, loadNativeBackend } from '../src/backend/native/index.js';
import { apotLevels as apotLevelSet } from '../src/quant/apot.js';
import { Rng } from '../src/util/rng.js';
import { conv, maxAbs, pool } from './backend-helpers.js';
import { type Pair, Twin, assertClose, native, skip } from './native-twin.js';

function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.ok(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), `${what} differs between runs`);
}

function labelsFor(rng: Rng, n: number, classes: number): Int32Array {
  return Int32Array.from({ length: n }, () => rng.int(classes));
}

describe('native backend', { skip }, () => {
  // ---- memory ---------------------------------------------------------------------------------

  describe('memory', () => {
    it('uploads, downloads, clones, reshapes and zeroes in row-major order for any rank', () => {
      const t = new Twin(1);
      for (const shape of [[], [5], [3, 4], [2, 3, 4], [2, 3, 4, 5], [1, 2, 1, 3, 2]] as Shape[]) {
        const p = t.randomPair(shape);
        assert.deepEqual(t.nat.download(p.nat), t.js.download(p.js), `roundtrip ${shape}`);
        t.agree(t.js.clone(p.js), t.nat.clone(p.nat), `clone ${shape}`, 0);
        const flat = [numel(shape)];
        t.agree(t.js.reshape(p.js, flat), t.nat.reshape(p.nat, flat), `reshape ${shape}`, 0);
        t.agree(t.js.zeros(shape), t.nat.zeros(shape), `zeros ${shape}`, 0);
        t.free(p);
      }
      t.done();
    });

    it('keeps blocked layouts on clone and returns row-major values from download and reshape', () => {
      const t = new Twin(2);
      const p = t.blockedPair([3, 32, 5, 7]);
      const copy = t.nat.clone(p.nat);
      assert.equal(t.nat.layoutOf(copy), t.nat.layoutOf(p.nat));
      assert.deepEqual(t.nat.download(copy), t.js.download(p.js));
      t.nat.free(copy);
      const flat = t.nat.reshape(p.nat, [3, 32 * 35]);
      assert.equal(t.nat.layoutOf(flat), 'ab');
      assert.deepEqual(t.nat.download(flat), t.js.download(p.js));
      t.nat.free(flat);
      t.free(p);
      t.done();
    });

    it('counts live bytes until free and rejects use after free and double free', () => {
      const be = native!;
      const start = be.liveBytes();
      const x = be.upload(new Float32Array(1000), [10, 100]);
      assert.ok(be.liveBytes() >= start + 4000);
      be.free(x);
      assert.equal(be.liveBytes(), start);
      assert.throws(() => be.download(x), /download: x was used after it was freed/);
      assert.throws(() => be.relu(x), /relu: x was used after it was freed/);
      assert.throws(() => be.free(x), /free: buffer was already freed/);
    });
  });

  // ---- elementwise and reductions -------------------------------------------------------------------

  describe('elementwise ops and reductions', () => {
    const layouts = ['plain', 'blocked', 'mixed'] as const;
    for (const layout of layouts) {
      it(`agree with js on ${layout} layouts`, () => {
        const t = new Twin(10);
        const shape = [4, 16, 9, 11];
        const make = (blocked: boolean, scale = 1, shift = 0): Pair =>
          blocked ? t.blockedPair(shape, scale, shift) : t.randomPair(shape, scale, shift);
        const a = make(layout !== 'plain');
        const b = make(layout === 'blocked');
        const y = make(layout !== 'plain', 0.5, 0.1);
        t.agree(t.js.add(a.js, b.js), t.nat.add(a.nat, b.nat), 'add');
        t.agree(t.js.addRelu(a.js, b.js), t.nat.addRelu(a.nat, b.nat), 'addRelu');
        t.agree(t.js.mul(a.js, b.js), t.nat.mul(a.nat, b.nat), 'mul');
        t.agree(t.js.affine(a.js, -1.5, 0.25), t.nat.affine(a.nat, -1.5, 0.25), 'affine');
        t.agree(t.js.relu(a.js), t.nat.relu(a.nat), 'relu');
        t.agree(t.js.reluBackward(b.js, y.js), t.nat.reluBackward(b.nat, y.nat), 'reluBackward');
        t.agree(t.js.tanh(a.js), t.nat.tanh(a.nat), 'tanh');
        t.agree(t.js.tanhBackward(b.js, y.js), t.nat.tanhBackward(b.nat, y.nat), 'tanhBackward');
        t.js.axpyInPlace(a.js, b.js, 0.75);
        t.nat.axpyInPlace(a.nat, b.nat, 0.75);
        assertClose(t.nat.download(a.nat), t.js.download(a.js), 'axpyInPlace');
        assertClose([t.nat.dot(a.nat, b.nat)], [t.js.dot(a.js, b.js)], 'dot');
        for (const channels of [1, 2, 4]) {
          assertClose(t.nat.stats(a.nat, channels), t.js.stats(a.js, channels), `stats over ${channels} channels`);
        }
        t.free(a, b, y);
        t.done();
      });
    }

    it('counts non-finite values and keeps NaN through relu', () => {
      const t = new Twin(11);
      const values = t.random([2, 16, 3, 3]);
      values[3] = NaN;
      values[50] = Infinity;
      values[100] = -Infinity;
      const p = t.pair(values, [2, 16, 3, 3]);
      assert.equal(t.nat.countNonFinite(p.nat), 3);
      const relu = t.nat.relu(p.nat);
      const r = t.nat.download(relu);
      assert.ok(Number.isNaN(r[3]) && r[50] === Infinity && r[100] === 0);
      t.nat.free(relu);
      t.free(p);
      t.done();
    });
  });

  // ---- convolution ----------------------------------------------------------------------------

  describe('convolution', () => {
    interface ConvCase {
      readonly name: string;
      readonly x: Shape;
      readonly w: Shape;
      readonly p: Conv2dParams;
      readonly bias: boolean;
      /** Feed the input in the blocked layout (as from a previous convolution). */
      readonly blocked: boolean;
    }
    const cases: ConvCase[] = [
      { name: 'stem 3->16 3x3 on a 3-channel image', x: [4, 3, 32, 32], w: [16, 3, 3, 3], p: conv(1, 1), bias: false, blocked: false },
      { name: '16->16 3x3 32x32', x: [4, 16, 32, 32], w: [16, 16, 3, 3], p: conv(1, 1), bias: false, blocked: true },
      { name: '32->32 3x3 16x16 (Winograd)', x: [4, 32, 16, 16], w: [32, 32, 3, 3], p: conv(1, 1), bias: false, blocked: true },
      { name: '64->64 3x3 8x8 with bias (Winograd)', x: [8, 64, 8, 8], w: [64, 64, 3, 3], p: conv(1, 1), bias: true, blocked: true },
      { name: '16->32 3x3 stride 2', x: [4, 16, 32, 32], w: [32, 16, 3, 3], p: conv(2, 1), bias: false, blocked: true },
      { name: '1x1 stride 2 projection 32->64', x: [4, 32, 16, 16], w: [64, 32, 1, 1], p: conv(2, 0), bias: false, blocked: true },
      { name: 'depthwise 3x3 (groups 32) with bias', x: [4, 32, 16, 16], w: [32, 1, 3, 3], p: conv(1, 1, 32), bias: true, blocked: true },
      { name: 'grouped 16->32 (groups 2) with bias', x: [2, 16, 8, 8], w: [32, 8, 3, 3], p: conv(1, 1, 2), bias: true, blocked: false },
      {
        name: 'odd sizes: 5->10, kernel 3x2, stride (2, 1), padding (1, 0), bias',
        x: [3, 5, 7, 9], w: [10, 5, 3, 2], p: { stride: [2, 1], padding: [1, 0], groups: 1 }, bias: true, blocked: false,
      },
    ];
    for (const c of cases) {
      it(`forward and both backward passes agree with js: ${c.name}`, () => {
        const t = new Twin(20);
        const x = c.blocked ? t.blockedPair(c.x) : t.randomPair(c.x);
        const w = t.randomPair(c.w, 0.2);
        const b = c.bias ? t.randomPair([c.w[0]], 0.5) : null;
        const y = t.nat.conv2d(x.nat, w.nat, b?.nat ?? null, c.p);
        const yShape = y.shape;
        t.agree(t.js.conv2d(x.js, w.js, b?.js ?? null, c.p), y, 'conv2d');
        const gy = t.blockedPair(yShape);
        t.agree(t.js.conv2dBackwardData(gy.js, w.js, c.x, c.p), t.nat.conv2dBackwardData(gy.nat, w.nat, c.x, c.p), 'conv2dBackwardData');
        const ref = t.js.conv2dBackwardWeights(gy.js, x.js, c.w, c.bias, c.p);
        const got = t.nat.conv2dBackwardWeights(gy.nat, x.nat, c.w, c.bias, c.p);
        t.agree(ref.gw, got.gw, 'conv2dBackwardWeights gw');
        assert.equal(got.gb === null, !c.bias);
        if (ref.gb && got.gb) t.agree(ref.gb, got.gb, 'conv2dBackwardWeights gb');
        t.free(x, w, gy, ...(b ? [b] : []));
        t.done();
      });
    }
  });

  // ---- batch normalization ----------------------------------------------------------------------

  describe('batch normalization', () => {
    const cases = [
      { name: '2d, blocked input, fused ReLU', shape: [8, 16, 16, 16], blocked: true, relu: true },
      { name: '2d, blocked input', shape: [8, 32, 8, 8], blocked: true, relu: false },
      { name: '2d, plain input with 5 channels, fused ReLU', shape: [4, 5, 6, 7], blocked: false, relu: true },
      { name: '1d, fused ReLU', shape: [32, 10], blocked: false, relu: true },
      { name: '1d', shape: [32, 64], blocked: false, relu: false },
    ];
    for (const c of cases) {
      it(`training, running statistics, backward and inference agree with js: ${c.name}`, () => {
        const t = new Twin(30);
        const channels = c.shape[1];
        const x = c.blocked ? t.blockedPair(c.shape, 2, 0.5) : t.randomPair(c.shape, 2, 0.5);
        const gamma = t.randomPair([channels], 0.2, 1);
        const beta = t.randomPair([channels], 0.5);
        const rm = t.randomPair([channels], 0.1);
        const rv = t.pair(Float32Array.from({ length: channels }, () => 1 + t.rng.next()), [channels]);
        const p: BatchNormParams = { eps: 1e-5, momentum: 0.1, relu: c.relu };
        const ref = t.js.batchNormTrain(x.js, gamma.js, beta.js, rm.js, rv.js, p);
        const got = t.nat.batchNormTrain(x.nat, gamma.nat, beta.nat, rm.nat, rv.nat, p);
        assertClose(t.nat.download(got.y), t.js.download(ref.y), 'y');
        assertClose(t.nat.download(rm.nat), t.js.download(rm.js), 'running mean');
        assertClose(t.nat.download(rv.nat), t.js.download(rv.js), 'running variance');
        if (c.blocked) assert.equal(t.nat.layoutOf(got.y), t.nat.layoutOf(x.nat), 'y stays in the input layout');

        const gy = c.blocked ? t.blockedPair(c.shape) : t.randomPair(c.shape);
        // The ReLU mask is the native output's: a value that rounds to the other side of zero would
        // otherwise flip one element of the reference.
        const yNative = t.mirror(got.y);
        const gRef = t.js.batchNormBackward(gy.js, x.js, yNative, gamma.js, ref.saved, p);
        const gGot = t.nat.batchNormBackward(gy.nat, x.nat, got.y, gamma.nat, got.saved, p);
        t.agree(gRef.gx, gGot.gx, 'gx');
        t.agree(gRef.gGamma, gGot.gGamma, 'gGamma');
        t.agree(gRef.gBeta, gGot.gBeta, 'gBeta');
        t.agree(t.js.batchNormInfer(x.js, gamma.js, beta.js, rm.js, rv.js, p),
          t.nat.batchNormInfer(x.nat, gamma.nat, beta.nat, rm.nat, rv.nat, p), 'inference');
        t.js.free(ref.y);
        t.js.free(yNative);
        t.nat.free(got.y);
        t.js.freeSaved(ref.saved);
        t.nat.freeSaved(got.saved);
        t.free(x, gamma, beta, rm, rv, gy);
        t.done();
      });
    }
  });

  // ---- pooling, linear, shortcut --------------------------------------------------------------------

  describe('pooling', () => {
    const cases = [
      { name: 'kernel 2 stride 2, blocked', shape: [4, 16, 8, 8], p: pool(2, 2, 0), blocked: true },
      { name: 'kernel 3 stride 2 padding 1, plain odd sizes', shape: [2, 3, 9, 7], p: pool(3, 2, 1), blocked: false },
      { name: 'kernel 3 stride 1 padding 1, blocked', shape: [2, 32, 5, 5], p: pool(3, 1, 1), blocked: true },
    ];
    for (const c of cases) {
      it(`avgPool2d forward and backward agree with js: ${c.name}`, () => {
        const t = new Twin(40);
        const x = c.blocked ? t.blockedPair(c.shape) : t.randomPair(c.shape);
        const y = t.nat.avgPool2d(x.nat, c.p);
        const gy = c.blocked ? t.blockedPair(y.shape) : t.randomPair(y.shape);
        t.agree(t.js.avgPool2d(x.js, c.p), y, 'avgPool2d');
        t.agree(t.js.avgPool2dBackward(gy.js, c.shape, c.p), t.nat.avgPool2dBackward(gy.nat, c.shape, c.p), 'avgPool2dBackward');
        t.free(x, gy);
        t.done();
      });
    }
    for (const [name, shape, blocked] of [['blocked', [8, 64, 8, 8], true], ['plain odd sizes', [2, 3, 5, 7], false]] as const) {
      it(`globalAvgPool forward and backward agree with js: ${name}`, () => {
        const t = new Twin(41);
        const x = blocked ? t.blockedPair(shape) : t.randomPair(shape);
        const gy = t.randomPair([shape[0], shape[1]]);
        t.agree(t.js.globalAvgPool(x.js), t.nat.globalAvgPool(x.nat), 'globalAvgPool');
        t.agree(t.js.globalAvgPoolBackward(gy.js, shape), t.nat.globalAvgPoolBackward(gy.nat, shape), 'globalAvgPoolBackward');
        t.free(x, gy);
        t.done();
      });
    }
  });

  describe('linear', () => {
    for (const withBias of [true, false]) {
      it(`forward and backward agree with js, ${withBias ? 'with' : 'without'} bias`, () => {
        const t = new Twin(50);
        const x = t.randomPair([32, 64]);
        const w = t.randomPair([10, 64], 0.2);
        const b = withBias ? t.randomPair([10]) : null;
        const gy = t.randomPair([32, 10]);
        t.agree(t.js.linear(x.js, w.js, b?.js ?? null), t.nat.linear(x.nat, w.nat, b?.nat ?? null), 'linear');
        t.agree(t.js.linearBackwardData(gy.js, w.js), t.nat.linearBackwardData(gy.nat, w.nat), 'linearBackwardData');
        const ref = t.js.linearBackwardWeights(gy.js, x.js, withBias);
        const got = t.nat.linearBackwardWeights(gy.nat, x.nat, withBias);
        t.agree(ref.gw, got.gw, 'gw');
        assert.equal(got.gb === null, !withBias);
        if (ref.gb && got.gb) t.agree(ref.gb, got.gb, 'gb');
        t.free(x, w, gy, ...(b ? [b] : []));
        t.done();
      });
    }
  });

  describe('option-A shortcut', () => {
    const cases = [
      { name: 'stride 2, 16 -> 32 channels, blocked', shape: [4, 16, 16, 16], stride: 2, before: 8, after: 8, blocked: true },
      { name: 'stride 2, odd sizes, plain', shape: [2, 3, 5, 7], stride: 2, before: 1, after: 2, blocked: false },
      { name: 'stride 1, 32 -> 48 channels, blocked', shape: [2, 32, 8, 8], stride: 1, before: 0, after: 16, blocked: true },
    ];
    for (const c of cases) {
      it(`shortcutPad forward and backward agree with js: ${c.name}`, () => {
        const t = new Twin(60);
        const x = c.blocked ? t.blockedPair(c.shape) : t.randomPair(c.shape);
        const y = t.nat.shortcutPad(x.nat, c.stride, c.before, c.after);
        const gy = c.blocked ? t.blockedPair(y.shape) : t.randomPair(y.shape);
        t.agree(t.js.shortcutPad(x.js, c.stride, c.before, c.after), y, 'shortcutPad');
        t.agree(t.js.shortcutPadBackward(gy.js, c.shape, c.stride, c.before),
          t.nat.shortcutPadBackward(gy.nat, c.shape, c.stride, c.before), 'shortcutPadBackward');
        t.free(x, gy);
        t.done();
      });
    }
  });

  // ---- loss and optimizers ------------------------------------------------------------------------

  describe('softmax cross-entropy', () => {
    for (const smoothing of [0, 0.1]) {
      it(`loss, probabilities, accuracy and gradient agree with js (smoothing ${smoothing})`, () => {
        const t = new Twin(70);
        const values = t.random([32, 10], 3);
        values.fill(0.5, 10, 20); // a row of ties: the lowest index wins
        const logits = t.pair(values, [32, 10]);
        const labels = labelsFor(t.rng, 32, 10);
        const ref = t.js.softmaxCrossEntropy(logits.js, labels, smoothing);
        const got = t.nat.softmaxCrossEntropy(logits.nat, labels, smoothing);
        assertClose([got.loss], [ref.loss], 'loss');
        assert.equal(got.correct, ref.correct, 'correct');
        for (const scale of [1, 0.5]) {
          t.agree(t.js.softmaxCrossEntropyBackward(ref.probs, labels, smoothing, scale),
            t.nat.softmaxCrossEntropyBackward(got.probs, labels, smoothing, scale), `gradient x ${scale}`);
        }
        t.agree(ref.probs, got.probs, 'probs');
        t.free(logits);
        t.done();
      });
    }
  });

  describe('optimizers', () => {
    const sgd = [
      { name: 'SGD, momentum and weight decay', p: { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 5e-4, nesterov: false } },
      { name: 'SGD, Nesterov', p: { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 1e-4, nesterov: true } },
      { name: 'SGD, dampening', p: { lr: 0.05, momentum: 0.8, dampening: 0.3, weightDecay: 0, nesterov: false } },
      { name: 'SGD without momentum', p: { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 1e-3, nesterov: false } },
    ];
    for (const c of sgd) {
      it(`three steps agree with js: ${c.name}`, () => {
        const t = new Twin(80);
        const shape = [16, 16, 3, 3];
        const param = t.randomPair(shape, 0.1);
        const buf = c.p.momentum > 0 ? t.pair(new Float32Array(numel(shape)), shape) : null;
        for (let step = 0; step < 3; step++) {
          const grad = t.randomPair(shape, 0.01);
          t.js.sgdStep(param.js, grad.js, buf?.js ?? null, c.p);
          t.nat.sgdStep(param.nat, grad.nat, buf?.nat ?? null, c.p);
          t.free(grad);
        }
        assertClose(t.nat.download(param.nat), t.js.download(param.js), 'param');
        if (buf) assertClose(t.nat.download(buf.nat), t.js.download(buf.js), 'momentum buffer');
        t.free(param, ...(buf ? [buf] : []));
        t.done();
      });
    }
    for (const decoupled of [false, true]) {
      it(`three steps agree with js: ${decoupled ? 'AdamW' : 'Adam with L2'}`, () => {
        const t = new Twin(81);
        const shape = [64, 32];
        const param = t.randomPair(shape, 0.1);
        const m = t.pair(new Float32Array(numel(shape)), shape);
        const v = t.pair(new Float32Array(numel(shape)), shape);
        for (let step = 1; step <= 3; step++) {
          const grad = t.randomPair(shape, 0.01);
          const p = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2, decoupled, step };
          t.js.adamStep(param.js, grad.js, m.js, v.js, p);
          t.nat.adamStep(param.nat, grad.nat, m.nat, v.nat, p);
          t.free(grad);
        }
        assertClose(t.nat.download(param.nat), t.js.download(param.js), 'param');
        assertClose(t.nat.download(m.nat), t.js.download(m.js), 'first moment');
        assertClose(t.nat.download(v.nat), t.js.download(v.js), 'second moment');
        t.free(param, m, v);
        t.done();
      });
    }
  });

  // ---- quantization ---------------------------------------------------------------------------

  describe('quantization', () => {
    const apotLevels = Float32Array.from([0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1]);
    function spec(channels: number, scale: number[], overrides: Partial<QuantSpec>): QuantSpec {
      return {
        channels,
        scale: Float32Array.from(scale),
        offset: new Float32Array(channels),
        outScale: Float32Array.from(scale),
        outOffset: new Float32Array(channels),
        lo: 0, hi: 1, symmetric: false, levels: null, steps: 15,
        loInclusive: true, hiInclusive: true, passClipped: false, delta: 0,
        ...overrides,
      };
    }
    const cases = [
      {
        name: 'APoT 4-bit weights, per output channel, symmetric, clipped gradient passed',
        shape: [16, 16, 3, 3], blocked: false, scale: 1, shift: 0,
        spec: (rng: Rng) => ({
          ...spec(16, Array.from({ length: 16 }, () => 0.5 + rng.next()), { lo: -1, hi: 1, symmetric: true, levels: apotLevels, passClipped: true }),
          offset: Float32Array.from({ length: 16 }, () => 0.05 * rng.normal()),
        }),
      },
      {
        name: 'uniform 4-bit activations with EWGS scaling, blocked',
        shape: [8, 16, 16, 16], blocked: true, scale: 1.5, shift: 1,
        spec: () => spec(1, [2.5], { delta: 0.002 }),
      },
      {
        name: 'PACT-style grid with only the clipped sums, EWGS scaling, blocked',
        shape: [8, 16, 16, 16], blocked: true, scale: 1.5, shift: 1,
        spec: () => spec(1, [2.5], { delta: 0.002, onlyClippedSums: true, hiInclusive: false }),
      },
      {
        name: 'unclipped 8-bit grid (infinite bounds)',
        shape: [16, 3, 3, 3], blocked: false, scale: 1, shift: 0,
        spec: () => spec(1, [0.05], { lo: -Infinity, hi: Infinity, steps: 1 }),
      },
      {
        name: 'signed grid with exclusive bounds, per sample of a blocked activation',
        shape: [8, 32, 8, 8], blocked: true, scale: 1, shift: 0,
        spec: (rng: Rng) => spec(8, Array.from({ length: 8 }, () => 0.2 + 0.2 * rng.next()),
          { lo: -4, hi: 3, steps: 1, loInclusive: false, hiInclusive: false }),
      },
    ];
    for (const c of cases) {
      it(`quantize and quantizeBackward agree with js: ${c.name}`, () => {
        const t = new Twin(90);
        const s = c.spec(t.rng);
        const x = c.blocked ? t.blockedPair(c.shape, c.scale, c.shift) : t.randomPair(c.shape, c.scale, c.shift);
        const gy = c.blocked ? t.blockedPair(c.shape) : t.randomPair(c.shape);
        const y = t.nat.quantize(x.nat, s);
        if (c.blocked) assert.equal(t.nat.layoutOf(y), t.nat.layoutOf(x.nat), 'y stays in the input layout');
        t.agree(t.js.quantize(x.js, s), y, 'quantize');
        const ref = t.js.quantizeBackward(x.js, gy.js, s);
        const got = t.nat.quantizeBackward(x.nat, gy.nat, s);
        t.agree(ref.gx, got.gx, 'gx');
        assert.equal(got.sums.length, QUANT_SUMS * s.channels);
        assertClose(got.sums, ref.sums, 'sums');
        t.free(x, gy);
        t.done();
      });
    }

    const normCases = [
      { name: 'APoT 4-bit levels (top clip only), ReLU, blocked', shape: [8, 16, 16, 16], blocked: true, relu: true,
        spec: () => spec(1, [1.7], { lo: -Infinity, levels: apotLevelSet(4) }) },
      { name: 'EWGS grid with an offset and scaling, ReLU, blocked', shape: [8, 32, 8, 8], blocked: true, relu: true,
        spec: () => ({ ...spec(1, [2.1], { delta: 0.05, steps: 7 }), offset: Float32Array.of(-0.1) }) },
      { name: 'PACT grid (exclusive top), no ReLU, plain with 5 channels', shape: [4, 5, 6, 7], blocked: false, relu: false,
        spec: () => spec(1, [1.2], { hiInclusive: false, steps: 3 }) },
    ];
    for (const c of normCases) {
      it(`batch norm fused with quantize agrees with js and with the separate native ops: ${c.name}`, () => {
        const t = new Twin(92);
        const channels = c.shape[1];
        const s = c.spec();
        const x = c.blocked ? t.blockedPair(c.shape, 2, 0.5) : t.randomPair(c.shape, 2, 0.5);
        const gq = c.blocked ? t.blockedPair(c.shape) : t.randomPair(c.shape);
        const gamma = t.randomPair([channels], 0.2, 1);
        const beta = t.randomPair([channels], 0.5);
        const stats = () => [t.randomPair([channels], 0.1), t.pair(Float32Array.from({ length: channels }, (_, i) => 1 + i / channels), [channels])];
        const [rm, rv] = stats();
        const [rmSeparate, rvSeparate] = stats();
        const p: BatchNormParams = { eps: 1e-5, momentum: 0.1, relu: c.relu };
        const ref = t.js.batchNormQuantizeTrain(x.js, gamma.js, beta.js, rm.js, rv.js, p, s);
        const got = t.nat.batchNormQuantizeTrain(x.nat, gamma.nat, beta.nat, rm.nat, rv.nat, p, s);
        if (c.blocked) assert.equal(t.nat.layoutOf(got.y), t.nat.layoutOf(x.nat), 'q stays in the input layout');
        const q = t.nat.download(got.y);
        // Separately on native: oneDNN's batch norm, then the quantize kernel.
        const bn = t.nat.batchNormTrain(x.nat, gamma.nat, beta.nat, rmSeparate.nat, rvSeparate.nat, p);
        const separate = t.nat.quantize(bn.y, s);
        for (const [what, want] of [['js', t.js.download(ref.y)], ['separate ops', t.nat.download(separate)]] as const) {
          // Values agree to float rounding; the batch-norm output may differ in its last bit, moving an
          // element across a level threshold.
          const step = 1e-5 * maxAbs(want);
          const moved = q.filter((v, i) => !(Math.abs(v - want[i]) <= step)).length;
          assert.ok(moved <= q.length / 1000, `q vs ${what}: ${moved} of ${q.length} elements on another level`);
        }
        assertClose(t.nat.download(rm.nat), t.js.download(rm.js), 'running mean');
        assertClose(t.nat.download(rv.nat), t.js.download(rv.js), 'running variance');
        assertClose(t.nat.download(rv.nat), t.nat.download(rvSeparate.nat), 'running variance vs oneDNN');

        const want = t.js.batchNormQuantizeBackward(gq.js, x.js, gamma.js, beta.js, ref.saved, p, s);
        const grads = t.nat.batchNormQuantizeBackward(gq.nat, x.nat, gamma.nat, beta.nat, got.saved, p, s);
        assertClose(grads.sums, want.sums, 'quantizer sums');
        const qb = t.nat.quantizeBackward(bn.y, gq.nat, s);
        const bnb = t.nat.batchNormBackward(qb.gx, x.nat, bn.y, gamma.nat, bn.saved, p);
        assertClose(grads.sums, qb.sums, 'quantizer sums vs separate ops');
        for (const [what, a, b, sep] of [['gx', grads.gx, want.gx, bnb.gx], ['gGamma', grads.gGamma, want.gGamma, bnb.gGamma], ['gBeta', grads.gBeta, want.gBeta, bnb.gBeta]] as const) {
          assertClose(t.nat.download(a), t.nat.download(sep), `${what} vs separate ops`);
          t.agree(b, a, what);
          t.nat.free(sep);
        }
        t.nat.free(qb.gx);
        t.nat.free(separate);
        t.nat.free(bn.y);
        t.nat.freeSaved(bn.saved);
        t.js.free(ref.y);
        t.nat.free(got.y);
        t.js.freeSaved(ref.saved);
        t.nat.freeSaved(got.saved);
        t.free(x, gq, gamma, beta, rm, rv, rmSeparate, rvSeparate);
        t.done();
      });
    }

    it('the residual join fused with quantize equals addRelu then quantize, on both backends', () => {
      const t = new Twin(95);
      const a = t.blockedPair([4, 16, 8, 8], 1, 0.2);
      const b = t.blockedPair([4, 16, 8, 8]);
      for (const s of [spec(1, [1.3], { lo: -Infinity, levels: apotLevelSet(4) }), spec(1, [2], { steps: 7, delta: 0.1 })]) {
        for (const [be, x, y] of [[t.js, a.js, b.js], [t.nat, a.nat, b.nat]] as const) {
          const fused = (be as NativeBackend).addReluQuantize(x as NativeBuf, y as NativeBuf, s);
          const sum = (be as NativeBackend).addRelu(x as NativeBuf, y as NativeBuf);
          const q = (be as NativeBackend).quantize(sum, s);
          assertSameBits(be.download(fused.y as never), be.download(sum as never), `${be.name} join`);
          assertSameBits(be.download(fused.q as never), be.download(q as never), `${be.name} quantized join`);
          for (const buf of [fused.y, fused.q, sum, q]) be.free(buf as never);
        }
        const want = t.js.addReluQuantize(a.js, b.js, s);
        const got = t.nat.addReluQuantize(a.nat, b.nat, s);
        t.agree(want.y, got.y, 'join');
        t.agree(want.q, got.q, 'quantized join');
      }
      t.free(a, b);
      t.done();
    });

    it('batch norm fused with quantize refuses a per-channel quantizer, naming the op', () => {
      const t = new Twin(93);
      const x = t.randomPair([2, 4, 3, 3]);
      const v = t.pair(new Float32Array(4).fill(1), [4]);
      const perChannel = spec(2, [1, 1], {});
      for (const be of [t.js, t.nat] as const) {
        const b = be === t.js ? 'js' : 'nat';
        assert.throws(() => be.batchNormQuantizeTrain(x[b] as never, v[b] as never, v[b] as never, v[b] as never, v[b] as never, { eps: 1e-5, momentum: 0.1, relu: true }, perChannel),
          /batchNormQuantizeTrain: the quantizer must be per tensor \(1 channel\), got 2 channels/);
      }
      t.free(x, v);
      t.done();
    });

    it('onlyClippedSums: the in-range sums are 0, the clipped sums and gx are those of the full spec', () => {
      const t = new Twin(94);
      const x = t.blockedPair([4, 16, 8, 8], 1.5, 1);
      const gy = t.blockedPair([4, 16, 8, 8]);
      for (const delta of [0, 0.01]) {
        const full = spec(1, [2.5], { delta });
        const clipped = { ...full, onlyClippedSums: true };
        for (const [be, xb, gb] of [[t.js, x.js, gy.js], [t.nat, x.nat, gy.nat]] as const) {
          const a = (be as NativeBackend).quantizeBackward(xb as NativeBuf, gb as NativeBuf, full);
          const b = (be as NativeBackend).quantizeBackward(xb as NativeBuf, gb as NativeBuf, clipped);
          assert.deepEqual(Array.from(b.sums.subarray(0, 3)), [0, 0, 0], `${be.name}, delta ${delta}`);
          assert.deepEqual(Array.from(b.sums.subarray(3)), Array.from(a.sums.subarray(3)), `${be.name}, delta ${delta}: clipped sums`);
          assert.ok(a.sums[0] !== 0, 'the full spec has in-range terms');
          assertSameBits(be.download(b.gx as never), be.download(a.gx as never), `${be.name} gx`);
          be.free(a.gx as never);
          be.free(b.gx as never);
        }
      }
      t.free(x, gy);
      t.done();
    });

    /** The floats within `radius` steps of each midpoint of consecutive levels, both signs, and NaN. */
    function aroundMidpoints(levels: Float32Array, radius: number): Float32Array {
      const bits = new Uint32Array(1);
      const value = new Float32Array(bits.buffer);
      const out: number[] = [Number.NaN, 0, -0, 2, -2];
      for (let k = 0; k + 1 < levels.length; k++) {
        value[0] = (levels[k] + levels[k + 1]) / 2;
        const center = bits[0];
        for (let d = -radius; d <= radius; d++) {
          bits[0] = center + d;
          out.push(value[0], -value[0]);
        }
      }
      return Float32Array.from(out);
    }

    it('level projection picks exactly the level js picks, at every float next to a midpoint', () => {
      const t = new Twin(91);
      // 4 to 64 levels: every size class of the native projection.
      for (const [bits, symmetric] of [[2, false], [3, true], [4, false], [5, false], [6, true]] as const) {
        const levels = apotLevelSet(bits);
        const values = aroundMidpoints(levels, 3);
        const x = t.pair(values, [values.length]);
        const s = spec(1, [1], { lo: -2, hi: 2, symmetric, levels });
        const want = t.js.quantize(x.js, s);
        const got = t.nat.quantize(x.nat, s);
        assert.deepEqual(t.nat.download(got), t.js.download(want), `${levels.length} levels${symmetric ? ', symmetric' : ''}`);
        t.free(x, { js: want, nat: got });
      }
      t.done();
    });
  });

  // ---- a ResNet chain: layouts flow from op to op -------------------------------------------------

  /**
   * Runs ops on the native backend, keeping every result; with a Twin, each op is first evaluated
   * by the js backend on the same (downloaded) inputs and the results compared, so every op of the
   * chain is checked where it sits, without accumulating differences.
   */
  class Chain {
    readonly values = new Map<string, Float32Array>();
    readonly layouts = new Map<string, string>();
    readonly #kept: NativeBuf[] = [];
    readonly #saved: ReturnType<NativeBackend['batchNormTrain']>['saved'][] = [];

    constructor(readonly nat: NativeBackend, readonly twin: Twin | null) {}

    keep(b: NativeBuf): NativeBuf {
      this.#kept.push(b);
      return b;
    }

    upload(rng: Rng, shape: Shape, scale = 1, shift = 0): NativeBuf {
      return this.keep(this.nat.upload(Float32Array.from({ length: numel(shape) }, () => rng.normal() * scale + shift), shape));
    }

    ops(names: string[], native: () => NativeBuf[], reference: (js: JsBackend, m: (b: NativeBuf) => JsBuf) => JsBuf[]): NativeBuf[] {
      let expected: Float32Array[] | null = null;
      if (this.twin) {
        const { js } = this.twin;
        const mirrors: JsBuf[] = [];
        const refs = reference(js, (b) => {
          const mirror = this.twin!.mirror(b);
          mirrors.push(mirror);
          return mirror;
        });
        expected = refs.map((r) => js.download(r));
        refs.forEach((r) => js.free(r));
        mirrors.forEach((m) => js.free(m));
      }
      const outs = native().map((b) => this.keep(b));
      outs.forEach((b, i) => {
        const values = this.nat.download(b);
        this.values.set(names[i], values);
        this.layouts.set(names[i], this.nat.layoutOf(b));
        if (expected) assertClose(values, expected[i], names[i]);
      });
      return outs;
    }

    op(name: string, native: () => NativeBuf, reference: (js: JsBackend, m: (b: NativeBuf) => JsBuf) => JsBuf): NativeBuf {
      return this.ops([name], () => [native()], (js, m) => [reference(js, m)])[0];
    }

    saved(s: ReturnType<NativeBackend['batchNormTrain']>['saved']): typeof s {
      this.#saved.push(s);
      return s;
    }

    release(): void {
      this.#kept.forEach((b) => this.nat.free(b));
      this.#saved.forEach((s) => this.nat.freeSaved(s));
    }
  }

  interface BatchNormLayer {
    readonly gamma: NativeBuf;
    readonly beta: NativeBuf;
    readonly mean: NativeBuf;
    readonly variance: NativeBuf;
    readonly p: BatchNormParams;
  }

  interface ConvBnLayer {
    readonly name: string;
    readonly w: NativeBuf;
    readonly stride: number;
    readonly bn: BatchNormLayer;
    input?: NativeBuf;
    pre?: NativeBuf;
    out?: NativeBuf;
    saved?: ReturnType<NativeBackend['batchNormTrain']>['saved'];
  }

  /**
   * Stem, one basic block, one downsampling block with the option-A shortcut, global pooling, a
   * linear classifier and cross-entropy; then the whole backward pass. Returns the loss.
   */
  function resnetChain(chain: Chain, seed: number): number {
    const nat = chain.nat;
    const rng = new Rng(seed);
    const n = 8;
    const bnLayer = (c: number, relu: boolean): BatchNormLayer => ({
      gamma: chain.upload(rng, [c], 0.1, 1),
      beta: chain.upload(rng, [c], 0.1),
      mean: chain.upload(rng, [c], 0.1),
      variance: chain.keep(nat.upload(Float32Array.from({ length: c }, () => 1 + rng.next()), [c])),
      p: { eps: 1e-5, momentum: 0.1, relu },
    });
    const layer = (name: string, o: number, c: number, stride: number, relu: boolean): ConvBnLayer => ({
      name, w: chain.upload(rng, [o, c, 3, 3], Math.sqrt(2 / (9 * c))), stride, bn: bnLayer(o, relu),
    });
    const forward = (l: ConvBnLayer, input: NativeBuf): NativeBuf => {
      const p = conv(l.stride, 1);
      l.input = input;
      l.pre = chain.op(`${l.name} conv`, () => nat.conv2d(input, l.w, null, p), (js, m) => js.conv2d(m(input), m(l.w), null, p));
      const { gamma, beta, mean, variance } = l.bn;
      l.out = chain.op(`${l.name} bn`, () => {
        const r = nat.batchNormTrain(l.pre!, gamma, beta, mean, variance, l.bn.p);
        l.saved = chain.saved(r.saved);
        return r.y;
      }, (js, m) => {
        const r = js.batchNormTrain(m(l.pre!), m(gamma), m(beta), m(mean), m(variance), l.bn.p);
        js.freeSaved(r.saved);
        return r.y;
      });
      return l.out;
    };
    /** Gradient of the layer input (null for the stem, whose input is the image). */
    const backward = (l: ConvBnLayer, gOut: NativeBuf, needInputGrad: boolean): NativeBuf | null => {
      const { gamma, beta, mean, variance, p } = l.bn;
      const [gPre] = chain.ops([`${l.name} bn gx`, `${l.name} bn gGamma`, `${l.name} bn gBeta`], () => {
        const g = nat.batchNormBackward(gOut, l.pre!, l.out!, gamma, l.saved!, p);
        return [g.gx, g.gGamma, g.gBeta];
      }, (js, m) => {
        const x = m(l.pre!);
        const fwd = js.batchNormTrain(x, m(gamma), m(beta), m(mean), m(variance), p);
        const g = js.batchNormBackward(m(gOut), x, m(l.out!), m(gamma), fwd.saved, p);
        js.free(fwd.y);
        js.freeSaved(fwd.saved);
        return [g.gx, g.gGamma, g.gBeta];
      });
      const cp = conv(l.stride, 1);
      chain.op(`${l.name} gw`, () => {
        const g = nat.conv2dBackwardWeights(gPre, l.input!, l.w.shape, false, cp);
        return g.gw;
      }, (js, m) => js.conv2dBackwardWeights(m(gPre), m(l.input!), l.w.shape, false, cp).gw);
      if (!needInputGrad) return null;
      return chain.op(`${l.name} gx`, () => nat.conv2dBackwardData(gPre, l.w, l.input!.shape, cp),
        (js, m) => js.conv2dBackwardData(m(gPre), m(l.w), l.input!.shape, cp));
    };
    const sum = (name: string, a: NativeBuf, b: NativeBuf): NativeBuf => chain.op(name, () => {
      const out = nat.clone(a);
      nat.axpyInPlace(out, b, 1);
      return out;
    }, (js, m) => {
      const out = js.clone(m(a));
      js.axpyInPlace(out, m(b), 1);
      return out;
    });

    const image = chain.upload(rng, [n, 3, 16, 16]);
    const stem = layer('stem', 16, 3, 1, true);
    const l1 = layer('block1a', 16, 16, 1, true);
    const l2 = layer('block1b', 16, 16, 1, false);
    const l3 = layer('block2a', 32, 16, 2, true);
    const l4 = layer('block2b', 32, 32, 1, false);
    const wFc = chain.upload(rng, [10, 32], 0.2);
    const bFc = chain.upload(rng, [10], 0.1);
    const labels = labelsFor(rng, n, 10);

    const a0 = forward(stem, image);
    const h2 = forward(l2, forward(l1, a0));
    const a1 = chain.op('block1 join', () => nat.addRelu(h2, a0), (js, m) => js.addRelu(m(h2), m(a0)));
    const h4 = forward(l4, forward(l3, a1));
    const shortcut = chain.op('shortcut', () => nat.shortcutPad(a1, 2, 8, 8), (js, m) => js.shortcutPad(m(a1), 2, 8, 8));
    const a2 = chain.op('block2 join', () => nat.addRelu(h4, shortcut), (js, m) => js.addRelu(m(h4), m(shortcut)));
    const pooled = chain.op('pool', () => nat.globalAvgPool(a2), (js, m) => js.globalAvgPool(m(a2)));
    const logits = chain.op('fc', () => nat.linear(pooled, wFc, bFc), (js, m) => js.linear(m(pooled), m(wFc), m(bFc)));
    const ce = nat.softmaxCrossEntropy(logits, labels, 0.1);
    chain.keep(ce.probs);
    if (chain.twin) {
      const mirror = chain.twin.mirror(logits);
      const ref = chain.twin.js.softmaxCrossEntropy(mirror, labels, 0.1);
      assertClose([ce.loss], [ref.loss], 'loss');
      chain.twin.js.free(ref.probs);
      chain.twin.js.free(mirror);
    }

    const gLogits = chain.op('loss gradient', () => nat.softmaxCrossEntropyBackward(ce.probs, labels, 0.1, 1),
      (js, m) => js.softmaxCrossEntropyBackward(m(ce.probs), labels, 0.1, 1));
    const gPooled = chain.op('fc gx', () => nat.linearBackwardData(gLogits, wFc), (js, m) => js.linearBackwardData(m(gLogits), m(wFc)));
    chain.ops(['fc gw', 'fc gb'], () => {
      const g = nat.linearBackwardWeights(gLogits, pooled, true);
      return [g.gw, g.gb!];
    }, (js, m) => {
      const g = js.linearBackwardWeights(m(gLogits), m(pooled), true);
      return [g.gw, g.gb!];
    });
    const gA2 = chain.op('pool gx', () => nat.globalAvgPoolBackward(gPooled, a2.shape), (js, m) => js.globalAvgPoolBackward(m(gPooled), a2.shape));
    const gJoin2 = chain.op('block2 join gx', () => nat.reluBackward(gA2, a2), (js, m) => js.reluBackward(m(gA2), m(a2)));
    const gShortcut = chain.op('shortcut gx', () => nat.shortcutPadBackward(gJoin2, a1.shape, 2, 8),
      (js, m) => js.shortcutPadBackward(m(gJoin2), a1.shape, 2, 8));
    const gA1 = sum('block1 output gx', backward(l3, backward(l4, gJoin2, true)!, true)!, gShortcut);
    const gJoin1 = chain.op('block1 join gx', () => nat.reluBackward(gA1, a1), (js, m) => js.reluBackward(m(gA1), m(a1)));
    const gA0 = sum('stem output gx', backward(l1, backward(l2, gJoin1, true)!, true)!, gJoin1);
    backward(stem, gA0, false);
    return ce.loss;
  }

  describe('a ResNet chain', () => {
    it('agrees with js at every op, forward and backward, with activations kept blocked throughout', () => {
      const t = new Twin(100);
      const chain = new Chain(t.nat, t);
      resnetChain(chain, 7);
      const blocked = /^aBcd(8|16)b$/;
      for (const name of ['stem bn', 'block1 join', 'block2a conv', 'block2b bn', 'shortcut', 'block2 join', 'pool gx',
        'block2 join gx', 'shortcut gx', 'block2b bn gx', 'block2a gx', 'block1 output gx', 'stem bn gx']) {
        assert.match(chain.layouts.get(name)!, blocked, `${name} is blocked`);
      }
      chain.release();
      t.done();
    });

    it('is deterministic: the same inputs give identical bits, for the default and a single thread', () => {
      for (const threads of [0, 1]) {
        const be = loadNativeBackend(threads)!;
        const start = be.liveBytes();
        const runs = [0, 1].map(() => {
          const chain = new Chain(be, null);
          const loss = resnetChain(chain, 11);
          chain.release();
          return { loss, values: chain.values };
        });
        assert.equal(be.liveBytes(), start);
        assert.equal(runs[0].loss, runs[1].loss);
        for (const [name, values] of runs[0].values) assertSameBits(values, runs[1].values.get(name)!, `${name} (${be.threads} threads)`);
      }
    });
  });

  // ---- threads ------------------------------------------------------------------------------

  describe('worker threads', () => {
    it('runs ops from a worker and the main thread at the same time with the same results', async () => {
      const moduleUrl = new URL('../src/backend/native/index.js', import.meta.url).href;
      // Each side convolves the same input 20 times and reports the sum of the last output.
      const source = `
        const { parentPort } = require('node:worker_threads');
        import(${JSON.stringify(moduleUrl)}).then(({ loadNativeBackend }) => {
          const be = loadNativeBackend(1);
          const x = be.upload(Float32Array.from({ length: 4 * 16 * 16 * 16 }, (_, i) => Math.sin(i)), [4, 16, 16, 16]);
          const w = be.upload(Float32Array.from({ length: 16 * 16 * 9 }, (_, i) => Math.cos(i) / 12), [16, 16, 3, 3]);
          parentPort.postMessage('ready');
          let sum = 0;
          for (let k = 0; k < 20; k++) {
            const y = be.conv2d(x, w, null, { stride: [1, 1], padding: [1, 1], groups: 1 });
            sum = be.download(y).reduce((a, b) => a + b, 0);
            be.free(y);
          }
          be.free(x);
          be.free(w);
          parentPort.postMessage(sum);
        });`;
      const { Worker } = await import('node:worker_threads');
      const worker = new Worker(source, { eval: true });
      const message = (): Promise<unknown> => new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      assert.equal(await message(), 'ready');
      const fromWorker = message();
      const be = loadNativeBackend(1)!;
      const x = be.upload(Float32Array.from({ length: 4 * 16 * 16 * 16 }, (_, i) => Math.sin(i)), [4, 16, 16, 16]);
      const w = be.upload(Float32Array.from({ length: 16 * 16 * 9 }, (_, i) => Math.cos(i) / 12), [16, 16, 3, 3]);
      let sum = 0;
      for (let k = 0; k < 20; k++) {
        const y = be.conv2d(x, w, null, conv(1, 1));
        sum = be.download(y).reduce((a, b) => a + b, 0);
        be.free(y);
      }
      be.free(x);
      be.free(w);
      assert.equal(await fromWorker, sum);
      await worker.terminate();
    });
  });

  // ---- argument validation --------------------------------------------------------------------

  describe('argument validation', () => {
    it('throws errors naming the op and the shapes, leaks nothing, and keeps working', () => {
      const be = native!;
      const js = new JsBackend();
      const start = be.liveBytes();
      const x = be.upload(new Float32Array(4 * 16 * 8 * 8), [4, 16, 8, 8]);
      const w = be.upload(new Float32Array(16 * 8 * 9), [16, 8, 3, 3]);
      const a = be.upload(new Float32Array(6), [2, 3]);
      const b = be.upload(new Float32Array(6), [3, 2]);
      const logits = be.upload(new Float32Array(40), [4, 10]);
      const c16 = be.upload(new Float32Array(16).fill(1), [16]);
      const c8 = be.upload(new Float32Array(8).fill(1), [8]);
      const small = be.upload(new Float32Array(8 * 4), [1, 8, 2, 2]);
      const row = be.upload(new Float32Array(16), [1, 16]);
      const freed = be.upload(new Float32Array(6), [2, 3]);
      be.free(freed);
      const bnp: BatchNormParams = { eps: 1e-5, momentum: 0.1, relu: true };
      const trained = be.batchNormTrain(x, c16, c16, c16, c16, bnp);
      be.freeSaved(trained.saved);
      const jsBuf = js.upload(new Float32Array(6), [2, 3]);
      const fake = { shape: [2, 3], backend: 'native' } as unknown as NativeBuf;
      const cases: [string, () => unknown, RegExp][] = [
        ['channel mismatch', () => be.conv2d(x, w, null, conv(1, 1)), /conv2d: x \[4, 16, 8, 8\] has 16 channels but w \[16, 8, 3, 3\] expects 8/],
        ['groups not dividing', () => be.conv2d(x, w, null, conv(1, 1, 3)), /conv2d: groups 3 must divide/],
        ['rank', () => be.conv2d(a, w, null, conv(1, 1)), /conv2d: x must have rank 4, got shape \[2, 3\]/],
        ['kernel larger than input', () => be.conv2d(small, w, null, conv(1, 0)), /conv2d: kernel of w \[16, 8, 3, 3\] is larger than the padded input x \[1, 8, 2, 2\]/],
        ['non-integer stride', () => be.conv2d(x, w, null, { stride: [1.5, 1], padding: [1, 1], groups: 2 }), /conv2d: strideH must be an integer/],
        ['js buffer', () => be.add(jsBuf as unknown as NativeBuf, a), /add: a must be a native-backend buffer, got object/],
        ['number', () => be.relu(3 as unknown as NativeBuf), /relu: x must be a native-backend buffer, got number 3/],
        ['look-alike object', () => be.relu(fake), /relu: x must be a native-backend buffer/],
        ['null', () => be.relu(null as unknown as NativeBuf), /relu: x must be a native-backend buffer, got null/],
        ['shape mismatch', () => be.add(a, b), /add: a \[2, 3\] and b \[3, 2\] must have the same shape/],
        ['freed buffer', () => be.add(a, freed), /add: b was used after it was freed/],
        ['freed saved state', () => be.batchNormBackward(trained.y, x, trained.y, c16, trained.saved, bnp), /batchNormBackward: saved was used after it was freed/],
        ['label out of range', () => be.softmaxCrossEntropy(logits, Int32Array.of(0, 10, 1, 2), 0), /softmaxCrossEntropy: label 10 at row 1 is outside \[0, 10\)/],
        ['negative label', () => be.softmaxCrossEntropyBackward(logits, Int32Array.of(0, 1, -1, 2), 0, 1), /label -1 at row 2/],
        ['label count', () => be.softmaxCrossEntropy(logits, Int32Array.of(0, 1, 2), 0), /softmaxCrossEntropy: 3 labels for logits with 4 rows/],
        ['labels type', () => be.softmaxCrossEntropy(logits, Float32Array.of(0, 1, 2, 3) as unknown as Int32Array, 0), /labels must be an Int32Array/],
        ['per-channel shape', () => be.batchNormTrain(x, c8, c16, c16, c16, bnp), /batchNormTrain: gamma has shape \[8\] but x \[4, 16, 8, 8\] has 16 channels/],
        ['one value per channel', () => be.batchNormTrain(row, c16, c16, c16, c16, bnp), /one value per channel/],
        ['gradient shape', () => be.conv2dBackwardData(x, w, [4, 8, 10, 10], conv(1, 1)), /conv2dBackwardData: gy has shape \[4, 16, 8, 8\], expected \[4, 16, 10, 10\]/],
        ['linear features', () => be.linear(a, b, null), /linear: x \[2, 3\] has 3 features but w \[3, 2\] expects 2/],
        ['reshape size', () => be.reshape(a, [4, 2]), /reshape: cannot reshape \[2, 3\]/],
        ['upload size', () => be.upload(new Float32Array(5), [2, 3]), /upload: 5 values do not fill shape \[2, 3\]/],
        ['negative dimension', () => be.zeros([2, -1]), /zeros: shape must be an array of non-negative integers/],
        ['too large', () => be.zeros([1 << 20, 1 << 11]), /zeros: tensor of shape \[1048576, 2048\] needs 8192 MiB, more than the 4 GiB/],
        ['stats channels', () => be.stats(a, 3), /stats: dimension 0 of \[2, 3\] does not split into 3 channels/],
        ['quant spec', () => be.quantize(a, { channels: 2, scale: new Float32Array(1) } as unknown as QuantSpec), /quantize: spec.scale must be a Float32Array of 2 values/],
        ['momentum without buffer', () => be.sgdStep(a, a, null, { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false }), /needs a momentum buffer/],
        ['pool padding', () => be.avgPool2d(x, pool(2, 2, 2)), /avgPool2d: padding \(2, 2\) must be at most half the kernel/],
        ['shortcut gradient', () => be.shortcutPadBackward(x, [4, 16, 8, 8], 2, 0), /shortcutPadBackward: gy \[4, 16, 8, 8\] is not the padded, strided shape/],
        ['non-finite scalar', () => be.affine(a, NaN, 0), /affine: alpha must be a finite number/],
      ];
      for (const [name, call, message] of cases) assert.throws(call, message, name);
      be.free(trained.y);
      for (const buf of [x, w, a, b, logits, c16, c8, small, row]) be.free(buf);
      js.free(jsBuf);
      assert.equal(be.liveBytes(), start, 'failed calls leaked native memory');
      const ok = be.upload(Float32Array.of(-1, 2), [2]);
      const relu = be.relu(ok);
      assert.deepEqual(Array.from(be.download(relu)), [0, 2]);
      be.free(ok);
      be.free(relu);
    });
  });
});
