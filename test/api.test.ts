/**
 * The library API as a user imports it (`import ... from 'tinyquant'`, the package's own name):
 * build a ResNet, quantize it with APoT, train a few steps on a fixed batch, lower it to integers
 * and run the integer engine: each stage through the public exports only.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tq from 'tinyquant';
import { NORMALIZATION, syntheticImages } from './export-fixtures.js';

test('model -> quantize -> train -> lower -> integer inference through the public API', () => {
  tq.setBackend('js');
  const model = tq.createModel('resnet8', { seed: 3 });
  const summary = tq.quantize(model, { method: 'apot', wbits: 4, abits: 4, firstLast: 'int8' });
  assert.equal(summary.layers[0], 'conv1');

  const count = 16;
  const images = syntheticImages(count, 3, 32, 32, 5);
  const x = tq.normalizeImages(images.images, count, 3, NORMALIZATION);
  const shape = [count, 3, 32, 32];
  tq.calibrate(model, x, shape);
  const labels = Int32Array.from({ length: count }, (_, i) => i % 10);

  const optimizer = new tq.Sgd(tq.groupParameters(model, [], { lr: 0.05, weightDecay: 0 }), { momentum: 0.9 });
  model.train();
  const losses: number[] = [];
  for (let step = 0; step < 8; step++) {
    tq.tidy(() => {
      optimizer.zeroGrad();
      const { loss, lossValue } = tq.ops.crossEntropy(model.call(tq.Tensor.fromArray(x, shape)), labels);
      tq.backward(loss);
      optimizer.step();
      losses.push(lossValue);
    });
  }
  assert.ok(losses[7] < losses[0], `loss ${losses[0]} -> ${losses[7]}`);

  model.eval();
  const integer = tq.lowerModel(model, {
    normalization: NORMALIZATION,
    calibration: images,
    meta: { model: 'resnet8', method: 'apot', wbits: 4, abits: 4, firstLast: 'int8', classes: Array.from({ length: 10 }, (_, i) => `c${i}`) },
  });
  const predicted = new tq.IntegerEngine(integer).predict(images.images, count);
  const float = tq.noGrad(() => tq.tidy(() => model.call(tq.Tensor.fromArray(x, shape)).toArray()));
  let agree = 0;
  for (let i = 0; i < count; i++) {
    const row = Array.from(float.subarray(i * 10, i * 10 + 10));
    if (row.indexOf(Math.max(...row)) === predicted[i]) agree++;
  }
  assert.ok(agree >= count - 2, `integer engine agrees with the fake-quantized model on ${agree}/${count} images`);
});
