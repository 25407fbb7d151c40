/**
 * `train({ model, data })`: a Module instance (not a registry name) quantized by the config's
 * method, trained on dataset objects; checkpoints name its class, and resuming with a fresh
 * instance of it reproduces the uninterrupted run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { evalCommand } from '../src/cli/eval.js';
import { type ImageDataset, allocShared } from '../src/data/index.js';
import { BatchNorm, Conv2d, GlobalAvgPool, Linear, Sequential } from '../src/nn/layers.js';
import { Module } from '../src/nn/module.js';
import * as ops from '../src/tensor/ops.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { quantizedLayers } from '../src/quant/quantize.js';
import { resolveConfig } from '../src/train/config.js';
import { type TrainingData, train } from '../src/train/trainer.js';
import { InputError } from '../src/util/errors.js';
import { Rng } from '../src/util/rng.js';
import { tempDir } from './fixtures/data/make.js';

/** A user-written net: two convolutions, pooling, a classifier. */
class TinyNet extends Sequential {
  constructor() {
    const rng = new Rng(3);
    super(
      new Conv2d(1, 4, 3, { rng, padding: 1 }),
      new BatchNorm(4, { relu: true }),
      new Conv2d(4, 4, 3, { rng, padding: 1 }),
      new BatchNorm(4, { relu: true }),
      new GlobalAvgPool(),
      new Linear(4, 2, { rng }),
    );
  }
}

/** Dark images are class 0, bright ones class 1 (8x8 grey, a little noise). */
function brightness(split: 'train' | 'test', count: number): ImageDataset {
  const rng = new Rng(split === 'train' ? 1 : 2);
  const images = allocShared(count * 64);
  const labels = Int32Array.from({ length: count }, (_, i) => i % 2);
  for (let i = 0; i < count; i++) for (let p = 0; p < 64; p++) images[i * 64 + p] = (labels[i] ? 180 : 40) + Math.floor(rng.next() * 30);
  return { name: 'brightness', split, images, labels, count, channels: 1, height: 8, width: 8, classes: ['dark', 'bright'], source: 'test' };
}

const data: TrainingData = { train: brightness('train', 32), test: brightness('test', 8) };
const config = resolveConfig({ method: 'lsq', wbits: 4, epochs: 2, batch: 8, evalBatch: 8, lr: 0.05, normalization: 'none', augment: false, workers: 0 });

test('train({ model, data }): the instance is quantized and trained; checkpoints name its class; resuming needs it again', async () => {
  const { dir, cleanup } = tempDir('tq-train-instance-');
  try {
    const model = new TinyNet();
    const whole = await train({ config, outDir: join(dir, 'whole'), model, data, handleSignals: false });
    assert.equal(whole.status, 'finished');
    assert.equal(whole.final?.n, 8);
    assert.equal(quantizedLayers(model).length, 3, 'both convolutions and the classifier are quantized in place');
    assert.equal(JSON.parse(readFileSync(join(dir, 'whole', 'last.json'), 'utf8')).architecture, 'TinyNet');
    await assert.rejects(evalCommand(['--checkpoint', join(dir, 'whole', 'last.json')]), /last\.json: trained from a TinyNet instance in code, not a registry model/);

    const outDir = join(dir, 'resumed');
    const first = await train({ config, outDir, model: new TinyNet(), data, handleSignals: false, stopAfterSteps: 5 });
    assert.equal(first.status, 'interrupted');
    await assert.rejects(train({ config, outDir, data, resume: true, handleSignals: false }), /the run trained a TinyNet instance; resuming needs the same model again \(given: model resnet20\)/);
    const resumed = await train({ config, outDir, model: new TinyNet(), data, resume: true, handleSignals: false });
    assert.deepEqual(resumed.final, whole.final, 'the same predictions, loss and accuracy as without the interruption');
    assert.deepEqual(resumed.fingerprint, whole.fingerprint);
  } finally {
    cleanup();
  }
});

test('a model with a layer the graph cannot trace is refused for deployment, and trains without one, through its own forward, saying so once', async () => {
  const { dir, cleanup } = tempDir('tq-train-untraced-');
  try {
    /** A leaf layer of the user's own: no sub-modules, not one of tinyquant's layers. */
    class Halve extends Module {
      forward(x: Tensor): Tensor {
        return ops.affine(x, 0.5, 0);
      }
    }
    const rng = new Rng(5);
    const make = (): Module => new Sequential(new Conv2d(1, 4, 3, { rng, padding: 1 }), new BatchNorm(4, { relu: true }), new Halve(), new GlobalAvgPool(), new Linear(4, 2, { rng }));
    // Its deployment cannot be planned (the graph has no node for the layer): refused before training, naming it.
    await assert.rejects(train({ config, outDir: join(dir, 'refused'), model: make(), data, handleSignals: false }), /cannot deploy this model: 2 \(Halve\): a layer tinyquant cannot trace/);
    const model = make();
    const lines: string[] = [];
    const undeployed = { ...config, deploy: { ...config.deploy, evaluate: false } };
    const run = await train({ config: undeployed, outDir: join(dir, 'run'), model, data, handleSignals: false, progress: { step: () => {}, line: (t) => lines.push(t) } });
    assert.equal(run.status, 'finished');
    const notices = lines.filter((l) => l.startsWith("training without the graph's fusions"));
    assert.equal(notices.length, 1, lines.join('\n'));
    assert.match(notices[0], /2 \(Halve\): a layer tinyquant cannot trace/);
  } finally {
    cleanup();
  }
});

test('a resume whose sidecar claims progress outside the run is refused', async () => {
  const { dir, cleanup } = tempDir('tq-train-progress-');
  try {
    const outDir = join(dir, 'run');
    await train({ config, outDir, model: new TinyNet(), data, handleSignals: false, stopAfterSteps: 3 });
    const sidecar = join(outDir, 'last.json');
    const meta = JSON.parse(readFileSync(sidecar, 'utf8'));
    for (const progress of [{ epoch: 5, step: 0 }, { epoch: 2, step: 1 }, { epoch: 0, step: 99 }, { epoch: -1, step: 0 }]) {
      writeFileSync(sidecar, JSON.stringify({ ...meta, progress: { ...meta.progress, ...progress } }));
      await assert.rejects(
        train({ config, outDir, model: new TinyNet(), data, resume: true, handleSignals: false }),
        new RegExp(`last\\.json: progress \\(epoch ${progress.epoch}, step ${progress.step}\\) lies outside the run's 2 epochs of 4 steps`),
      );
    }
  } finally {
    cleanup();
  }
});

test('train and test splits of another image shape or class list are refused before training, writing no checkpoint', async () => {
  const { dir, cleanup } = tempDir('tq-train-splits-');
  try {
    const big = brightness('test', 4);
    const larger: ImageDataset = { ...big, images: allocShared(4 * 256), height: 16, width: 16, source: 'big-test' };
    const renamed: ImageDataset = { ...big, classes: ['dark', 'light'], source: 'renamed-test' };
    const fewer: ImageDataset = { ...big, classes: ['dark'], labels: new Int32Array(4), source: 'one-class-test' };
    const cases: [ImageDataset, RegExp][] = [
      [larger, /^the training images \(test\) are 1x8x8 \(channels x height x width\) but the test images \(big-test\) 1x16x16; both splits must have one image shape$/],
      [renamed, /^the training split \(test\) has 2 classes, the test split \(renamed-test\) 2, and class 1 is "bright" in training, "light" in test; both splits must have one class list$/],
      [fewer, /class 1 is "bright" in training, none in test/],
    ];
    for (const [testSplit, message] of cases) {
      const outDir = join(dir, testSplit.source);
      await assert.rejects(train({ config, outDir, model: new TinyNet(), data: { train: data.train, test: testSplit }, handleSignals: false }), (e: Error) => e instanceof InputError && message.test(e.message));
      assert.ok(!existsSync(join(outDir, 'last.json')) && !existsSync(join(outDir, 'config.json')), 'nothing trained or written');
    }
  } finally {
    cleanup();
  }
});
