/**
 * The model graph: tracing records layers and the functional ops between them with the right
 * edges, running the graph equals the model's own forward, and what cannot be traced is named.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import {
  BatchNorm,
  Conv2d,
  GraphError,
  Linear,
  Module,
  ReLU,
  Sequential,
  Tensor,
  createModel,
  describeGraph,
  noGrad,
  ops,
  quantize,
  runGraph,
  setBackend,
  tidy,
  trace,
} from '../src/index.js';
import type { Graph } from '../src/index.js';
import { Rng } from '../src/util/rng.js';

before(() => setBackend('js'));

const kinds = (g: Graph): string[] => g.nodes.map((n) => n.op.kind);

function randomInput(shape: number[], seed: number): Tensor {
  const rng = new Rng(seed);
  return Tensor.fromArray(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()), shape);
}

/** Batch norms with non-trivial running statistics, so eval mode is not the identity. */
function randomizeStatistics(model: Module, seed: number): void {
  const rng = new Rng(seed);
  for (const [name, t] of model.namedBuffers()) {
    if (name.endsWith('running_mean')) t.assign(Float32Array.from({ length: t.size }, () => 0.2 * rng.normal()));
    if (name.endsWith('running_var')) t.assign(Float32Array.from({ length: t.size }, () => 0.5 + rng.next()));
  }
}

function sameOutputs(model: Module, x: Tensor, g: Graph): void {
  model.eval();
  const [direct, viaGraph] = tidy(() => noGrad(() => [model.call(x).toArray(), runGraph(g, x).toArray()]));
  assert.deepEqual(viaGraph, direct, 'runGraph equals the model forward bit for bit');
}

/** A user-written net: a residual branch by ops.add in forward, a functional ReLU, a flatten. */
class TinyResidualNet extends Module {
  readonly stem: Sequential;
  readonly body: Sequential;
  readonly head: Linear;

  constructor(rng: Rng) {
    super();
    this.stem = this.registerModule('stem', new Sequential(new Conv2d(1, 4, 3, { rng, padding: 1 }), new BatchNorm(4, { relu: true })));
    this.body = this.registerModule('body', new Sequential(new Conv2d(4, 4, 3, { rng, padding: 1, groups: 4 }), new BatchNorm(4), new ReLU()));
    this.head = this.registerModule('head', new Linear(4 * 6 * 6, 3, { rng }));
  }

  forward(x: Tensor): Tensor {
    const s = this.stem.call(x);
    const y = ops.relu(ops.add(this.body.call(s), s));
    return this.head.call(ops.flatten(y));
  }
}

describe('trace', () => {
  test('ResNet option A: stem, blocks with their residual add and zero-pad shortcut, pool, classifier', () => {
    const model = createModel('resnet8');
    const g = trace(model, [3, 32, 32]);
    assert.deepEqual(kinds(g), [
      'input', 'conv', 'batchnorm',
      'conv', 'batchnorm', 'conv', 'batchnorm', 'add',
      'conv', 'batchnorm', 'conv', 'batchnorm', 'shortcutpad', 'add',
      'conv', 'batchnorm', 'conv', 'batchnorm', 'shortcutpad', 'add',
      'globalavgpool', 'linear',
    ]);
    const byName = new Map(g.nodes.map((n) => [n.name, n]));
    const add = byName.get('layer2.0.add')!;
    assert.deepEqual(add.inputs.map((i) => g.nodes[i].name), ['layer2.0.bn2', 'layer2.0.shortcut']);
    assert.equal(byName.get('layer2.0.shortcut')!.inputs[0], byName.get('layer1.0.add')!.id, 'the shortcut reads the block input');
    assert.deepEqual(add.shape, [32, 16, 16]);
    assert.equal(g.output, g.nodes.length - 1);
    assert.deepEqual(g.nodes[g.output].shape, [10]);
    assert.match(describeGraph(g), /%7 layer1\.0\.add = add\(%6, %2\) \[16, 32, 32\]/);
  });

  test('option B and a BatchNorm1d head; quantized layers keep their quantizers', () => {
    const model = createModel('resnet20-apot');
    quantize(model, { method: 'apot', wbits: 4, abits: 4 });
    const g = trace(model, [3, 32, 32]);
    const shortcut = g.nodes.find((n) => n.name === 'layer2.0.shortcut.0')!;
    assert.equal(shortcut.op.kind, 'conv');
    assert.ok(shortcut.op.kind === 'conv' && shortcut.op.quant?.activation?.method === 'apot');
    const conv = g.nodes.find((n) => n.name === 'layer1.0.conv1')!;
    assert.ok(conv.op.kind === 'conv' && conv.op.quant?.weight?.bits === 4 && conv.op.weight === (conv.module as Conv2d).weight);
    const ewgs = trace(createModel('resnet20-ewgs'), [3, 32, 32]);
    assert.deepEqual(kinds(ewgs).slice(-3), ['globalavgpool', 'batchnorm', 'linear']);
  });

  test('running the graph equals the model forward (float and quantized, every shortcut option)', () => {
    for (const name of ['resnet8', 'resnet20-apot', 'resnet20-ewgs']) {
      const model = createModel(name);
      randomizeStatistics(model, 3);
      const x = randomInput([2, 3, 16, 16], 5);
      sameOutputs(model, x, trace(model, x));
    }
    const q = createModel('resnet8');
    quantize(q, { method: 'uniform', wbits: 3, abits: 3, firstLast: 'same' });
    const x = randomInput([2, 3, 16, 16], 6);
    sameOutputs(q, x, trace(q, x));
  });

  test('a user-written module: ops between layers become nodes, depthwise conv, flatten before the linear', () => {
    const model = new TinyResidualNet(new Rng(1));
    randomizeStatistics(model, 2);
    const x = randomInput([2, 1, 6, 6], 4);
    const g = trace(model, x);
    assert.deepEqual(kinds(g), ['input', 'conv', 'batchnorm', 'conv', 'batchnorm', 'relu', 'add', 'relu', 'flatten', 'linear']);
    assert.deepEqual(g.nodes.map((n) => n.name).slice(5, 9), ['body.2', 'add', 'relu', 'flatten']);
    const dw = g.nodes[3];
    assert.ok(dw.op.kind === 'conv' && dw.op.groups === 4 && dw.op.kernel[0] === 3);
    sameOutputs(model, x, g);
  });

  test('tracing leaves the training mode and the batch-norm statistics as they were', () => {
    const model = createModel('resnet8');
    model.train();
    const before = [...model.namedBuffers()].map(([, t]) => Array.from(t.toArray()));
    trace(model, [3, 32, 32]);
    assert.ok([...model.namedModules()].every(([, m]) => m.training));
    assert.deepEqual([...model.namedBuffers()].map(([, t]) => Array.from(t.toArray())), before);
  });

  test('tracing restores every module\'s own mode (a frozen batch norm stays frozen), and refuses a model waiting for calibration', () => {
    const model = createModel('resnet8');
    model.train();
    const frozen = [...model.namedModules()].find(([name]) => name === 'layer1.0.bn1')![1];
    frozen.eval();
    trace(model, [3, 16, 16]);
    assert.equal(frozen.training, false);
    assert.ok([...model.namedModules()].filter(([, m]) => m !== frozen).every(([, m]) => m.training));
    quantize(model, { method: 'lsq', wbits: 4, abits: 4 });
    const layer = [...model.namedModules()].find(([name]) => name === 'layer1.0.conv1')![1] as Module & { calibrating: boolean };
    layer.calibrating = true;
    assert.throws(() => trace(model, [3, 16, 16]), /layer1\.0\.conv1: its quantizers wait for their calibration pass/);
  });

  test('a subclass of a known layer with a forward of its own is not taken for that layer', () => {
    class ConvRelu extends Conv2d {
      override forward(x: Tensor): Tensor {
        return ops.relu(super.forward(x));
      }
    }
    class PlainSubclass extends Conv2d {}
    assert.throws(() => trace(new Sequential(new ConvRelu(3, 4, 3)), [3, 8, 8]), /0 \(ConvRelu\): a layer tinyquant cannot trace/);
    assert.deepEqual(kinds(trace(new Sequential(new PlainSubclass(3, 4, 3)), [3, 8, 8])), ['input', 'conv']);
  });

  test('what cannot be traced is named: an unknown leaf layer, an op outside a layer, a parameter used outside a layer', () => {
    class Mystery extends Module {
      forward(x: Tensor): Tensor {
        return ops.affine(x, 2, 0);
      }
    }
    const unknown = new Sequential(new Conv2d(3, 4, 3, { rng: new Rng(0) }), new Mystery());
    assert.throws(() => trace(unknown, [3, 8, 8]), (e: Error) => e instanceof GraphError && /^1 \(Mystery\): a layer tinyquant cannot trace/.test(e.message));

    class OpOutside extends Module {
      readonly conv = this.registerModule('conv', new Conv2d(3, 4, 3, { rng: new Rng(0) }));
      forward(x: Tensor): Tensor {
        return ops.tanh(this.conv.call(x));
      }
    }
    assert.throws(() => trace(new OpOutside(), [3, 8, 8]), /model \(OpOutside\): op tanh on \[1, 4, 6, 6\] runs outside a layer and cannot be traced/);

    class ParamOutside extends Module {
      readonly conv = this.registerModule('conv', new Conv2d(3, 4, 3, { rng: new Rng(0) }));
      forward(x: Tensor): Tensor {
        const y = this.conv.call(x);
        return ops.add(y, Tensor.zeros(y.shape));
      }
    }
    assert.throws(() => trace(new ParamOutside(), [3, 8, 8]), /model \(ParamOutside\): op add: reads a tensor \[1, 4, 6, 6\] that no traced op produced/);
  });
});
