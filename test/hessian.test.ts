import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { getBackend, setBackend } from '../src/backend/index.js';
import { ResNet } from '../src/models/resnet.js';
import { Linear } from '../src/nn/layers.js';
import { Module } from '../src/nn/module.js';
import { EwgsQuantizer } from '../src/quant/ewgs.js';
import { combineDelta, estimateEwgsDelta } from '../src/quant/hessian.js';
import { StopRequested } from '../src/util/stop.js';
import { QLinear } from '../src/quant/qlayers.js';
import { calibrate, quantize } from '../src/quant/quantize.js';
import { Tensor, noGrad, tidy } from '../src/tensor/tensor.js';
import { Rng } from '../src/util/rng.js';

before(() => setBackend('js'));

class OneLayer extends Module {
  readonly fc: QLinear;
  constructor(inF: number, outF: number) {
    super();
    const fc = new Linear(inF, outF, { bias: false, rng: new Rng(5) });
    this.fc = this.registerModule(
      'fc',
      new QLinear(fc, {
        weight: new EwgsQuantizer({ role: 'weight', bits: 2 }),
        activation: new EwgsQuantizer({ role: 'activation', bits: 2 }),
        outputScale: true,
      }),
    );
  }
  forward(x: Tensor): Tensor {
    return this.fc.call(x);
  }
}

function rademacher(n: number, rng: Rng): number[] {
  const v: number[] = [];
  for (let i = 0; i < n; i += 32) {
    const bits = rng.nextU32();
    for (let k = 0; k < 32 && i + k < n; k++) v.push((bits >>> k) & 1 ? 1 : -1);
  }
  return v;
}

/** v^T H v for CE(logits) with logits = M u(v) linear in the perturbation: (1/B) sum_b d_b^T (diag p_b - p_b p_b^T) d_b. */
function quadraticForm(probs: number[][], directions: number[][]): number {
  let total = 0;
  probs.forEach((p, b) => {
    const d = directions[b];
    const pd = p.reduce((a, pi, i) => a + pi * d[i], 0);
    total += p.reduce((a, pi, i) => a + pi * d[i] * d[i], 0) - pd * pd;
  });
  return total / probs.length;
}

describe('EWGS Hessian delta', () => {
  test('T10: delta combines the batches as the mean ratio over 3 std, clipped at 0', () => {
    const d = combineDelta([
      { traceOverN: 2.0e-6, gradStd: 1.0e-4 },
      { traceOverN: 1.5e-6, gradStd: 0.8e-4 },
      { traceOverN: -0.3e-6, gradStd: 1.2e-4 },
    ]);
    assert.ok(Math.abs(d - 4.0278e-3) < 1e-7, String(d));
    assert.equal(combineDelta([{ traceOverN: -1, gradStd: 1 }]), 0);
  });

  test('finite-difference Hessian-vector products match the analytic Hessian of a linear layer + cross-entropy', async () => {
    const [B, K, M] = [4, 6, 3];
    const model = new OneLayer(K, M);
    const rng = new Rng(9);
    const images = Float32Array.from({ length: B * K }, () => Math.abs(rng.normal()));
    const labels = Int32Array.from({ length: B }, (_, i) => i % M);
    calibrate(model, images, [B, K] as unknown as [number, number, number, number]);
    const wq = model.fc.weightQuantizer as EwgsQuantizer;
    const aq = model.fc.actQuantizer as EwgsQuantizer;

    // Quantized operands and the softmax at the base point.
    const alpha = Math.abs(model.fc.outputScale!.item());
    const { qa, qw, probs } = tidy(() =>
      noGrad(() => {
        const x = Tensor.fromArray(images, [B, K]);
        const qa = Array.from(aq.apply(x, 'fc').toArray());
        const qw = Array.from(wq.apply(model.fc.weight, 'fc').toArray());
        const logits = model.call(x).toArray();
        const probs = Array.from({ length: B }, (_, b) => {
          const row = Array.from(logits.subarray(b * M, (b + 1) * M));
          const mx = Math.max(...row);
          const e = row.map((v) => Math.exp(v - mx));
          const s = e.reduce((a, c) => a + c);
          return e.map((v) => v / s);
        });
        return { qa, qw, probs };
      }),
    );

    const seed = 21;
    const est = await estimateEwgsDelta(model, [{ images, labels, shape: [B, K] }], { estimator: 'per-quantizer', maxSamples: 1, seed });
    // Replay the directions: weight quantizer first, then the activation quantizer.
    const r = new Rng(seed);
    const vw = rademacher(M * K, r);
    const va = rademacher(B * K, r);
    // Weights: logits_b = alpha (2 x_q - 1) a_b  =>  d logits_b / d x_q[v] = 2 alpha V a_b.
    const dW = Array.from({ length: B }, (_, b) =>
      Array.from({ length: M }, (_, m) => 2 * alpha * Array.from({ length: K }, (_, k) => vw[m * K + k] * qa[b * K + k]).reduce((x, y) => x + y)),
    );
    // Activations: logits_b = alpha Q_W x_q_b  =>  alpha Q_W v_b.
    const dA = Array.from({ length: B }, (_, b) =>
      Array.from({ length: M }, (_, m) => alpha * Array.from({ length: K }, (_, k) => qw[m * K + k] * va[b * K + k]).reduce((x, y) => x + y)),
    );
    const expectW = quadraticForm(probs, dW) / (M * K);
    const expectA = quadraticForm(probs, dA) / (B * K);
    const [ew, ea] = est;
    assert.equal(ew.role, 'weight');
    assert.ok(Math.abs(ew.batches[0].traceOverN - expectW) < 1e-3 * Math.abs(expectW) + 1e-7, `weight ${ew.batches[0].traceOverN} vs ${expectW}`);
    assert.ok(Math.abs(ea.batches[0].traceOverN - expectA) < 1e-3 * Math.abs(expectA) + 1e-7, `act ${ea.batches[0].traceOverN} vs ${expectA}`);
    assert.equal(wq.delta, Math.fround(ew.delta), "delta is stored (as float32) in the quantizer")
  });

  test('on a small ResNet: every quantizer gets delta >= 0, batch-norm statistics move once per batch, nothing leaks', async () => {
    const make = (): ResNet => {
      const m = new ResNet({ blocks: [1, 1], widths: [8, 16], numClasses: 4, inChannels: 3, shortcut: 'A', headBatchNorm: false, init: 'kaiming-normal-fan-in', seed: 2 });
      quantize(m, { method: 'ewgs', wbits: 2, abits: 2, firstLast: 'float' });
      return m;
    };
    const rng = new Rng(4);
    const images = Float32Array.from({ length: 8 * 3 * 8 * 8 }, () => rng.normal());
    const labels = Int32Array.from({ length: 8 }, (_, i) => i % 4);
    const batch = { images, labels, shape: [8, 3, 8, 8] as const };
    const a = make();
    const b = make();
    calibrate(a, images, batch.shape);
    calibrate(b, images, batch.shape);
    const live = getBackend().liveBytes();
    const est = await estimateEwgsDelta(a, [batch, batch], { maxSamples: 5 });
    assert.equal(est.length, 2 * 4, 'two quantizers in each of the four convolutions');
    assert.ok(est.every((e) => e.delta >= 0 && Number.isFinite(e.delta) && e.batches.length === 2));
    assert.ok(est.some((e) => e.delta > 0), 'some curvature is positive');
    assert.equal(getBackend().liveBytes(), live, 'no buffers left behind');
    assert.ok(a.parameters().every((p) => p.grad === null));
    // Reference behaviour: two train-mode forward passes' worth of running-statistic updates.
    for (let i = 0; i < 2; i++) tidy(() => noGrad(() => b.call(Tensor.fromArray(images, batch.shape))));
    assert.deepEqual(a.stateDict().get('layer1.0.bn1.running_mean')!.data, b.stateDict().get('layer1.0.bn1.running_mean')!.data);

    // A stop request once the first pass has moved the batch-norm statistics: StopRequested, and the
    // model exactly as it was (statistics, deltas).
    const untouched = b.stateDict();
    const liveBefore = getBackend().liveBytes();
    const mean = [...b.namedBuffers()].find(([name]) => name === 'layer1.0.bn1.running_mean')![1];
    const meanAtStart = Float32Array.from(mean.toArray());
    const stopOnceMoved = { get aborted() { return mean.toArray().some((v, i) => v !== meanAtStart[i]); } } as AbortSignal;
    await assert.rejects(estimateEwgsDelta(b, [batch, batch], { maxSamples: 5, signal: stopOnceMoved }), StopRequested);
    for (const [key, t] of b.stateDict()) assert.deepEqual(t.data, untouched.get(key)!.data, key);
    assert.equal(getBackend().liveBytes(), liveBefore, 'no buffers left behind by the stopped estimation');
  });
});
