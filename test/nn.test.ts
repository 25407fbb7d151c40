import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { createModel } from '../src/models/index.js';
import { Conv2d } from '../src/nn/layers.js';
import { Tensor, noGrad, tidy } from '../src/tensor/tensor.js';

before(() => setBackend('js'));

function count(model: ReturnType<typeof createModel>, pick: (name: string) => boolean): number {
  return [...model.namedParameters()].filter(([n]) => pick(n)).reduce((a, [, p]) => a + p.size, 0);
}

describe('CIFAR ResNets', () => {
  test('ResNet-20 option A has the reference parameter counts and PyTorch names', () => {
    const m = createModel('resnet20-ewgs');
    const blockConvs = [...m.namedModules()].filter(([n, mod]) => mod instanceof Conv2d && n !== 'conv1');
    assert.equal(blockConvs.length, 18);
    assert.equal(blockConvs.reduce((a, [, c]) => a + (c as Conv2d).weight.size, 0), 267264);
    assert.equal(count(m, (n) => n === 'conv1.weight'), 432);
    assert.equal(count(m, (n) => n.startsWith('linear.')), 650);
    const keys = [...m.stateDict().keys()];
    assert.deepEqual(keys.slice(0, 5), ['conv1.weight', 'bn1.weight', 'bn1.bias', 'bn1.running_mean', 'bn1.running_var']);
    assert.ok(keys.includes('layer3.2.bn2.running_var'));
    assert.ok(keys.includes('bn2.weight'), 'BatchNorm1d head');
    assert.ok(!keys.some((k) => k.includes('shortcut')), 'option A has no shortcut parameters');
  });

  test('ResNet-20/56 option B (APoT) quantizable conv weights match the spec', () => {
    const convWeights = (name: string): number =>
      [...createModel(name).namedModules()]
        .filter(([n, mod]) => mod instanceof Conv2d && n !== 'conv1')
        .reduce((a, [, c]) => a + (c as Conv2d).weight.size, 0);
    assert.equal(convWeights('resnet20-apot'), 269824);
    assert.equal(convWeights('resnet56-apot'), 850432);
    const keys = [...createModel('resnet20-apot').stateDict().keys()];
    assert.ok(keys.includes('layer2.0.shortcut.0.weight') && keys.includes('layer2.0.shortcut.1.running_mean'));
  });

  test('a model is a pure function of its seed', () => {
    const a = createModel('resnet20', { seed: 7 }).stateDict();
    const b = createModel('resnet20', { seed: 7 }).stateDict();
    const c = createModel('resnet20', { seed: 8 }).stateDict();
    assert.deepEqual(a.get('layer2.1.conv1.weight')!.data, b.get('layer2.1.conv1.weight')!.data);
    assert.notDeepEqual(a.get('layer2.1.conv1.weight')!.data, c.get('layer2.1.conv1.weight')!.data);
  });

  test('ResNet-18 for 32x32 maps images to class logits', () => {
    const m = createModel('resnet18', { numClasses: 100 }).eval();
    const shape = tidy(() => noGrad(() => [...m.call(Tensor.zeros([1, 3, 32, 32])).shape]));
    assert.deepEqual(shape, [1, 100]);
  });

  test('state dicts round-trip, and bad ones are refused with the key named', () => {
    const src = createModel('resnet20', { seed: 1 });
    const dst = createModel('resnet20', { seed: 2 });
    const state = src.stateDict();
    dst.loadStateDict(state);
    assert.deepEqual(dst.stateDict().get('linear.weight')!.data, state.get('linear.weight')!.data);

    const wrong = new Map(state);
    wrong.set('layer1.0.conv1.weight', { shape: [16, 16, 1, 1], data: new Float32Array(256) });
    assert.throws(() => dst.loadStateDict(wrong, { source: 'x.safetensors' }), /x\.safetensors: "layer1\.0\.conv1\.weight" has shape \[16, 16, 1, 1\] but the model expects \[16, 16, 3, 3\]/);

    const withNaN = new Map(state);
    withNaN.set('linear.weight', { shape: state.get('linear.weight')!.shape, data: Float32Array.from(state.get('linear.weight')!.data, (v, i) => (i === 7 ? NaN : v)) });
    assert.throws(() => dst.loadStateDict(withNaN, { source: 'n.pth' }), /n\.pth: "linear\.weight" holds NaN at index 7/);
    const negative = new Map(state);
    negative.set('bn1.running_var', { shape: [16], data: Float32Array.from({ length: 16 }, (_, i) => (i === 3 ? -0.5 : 1)) });
    assert.throws(() => dst.loadStateDict(negative), /"bn1\.running_var" holds the negative variance -0\.5 at index 3/);
    dst.loadStateDict(withNaN, { allowNonFinite: true });
    assert.ok(Number.isNaN(dst.stateDict().get('linear.weight')!.data[7]), 'loaded when allowed');
    dst.loadStateDict(state);

    const missing = new Map(state);
    missing.delete('bn1.running_var');
    assert.throws(() => dst.loadStateDict(missing), /missing bn1\.running_var/);
    const report = dst.loadStateDict(missing, { strict: false });
    assert.deepEqual(report.missing, ['bn1.running_var']);

    const extra = new Map(state);
    extra.set('bn1.num_batches_tracked', { shape: [], data: Float32Array.of(3) });
    extra.set('foo.weight', { shape: [1], data: Float32Array.of(1) });
    assert.throws(() => dst.loadStateDict(extra), /unexpected foo\.weight$/);
  });

  test('a shape error names the layer that failed', () => {
    const m = createModel('resnet20');
    assert.throws(
      () => tidy(() => m.call(Tensor.zeros([1, 4, 32, 32]))),
      (e: Error) => e.message.startsWith('conv1 (Conv2d): ') && /4/.test(e.message),
    );
  });

  test('a tiny ResNet overfits a fixed batch', async () => {
    const { ResNet } = await import('../src/models/resnet.js');
    const { Sgd, groupParameters } = await import('../src/optim/index.js');
    const { trainStep } = await import('../src/train/step.js');
    const { Rng } = await import('../src/util/rng.js');
    const model = new ResNet({ blocks: [1, 1], widths: [8, 16], numClasses: 4, inChannels: 3, shortcut: 'A', headBatchNorm: false, init: 'kaiming-normal-fan-in', seed: 3 });
    const opt = new Sgd(groupParameters(model, [], { lr: 0.05, weightDecay: 0 }), { momentum: 0.9 });
    const rng = new Rng(11);
    const batch = {
      images: Float32Array.from({ length: 8 * 3 * 8 * 8 }, () => rng.normal()),
      labels: Int32Array.from({ length: 8 }, (_, i) => i % 4),
      shape: [8, 3, 8, 8] as const,
    };
    let last = { loss: Infinity, correct: 0, count: 8 };
    for (let i = 0; i < 40; i++) last = trainStep(model, opt, batch);
    assert.ok(last.loss < 0.05, `loss ${last.loss}`);
    assert.equal(last.correct, 8);
  });
});
