/**
 * Comparing implementations' logits (src/export/agreement.ts): compareLogits, top1Accuracy, and
 * measureAgreement with another integer implementation plugged in and its logits kept.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compareLogits, fakeQuantLogits, measureAgreement, top1Accuracy } from '../src/export/agreement.js';
import { IntegerEngine } from '../src/export/engine.js';
import { CLASSES, NORMALIZATION, type TinyOptions, lowerTiny, tinyQuantizedModel } from './export-fixtures.js';

test('compareLogits counts identical images and equal top-1 classes, first maximum on ties', () => {
  const a = [1, 5, 2, /**/ 3, 3, 0, /**/ 0, 1, 2, /**/ 7, 7, 7];
  const b = [1, 5, 2, /**/ 0, 3, 1, /**/ 2, 1, 0, /**/ 7, 7, 7];
  // Image 0 identical; image 1: a ties classes 0 and 1 (first maximum: 0), b says 1, so they differ;
  // image 2 differs; image 3 identical (a three-way tie: class 0 in both).
  assert.deepEqual(compareLogits(a, b, 3), { images: 4, sameTop1: 50, identicalImages: 2 });
  assert.deepEqual(compareLogits(a, b, 3, 1), { images: 1, sameTop1: 100, identicalImages: 1 });
  // `b` may cover more images than `a` (a subset run against a full one).
  assert.deepEqual(compareLogits(a.slice(0, 6), b, 3), { images: 2, sameTop1: 50, identicalImages: 1 });
  assert.throws(() => compareLogits(a, b.slice(0, 6), 3), RangeError);
});

test('top1Accuracy: share of images whose first maximum is the label', () => {
  const logits = Float32Array.from([0.1, 0.9, /**/ 0.8, 0.2, /**/ 0.5, 0.5, /**/ 0, 1]);
  assert.equal(top1Accuracy(logits, [1, 0, 1, 1], 2), 75);
  assert.equal(top1Accuracy(logits, [0, 0, 0, 0, 1], 2), 50);
  assert.throws(() => top1Accuracy(logits, [1, 0], 2), RangeError);
});

test('measureAgreement: a plugged-in integer implementation, and both logits kept', () => {
  const o: TinyOptions = { method: 'lsq', wbits: 3 };
  const tiny = tinyQuantizedModel(o);
  const ir = lowerTiny(tiny, o);
  const count = 12;
  const { images, channels, height, width } = tiny.images;
  const size = channels * height * width;
  const labels = Int32Array.from({ length: count }, (_, i) => (3 * i) % 10);
  const data = { name: 'tiny', split: 'test' as const, images: images.subarray(0, count * size), labels, count, channels, height, width, classes: [...CLASSES], source: 'synthetic' };
  // In the batches measureAgreement runs (oneDNN's float sums may depend on the batch size).
  const float = fakeQuantLogits(tiny.model, data.images, count, [channels, height, width], NORMALIZATION, 5);

  const kept = measureAgreement(tiny.model, ir, data, { keepLogits: true, batch: 5 });
  assert.deepEqual(kept.logits?.integer, new IntegerEngine(ir).inferBatch(data.images, count));
  assert.deepEqual(kept.logits?.fakeQuant, float);
  assert.equal(measureAgreement(tiny.model, ir, data).logits, undefined);

  // An implementation that always answers class 7: its accuracy and agreement follow from the labels and the float model.
  const seven = { inferBatch: (_: Uint8Array, n: number) => Int32Array.from({ length: n * 10 }, (_, k) => (k % 10 === 7 ? 1 : 0)) };
  const r = measureAgreement(tiny.model, ir, data, { engine: seven, batch: 5 });
  assert.equal(r.integerTop1, top1Accuracy(Int32Array.from({ length: count * 10 }, (_, k) => (k % 10 === 7 ? 1 : 0)), labels, 10));
  assert.equal(r.integerTop1, (100 * labels.filter((l) => l === 7).length) / count);
  const floatSaysSeven = Array.from({ length: count }, (_, n) => compareLogits(float.subarray(n * 10, n * 10 + 10), [0, 0, 0, 0, 0, 0, 0, 1, 0, 0], 10).sameTop1);
  assert.equal(r.sameTop1, floatSaysSeven.reduce((s, v) => s + v, 0) / count);
  assert.equal(r.fakeQuantTop1, top1Accuracy(float, labels, 10));
});
