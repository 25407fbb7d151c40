/**
 * TFLite export (src/export/tflite): a tiny ResNet lowered at W8A8 with an int8 residual stream
 * runs in a real TFLite interpreter (tflite-runner.ts: tfjs-tflite in headless Chromium, which
 * runs these int8 operators through XNNPACK), op by op on the engine's own tensors and as a whole
 * model, against the TypeScript engine; what TFLite int8 cannot express is refused naming the
 * layer.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { errorClass } from '../src/cli/errors.js';
import { exportCommand } from '../src/cli/export.js';
import { IntegerEngine, type IntArray } from '../src/export/engine.js';
import { argmax } from '../src/export/int-ops.js';
import type { IntegerModel } from '../src/export/ir.js';
import { convertToTflite } from '../src/export/tflite/convert.js';
import { TfliteExportError, exportTflite, tfliteInput } from '../src/export/tflite/index.js';
import { type TinyOptions, calibratedRun, lowerTiny, quietly, syntheticImages, tinyQuantizedModel } from './export-fixtures.js';
import { cifar10Folder, cifarRecords } from './fixtures/data/make.js';
import { irCases } from './ir-models.js';
import { opByOp, runTflite, tfliteRunnerMissing } from './tflite-runner.js';

const W8A8: TinyOptions = { method: 'lsq', wbits: 8, abits: 8 };
const IMAGES = 16;
const missing = tfliteRunnerMissing() ?? false;

function w8a8Model(): IntegerModel {
  return lowerTiny(tinyQuantizedModel(W8A8), W8A8, { residualBits: 8 });
}

/** The engine's tensors on `count` synthetic images, and the largest |logit|. */
function engineTraces(model: IntegerModel, count: number): { images: Uint8Array; traces: IntArray[][]; maxAbs: number } {
  const engine = new IntegerEngine(model);
  const images = syntheticImages(count, 3, 16, 16, 9).images;
  const size = engine.imageSize;
  const traces = Array.from({ length: count }, (_, k) => engine.trace(images.subarray(k * size, (k + 1) * size)));
  return { images, traces, maxAbs: Math.max(...traces.flatMap((t) => Array.from(t[model.output], Math.abs))) };
}

test('tflite: the flatbuffer has the TFL3 identifier; the int8 logits\' unit follows logitsMaxAbs', () => {
  const { bytes, logitShift, notes } = exportTflite(w8a8Model(), { logitsMaxAbs: 5000 });
  assert.equal(Buffer.from(bytes.subarray(4, 8)).toString('latin1'), 'TFL3');
  assert.equal(logitShift, 6); // 5000 / 2^6 = 78 <= 127 < 5000 / 2^5
  assert.ok(notes.some((n) => /residual conv is a CONV_2D rounded and clamped to int8, then an ADD/.test(n)), notes.join('\n'));
});

test('tflite: what TFLite int8 cannot express is refused, naming the layer', () => {
  const cases = new Map(irCases(1).map((c) => [c.name, c.model]));
  const refused = (model: IntegerModel, pattern: RegExp): void => {
    assert.throws(() => exportTflite(model), (e: unknown) => e instanceof TfliteExportError && pattern.test(e.message), pattern.source);
  };
  refused(cases.get('dense-nonsquare')!, /^tflite export: stem: its activation codes are thresholds of a non-uniform \(APoT\) grid/);
  refused(cases.get('residual-int16')!, /^tflite export: stem: its output is an int16 residual stream; .*--residual-bits 8/);
  refused(cases.get('depthwise-separable')!, /^tflite export: input: the normalized image is int16; .*--input-bits 8/);
  refused(cases.get('residual-int8')!, /^tflite export: block\.input: its activation codes are thresholds/);
  const w4a4: TinyOptions = { method: 'lsq', wbits: 4, abits: 4 };
  refused(lowerTiny(tinyQuantizedModel(w4a4), w4a4, { residualBits: 8 }), /^tflite export: layer1\.0\.conv1: its activations have 4-bit codes \(0\.\.15\); .*8-bit activations/);
  refused(lowerTiny(tinyQuantizedModel(W8A8), W8A8), /^tflite export: conv1: its output is an int16 residual stream/);
});

test('tflite: each op alone in the interpreter, on the engine\'s inputs: requantizations and pools exact, convolutions within one step on <= 2 %', { skip: missing, timeout: 180_000 }, async () => {
  const model = w8a8Model();
  const { traces, maxAbs } = engineTraces(model, IMAGES);
  const g = convertToTflite(model, { logitsMaxAbs: maxAbs });
  for (const { name, operators, differ, total, maxDiff } of await opByOp(model, g, traces)) {
    console.log(`${name} [${operators.join(' ')}]: ${differ} of ${total} values differ, max ${maxDiff}`);
    const convolves = operators.includes('CONV_2D');
    if (!convolves) assert.equal(differ, 0, `${name}: a requantization or pool is exact`);
    assert.ok(maxDiff <= 1 && differ <= total / 50, `${name}: ${differ} of ${total} differ, max ${maxDiff}`);
  }
});
test('tflite: the whole W8A8 ResNet in the interpreter: the engine\'s top-1 and logits within a few int8 steps', { skip: missing, timeout: 120_000 }, async () => {
  const model = w8a8Model();
  const { images, traces, maxAbs } = engineTraces(model, IMAGES);
  const { bytes, logitShift } = exportTflite(model, { logitsMaxAbs: maxAbs });
  const size = 3 * 16 * 16;
  const outputs = await runTflite(bytes, traces.map((_, k) => tfliteInput(model, images.subarray(k * size, (k + 1) * size))), [1, 16, 16, 3]);
  let [same, exact, maxDiff] = [0, 0, 0];
  traces.forEach((t, k) => {
    const expected = Array.from(t[model.output], (v) => Math.max(-127, Math.min(127, Math.round(v / 2 ** logitShift))));
    const got = Array.from(outputs[k]);
    const diff = Math.max(...got.map((v, i) => Math.abs(v - expected[i])));
    [maxDiff, exact, same] = [Math.max(maxDiff, diff), exact + Number(diff === 0), same + Number(argmax(got) === argmax(t[model.output]))];
  });
  console.log(`tflite vs engine: ${IMAGES} images, same top-1 ${same}, identical int8 logits ${exact}, max |int8 logit difference| ${maxDiff} (int8 logit = 2^${logitShift} engine units)`);
  assert.ok(same >= IMAGES - 1, `same top-1 on ${same} of ${IMAGES}`);
  assert.ok(maxDiff <= 8, `max int8 logit difference ${maxDiff}`);
});

test('tflite: `tinyquant export --format tflite` writes the model of an LSQ W8A8 run lowered with --residual-bits 8, and refuses an APoT run naming the layer (exit 3, no file)', async () => {
  setBackend('js');
  const dir = mkdtempSync(join(tmpdir(), 'tq-export-tflite-'));
  try {
    cifar10Folder(dir, (i) => cifarRecords(Array.from({ length: 6 }, (_, r) => [(r * 3 + i) % 10]), i * 100), cifarRecords(Array.from({ length: 8 }, (_, r) => [(r * 3 + 9) % 10]), 9));
    const lsq = calibratedRun(dir, 'lsq', { method: 'lsq', wbits: 8, abits: 8 });
    const out = join(dir, 'lsq.tflite');
    await quietly(() => exportCommand(['--checkpoint', lsq, '--format', 'tflite', '--out', out, '--data-dir', dir, '--calibration-images', '4', '--residual-bits', '8']));
    assert.equal(Buffer.from(readFileSync(out).subarray(4, 8)).toString('latin1'), 'TFL3');
    const apot = calibratedRun(dir, 'apot', { method: 'apot', wbits: 4, abits: 4 });
    const refused = join(dir, 'apot.tflite');
    const args = ['--checkpoint', apot, '--format', 'tflite', '--out', refused, '--data-dir', dir, '--calibration-images', '4', '--residual-bits', '8'];
    await assert.rejects(quietly(() => exportCommand(args)), (e: Error) => errorClass(e) === 'input' && /^tflite export: layer1\.0\.conv1: its activation codes are thresholds/.test(e.message));
    assert.equal(existsSync(refused), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
