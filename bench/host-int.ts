/**
 * Host integer inference against PyTorch (issue 6, item 5), measured side by side in one run:
 *
 *   node dist/bench/host-int.js [--tqm FILE.tqm | --checkpoint RUN_DIR | --method apot --bits 4 --model resnet20]
 *        [--batch 128] [--threads 2] [--rounds 3] [--iters 5] [--images 1024] [--engine-images 32]
 *        [--agreement 500] [--data-dir DIR] [--json]
 *
 * Each round runs PyTorch float inference of the same network (bench/torch_bench.py --eval:
 * eval mode, torch.no_grad, same batch and threads) and then the host int8 path on --images
 * images; prints every round, the medians and the ratio host int8 / PyTorch. Then the TypeScript
 * integer engine's speed, and on --agreement CIFAR test images whether the host path gives the
 * same logits and top-1 classes as the TypeScript engine (and both accuracies).
 *
 * Without --tqm or --checkpoint the model is a randomly initialized network quantized with
 * --method/--bits and calibrated on training images (speed does not depend on the weights;
 * agreement on it says little about accuracy, so give a trained model for that).
 */
import { parseArgs } from 'node:util';
import { setBackend } from '../src/backend/index.js';
import { resolveNormalization } from '../src/data/augment.js';
import { loadDataset } from '../src/data/load.js';
import { loadTrainedModel, lowerTrainedModel, lowerUntrainedModel } from '../src/export/checkpoint-model.js';
import { pickImages } from '../src/export/calibrate.js';
import { IntegerEngine } from '../src/export/engine.js';
import { HostIntegerEngine } from '../src/export/host/engine.js';
import { compareEngines, imagesPerSecond } from '../src/export/host/measure.js';
import type { IntegerModel } from '../src/export/ir.js';
import { readTqm } from '../src/export/tqm-file.js';
import { createModel } from '../src/models/index.js';
import { quantize } from '../src/quant/quantize.js';
import type { MethodName } from '../src/quant/quantizer.js';
import { PYTHON, TORCH_BENCH, median, runJson } from './common.js';

const { values } = parseArgs({
  options: {
    tqm: { type: 'string' },
    checkpoint: { type: 'string' },
    model: { type: 'string', default: 'resnet20' },
    method: { type: 'string', default: 'apot' },
    bits: { type: 'string', default: '4' },
    batch: { type: 'string', default: '128' },
    threads: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    iters: { type: 'string', default: '5' },
    images: { type: 'string', default: '1024' },
    'engine-images': { type: 'string', default: '32' },
    agreement: { type: 'string', default: '500' },
    'data-dir': { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});

const NORMALIZATION = resolveNormalization('apot', 3);
const [batch, threads, rounds, iters] = ['batch', 'threads', 'rounds', 'iters'].map((k) => Number(values[k as keyof typeof values]));
const log = (line: string): void => {
  if (!values.json) console.log(line);
};

/** A randomly initialized network, quantized, quantizers and batch-norm statistics from training images. */
async function calibratedModel(): Promise<IntegerModel> {
  const [model, method, bits] = [values.model!, values.method as MethodName, Number(values.bits)];
  const net = createModel(model);
  quantize(net, { method, wbits: bits, abits: bits, firstLast: 'int8' });
  const train = await loadDataset({ name: 'cifar10', split: 'train', dataDir: values['data-dir'] });
  const calibration = pickImages(train, 64);
  return lowerUntrainedModel(net, { normalization: NORMALIZATION, calibration, meta: { model, method, wbits: bits, abits: bits, firstLast: 'int8', classes: train.classes } });
}

async function loadModel(): Promise<{ model: IntegerModel; source: string }> {
  if (values.tqm) return { model: readTqm(values.tqm), source: values.tqm };
  if (values.checkpoint) {
    const trained = loadTrainedModel(values.checkpoint);
    return { model: (await lowerTrainedModel(trained, { dataDir: values['data-dir'] })).ir, source: values.checkpoint };
  }
  return { model: await calibratedModel(), source: `untrained ${values.model} ${values.method} W${values.bits}A${values.bits}, calibrated` };
}

function torchImagesPerSecond(model: string): { imgPerSec: number; backend: string; threads: number } {
  const args = [TORCH_BENCH, '--model', model, '--eval', '--batch', String(batch), '--iters', String(iters), '--warmup', '1', '--threads', String(threads)];
  return runJson(PYTHON, args);
}

setBackend('js');
const { model, source } = await loadModel();
const test = await loadDataset({ name: 'cifar10', split: 'test', dataDir: values['data-dir'] });
const size = 3 * 32 * 32;
const count = Math.min(Number(values.images), test.count);
const images = test.images.subarray(0, count * size);
const host = new HostIntegerEngine(model, { batch, threads });
log(`model: ${source} (${model.meta.model}, ${model.meta.method} W${model.meta.wbits}A${model.meta.abits}); batch ${batch}, ${host.threads} threads, ${count} test images per host round`);

const torch: number[] = [];
const ours: number[] = [];
let torchBackend = '';
for (let r = 0; r < rounds; r++) {
  const t = torchImagesPerSecond(model.meta.model);
  torch.push(t.imgPerSec);
  torchBackend = `${t.backend}, ${t.threads} threads`;
  ours.push(imagesPerSecond((x, n) => host.inferBatch(x, n), images, count, batch));
  log(`round ${r + 1}: PyTorch float ${t.imgPerSec.toFixed(1)} img/s | host int8 ${ours[r].toFixed(1)} img/s`);
}
const engineCount = Math.min(Number(values['engine-images']), count);
const ts = new IntegerEngine(model);
const engineImgPerSec = imagesPerSecond((x, n) => ts.inferBatch(x, n), images.subarray(0, engineCount * size), engineCount, 2);
const agreementCount = Math.min(Number(values.agreement), test.count);
const agreement = agreementCount > 0 ? compareEngines(model, test.images.subarray(0, agreementCount * size), agreementCount, test.labels.subarray(0, agreementCount), { batch, threads }) : null;

const [torchImgPerSec, hostImgPerSec] = [median(torch), median(ours)];
const result = {
  model: source,
  architecture: model.meta.model,
  method: model.meta.method,
  wbits: model.meta.wbits,
  abits: model.meta.abits,
  batch,
  threads: host.threads,
  torchBackend,
  torchImgPerSec,
  hostImgPerSec,
  ratioHostOverTorch: hostImgPerSec / torchImgPerSec,
  engineImgPerSec,
  rounds: { torch, host: ours },
  convolutions: host.describe(),
  agreement,
};
if (values.json) {
  console.log(JSON.stringify(result));
} else {
  console.log(`median: PyTorch float (${torchBackend}) ${result.torchImgPerSec.toFixed(1)} img/s, host int8 ${result.hostImgPerSec.toFixed(1)} img/s, ratio host int8 / PyTorch = ${result.ratioHostOverTorch.toFixed(2)}`);
  console.log(`TypeScript integer engine: ${engineImgPerSec.toFixed(1)} img/s (${engineCount} images); host int8 / TS engine = ${(result.hostImgPerSec / engineImgPerSec).toFixed(1)}`);
  if (agreement) {
    console.log(
      `agreement on ${agreement.images} CIFAR-10 test images: identical logits ${agreement.identicalImages}/${agreement.images}, same top-1 ${agreement.sameTop1.toFixed(2)}%, ` +
        `top-1 accuracy host ${agreement.hostTop1!.toFixed(2)}% / TS engine ${agreement.engineTop1!.toFixed(2)}%`,
    );
  }
  console.log(`convolutions: ${[...new Set(result.convolutions.map((l) => l.slice(l.indexOf(':') + 2)))].join('; ')}`);
}
