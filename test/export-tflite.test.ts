/**
 * TFLite export (src/export/tflite): a tiny ResNet lowered at W8A8 with an int8 residual stream
 * runs in a real TFLite interpreter (tflite-runner.ts: tfjs-tflite in headless Chromium) and its
 * int8 logits are compared with the TypeScript engine's; what TFLite int8 cannot express is
 * refused naming the layer; the flatbuffer carries the TFL3 identifier and the model's operators.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IntegerEngine } from '../src/export/engine.js';
import { argmax } from '../src/export/int-ops.js';
import type { IntegerModel } from '../src/export/ir.js';
import { TfliteExportError, exportTflite, tfliteInput } from '../src/export/tflite/index.js';
import { type TinyOptions, lowerTiny, syntheticImages, tinyQuantizedModel } from './export-fixtures.js';
import { irCases } from './ir-models.js';
import { runTflite, tfliteRunnerMissing } from './tflite-runner.js';

const W8A8: TinyOptions = { method: 'lsq', wbits: 8, abits: 8 };

function w8a8Model(): IntegerModel {
  return lowerTiny(tinyQuantizedModel(W8A8), W8A8, { residualBits: 8 });
}

/** The engine's logits of `count` images and their largest magnitude. */
function engineLogits(model: IntegerModel, images: Uint8Array, count: number): { logits: Int32Array[]; maxAbs: number } {
  const engine = new IntegerEngine(model);
  const size = engine.imageSize;
  const logits = Array.from({ length: count }, (_, k) => engine.infer(images.subarray(k * size, (k + 1) * size)));
  return { logits, maxAbs: Math.max(...logits.flatMap((l) => Array.from(l, Math.abs))) };
}

test('tflite: the flatbuffer has the TFL3 identifier; the int8 logits\' unit follows logitsMaxAbs', () => {
  const { bytes, logitShift, notes } = exportTflite(w8a8Model(), { logitsMaxAbs: 5000 });
  assert.equal(Buffer.from(bytes.subarray(4, 8)).toString('latin1'), 'TFL3');
  assert.equal(logitShift, 6); // 5000 / 2^6 = 78 <= 127 < 5000 / 2^5
  assert.ok(notes.some((n) => /residual conv is a CONV_2D rounded to int8, then an ADD/.test(n)), notes.join('\n'));
  assert.ok(bytes.length > 8 * 3 * 9 + 16 * 8 * 9 + 32 * 16 * 9, `${bytes.length} bytes hold the int8 weights`);
});

test('tflite: what TFLite int8 cannot express is refused, naming the layer', () => {
  const cases = new Map(irCases(1).map((c) => [c.name, c.model]));
  const refused = (name: string, pattern: RegExp): void => {
    assert.throws(() => exportTflite(cases.get(name)!), (e: unknown) => e instanceof TfliteExportError && pattern.test(e.message), name);
  };
  refused('dense-nonsquare', /^tflite export: stem: its activation codes are thresholds of a non-uniform \(APoT\) grid/);
  refused('residual-int16', /^tflite export: stem: its output is an int16 residual stream; .*--residual-bits 8/);
  refused('depthwise-separable', /^tflite export: input: the normalized image is int16; .*--input-bits 8/);
  refused('residual-int8', /^tflite export: block\.input: a per-channel requantization/);
  const w4a4: TinyOptions = { method: 'lsq', wbits: 4, abits: 4 };
  const low = lowerTiny(tinyQuantizedModel(w4a4), w4a4, { residualBits: 8 });
  assert.throws(() => exportTflite(low), (e: unknown) => e instanceof TfliteExportError && /^tflite export: layer1\.0\.conv1: its activations have 4-bit codes \(0\.\.15\); .*8-bit activations/.test(e.message));
});

test('tflite: a W8A8 ResNet with an int8 residual stream gives the engine\'s logits in a real TFLite interpreter', { skip: tfliteRunnerMissing() ?? false, timeout: 120_000 }, async () => {
  const model = w8a8Model();
  const count = 32;
  const images = syntheticImages(count, 3, 16, 16, 9).images;
  const { logits, maxAbs } = engineLogits(model, images, count);
  const { bytes, logitShift } = exportTflite(model, { logitsMaxAbs: maxAbs });
  const size = 3 * 16 * 16;
  const inputs = logits.map((_, k) => tfliteInput(model, images.subarray(k * size, (k + 1) * size)));
  const outputs = await runTflite(bytes, inputs, [1, 16, 16, 3]);
  let [same, exact, maxDiff] = [0, 0, 0];
  for (let k = 0; k < count; k++) {
    const expected = Array.from(logits[k], (v) => Math.max(-127, Math.min(127, Math.round(v / 2 ** logitShift))));
    const got = Array.from(outputs[k]);
    const diff = Math.max(...got.map((v, i) => Math.abs(v - expected[i])));
    maxDiff = Math.max(maxDiff, diff);
    exact += Number(diff === 0);
    same += Number(argmax(got) === argmax(logits[k]));
  }
  console.log(`tflite vs engine: ${count} images, same top-1 ${same}, identical int8 logits ${exact}, max |int8 logit difference| ${maxDiff} (logit unit 2^${logitShift})`);
  assert.ok(maxDiff <= 2, `max int8 logit difference ${maxDiff}`);
  assert.ok(same >= count - 1, `same top-1 on ${same} of ${count}`);
});
