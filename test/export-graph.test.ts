/**
 * The graph lowering on networks that are not ResNets: user-written nets with a depthwise conv,
 * ReLU6 and a clipped ReLU (epilogue ceilings), max pooling on codes and on a stream, a 2x2 average
 * pool, a residual add of two ReLU outputs (an `add` op), a flatten before the classifier (a conv over
 * the whole feature map), 1-channel non-square input; and what cannot be lowered is named before
 * anything is written.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import {
  AvgPool2d,
  BatchNorm,
  GlobalAvgPool,
  ClippedReLU,
  Flatten,
  MaxPool2d,
  ReLU6,
  Conv2d,
  IntegerEngine,
  Linear,
  Module,
  ReLU,
  Sequential,
  Tensor,
  calibrate,
  lowerModel,
  noGrad,
  normalizeImages,
  ops,
  quantize,
  setBackend,
  tidy,
} from '../src/index.js';
import type { IntegerModel, MethodName } from '../src/index.js';
import * as ort from 'onnxruntime-node';
import { fakeQuantLogits } from '../src/export/agreement.js';
import { ONNX_INPUT, ONNX_OUTPUT, exportOnnx } from '../src/export/onnx/index.js';
import { LoweringError } from '../src/export/lower.js';
import { Rng } from '../src/util/rng.js';
import { syntheticImages } from './export-fixtures.js';

before(() => setBackend('js'));

const NORM = { mean: [0.5], std: [0.25] };
const [H, W] = [10, 8];

/** Residual: a depthwise-separable body with ReLU6 added to its input, max pooling on the sum. */
class ResidualNet extends Module {
  readonly stem: Sequential;
  readonly body: Sequential;
  readonly head: Sequential;

  constructor(seed: number) {
    super();
    const rng = new Rng(seed);
    this.stem = this.registerModule('stem', new Sequential(new Conv2d(1, 8, 3, { rng, padding: 1, stride: 2 }), new BatchNorm(8, { relu: true })));
    this.body = this.registerModule(
      'body',
      new Sequential(new Conv2d(8, 8, 3, { rng, padding: 1, groups: 8 }), new BatchNorm(8), new ReLU6(), new Conv2d(8, 8, 1, { rng }), new BatchNorm(8), new ReLU()),
    );
    this.head = this.registerModule('head', new Sequential(new MaxPool2d(2), new Flatten(), new Linear(8 * 2 * 2, 4, { rng })));
  }

  forward(x: Tensor): Tensor {
    const s = this.stem.call(x);
    return this.head.call(ops.add(this.body.call(s), s));
  }
}

/** Plain: max pooling between two convs (codes pass through it), a clipped ReLU, a 2x2 average pool. */
function plainNet(seed: number): Module {
  const rng = new Rng(seed);
  return new Sequential(
    new Conv2d(1, 8, 3, { rng, padding: 1 }),
    new BatchNorm(8, { relu: true }),
    new MaxPool2d(2),
    new Conv2d(8, 8, 3, { rng, padding: 1 }),
    new BatchNorm(8),
    new ClippedReLU(0.5),
    new AvgPool2d(2),
    new Flatten(),
    new Linear(8 * 2 * 2, 4, { rng }),
  );
}

const NETS = {
  residual: {
    make: (seed: number) => new ResidualNet(seed),
    ops: ['input', 'conv[3x3]:residual', 'quantize', 'conv/dw[3x3]:activation', 'conv[1x1]:residual', 'add', 'maxpool', 'quantize', 'conv[2x2]:logits'],
  },
  plain: {
    make: plainNet,
    ops: ['input', 'conv[3x3]:activation', 'maxpool', 'conv[3x3]:residual', 'sumpool', 'quantize', 'conv[2x2]:logits'],
  },
};

function prepared(net: keyof typeof NETS, method: MethodName, seed: number): { model: Module; images: ReturnType<typeof syntheticImages> } {
  const model = NETS[net].make(seed);
  quantize(model, { method, wbits: 4, abits: 4, firstLast: 'int8' });
  const images = syntheticImages(48, 1, H, W, seed);
  const x = normalizeImages(images.images, images.count, 1, NORM);
  calibrate(model, x, [images.count, 1, H, W]);
  model.train();
  for (let pass = 0; pass < 2; pass++) model.call(Tensor.fromArray(x, [images.count, 1, H, W]));
  model.eval();
  return { model, images };
}

function lower(model: Module, images: ReturnType<typeof syntheticImages>, method: string): IntegerModel {
  // A 16-bit input table: the int8 table's rounding is the largest deviation otherwise.
  return lowerModel(model, { inputBits: 16, normalization: NORM, calibration: images, meta: { model: 'user', method, wbits: 4, abits: 4, firstLast: 'int8', classes: ['a', 'b', 'c', 'd'] } });
}

describe('lowering a user-written network', () => {
  for (const [net, method] of [['residual', 'apot'], ['residual', 'ewgs'], ['residual', 'uniform'], ['plain', 'apot'], ['plain', 'lsq'], ['plain', 'ewgs']] as const) {
    test(`${net} net, ${method}: ops for every node, and the integer logits follow the fake-quantized model`, () => {
      const { model, images } = prepared(net, method, 3);
      const ir = lower(model, images, method);
      const kinds = ir.ops.map((op) => (op.kind === 'conv' ? `conv${op.groups > 1 ? '/dw' : ''}[${op.kernel.join('x')}]:${op.epilogue.kind}` : op.kind));
      assert.deepEqual(kinds, NETS[net].ops);
      const add = ir.ops.find((op) => op.kind === 'add');
      if (net === 'residual') assert.ok(add && add.kind === 'add' && !add.relu, 'the join adds two ReLU outputs without a ReLU of its own');
      const clipped = ir.ops.find((op) => op.kind === 'conv' && op.epilogue.kind !== 'logits' && op.epilogue.ceiling !== null);
      assert.ok(clipped, 'the clipped ReLU is an epilogue ceiling');
      const count = images.count;
      const float = fakeQuantLogits(model, images.images, count, [1, H, W], NORM);
      const ints = new IntegerEngine(ir).inferBatch(images.images, count);
      const scale = ir.tensors[ir.output].scale;
      const range = Math.max(...Array.from(float, Math.abs));
      let worst = 0;
      let same = 0;
      for (let n = 0; n < count; n++) {
        const row = (a: ArrayLike<number>, k: number) => a[n * 4 + k];
        const argmax = (a: ArrayLike<number>, s: number) => [0, 1, 2, 3].reduce((b, k) => (row(a, k) * s > row(a, b) * s ? k : b), 0);
        for (let k = 0; k < 4; k++) worst = Math.max(worst, Math.abs(row(ints, k) * scale - row(float, k)));
        same += argmax(float, 1) === argmax(ints, 1) ? 1 : 0;
      }
      assert.ok(worst < 0.03 * range, `${method}: largest logit deviation ${worst} of a range ${range}`);
      assert.ok(same >= count - 1, `${method}: same top-1 on ${same} of ${count}`);
    });
  }

  for (const net of ['residual', 'plain'] as const) {
    test(`${net} net: the ONNX export (Clip, MaxPool, AveragePool, Add, depthwise Conv) agrees with the fake-quantized model under onnxruntime`, async () => {
      const { model, images } = prepared(net, 'apot', 5);
      const x = normalizeImages(images.images, images.count, 1, NORM);
      const shape = [images.count, 1, H, W];
      const ours = tidy(() => noGrad(() => model.call(Tensor.fromArray(x, shape)).toArray()));
      const session = await ort.InferenceSession.create(exportOnnx(model, { inputShape: [1, H, W] }), { intraOpNumThreads: 1 });
      const theirs = (await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', x, shape) }))[ONNX_OUTPUT].data as Float32Array;
      await session.release();
      const range = Math.max(...Array.from(ours, Math.abs));
      const worst = Math.max(...Array.from(ours, (v, i) => Math.abs(v - theirs[i])));
      // Summation order moves a value across a level on a few images at most (see export-onnx.test.ts).
      assert.ok(worst < 0.02 * range, `${net}: largest logit difference ${worst} of ${range}`);
    });
  }

  test('a ReLU after a ReLU6 keeps the ceiling', () => {
    const rng = new Rng(2);
    const model = new Sequential(new Conv2d(1, 4, 3, { rng, padding: 1 }), new BatchNorm(4), new ReLU6(), new ReLU(), new Conv2d(4, 4, 3, { rng, padding: 1 }), new BatchNorm(4, { relu: true }), new GlobalAvgPool(), new Linear(4, 4, { rng }));
    quantize(model, { method: 'uniform', wbits: 4, abits: 4, firstLast: 'int8' });
    const images = syntheticImages(8, 1, H, W, 2);
    calibrate(model, normalizeImages(images.images, images.count, 1, NORM), [images.count, 1, H, W]);
    model.eval();
    const first = lower(model, images, 'uniform').ops[1];
    assert.ok(first.kind === 'conv' && first.epilogue.kind === 'activation' && first.epilogue.ceiling !== null);
  });

  test('what the lowering cannot represent is named by its node, before any model exists', () => {
    // A field holding a layer keeps working after quantize() swaps the layer.
    class ReluLogits extends Module {
      readonly conv = this.registerModule('conv', new Conv2d(1, 4, 3, { rng: new Rng(1) }));
      readonly bn = this.registerModule('bn', new BatchNorm(4, { relu: true }));
      forward(x: Tensor): Tensor {
        return this.bn.call(this.conv.call(x));
      }
    }
    const m = new ReluLogits();
    quantize(m, { method: 'uniform', wbits: 4, abits: 4, firstLast: 'same' });
    m.eval();
    assert.throws(() => lower(m, syntheticImages(4, 1, H, W, 1), 'uniform'), (e: Error) => e instanceof LoweringError && /^bn: a ReLU on the model's output/.test(e.message));
  });
});
