/**
 * APoT's float model rounds its first conv and last linear weights to 8 bits (its first_conv /
 * last_fc wrappers are in every resnet20_cifar, float=True too): a float config with firstLast
 * 'apot8' does the same, other policies leave a float model float. Hand-made weights, expected
 * values worked out by hand: round(w / max(w) * 127) / 127 * max(w), signed maximum, no clamp.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Conv2d, Flatten, Linear, Sequential } from '../src/nn/layers.js';
import { Tensor, noGrad, tidy } from '../src/tensor/tensor.js';
import { resolveConfig } from '../src/train/config.js';
import { quantizeAsConfigured } from '../src/train/trainer.js';

function tinyModel(): Sequential {
  const m = new Sequential(new Conv2d(1, 3, 1, { bias: false }), new Flatten(), new Linear(3, 1, { bias: false }));
  m.loadStateDict(
    new Map([
      ['0.weight', { shape: [3, 1, 1, 1], data: Float32Array.of(1.0, 0.3, -1.3) }],
      ['2.weight', { shape: [1, 3], data: Float32Array.of(0.6, -0.2, 0.1) }],
    ]),
  );
  m.eval();
  return m;
}

function output(m: Sequential): number {
  return tidy(() => noGrad(() => m.call(Tensor.fromArray([1], [1, 1, 1, 1])).toArray()))[0];
}

test('a float model with firstLast apot8 has its first and last weights rounded as the APoT reference does', () => {
  const m = tinyModel();
  quantizeAsConfigured(m, resolveConfig({ method: 'float', firstLast: 'apot8' }));
  // conv (max 1.0): 1, round(38.1) = 38 -> 38/127, round(-165.1) = -165 -> -165/127 (below -max: not clamped).
  // linear (max 0.6): 0.6, round(-42.33) = -42 -> -42/127 * 0.6, round(21.17) = 21 -> 21/127 * 0.6.
  const expected = 1 * 0.6 + (38 / 127) * ((-42 / 127) * 0.6) + (-165 / 127) * ((21 / 127) * 0.6);
  assert.ok(Math.abs(output(m) - expected) < 1e-6, `${output(m)} vs ${expected}`);
});

test('a float model under any other first/last policy stays float', () => {
  for (const firstLast of ['int8', 'float', 'same'] as const) {
    const m = tinyModel();
    quantizeAsConfigured(m, resolveConfig({ method: 'float', firstLast }));
    const exact = 1 * 0.6 + 0.3 * -0.2 + -1.3 * 0.1;
    assert.ok(Math.abs(output(m) - exact) < 1e-6, `${firstLast}: ${output(m)} vs ${exact}`);
  }
});
