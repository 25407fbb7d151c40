import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { getBackend, setBackend } from '../src/backend/index.js';
import * as ops from '../src/tensor/ops.js';
import { Tensor, backward, keep, noGrad, tapeLength, tidy } from '../src/tensor/tensor.js';

before(() => setBackend('js'));

describe('tape autograd', () => {
  test('a tensor used twice receives the sum of both gradients', () => {
    const x = Tensor.fromArray([1, -2, 3], [3], true);
    tidy(() => {
      const y = ops.add(ops.affine(x, 2, 0), ops.affine(x, 3, 1));
      const loss = ops.crossEntropy(ops.reshape(y, [1, 3]), Int32Array.of(0)).loss;
      backward(loss);
    });
    // d/dx of CE(5x + 1) = 5 * (softmax - onehot)
    const z = [5 * 1 + 1, 5 * -2 + 1, 5 * 3 + 1];
    const m = Math.max(...z);
    const e = z.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b);
    const expected = e.map((v, i) => 5 * (v / s - (i === 0 ? 1 : 0)));
    const grad = x.grad!.toArray();
    expected.forEach((v, i) => assert.ok(Math.abs(grad[i] - v) < 1e-5, `grad[${i}] ${grad[i]} vs ${v}`));
    x.dispose();
  });

  test('leaf gradients accumulate over two backward passes', () => {
    const x = Tensor.fromArray([0.5, 1.5], [1, 2], true);
    const once = (): void => tidy(() => backward(ops.crossEntropy(x, Int32Array.of(1)).loss));
    once();
    const first = Array.from(x.grad!.toArray());
    once();
    const second = Array.from(x.grad!.toArray());
    second.forEach((v, i) => assert.ok(Math.abs(v - 2 * first[i]) < 1e-6));
    x.dispose();
  });

  test('tidy frees every intermediate and the tape; returned tensors survive', () => {
    const be = getBackend();
    const x = Tensor.fromArray(Float32Array.from({ length: 24 }, (_, i) => i - 12), [2, 3, 2, 2], true);
    const start = be.liveBytes();
    const kept = tidy(() => {
      const y = ops.relu(ops.affine(x, 0.5, 1));
      ops.globalAvgPool(y);
      return ops.flatten(y);
    });
    assert.equal(tapeLength(), 0);
    assert.equal(be.liveBytes() - start, kept.size * 4);
    assert.equal(kept.node, null, 'a tensor leaving its scope drops its tape node');
    kept.dispose();
    assert.equal(be.liveBytes(), start);
    x.dispose();
  });

  test('noGrad records nothing', () => {
    const x = Tensor.fromArray([1, 2], [2], true);
    tidy(() => noGrad(() => ops.relu(x)));
    assert.equal(tapeLength(), 0);
    const y = tidy(() => keep(noGrad(() => ops.relu(x))));
    assert.equal(y.requiresGrad, false);
    y.dispose();
    x.dispose();
  });

  test('backward needs a scalar root or an explicit gradient', () => {
    const x = Tensor.fromArray([1, 2], [2], true);
    tidy(() => {
      const y = ops.affine(x, 2, 0);
      assert.throws(() => backward(y), /pass a gradient/);
      backward(y, Tensor.fromArray([1, 10], [2]));
    });
    assert.deepEqual(Array.from(x.grad!.toArray()), [2, 20]);
    x.dispose();
  });

  test('a freed tensor cannot be used', () => {
    const x = Tensor.fromArray([1], [1]);
    x.dispose();
    assert.throws(() => x.toArray(), /used after it was freed/);
  });

  test('a non-finite loss is an error that says so', () => {
    const x = Tensor.fromArray([Number.NaN, 1], [1, 2], true);
    assert.throws(() => tidy(() => ops.crossEntropy(x, Int32Array.of(0))), /crossEntropy: the loss is NaN/);
    x.dispose();
  });
});

describe('eval-mode batch norm (fine-tuning with frozen statistics)', () => {
  // sum(r * bn(x)) is piecewise linear in x, gamma and beta: central differences away from the
  // ReLU's kink are exact up to float32 rounding.
  for (const relu of [false, true]) {
    test(`gradients of x, gamma and beta equal central differences${relu ? ' (fused ReLU)' : ''}`, () => {
      const shape = [2, 3, 2, 2] as const;
      const n = 24;
      const xs = Float32Array.from({ length: n }, (_, i) => Math.sin(1.7 * i + 0.3) * 2);
      const r = Float32Array.from({ length: n }, (_, i) => Math.cos(0.9 * i + 0.1));
      const [gammas, betas] = [Float32Array.of(1.5, -0.7, 0.4), Float32Array.of(0.2, -0.1, 0.3)];
      const [mean, variance] = [Tensor.fromArray([0.1, -0.3, 0.5], [3]), Tensor.fromArray([0.8, 2.5, 0.3], [3])];
      const opts = { training: false, eps: 1e-5, momentum: 0.1, relu };
      const objective = (x: Float32Array, g: Float32Array, b: Float32Array): number =>
        noGrad(() =>
          tidy(() => {
            const y = ops.batchNorm(Tensor.fromArray(x, [...shape]), Tensor.fromArray(g, [3]), Tensor.fromArray(b, [3]), mean, variance, opts).toArray();
            return y.reduce((s, v, i) => s + v * r[i], 0);
          }),
        );
      const [x, gamma, beta] = [Tensor.fromArray(xs, [...shape], true), Tensor.fromArray(gammas, [3], true), Tensor.fromArray(betas, [3], true)];
      tidy(() => backward(ops.batchNorm(x, gamma, beta, mean, variance, opts), Tensor.fromArray(r, [...shape])));
      const inputs = [xs, gammas, betas];
      [x, gamma, beta].forEach((t, k) => {
        const analytic = t.grad!.toArray();
        for (let i = 0; i < inputs[k].length; i++) {
          const step = 1e-2;
          const moved = (d: number) => inputs.map((v, j) => (j === k ? v.map((e, m) => (m === i ? e + d : e)) : v)) as [Float32Array, Float32Array, Float32Array];
          const numeric = (objective(...moved(step)) - objective(...moved(-step))) / (2 * step);
          assert.ok(Math.abs(numeric - analytic[i]) < 2e-3 * Math.max(1, Math.abs(numeric)), `${['x', 'gamma', 'beta'][k]}[${i}]: ${analytic[i]} vs ${numeric}`);
        }
      });
      for (const t of [x, gamma, beta, mean, variance]) t.dispose();
    });
  }
});
