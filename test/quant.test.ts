/** The quantizers against the test vectors of the spec (shared/docs/quant-methods.md §8). */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import { createBackend, getBackend, setBackend } from '../src/backend/index.js';
import { ApotActivationQuantizer, ApotWeightQuantizer, apotIntegerLevels, apotLevels } from '../src/quant/apot.js';
import { EwgsQuantizer } from '../src/quant/ewgs.js';
import { Int8WeightQuantizer } from '../src/quant/int8.js';
import { LsqQuantizer } from '../src/quant/lsq.js';
import { PactQuantizer } from '../src/quant/pact.js';
import type { TensorQuantizer } from '../src/quant/quantizer.js';
import { UniformQuantizer } from '../src/quant/uniform.js';
import { Tensor, backward, noGrad, tidy } from '../src/tensor/tensor.js';

/** Every test vector runs on every backend that is available. */
function availableBackends(): Backend[] {
  const list = [createBackend('js')];
  try {
    list.push(createBackend('native'));
  } catch (e) {
    console.log(`# native backend not available (${(e as Error).message}): js only`);
  }
  return list;
}

function near(actual: ArrayLike<number>, expected: readonly number[], tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  expected.forEach((v, i) => assert.ok(Math.abs(actual[i] - v) <= tol, `${what}[${i}]: ${actual[i]} vs ${v}`));
}

/** Forward, then backward with upstream gradient g (default ones): output, dL/dx, dL/dparams. */
function run(q: TensorQuantizer, x: readonly number[], g?: readonly number[]) {
  const input = Tensor.fromArray(x, [x.length], true);
  const params = q.parameters.map(([, p]) => p);
  params.forEach((p) => {
    p.grad?.dispose();
    p.grad = null;
  });
  const y = tidy(() => {
    const out = q.apply(input, 'test.layer');
    const values = out.toArray();
    backward(out, Tensor.fromArray(g ?? x.map(() => 1), [x.length]));
    return values;
  });
  const result = { y, gx: input.grad!.toArray(), gp: params.map((p) => p.grad?.toArray() ?? new Float32Array(0)) };
  input.dispose();
  return result;
}

/**
 * Weights whose first entries standardize (mean 0, unbiased std 1) to exactly `standardized`:
 * zeros and two balancing values fix the mean and the variance.
 */
function preStandardized(standardized: readonly number[]): number[] {
  const n = standardized.length;
  const zeros = 40;
  const total = n + zeros + 2;
  const sum = standardized.reduce((a, b) => a + b, 0);
  const sumSq = standardized.reduce((a, b) => a + b * b, 0);
  const rest = total - 1 - sumSq; // a^2 + b^2 with a + b = -sum
  const d = Math.sqrt(2 * rest - sum * sum);
  return [...standardized, ...new Array(zeros).fill(0), (-sum + d) / 2, (-sum - d) / 2];
}

/** Run a suite's tests with `backend` active. */
function onBackend(backend: Backend): void {
  let previous: Backend;
  before(() => {
    previous = getBackend();
    setBackend(backend);
  });
  after(() => setBackend(previous));
}

for (const backend of availableBackends()) {
  describe(`APoT (${backend.name})`, () => {
    onBackend(backend);
    test('T1: level sets as exact integer numerators', () => {
      assert.deepEqual(apotIntegerLevels(2), { numerators: [0, 1, 2, 4], denominator: 4 });
      assert.deepEqual(apotIntegerLevels(3), { numerators: [0, 1, 2, 3, 4, 6, 8, 10], denominator: 10 });
      assert.deepEqual(apotIntegerLevels(4), { numerators: [0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48], denominator: 48 });
      assert.deepEqual(apotIntegerLevels(5).numerators, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 17, 20, 21, 24, 28, 32, 34, 36, 38, 48, 52, 64, 65, 68, 69, 72, 76, 96, 100]);
      assert.equal(apotIntegerLevels(5).denominator, 100);
      near(apotLevels(3), [0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1], 1e-6, 'B=3');
    });

    const weightCase = (bits: number, alpha: number, wt: number[], yExp: number[], dAlpha: number[]) => {
      const q = new ApotWeightQuantizer({ bits });
      q.alpha.assign(new Float32Array([alpha]));
      const w = preStandardized(wt);
      const n = wt.length;
      const { y } = run(q, w);
      near(y.subarray(0, n), yExp, 2e-6, `W${bits} output`);
      // Alpha's gradient element by element: a one-hot upstream gradient per element.
      wt.forEach((_, i) => {
        const g = w.map((__, j) => (j === i ? 1 : 0));
        const r = run(q, w, g);
        near(r.gp[0], [dAlpha[i]], 2e-6, `W${bits} dalpha[${i}]`);
      });
    };

    test('T2: 4-bit weights, alpha 2', () =>
      weightCase(2 + 2, 2.0, [-3.0, -1.3, -0.46, 0.0, 0.06, 0.13, 0.33, 0.52, 0.9, 1.5, 2.5], [-2.0, -1.2, -0.4, 0.0, 0.0, 0.2, 0.4, 0.6, 0.8, 1.6, 2.0], [-1, 0.05, 0.03, 0, -0.03, 0.035, 0.035, 0.04, -0.05, 0.05, 1]));
    test('T3: 3-bit weights, alpha 1.5', () =>
      weightCase(3, 1.5, [-2.0, -0.9, -0.2, 0.1, 0.3, 0.55, 1.2, 1.6], [-1.5, -0.75, -0.375, 0, 0.375, 0.375, 1.5, 1.5], [-1, 0.1, -0.116667, -0.066667, 0.05, -0.116667, 0.2, 1]));
    test('T4: 2-bit (ternary) weights, alpha 0.7', () =>
      weightCase(2, 0.7, [-1.0, -0.36, -0.34, 0, 0.2, 0.36, 0.69, 0.71, 1.4], [-0.7, -0.7, 0, 0, 0, 0.7, 0.7, 0.7, 0.7], [-1, -0.485714, 0.485714, 0, -0.285714, 0.485714, 0.014286, 1, 1]));
    test('T5: 5-bit weights, alpha 2.5', () => {
      const q = new ApotWeightQuantizer({ bits: 5 });
      q.alpha.assign(new Float32Array([2.5]));
      const { y } = run(q, preStandardized([-0.05, 0.3, 1.0, 1.75, 2.2]));
      near(y.subarray(0, 5), [-0.0520833, 0.3125, 0.9375, 1.71875, 2.5], 2e-6, 'W5');
    });

    test('T2: weight gradient, CIFAR rule (all pass, divided by std) and ImageNet rule (masked)', () => {
      const wt = [-3.0, -1.3, -0.46, 0.0, 0.06, 0.13, 0.33, 0.52, 0.9, 1.5, 2.5];
      const w = preStandardized(wt);
      for (const variant of ['cifar', 'imagenet'] as const) {
        const q = new ApotWeightQuantizer({ bits: 4, variant });
        q.alpha.assign(new Float32Array([2]));
        // A gradient that is zero outside the test entries; the ImageNet rule then also subtracts
        // the mean and the component along the standardized weights.
        const g = w.map((_, j) => (j < wt.length ? 1 : 0));
        const { gx } = run(q, w, g);
        const mask = wt.map((v) => (variant === 'imagenet' && Math.abs(v / 2) > 1 ? 0 : 1));
        if (variant === 'cifar') near(gx.subarray(0, wt.length), mask, 1e-6, 'cifar dw');
        else {
          const n = w.length;
          const gm = [...mask, ...new Array(n - wt.length).fill(0)];
          const mean = gm.reduce((a, b) => a + b, 0) / n;
          const dot = gm.reduce((a, v, j) => a + v * w[j], 0);
          near(gx, gm.map((v, j) => v - mean - (w[j] * dot) / (n - 1)), 1e-5, 'imagenet dw');
        }
      }
    });

    test('T6: activations, alpha 2, 2/3/4 bits, and 5 bits with alpha 1', () => {
      const a = [0, 0.05, 0.33, 0.74, 1.1, 1.45, 1.9, 2.0, 2.6];
      const cases: [number, number[], number[]][] = [
        [2, [0, 0, 0.5, 0.5, 1, 1, 2, 2, 2], [0, -0.025, 0.085, -0.12, -0.05, -0.225, 0.05, 0, 1]],
        [3, [0, 0, 0.4, 0.8, 1.2, 1.6, 2, 2, 2], [0, -0.025, 0.035, 0.03, 0.05, 0.075, 0.05, 0, 1]],
        [4, [0, 0.0416667, 0.333333, 0.75, 1, 1.5, 2, 2, 2], [0, -0.0041667, 0.0016667, 0.005, -0.05, 0.025, 0.05, 0, 1]],
      ];
      for (const [bits, yExp, dAlpha] of cases) {
        const q = new ApotActivationQuantizer({ bits });
        q.alpha.assign(new Float32Array([2]));
        const { y, gx } = run(q, a);
        near(y, yExp, 2e-6, `A${bits}`);
        near(gx, [1, 1, 1, 1, 1, 1, 1, 1, 0], 0, `A${bits} da`);
        a.forEach((_, i) => near(run(q, a, a.map((__, j) => (j === i ? 1 : 0))).gp[0], [dAlpha[i]], 2e-6, `A${bits} dalpha[${i}]`));
      }
      const q5 = new ApotActivationQuantizer({ bits: 5 });
      q5.alpha.assign(new Float32Array([1]));
      near(run(q5, [0.013, 0.094, 0.181, 0.49, 0.66, 0.9, 1.3]).y, [0.01, 0.1, 0.17, 0.48, 0.65, 0.96, 1.0], 2e-6, 'A5');
    });

    test('T7: the 8-bit first/last-layer wrapper uses the signed max and no clamp', () => {
      const q = new Int8WeightQuantizer('apot');
      near(run(q, [-1.0, -0.2, 0.05, 0.5]).y, [-1.0, -0.2007874, 0.0511811, 0.5], 1e-6, 'T7');
      assert.equal(q.integerForm().codes[0], -254);
      const sym = new Int8WeightQuantizer('symmetric');
      near(run(sym, [-1.0, -0.2, 0.05, 0.5]).y, [-1.0, -25 / 127, 6 / 127, 64 / 127], 1e-6, 'symmetric');
    });

    test('a clipping alpha driven to <= 0 or NaN is an error naming the layer and method', () => {
      const q = new ApotActivationQuantizer({ bits: 4 });
      q.alpha.assign(new Float32Array([-0.5]));
      assert.throws(() => run(q, [1, 2]), /test\.layer: apot activation clipping alpha \(act_alpha\) is -0\.5/);
      q.alpha.assign(new Float32Array([Number.NaN]));
      assert.throws(() => run(q, [1, 2]), /test\.layer: apot .* is NaN/);
      assert.throws(() => new ApotWeightQuantizer({ bits: 6 }), /apot: weight bit-width 6 is not supported \(supported: 2, 3, 4, 5\)/);
    });
  });

  describe(`EWGS (${backend.name})`, () => {
    onBackend(backend);
    test('T8: 2-bit weights, l = -1, u = 1, delta 0.2', () => {
      const q = new EwgsQuantizer({ role: 'weight', bits: 2, delta: 0.2 });
      q.lower.assign(new Float32Array([-1]));
      q.upper.assign(new Float32Array([1]));
      const r = run(q, [-1.5, -0.6, -0.2, 0.1, 0.4, 0.9, 1.2], [0.5, -0.3, 0.2, 0.4, -0.1, 0.25, -0.6]);
      near(r.y, [-1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1, 1], 1e-6, 'Q_W');
      near(r.gx, [0, -0.308, 0.202667, 0.390667, -0.099333, 0.2475, 0], 1e-6, 'dL/dw');
      near(r.gp[1], [-0.033575], 1e-6, 'dL/dl');
      near(r.gp[0], [-0.399925], 1e-6, 'dL/du');
    });

    test('T9: 1-bit activations, a tie at 0.5 rounds half to even', () => {
      const q = new EwgsQuantizer({ role: 'activation', bits: 1, delta: 0.001 });
      q.lower.assign(new Float32Array([0]));
      q.upper.assign(new Float32Array([2]));
      const r = run(q, [0, 0.4, 0.99, 1.0, 1.01, 1.7, 2.5], [0.3, -0.2, 0.1, 0.7, -0.4, 0.5, 0.9]);
      near(r.y, [0, 0, 0, 0, 1, 1, 1], 0, 'Q_A');
      near(r.gx, [0.15, -0.09998, 0.0500245, 0.350175, -0.200099, 0.2499625, 0], 1e-6, 'dL/da');
    });

    test('T10: initialization from data', () => {
      const w = new EwgsQuantizer({ role: 'weight', bits: 2 });
      // Unbiased std exactly 0.05: +-a alternating over an even count.
      const n = 64;
      const a = 0.05 * Math.sqrt((n - 1) / n);
      w.calibrate(Tensor.fromArray(Array.from({ length: n }, (_, i) => (i % 2 ? a : -a)), [n]));
      near(w.lower.toArray(), [-0.15], 1e-6, 'lW');
      near(w.upper.toArray(), [0.15], 1e-6, 'uW');
      const act = new EwgsQuantizer({ role: 'activation', bits: 2 });
      const b = 0.8 * Math.sqrt((n - 1) / n);
      act.calibrate(Tensor.fromArray(Array.from({ length: n }, (_, i) => 1 + (i % 2 ? b : -b)), [n]));
      near(act.upper.toArray(), [3.98135], 1e-4, 'uA');
      near(act.lower.toArray(), [1 - b], 1e-6, 'lA = min');
    });

    test('an inverted interval is an error naming the layer', () => {
      const q = new EwgsQuantizer({ role: 'weight', bits: 2 });
      q.lower.assign(new Float32Array([1]));
      q.upper.assign(new Float32Array([0.5]));
      assert.throws(() => run(q, [0.1]), /test\.layer: ewgs weight interval is empty or inverted/);
    });
  });

  describe(`LSQ, PACT, DoReFa (${backend.name})`, () => {
    onBackend(backend);
    test('T11: LSQ weights (2-bit) and activations (4-bit)', () => {
      const w = new LsqQuantizer({ role: 'weight', bits: 2 });
      w.step.assign(new Float32Array([0.1]));
      const v = [-0.31, -0.14, -0.04, 0.06, 0.12, 0.26];
      const r = run(w, v);
      near(r.y, [-0.2, -0.1, 0, 0.1, 0.1, 0.1], 1e-7, 'v_hat');
      near(r.gx, [0, 1, 1, 1, 0, 0], 0, 'dv');
      const scale = 1 / Math.sqrt(6 * 1);
      const ds = [-2, 0.4, 0.4, 0.4, 1, 1];
      v.forEach((_, i) => near(run(w, v, v.map((__, j) => (j === i ? 1 : 0))).gp[0], [ds[i] * scale], 1e-6, `ds[${i}]`));

      const act = new LsqQuantizer({ role: 'activation', bits: 4 });
      act.step.assign(new Float32Array([0.25]));
      const a = [0, 0.1, 0.37, 1.2, 3.74, 4.0, 5.0];
      const ra = run(act, a);
      near(ra.y, [0, 0, 1, 5, 15, 15, 15].map((k) => k * 0.25), 1e-7, 'act');
      near(ra.gx, [0, 1, 1, 1, 1, 0, 0], 0, 'dv act');
      const dsa = [0, -0.4, -0.48, 0.2, 0.04, 15, 15];
      const scaleA = 1 / Math.sqrt(a.length * 15);
      a.forEach((_, i) => near(run(act, a, a.map((__, j) => (j === i ? 1 : 0))).gp[0], [dsa[i] * scaleA], 1e-6, `ds act[${i}]`));

      const init = new LsqQuantizer({ role: 'weight', bits: 4 });
      init.calibrate(Tensor.fromArray([-0.2, 0.1, 0.3, -0.4], [4]));
      near(init.step.toArray(), [0.1889822], 1e-6, 'init');
    });

    test('LSQ gradient scale for a 3x3x16x16 layer at 4 bits', () => {
      const w = new LsqQuantizer({ role: 'weight', bits: 4 });
      w.step.assign(new Float32Array([1]));
      const values = new Array(2304).fill(0);
      values[0] = 100; // clipped above: d/ds = Q_P = 7, scaled
      const g = values.map((_, j) => (j === 0 ? 1 : 0));
      near(run(w, values, g).gp[0], [7 * 0.0078743], 1e-6, 'scaled');
    });

    test('T12: PACT, k = 2, alpha 3', () => {
      const q = new PactQuantizer(2);
      q.alpha.assign(new Float32Array([3]));
      const a = [-0.5, 0.4, 0.6, 1.6, 2.4, 2.99, 3.0, 4.2];
      const r = run(q, a);
      near(r.y, [0, 0, 1, 2, 2, 3, 3, 3], 1e-6, 'y_q');
      near(r.gx, [0, 1, 1, 1, 1, 1, 0, 0], 0, 'da');
      a.forEach((_, i) => near(run(q, a, a.map((__, j) => (j === i ? 1 : 0))).gp[0], [[0, 0, 0, 0, 0, 0, 1, 1][i]], 0, `dalpha[${i}]`));
    });

    test('T13: DoReFa weights, k = 2', () => {
      const q = new UniformQuantizer('weight', 2);
      near(run(q, [-0.8, -0.3, -0.05, 0.02, 0.25, 0.6]).y, [-1, -1 / 3, -1 / 3, 1 / 3, 1 / 3, 1], 1e-6, 'w_q');
    });

    test('DoReFa weight gradient: straight through the rounding, through tanh and the 1/(2 max|t|) map', () => {
      const q = new UniformQuantizer('weight', 3);
      const w = [-0.8, -0.3, 0.1, 0.6];
      const m = Math.max(...w.map((v) => Math.abs(Math.tanh(v))));
      const { gx } = run(q, w);
      near(gx, w.map((v) => (1 - Math.tanh(v) ** 2) / m), 1e-5, 'dw');
    });
  });
}

describe('quantization-aware training', () => {
  for (const backend of availableBackends()) {
    test(`${backend.name}: in training, quantized convolutions quantize their input fused with the batch norm + ReLU or the residual join before them, with the loss, gradients and running statistics of the separate ops`, async () => {
      const { ResNet } = await import('../src/models/resnet.js');
      const { trainingForward } = await import('../src/graph/index.js');
      const { calibrate, quantize } = await import('../src/quant/quantize.js');
      const { crossEntropy } = await import('../src/tensor/ops.js');
      const { withBackend } = await import('../src/backend/index.js');
      const { Rng } = await import('../src/util/rng.js');
      const rng = new Rng(9);
      const shape = [8, 3, 8, 8] as const;
      const images = Float32Array.from({ length: 8 * 3 * 8 * 8 }, () => rng.normal());
      const labels = Int32Array.from({ length: 8 }, (_, i) => i % 4);
      withBackend(backend, () => {
        for (const method of ['apot', 'ewgs', 'uniform', 'pact', 'lsq'] as const) {
          const step = (fused: boolean) => {
            const m = new ResNet({ blocks: [1, 1], widths: [16, 32], numClasses: 4, inChannels: 3, shortcut: 'A', headBatchNorm: false, init: 'kaiming-normal-fan-in', seed: 3 });
            quantize(m, { method, wbits: 4, abits: 4, firstLast: 'int8' });
            calibrate(m, images, shape);
            // Fused: the training graph (graph/fuse.ts); separate: the model's own forward.
            const forward = fused ? trainingForward(m, shape.slice(1)) : (x: Tensor) => m.call(x);
            let fusedCalls = 0;
            let fusedJoins = 0;
            const be = getBackend();
            const original = be.batchNormQuantizeTrain;
            const originalJoin = be.addReluQuantize;
            be.batchNormQuantizeTrain = (...args) => (fusedCalls++, original.apply(be, args));
            be.addReluQuantize = (...args) => (fusedJoins++, originalJoin.apply(be, args));
            try {
              const loss = tidy(() => {
                const ce = crossEntropy(forward(Tensor.fromArray(images, shape)), labels);
                backward(ce.loss);
                return ce.lossValue;
              });
              const grads = new Map([...m.namedParameters()].map(([name, p]) => [name, p.grad?.toArray() ?? null]));
              const buffers = new Map([...m.stateDict()].filter(([name]) => name.includes('running')).map(([k, v]) => [k, v.data]));
              return { loss, grads, buffers, fusedCalls, fusedJoins };
            } finally {
              be.batchNormQuantizeTrain = original;
              be.addReluQuantize = originalJoin;
            }
          };
          const fused = step(true);
          const separate = step(false);
          assert.equal(fused.fusedCalls, 2, `${method}: both blocks' conv2 inputs are quantized by the fused op`);
          assert.equal(fused.fusedJoins, 1, `${method}: the second block's conv1 input is quantized in the first block's join`);
          assert.equal(separate.fusedCalls + separate.fusedJoins, 0);
          // js: the fused op is the composition of the same ops, bit for bit. native: own kernels vs
          // oneDNN's, relative 1e-4, and 1e-6 absolute for sums that cancel to ~0 (an output scale's).
          const [tol, floor] = backend.name === 'js' ? [0, 0] : [1e-4, 1e-6];
          const close = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) => {
            const scale = Math.max(...Array.from(b, Math.abs));
            for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= tol * scale + floor, `${method} ${what}[${i}]: ${a[i]} vs ${b[i]}`);
          };
          close([fused.loss], [separate.loss], 'loss');
          for (const [name, g] of separate.grads) {
            assert.ok(g !== null && fused.grads.get(name) !== null, `${method}: ${name} has a gradient`);
            close(fused.grads.get(name)!, g, `gradient of ${name}`);
          }
          for (const [name, v] of separate.buffers) close(fused.buffers.get(name)!, v, name);
        }
      });
    });
  }

  test('a frozen batch norm (eval mode in a training model) is not fused: the training graph equals the forward and keeps its statistics', async () => {
    const { ResNet } = await import('../src/models/resnet.js');
    const { trainingForward } = await import('../src/graph/index.js');
    const { calibrate, quantize } = await import('../src/quant/quantize.js');
    const { Rng } = await import('../src/util/rng.js');
    const rng = new Rng(2);
    const shape = [4, 3, 8, 8] as const;
    const images = Float32Array.from({ length: 4 * 3 * 8 * 8 }, () => rng.normal());
    const m = new ResNet({ blocks: [1], widths: [8], numClasses: 4, inChannels: 3, shortcut: 'A', headBatchNorm: false, init: 'kaiming-normal-fan-in', seed: 1 });
    quantize(m, { method: 'uniform', wbits: 4, abits: 4, firstLast: 'int8' });
    calibrate(m, images, shape);
    m.train();
    const bn = [...m.namedModules()].find(([name]) => name === 'layer1.0.bn1')![1];
    bn.eval();
    const forward = trainingForward(m, shape.slice(1));
    const before = [...m.stateDict()].filter(([k]) => k.startsWith('layer1.0.bn1.running')).map(([, v]) => Array.from(v.data));
    const viaGraph = tidy(() => noGrad(() => forward(Tensor.fromArray(images, shape)).toArray()));
    const after = [...m.stateDict()].filter(([k]) => k.startsWith('layer1.0.bn1.running')).map(([, v]) => Array.from(v.data));
    assert.deepEqual(after, before, 'the frozen statistics did not move');
    const direct = tidy(() => noGrad(() => m.call(Tensor.fromArray(images, shape)).toArray()));
    assert.deepEqual(viaGraph, direct);
  });

  test('a few QAT steps lower the loss for every method, and the same seed gives the same weights', async () => {
    const { ResNet } = await import('../src/models/resnet.js');
    const { Sgd, byKind, groupParameters } = await import('../src/optim/index.js');
    const { trainStep } = await import('../src/train/step.js');
    const { trainingForward } = await import('../src/graph/index.js');
    const { calibrate, quantize } = await import('../src/quant/quantize.js');
    const { Rng } = await import('../src/util/rng.js');
    const rng = new Rng(5);
    const batch = {
      images: Float32Array.from({ length: 16 * 3 * 8 * 8 }, () => rng.normal()),
      labels: Int32Array.from({ length: 16 }, (_, i) => i % 4),
      shape: [16, 3, 8, 8] as const,
    };
    const run = (method: 'apot' | 'ewgs' | 'uniform' | 'pact' | 'lsq') => {
      const m = new ResNet({ blocks: [1, 1], widths: [8, 16], numClasses: 4, inChannels: 3, shortcut: 'B', headBatchNorm: false, init: 'kaiming-normal-fan-in', seed: 1 });
      quantize(m, { method, wbits: 2, abits: 2, firstLast: 'int8' });
      calibrate(m, batch.images, batch.shape);
      const opt = new Sgd(groupParameters(m, [{ name: 'q', match: byKind('quant'), lr: 0.01, weightDecay: 0 }], { lr: 0.05, weightDecay: 0 }), { momentum: 0.9 });
      const forward = trainingForward(m, batch.shape.slice(1));
      const losses = Array.from({ length: 12 }, () => trainStep(m, opt, batch, { forward }).loss);
      return { losses, state: m.stateDict() };
    };
    for (const method of ['apot', 'ewgs', 'uniform', 'pact', 'lsq'] as const) {
      const a = run(method);
      assert.ok(a.losses.at(-1)! < 0.9 * a.losses[0], `${method}: loss ${a.losses[0]} -> ${a.losses.at(-1)}`);
      const b = run(method);
      for (const [k, v] of a.state) assert.deepEqual(b.state.get(k)!.data, v.data, `${method}: ${k} differs between two runs with one seed`);
    }
  });
});
