/**
 * The model zoo (MLPerf Tiny's ResNet-8, DS-CNN, MobileNetV1-0.25) and user-written nets, through
 * the package entry only: parameter counts against hand-derived figures, forward and backward at
 * each model's input shape, a few SGD steps that lower the loss, seeded construction.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  type Backend,
  BatchNorm,
  Conv2d,
  GlobalAvgPool,
  Linear,
  Module,
  ReLU,
  Residual,
  Rng,
  Sequential,
  Sgd,
  Tensor,
  backward,
  calibrate,
  createBackend,
  createModel,
  dsCnn,
  groupParameters,
  manualSeed,
  models,
  noGrad,
  ops,
  quantize,
  tidy,
  withBackend,
} from '../src/index.js';

function randomBatch(shape: readonly [number, number, number, number], classes: number, seed: number): { x: Float32Array; labels: Int32Array } {
  const rng = new Rng(seed);
  const [n, c, h, w] = shape;
  return {
    x: Float32Array.from({ length: n * c * h * w }, () => rng.normal()),
    labels: Int32Array.from({ length: n }, (_, i) => i % classes),
  };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

function parameterCount(m: Module): number {
  return m.parameters().reduce((sum, p) => sum + p.size, 0);
}

/** Losses of `steps` SGD steps on one fixed batch. */
function trainLosses(model: Module, shape: readonly [number, number, number, number], classes: number, steps: number, lr: number): number[] {
  const { x, labels } = randomBatch(shape, classes, 7);
  const optimizer = new Sgd(groupParameters(model, [], { lr, weightDecay: 0 }), { momentum: 0.9 });
  model.train();
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    tidy(() => {
      optimizer.zeroGrad();
      const { loss, lossValue } = ops.crossEntropy(model.call(Tensor.fromArray(x, shape)), labels);
      backward(loss);
      optimizer.step();
      losses.push(lossValue);
    });
  }
  return losses;
}

function assertLearns(model: Module, shape: readonly [number, number, number, number], classes: number, lr = 0.05, steps = 8): void {
  const losses = trainLosses(model, shape, classes, steps, lr);
  assert.ok(losses.every(Number.isFinite), `losses ${losses.join(', ')}`);
  assert.ok(losses[steps - 1] < 0.7 * losses[0], `loss ${losses[0]} -> ${losses[steps - 1]}`);
}

/** Conv (with bias) and batch norm parameter counts, for the hand derivations below. */
const conv = (cin: number, cout: number, kh: number, kw = kh): number => cin * cout * kh * kw + cout;
const bn = (c: number): number => 2 * c;
const dwBlock = (cin: number, cout: number): number => conv(1, cin, 3) + bn(cin) + conv(cin, cout, 1) + bn(cout);

interface ZooCase {
  readonly name: string;
  readonly parameters: number;
  /** A small input the model also takes, for training. */
  readonly trainShape: readonly [number, number, number, number];
  readonly lr: number;
}

const zoo: readonly ZooCase[] = [
  {
    name: 'resnet8-mlperf',
    // stem; stack 1 (identity shortcut); stacks 2 and 3 with their 1x1 conv shortcuts; dense.
    parameters:
      conv(3, 16, 3) + bn(16) +
      (conv(16, 16, 3) + bn(16) + conv(16, 16, 3) + bn(16)) +
      (conv(16, 32, 3) + bn(32) + conv(32, 32, 3) + bn(32) + conv(16, 32, 1)) +
      (conv(32, 64, 3) + bn(64) + conv(64, 64, 3) + bn(64) + conv(32, 64, 1)) +
      (64 * 10 + 10),
    trainShape: [4, 3, 16, 16],
    lr: 0.05,
  },
  {
    name: 'dscnn',
    parameters: conv(1, 64, 10, 4) + bn(64) + 4 * dwBlock(64, 64) + (64 * 12 + 12),
    trainShape: [4, 1, 49, 10],
    lr: 0.05,
  },
  {
    name: 'mobilenetv1-0.25',
    // Widths 32, 64, 128, 128, 256, 256, 512 x 6, 1024, 1024 times 0.25.
    parameters:
      conv(3, 8, 3) + bn(8) +
      dwBlock(8, 16) + dwBlock(16, 32) + dwBlock(32, 32) + dwBlock(32, 64) + dwBlock(64, 64) + dwBlock(64, 128) +
      5 * dwBlock(128, 128) + dwBlock(128, 256) + dwBlock(256, 256) +
      (256 * 2 + 2),
    trainShape: [4, 3, 48, 48],
    // 27 layers with a batch norm each: at initialization the gradients are large and the loss
    // sharply curved (a gradient norm of 40 here, 8 for ResNet-8), so plain SGD needs a small step.
    lr: 3e-4,
  },
];

describe('model zoo', () => {
  for (const c of zoo) {
    describe(c.name, () => {
      test('has the hand-derived parameter count', () => {
        assert.equal(parameterCount(createModel(c.name)), c.parameters);
      });

      test('forward and backward at its input shape', () => {
        const entry = models[c.name as keyof typeof models];
        const model = createModel(c.name, { seed: 1 });
        const shape = [2, ...entry.inputShape] as const;
        const { x, labels } = randomBatch(shape, entry.numClasses, 3);
        tidy(() => {
          const logits = model.call(Tensor.fromArray(x, shape));
          assert.deepEqual(logits.shape, [2, entry.numClasses]);
          backward(ops.crossEntropy(logits, labels).loss);
        });
        let nonZero = 0;
        for (const [name, p] of model.namedParameters()) {
          const g = p.grad?.toArray();
          assert.ok(g && g.every(Number.isFinite), `${name} has a finite gradient`);
          if (g.some((v) => v !== 0)) nonZero++;
        }
        // Conv biases before a batch norm get (almost) no gradient; the weights all do.
        assert.ok(nonZero >= model.parameters().filter((p) => p.kind === 'weight').length, `${nonZero} parameters with a gradient`);
      });

      test('a few SGD steps on a fixed batch lower the loss', () => {
        assertLearns(createModel(c.name, { seed: 2 }), c.trainShape, models[c.name as keyof typeof models].numClasses, c.lr);
      });
    });
  }

  test('the native backend agrees with the js reference: logits and gradients of every zoo model at its input shape', (t) => {
    let native: Backend;
    try {
      native = createBackend('native', 1);
    } catch (e) {
      t.skip((e as Error).message);
      return;
    }
    const js = createBackend('js');
    for (const c of zoo) {
      const entry = models[c.name as keyof typeof models];
      const shape = [2, ...entry.inputShape] as const;
      const { x, labels } = randomBatch(shape, entry.numClasses, 3);
      const run = (backend: Backend): Float32Array[] =>
        withBackend(backend, () => {
          const model = createModel(c.name, { seed: 1 });
          const logits = tidy(() => {
            const y = model.call(Tensor.fromArray(x, shape));
            backward(ops.crossEntropy(y, labels).loss);
            return y.toArray();
          });
          return [logits, ...model.parameters().map((p) => p.grad!.toArray())];
        });
      const [reference, got] = [run(js), run(native)];
      // Against the largest magnitude of each: gradients of conv biases before a batch norm are
      // rounding noise on both backends.
      const scale = Math.max(...reference.map((r) => maxAbsDiff(r, new Float32Array(r.length))));
      reference.forEach((want, i) => {
        const worst = maxAbsDiff(want, got[i]);
        assert.ok(worst <= 1e-4 * scale, `${c.name}: tensor ${i} differs by ${worst} (scale ${scale})`);
      });
    }
  });

  test('DS-CNN quantized with APoT (10x4 stem, depthwise blocks) calibrates and trains', () => {
    const model = createModel('dscnn', { seed: 5 });
    const summary = quantize(model, { method: 'apot', wbits: 4, abits: 4, firstLast: 'same' });
    assert.ok(summary.layers.includes('conv1') && summary.layers.includes('blocks.0.0'), summary.layers.join(', '));
    const shape = [4, 1, 49, 10] as const;
    calibrate(model, randomBatch(shape, 12, 7).x, shape);
    assertLearns(model, shape, 12);
  });

  test('DS-CNN maps a 49x10 input to 25x5 with its 10x4 stride-2 stem', () => {
    const stem = new Conv2d(1, 64, [10, 4], { stride: 2, padding: [5, 1] });
    assert.deepEqual(stem.weight.shape, [64, 1, 10, 4]);
    assert.deepEqual(stem.kernel, [10, 4]);
    const y = noGrad(() => tidy(() => stem.call(Tensor.zeros([1, 1, 49, 10])).shape));
    assert.deepEqual(y, [1, 64, 25, 5]);
  });

  test('createModel: classes and channels override the defaults; unknown names list the choices', () => {
    const model = createModel('dscnn', { numClasses: 35, inChannels: 2 }).eval();
    const out = noGrad(() => tidy(() => model.call(Tensor.zeros([1, 2, 30, 12])).shape));
    assert.deepEqual(out, [1, 35]);
    assert.throws(() => createModel('resnet9'), /unknown model "resnet9"; choose one of .*dscnn/);
  });
});

describe('seeded construction', () => {
  test('manualSeed makes layers and models built without an Rng identical; another seed differs', () => {
    const build = (seed: number): Float32Array[] => {
      manualSeed(seed);
      return dsCnn().parameters().map((p) => p.toArray());
    };
    const [a, b, c] = [build(0), build(0), build(1)];
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
    manualSeed(5);
    const first = new Linear(3, 2).weight.toArray();
    manualSeed(5);
    assert.deepEqual(new Linear(3, 2).weight.toArray(), first);
    assert.deepEqual(new Linear(3, 2, { rng: new Rng(9) }).weight.toArray(), new Linear(3, 2, { rng: new Rng(9) }).weight.toArray());
  });

  test('createModel draws from its seed, not from the default generator', () => {
    manualSeed(1);
    const a = createModel('resnet8-mlperf', { seed: 4 }).stateDict();
    manualSeed(2);
    const b = createModel('resnet8-mlperf', { seed: 4 }).stateDict();
    assert.deepEqual(a, b);
  });
});

describe('user-written nets', () => {
  test('Residual: relu(body(x) + shortcut(x)) and its gradient, exactly', () => {
    const body = new Linear(2, 2, { bias: false });
    body.weight.assign(Float32Array.of(1, 2, 3, 4));
    const shortcut = new Linear(2, 2, { bias: false });
    shortcut.weight.assign(Float32Array.of(2, 0, 0, 2));
    const block = new Residual(body, { shortcut, relu: true });
    assert.equal(block.body, body);
    assert.equal(block.shortcut, shortcut);
    assert.equal(block.relu, true);
    tidy(() => {
      const x = Tensor.fromArray([1, -1], [1, 2], true);
      // body(x) = [-1, -1], shortcut(x) = [2, -2]: relu([1, -3]) = [1, 0].
      const y = block.call(x);
      assert.deepEqual([...y.toArray()], [1, 0]);
      backward(ops.crossEntropy(y, Int32Array.of(0)).loss);
      // d loss / d y = softmax(y) - onehot(0) = [s - 1, 1 - s]; only y[0] passes the ReLU, so
      // d loss / d x = (s - 1) * (row 0 of body + row 0 of shortcut) = (s - 1) * [3, 2].
      const s = Math.exp(1) / (Math.exp(1) + 1);
      const gx = [...x.grad!.toArray()];
      assert.ok(Math.abs(gx[0] - 3 * (s - 1)) < 1e-6 && Math.abs(gx[1] - 2 * (s - 1)) < 1e-6, `gradient ${gx}`);
    });
    const identity = new Residual(body);
    assert.equal(identity.shortcut, null);
    // No ReLU, identity shortcut: body(x) + x = [-1 + 1, -1 - 1].
    assert.deepEqual([...noGrad(() => tidy(() => identity.call(Tensor.fromArray([1, -1], [1, 2])).toArray()))], [0, -2]);
  });

  test('a Sequential with a residual branch, a depthwise conv and a 10x4 kernel trains', () => {
    manualSeed(3);
    const depthwise = new Conv2d(8, 8, 3, { padding: 1, groups: 8 });
    assert.deepEqual(depthwise.weight.shape, [8, 1, 3, 3]);
    const net = new Sequential(
      new Conv2d(1, 8, [10, 4], { stride: 2, padding: [5, 1] }),
      new BatchNorm(8, { relu: true }),
      new Residual(new Sequential(depthwise, new BatchNorm(8), new ReLU(), new Conv2d(8, 8, 1), new BatchNorm(8)), { relu: true }),
      new GlobalAvgPool(),
      new Linear(8, 3),
    );
    assert.ok([...net.stateDict().keys()].includes('2.body.0.weight'));
    assertLearns(net, [4, 1, 20, 8], 3);
  });

  test('a Module subclass whose forward calls ops.add trains', () => {
    class TwoPaths extends Module {
      readonly wide = this.registerModule('wide', new Sequential(new Conv2d(2, 8, [3, 1], { padding: [1, 0] }), new BatchNorm(8, { relu: true })));
      readonly narrow = this.registerModule('narrow', new Conv2d(2, 8, 1));
      readonly head = this.registerModule('head', new Sequential(new GlobalAvgPool(), new Linear(8, 2)));
      forward(x: Tensor): Tensor {
        return this.head.call(ops.add(this.wide.call(x), this.narrow.call(x)));
      }
    }
    manualSeed(4);
    const net = new TwoPaths();
    assert.deepEqual([...net.stateDict().keys()].filter((k) => k.endsWith('weight')), ['wide.0.weight', 'wide.1.weight', 'narrow.weight', 'head.1.weight']);
    assertLearns(net, [4, 2, 6, 6], 2, 0.2, 12);
  });

  test('quantize swaps a residual branch\'s bare conv, which the branch then runs', () => {
    manualSeed(6);
    const branch = new Residual(new Conv2d(4, 4, 3, { padding: 1 }), { shortcut: new Conv2d(4, 4, 1), relu: true });
    const net = Sequential.named({ stem: new Conv2d(3, 4, 3, { padding: 1 }), branch, pool: new GlobalAvgPool(), fc: new Linear(4, 2) });
    const before = branch.body;
    quantize(net, { method: 'uniform', wbits: 4, abits: 4, firstLast: 'same' });
    assert.notEqual(branch.body, before);
    assert.equal(branch.body.constructor.name, 'QConv2d');
    assert.equal(branch.shortcut?.constructor.name, 'QConv2d');
    assert.equal(net.layers[0].constructor.name, 'QConv2d');
    const names = [...net.namedModules()].filter(([, m]) => m.constructor.name === 'QConv2d').map(([n]) => n);
    assert.deepEqual(names, ['stem', 'branch.body', 'branch.shortcut']);
  });

  test('bad layer arguments are named', () => {
    assert.throws(() => new Conv2d(3, 8, [3, 0]), /Conv2d: kernel must be integers >= 1, got \[3,0\]/);
    assert.throws(() => new Conv2d(3, 8, 3, { padding: -1 }), /Conv2d: padding must be integers >= 0/);
    assert.throws(() => new Conv2d(3, 8, 3, { groups: 2 }), /not divisible into 2 groups/);
    assert.throws(() => Sequential.named({ 0: new ReLU() }), /Sequential.named: "0" is not a valid layer name/);
  });
});
