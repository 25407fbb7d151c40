/**
 * The small-device zoo end to end, through the package's own API (`import ... from 'tinyquant'`):
 * MLPerf Tiny's ResNet-8 (CIFAR-10), DS-CNN (Fashion-MNIST, 1 channel), MobileNetV1-0.25 (CIFAR-10)
 * and a user-written net with a residual branch, a depthwise conv and max pooling (Fashion-MNIST):
 * one epoch of APoT and of EWGS QAT at W4A4 on a slice of real data, then the integer model, the
 * tqm file, the C build (host and emulated Cortex-M4), the host int8 engine and ONNX. The integer
 * implementations equal the TypeScript engine bit for bit; onnxruntime agrees with the
 * fake-quantized model.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import * as tq from 'tinyquant';
import { deviceToolsMissing, runOnDevice, runOnHost } from '../src/export/c/toolchain.js';
import { sharedDataDir } from './fixtures/data/make.js';

const dir = mkdtempSync(join(tmpdir(), 'tq-zoo-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const SHARED = sharedDataDir();
const cifarMissing = SHARED ? false : 'skipped: no shared/data with CIFAR-10 on this machine (set TINYQUANT_SHARED_DATA)';
const FASHION = '/usr/share/datasets/fashion-mnist';
const fashionMissing = existsSync(FASHION) ? false : `skipped: ${FASHION} not installed (Debian: dataset-fashion-mnist)`;
const deviceMissing = deviceToolsMissing();

/** A user's own network: residual branch, depthwise conv, ReLU6, max pooling. */
class UserNet extends tq.Module {
  readonly stem = this.registerModule('stem', new tq.Sequential(new tq.Conv2d(1, 16, 3, { padding: 1 }), new tq.BatchNorm(16, { relu: true }), new tq.MaxPool2d(2)));
  readonly branch = this.registerModule(
    'branch',
    new tq.Sequential(new tq.Conv2d(16, 16, 3, { padding: 1, groups: 16 }), new tq.BatchNorm(16), new tq.ReLU6(), new tq.Conv2d(16, 16, 1), new tq.BatchNorm(16)),
  );
  readonly head = this.registerModule('head', new tq.Sequential(new tq.MaxPool2d(2), new tq.Flatten(), new tq.Linear(16 * 7 * 7, 10)));

  forward(x: tq.Tensor): tq.Tensor {
    const s = this.stem.call(x);
    return this.head.call(tq.ops.addRelu(this.branch.call(s), s));
  }
}

interface ZooCase {
  readonly name: string;
  readonly dataset: 'cifar10' | 'fashion-mnist';
  readonly make: () => tq.Module;
}

const CASES: readonly ZooCase[] = [
  { name: 'resnet8-mlperf', dataset: 'cifar10', make: () => tq.createModel('resnet8-mlperf') },
  { name: 'dscnn', dataset: 'fashion-mnist', make: () => tq.createModel('dscnn', { numClasses: 10 }) },
  { name: 'mobilenetv1-0.25', dataset: 'cifar10', make: () => tq.createModel('mobilenetv1-0.25', { numClasses: 10 }) },
  { name: 'user net', dataset: 'fashion-mnist', make: () => new UserNet() },
];

const TRAIN_IMAGES = 512;
const TEST_IMAGES = 32;
const data = new Map<string, tq.TrainingData>();

before(async () => {
  tq.manualSeed(0);
  const load = async (name: 'cifar10' | 'fashion-mnist', dataDir?: string) => ({
    train: tq.fixedSubset(await tq.loadDataset({ name, split: 'train', dataDir }), TRAIN_IMAGES),
    test: tq.fixedSubset(await tq.loadDataset({ name, split: 'test', dataDir }), TEST_IMAGES),
  });
  if (SHARED) data.set('cifar10', await load('cifar10', SHARED));
  if (!fashionMissing) data.set('fashion-mnist', await load('fashion-mnist'));
});

function firstImages(d: tq.ImageDataset, count: number): tq.CalibrationImages {
  const size = d.channels * d.height * d.width;
  return { images: d.images.subarray(0, count * size), count, channels: d.channels, height: d.height, width: d.width };
}

async function onnxLogits(bytes: Uint8Array, x: Float32Array, shape: number[]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  try {
    return (await session.run({ input: new ort.Tensor('float32', x, shape) })).logits.data as Float32Array;
  } finally {
    await session.release();
  }
}

describe('the zoo: QAT, then every integer implementation and ONNX', () => {
  for (const c of CASES) {
    for (const method of ['apot', 'ewgs'] as const) {
      const skip = c.dataset === 'fashion-mnist' ? fashionMissing : cifarMissing;
      test(`${c.name}, ${method} W4A4 on ${c.dataset}`, { skip }, async () => {
        const { train, test: testSet } = data.get(c.dataset)!;
        const model = c.make();
        const config = tq.resolveConfig({
          dataset: c.dataset,
          method,
          wbits: 4,
          abits: 4,
          firstLast: 'int8',
          epochs: 1,
          batch: 64,
          evalBatch: 64,
          lr: method === 'ewgs' ? 1e-3 : 0.02,
          optimizer: method === 'ewgs' ? 'adam' : 'sgd',
          workers: 0,
        });
        const run = await tq.train({ config, outDir: join(dir, `${c.name}-${method}`), model, data: { train, test: testSet }, handleSignals: false });
        assert.equal(run.status, 'finished');
        assert.ok(Number.isFinite(run.epochs[0].trainLoss), `${c.name}: the epoch trained`);
        model.eval();

        const normalization = tq.resolveNormalization(config.normalization, train.channels);
        // A 16-bit input table: with int8 pixels, a deep narrow net at 4 bits (MobileNet) moves far from
        // the fake-quantized model, which never saw the rounded image (the deployment-simulation issue).
        const ir = tq.lowerModel(model, {
          inputBits: 16,
          normalization,
          calibration: firstImages(train, 128),
          meta: { model: c.name, method, wbits: 4, abits: 4, firstLast: 'int8', classes: train.classes },
        });
        const file = join(dir, `${c.name}-${method}.tqm`);
        tq.writeTqm(file, ir);
        const images = firstImages(testSet, TEST_IMAGES);
        const engine = new tq.IntegerEngine(ir).inferBatch(images.images, TEST_IMAGES);
        assert.deepEqual(new tq.IntegerEngine(tq.readTqm(file)).inferBatch(images.images, TEST_IMAGES), engine, 'the tqm file runs the same model');

        const classes = ir.tensors[ir.output].shape[0];
        const generated = tq.generateC(ir, { headerName: 'model.h' });
        assert.deepEqual(runOnHost(generated, images.images.subarray(0, 8 * images.images.length / TEST_IMAGES), 8).logits, engine.subarray(0, 8 * classes), 'C on the host');
        if (!deviceMissing) {
          const one = images.images.subarray(0, images.images.length / TEST_IMAGES);
          assert.deepEqual(runOnDevice(generated, one, 1).logits, engine.subarray(0, classes), 'C on the emulated Cortex-M4');
        }
        if (tq.hostEngineAvailability().available) {
          assert.deepEqual(new tq.HostIntegerEngine(ir).inferBatch(images.images, TEST_IMAGES), engine, 'host int8 (oneDNN)');
        }

        const shape = [TEST_IMAGES, train.channels, train.height, train.width];
        const x = tq.normalizeImages(images.images, TEST_IMAGES, train.channels, normalization);
        const fake = tq.fakeQuantLogits(model, images.images, TEST_IMAGES, [train.channels, train.height, train.width], normalization);
        const onnx = await onnxLogits(tq.exportOnnx(model, { inputShape: [train.channels, train.height, train.width] }), x, shape);
        const agreement = tq.compareLogits(fake, onnx, classes);
        assert.ok(agreement.sameTop1 >= 100 - 100 / TEST_IMAGES, `${c.name}: onnxruntime and the fake-quantized model agree on ${agreement.sameTop1}% of the images`);
        // After one epoch from random weights the top-2 margins are small, so a level flipped by the
        // fixed-point stream moves some images (ResNet-20 at QUICK scale: 82-97 %).
        const deployed = tq.compareLogits(fake, engine, classes);
        assert.ok(deployed.sameTop1 >= 75, `${c.name}: the integer model picks the fake-quantized model's class on ${deployed.sameTop1}% of the images`);
      });
    }
  }
});
