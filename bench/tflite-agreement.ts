/**
 * The TFLite export against the TypeScript engine on CIFAR-10 test images: ResNet-20 from the
 * shipped float weights, quantized with a uniform method, calibrated (not trained), lowered with
 * an int8 residual stream, exported with `exportTflite` and run in a real TFLite interpreter
 * (test/tflite-runner.ts: tfjs-tflite in headless Chromium). Prints the share of images with the
 * same top-1 and the int8 logit differences.
 *
 * With --per-op N, also each op alone on the engine's tensors of the first N images (test/tflite-runner.ts opByOp).
 *
 *   node dist/bench/tflite-agreement.js [--images 200] [--per-op 0] [--method lsq] [--bits 8] [--data-dir /work/shared/data]
 */
import { parseArgs } from 'node:util';
import { resolveNormalization } from '../src/data/augment.js';
import { loadDataset } from '../src/data/load.js';
import { lowerUntrainedModel } from '../src/export/checkpoint-model.js';
import { IntegerEngine } from '../src/export/engine.js';
import { argmax } from '../src/export/int-ops.js';
import { exportTflite, tfliteInput } from '../src/export/tflite/index.js';
import { createModel } from '../src/models/index.js';
import { quantize } from '../src/quant/quantize.js';
import type { MethodName } from '../src/quant/quantizer.js';
import { readWeights } from '../src/train/checkpoint.js';
import { opByOp, runTflite } from '../test/tflite-runner.js';
import { convertToTflite } from '../src/export/tflite/convert.js';

const FLOAT = 'models/resnet20-cifar10-float.safetensors';
const CALIBRATION_START = 5000;
const CALIBRATION_IMAGES = 256;

const { values } = parseArgs({
  options: {
    images: { type: 'string', default: '200' },
    'per-op': { type: 'string', default: '0' },
    method: { type: 'string', default: 'lsq' },
    bits: { type: 'string', default: '8' },
    'data-dir': { type: 'string', default: '/work/shared/data' },
  },
});

async function main(): Promise<void> {
  const bits = Number(values.bits);
  const method = values.method as MethodName;
  const test = await loadDataset({ name: 'cifar10', split: 'test', dataDir: values['data-dir'] });
  const size = test.channels * test.height * test.width;
  const net = createModel('resnet20');
  net.loadStateDict(readWeights(FLOAT), { source: FLOAT });
  quantize(net, { method, wbits: bits, abits: bits, firstLast: 'int8' });
  const calibration = { images: test.images.subarray(CALIBRATION_START * size, (CALIBRATION_START + CALIBRATION_IMAGES) * size), count: CALIBRATION_IMAGES, channels: test.channels, height: test.height, width: test.width };
  const model = lowerUntrainedModel(net, {
    normalization: resolveNormalization('apot', test.channels),
    residualBits: 8,
    calibration,
    meta: { model: 'resnet20', method, wbits: bits, abits: bits, firstLast: 'int8', classes: test.classes },
  });
  const engine = new IntegerEngine(model);
  const calibrationLogits = engine.inferBatch(calibration.images, CALIBRATION_IMAGES);
  const { bytes, logitShift, notes } = exportTflite(model, { logitsMaxAbs: Math.max(...Array.from(calibrationLogits, Math.abs)) });
  const n = Math.min(Number(values.images), CALIBRATION_START);
  const images = Array.from({ length: n }, (_, k) => test.images.subarray(k * size, (k + 1) * size));
  const ours = images.map((im) => engine.infer(im));
  const theirs = await runTflite(bytes, images.map((im) => tfliteInput(model, im)), [1, test.height, test.width, test.channels]);
  let [same, correctEngine, correctTflite, maxDiff, sumDiff, exact] = [0, 0, 0, 0, 0, 0];
  for (let k = 0; k < n; k++) {
    const expected = Array.from(ours[k], (v) => Math.max(-127, Math.min(127, Math.round(v / 2 ** logitShift))));
    const diffs = expected.map((v, i) => Math.abs(theirs[k][i] - v));
    [maxDiff, sumDiff, exact] = [Math.max(maxDiff, ...diffs), sumDiff + diffs.reduce((a, b) => a + b, 0), exact + Number(Math.max(...diffs) === 0)];
    const [a, b] = [argmax(ours[k]), argmax(theirs[k])];
    same += Number(a === b);
    correctEngine += Number(a === test.labels[k]);
    correctTflite += Number(b === test.labels[k]);
  }
  const pct = (c: number): string => `${((100 * c) / n).toFixed(1)} %`;
  console.log(`resnet20 ${method} W${bits}A${bits}, int8 residual stream, calibrated on test images ${CALIBRATION_START}..${CALIBRATION_START + CALIBRATION_IMAGES - 1}; ${bytes.length} bytes of TFLite; int8 logit = 2^${logitShift} engine logit units`);
  for (const note of notes) console.log(`  note: ${note}`);
  const perOp = Number(values['per-op']);
  if (perOp > 0) {
    const graph = convertToTflite(model, { logitsMaxAbs: Math.max(...Array.from(calibrationLogits, Math.abs)) });
    const rows = await opByOp(model, graph, images.slice(0, perOp).map((im) => engine.trace(im)));
    for (const r of rows) console.log(`  ${r.name} [${r.operators.join(' ')}]: ${r.differ} of ${r.total} differ (${((100 * r.differ) / r.total).toFixed(3)} %), max ${r.maxDiff}`);
  }
  console.log(`CIFAR-10 test images 0..${n - 1}: same top-1 ${same}/${n} (${pct(same)}); top-1 engine ${pct(correctEngine)}, TFLite ${pct(correctTflite)}; identical int8 logits on ${exact} images; |int8 logit difference| max ${maxDiff}, mean ${(sumDiff / (n * model.meta.classes.length)).toFixed(3)}`);
}

await main();
