/**
 * The host int8 path (src/export/host): the native addon's oneDNN int8 convolutions plus C++
 * epilogues must give the TypeScript integer engine's logits bit for bit, for non-uniform (APoT,
 * threshold) and uniform (rounding) activations, int16 and int8 residual streams, int8 and int16
 * input tables, option A and B shortcuts, batches that do not divide the image count, weights
 * beyond int8 (split into two int8 convolutions), and the synthetic models of every IR op and
 * option (test/ir-models.ts: non-square and 1x1 kernels, depthwise and grouped convs, clipped
 * ReLUs, windowed sumpool, maxpool, add); with int8 convolutions and with float32 ones
 * (TINYQUANT_HOST_INT8=float, the path of CPUs without VNNI), weights split as each needs.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { fastestIntegerEngine } from '../src/export/deployed.js';
import { IntegerEngine } from '../src/export/engine.js';
import { HostIntegerEngine, hostEngineAvailability } from '../src/export/host/engine.js';
import type { ConvOp, IntegerModel } from '../src/export/ir.js';
import { type LoweringChoices, type TinyOptions, lowerTiny, syntheticImages, tinyQuantizedModel } from './export-fixtures.js';
import { irCases, randomImages } from './ir-models.js';

const availability = hostEngineAvailability();
const skip = availability.available ? false : `host int8 path not available: ${availability.reason}`;

const COUNT = 37;
const images = syntheticImages(COUNT, 3, 16, 16, 11).images;

const CASES: [string, TinyOptions, LoweringChoices][] = [
  ['APoT W4A4, option A, int16 residual', { method: 'apot', wbits: 4 }, {}],
  ['APoT W3A3, int8 residual', { method: 'apot', wbits: 3 }, { residualBits: 8 }],
  ['LSQ W8A8, int16 input table', { method: 'lsq', wbits: 8 }, { inputBits: 16 }],
  ['EWGS W2A2 (rounding rule)', { method: 'ewgs', wbits: 2 }, {}],
  ['PACT W3A3, option B shortcuts, int8 residual', { method: 'pact', wbits: 3, shortcut: 'B' }, { residualBits: 8 }],
];

function firstDifference(a: Int32Array, b: Int32Array, classes = 10): string {
  const i = a.findIndex((v, k) => v !== b[k]);
  return i < 0 ? 'none' : `logit ${i % classes} of image ${Math.floor(i / classes)}: ${a[i]} vs ${b[i]}`;
}

/** The suite under one arithmetic: the CPU's own (int8 where exact), or float32 forced. */
function hostEngineSuite(arithmetic: 'native' | 'float'): void {
describe(`host int8 engine (${arithmetic === 'float' ? 'float32 convolutions, TINYQUANT_HOST_INT8=float' : "this CPU's convolutions"})`, { skip }, () => {
  const models = new Map<string, IntegerModel>();
  const saved = process.env.TINYQUANT_HOST_INT8;
  after(() => {
    if (saved === undefined) delete process.env.TINYQUANT_HOST_INT8;
    else process.env.TINYQUANT_HOST_INT8 = saved;
  });
  before(() => {
    if (arithmetic === 'float') process.env.TINYQUANT_HOST_INT8 = 'float';
    setBackend('js');
    for (const [name, o, choices] of CASES) models.set(name, lowerTiny(tinyQuantizedModel(o), o, choices));
  });

  test('same logits as the TypeScript integer engine, bit for bit', () => {
    for (const [name] of CASES) {
      const model = models.get(name)!;
      const expected = new IntegerEngine(model).inferBatch(images, COUNT);
      const got = new HostIntegerEngine(model, { batch: 16 }).inferBatch(images, COUNT);
      assert.equal(got.length, expected.length, name);
      assert.ok(got.every((v, i) => v === expected[i]), `${name}: first difference ${firstDifference(got, expected)}`);
    }
  });

  test('synthetic models of every IR op: same logits as the TypeScript integer engine, bit for bit', () => {
    for (const { name, model } of irCases()) {
      const count = 21;
      const some = randomImages(model, count, 3);
      const expected = new IntegerEngine(model).inferBatch(some, count);
      const got = new HostIntegerEngine(model, { batch: 8 }).inferBatch(some, count);
      assert.ok(got.length === expected.length && got.every((v, i) => v === expected[i]), `${name}: first difference ${firstDifference(got, expected, expected.length / count)}`);
    }
  });

  test('batch size and thread count do not change the logits; single images match their batch rows', () => {
    const model = models.get(CASES[0][0])!;
    const reference = new HostIntegerEngine(model, { batch: 16, threads: 2 }).inferBatch(images, COUNT);
    assert.deepEqual(new HostIntegerEngine(model, { batch: 64, threads: 1 }).inferBatch(images, COUNT), reference);
    const engine = new HostIntegerEngine(model, { batch: 5 });
    for (const n of [0, 17, COUNT - 1]) assert.deepEqual(engine.infer(images.subarray(n * 768, (n + 1) * 768)), reference.subarray(n * 10, (n + 1) * 10));
    assert.deepEqual(engine.predict(images, COUNT), new IntegerEngine(model).predict(images, COUNT));
  });

  test('weights beyond int8 run as two int8 convolutions with the same result', () => {
    // Weights x 2^e with e more bits of requantization shift: rms(2^e a, m, n + e) = rms(a, m, n), so
    // the logits must not change, while the weights no longer fit int8.
    const model = models.get(CASES[0][0])!;
    const conv = model.ops.find((op): op is ConvOp => op.kind === 'conv' && op.name === 'layer2.0.conv1')!;
    const largest = Math.max(...conv.weights.levels.map(Math.abs));
    const e = Math.ceil(Math.log2(200 / largest));
    const widened: IntegerModel = {
      ...model,
      ops: model.ops.map((op) =>
        op === conv ? ({ ...conv, weights: { ...conv.weights, levels: conv.weights.levels.map((v) => v * 2 ** e) }, requant: { ...conv.requant, shift: conv.requant.shift.map((s) => s + e) } } satisfies ConvOp) : op,
      ),
    };
    const engine = new HostIntegerEngine(widened, { batch: 16 });
    const line = engine.describe().find((l) => l.startsWith('layer2.0.conv1:'))!;
    assert.match(line, /<<7/, `expected a second, shifted int8 convolution: ${line}`);
    const expected = new IntegerEngine(model).inferBatch(images, COUNT);
    assert.deepEqual(engine.inferBatch(images, COUNT), expected);
    assert.deepEqual(new IntegerEngine(widened).inferBatch(images, COUNT), expected);
  });

  test('bad input is refused with a clear error', () => {
    const model = models.get(CASES[0][0])!;
    const engine = new HostIntegerEngine(model);
    assert.throws(() => engine.infer(new Uint8Array(3 * 32 * 32)), /an image must be 768 bytes \(uint8 \[3, 16, 16\], channel planes\), got 3072/);
    assert.throws(() => engine.inferBatch(new Uint8Array(768 * 3 - 1), 3), /3 images of uint8 \[3, 16, 16\] need 2304 bytes, got 2303/);
    assert.equal(engine.inferBatch(new Uint8Array(0), 0).length, 0);
    assert.throws(() => new HostIntegerEngine(model, { batch: 0 }), /batch must be an integer in \[1, 65536\], got 0/);
    const broken = { ...model, ops: model.ops.map((op) => (op.kind === 'conv' && op.name === 'layer1.0.conv1' ? { ...op, stride: [2, 2] as const } : op)) };
    assert.throws(() => new HostIntegerEngine(broken), /layer1\.0\.conv1/);
  });
});
}

hostEngineSuite('native');
hostEngineSuite('float');
