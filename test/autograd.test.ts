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
