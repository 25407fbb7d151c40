/**
 * ONNX export: onnxruntime (npm onnxruntime-node) loads and runs the exported models, and their
 * logits agree with tinyquant's own (fake-quantized) eval forward on the default backend.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/export/onnx/graph.js';
import { ONNX_INPUT, ONNX_OPSET, ONNX_OUTPUT, exportOnnx, writeOnnxFile } from '../src/export/onnx/index.js';
import { DataType, encodeModel } from '../src/export/onnx/proto.js';
import { lowerActivation } from '../src/export/onnx/quant.js';
import { compareWithOnnxRuntime } from '../src/export/onnx/verify.js';
import { onnxExporter } from '../src/export/onnx/exporter.js';
import { DEFAULT_CONFIG } from '../src/train/config.js';
import { type ImageDataset, createEvalLoader } from '../src/data/index.js';
import { ResNet, type ShortcutOption } from '../src/models/index.js';
import { ApotActivationQuantizer } from '../src/quant/apot.js';
import { EwgsQuantizer } from '../src/quant/ewgs.js';
import { LsqQuantizer } from '../src/quant/lsq.js';
import { PactQuantizer } from '../src/quant/pact.js';
import { type FirstLastPolicy, calibrate, quantize, quantizedLayers } from '../src/quant/quantize.js';
import type { MethodName, TensorQuantizer } from '../src/quant/quantizer.js';
import { UniformQuantizer } from '../src/quant/uniform.js';
import { BatchNorm } from '../src/nn/layers.js';
import { Module } from '../src/nn/module.js';
import * as ops from '../src/tensor/ops.js';
import { Tensor, noGrad, tidy } from '../src/tensor/tensor.js';
import { Rng } from '../src/util/rng.js';

const SHAPE = [16, 3, 16, 16] as const;
const CLASSES = 10;

function normals(rng: Rng, n: number, mean = 0, std = 1): Float32Array {
  return Float32Array.from({ length: n }, () => mean + std * rng.normal());
}

function smallResNet(shortcut: ShortcutOption, headBatchNorm: boolean, seed: number): ResNet {
  return new ResNet({
    blocks: [1, 1, 1],
    widths: [8, 16, 32],
    numClasses: CLASSES,
    inChannels: 3,
    shortcut,
    headBatchNorm,
    init: 'kaiming-normal-fan-in',
    seed,
  });
}

/** Batch-norm parameters and statistics away from their initial values. */
function randomizeBatchNorms(model: ResNet, rng: Rng): void {
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof BatchNorm)) continue;
    const c = m.channels;
    m.weight.assign(Float32Array.from({ length: c }, () => 0.5 + rng.next()));
    m.bias.assign(normals(rng, c, 0.2, 0.3));
    m.runningMean.assign(normals(rng, c, 0, 0.3));
    m.runningVar.assign(Float32Array.from({ length: c }, () => 0.5 + rng.next()));
  }
}

/**
 * Quantizer parameters where the data is: APoT and PACT clipping scales near the activations'
 * spread (their defaults, 8 and 10, leave most levels unused), EWGS lower bounds off zero so the
 * exported offset is exercised.
 */
function placeQuantizers(model: ResNet): void {
  for (const [, layer] of quantizedLayers(model)) {
    const act = layer.actQuantizer;
    if (act instanceof ApotActivationQuantizer || act instanceof PactQuantizer) act.alpha.assign(Float32Array.of(2.5));
    if (act instanceof EwgsQuantizer) act.lower.assign(Float32Array.of(0.1));
  }
}

interface Case {
  readonly method: MethodName;
  readonly bits: number;
  readonly firstLast: FirstLastPolicy;
  readonly shortcut: ShortcutOption;
  readonly headBatchNorm?: boolean;
  readonly perChannel?: boolean;
}

/** A calibrated, eval-mode model (float when `c` is null) and random normalized images. */
function prepare(c: Case | null, seed: number): { model: ResNet; images: Float32Array } {
  const rng = Rng.derive(seed, 7);
  const model = smallResNet(c?.shortcut ?? 'A', c?.headBatchNorm ?? false, seed);
  randomizeBatchNorms(model, rng);
  const images = normals(rng, SHAPE.reduce((a, b) => a * b, 1));
  if (c) {
    quantize(model, { method: c.method, wbits: c.bits, abits: c.bits, firstLast: c.firstLast, perChannel: c.perChannel });
    calibrate(model, images, SHAPE);
    placeQuantizers(model);
  }
  model.eval();
  return { model, images };
}

function modelLogits(model: ResNet, images: Float32Array): Float32Array {
  return tidy(() => noGrad(() => model.call(Tensor.fromArray(images, SHAPE)).toArray()));
}

/** A session from model bytes or a file. */
async function session(model: Uint8Array | string): Promise<ort.InferenceSession> {
  const options = { intraOpNumThreads: 1, interOpNumThreads: 1 };
  return typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options);
}

async function onnxRun(bytes: Uint8Array | string, feeds: Record<string, ort.Tensor>, output: string): Promise<Float32Array> {
  const s = await session(bytes);
  try {
    return (await s.run(feeds))[output].data as Float32Array;
  } finally {
    await s.release();
  }
}

function onnxLogits(bytes: Uint8Array | string, images: Float32Array): Promise<Float32Array> {
  return onnxRun(bytes, { [ONNX_INPUT]: new ort.Tensor('float32', images, [...SHAPE]) }, ONNX_OUTPUT);
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

interface Agreement {
  /** max |onnx - model| over all logits, relative to max |model logit|. */
  readonly relMaxDiff: number;
  readonly sameTop1: number;
}

function agreement(expected: Float32Array, actual: Float32Array): Agreement {
  assert.equal(actual.length, expected.length);
  let maxDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(actual[i] - expected[i]));
    maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
  }
  let sameTop1 = 0;
  for (let r = 0; r < expected.length / CLASSES; r++) {
    const row = (a: Float32Array) => a.subarray(r * CLASSES, (r + 1) * CLASSES);
    if (argmax(row(expected)) === argmax(row(actual))) sameTop1++;
  }
  return { relMaxDiff: maxDiff / maxAbs, sameTop1 };
}

// ---- a minimal protobuf reader, to check the file's structure independently of the writer ----

interface Field {
  readonly field: number;
  readonly int: bigint;
  readonly bytes: Uint8Array;
}

function readVarint(b: Uint8Array, pos: { at: number }): bigint {
  let result = 0n;
  for (let shift = 0n; ; shift += 7n) {
    const byte = b[pos.at++];
    result |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return result;
  }
}

function readFields(b: Uint8Array): Field[] {
  const fields: Field[] = [];
  const pos = { at: 0 };
  while (pos.at < b.length) {
    const tag = Number(readVarint(b, pos));
    const wire = tag & 7;
    if (wire === 0) fields.push({ field: tag >> 3, int: readVarint(b, pos), bytes: new Uint8Array(0) });
    else if (wire === 2) {
      const n = Number(readVarint(b, pos));
      fields.push({ field: tag >> 3, int: 0n, bytes: b.subarray(pos.at, pos.at + n) });
      pos.at += n;
    } else if (wire === 5) {
      fields.push({ field: tag >> 3, int: 0n, bytes: b.subarray(pos.at, pos.at + 4) });
      pos.at += 4;
    } else throw new Error(`unexpected wire type ${wire}`);
  }
  return fields;
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const sub = (fields: Field[], n: number) => fields.filter((f) => f.field === n);

interface Structure {
  readonly opset: number;
  readonly opTypes: string[];
  /** Initializer name -> ONNX data type. */
  readonly initializers: Map<string, number>;
  readonly metadata: Map<string, string>;
}

/**
 * ModelProto: opset_import (8) version (2); metadata_props (14) key (1), value (2); graph (7):
 * nodes (1) op_type (4), initializers (5) name (8), data_type (2).
 */
function structure(bytes: Uint8Array): Structure {
  const model = readFields(bytes);
  const graph = readFields(sub(model, 7)[0].bytes);
  const opset = Number(sub(readFields(sub(model, 8)[0].bytes), 2)[0].int);
  const opTypes = sub(graph, 1).map((n) => text(sub(readFields(n.bytes), 4)[0].bytes));
  const initializers = new Map(
    sub(graph, 5).map((t) => {
      const f = readFields(t.bytes);
      return [text(sub(f, 8)[0].bytes), Number(sub(f, 2)[0].int)] as const;
    }),
  );
  const metadata = new Map(
    sub(model, 14).map((entry) => {
      const f = readFields(entry.bytes);
      return [text(sub(f, 1)[0].bytes), text(sub(f, 2)[0].bytes)] as const;
    }),
  );
  return { opset, opTypes, initializers, metadata };
}

// ---- tests ------------------------------------------------------------------------------------

const CASES: Case[] = [
  { method: 'apot', bits: 2, firstLast: 'int8', shortcut: 'B' },
  { method: 'apot', bits: 4, firstLast: 'int8', shortcut: 'B' },
  { method: 'apot', bits: 4, firstLast: 'same', shortcut: 'A', perChannel: true },
  { method: 'ewgs', bits: 2, firstLast: 'float', shortcut: 'A', headBatchNorm: true },
  { method: 'ewgs', bits: 4, firstLast: 'float', shortcut: 'A', headBatchNorm: true, perChannel: true },
  { method: 'ewgs', bits: 4, firstLast: 'same', shortcut: 'B' },
  { method: 'uniform', bits: 2, firstLast: 'same', shortcut: 'A' },
  { method: 'uniform', bits: 4, firstLast: 'int8', shortcut: 'A' },
  { method: 'pact', bits: 2, firstLast: 'int8', shortcut: 'A' },
  { method: 'pact', bits: 4, firstLast: 'float', shortcut: 'B' },
  { method: 'lsq', bits: 2, firstLast: 'int8', shortcut: 'A', perChannel: true },
  { method: 'lsq', bits: 4, firstLast: 'int8', shortcut: 'B' },
];

/**
 * Logits tolerance, relative to the largest |logit|. onnxruntime and our backends accumulate the
 * float32 convolutions in different orders (differences ~1e-7 relative, as the float model shows);
 * an activation within that distance of a rounding threshold can land one level apart in the two,
 * which moves the logits by ~1e-4..1e-2 of their range (the most where a 4-bit activation feeds a
 * float last layer directly). A wrong scale, offset or level table moves them by far more.
 */
const QUANTIZED_TOLERANCE = 1.5e-2;
const FLOAT_TOLERANCE = 1e-5;

describe('ONNX export agrees with the fake-quantized model under onnxruntime', () => {
  CASES.forEach((c, i) => {
    const name = `${c.method} W${c.bits}A${c.bits}, first/last ${c.firstLast}, shortcut ${c.shortcut}${c.perChannel ? ', per channel' : ''}`;
    test(name, async () => {
      const { model, images } = prepare(c, 100 + i);
      const a = agreement(modelLogits(model, images), await onnxLogits(exportOnnx(model), images));
      assert.ok(a.relMaxDiff < QUANTIZED_TOLERANCE, `${name}: relative logit difference ${a.relMaxDiff}`);
      assert.equal(a.sameTop1, SHAPE[0], `${name}: top-1 differs on ${SHAPE[0] - a.sameTop1} images`);
    });
  });

  test('a float model matches to float rounding', async () => {
    const { model, images } = prepare(null, 1);
    const a = agreement(modelLogits(model, images), await onnxLogits(exportOnnx(model), images));
    assert.ok(a.relMaxDiff < FLOAT_TOLERANCE, `relative logit difference ${a.relMaxDiff}`);
    assert.equal(a.sameTop1, SHAPE[0]);
  });
});

/** The activation subgraph alone, as a model from `x` [n] to its (rescaled) quantized value. */
function activationModel(q: TensorQuantizer, n: number): { bytes: Uint8Array; valueScale: number } {
  const g = new GraphBuilder();
  const x = g.reserve('x');
  const { output, valueScale } = lowerActivation(g, q, x, 'act');
  g.nameOutput(output, 'y');
  const graph = {
    name: 'activation',
    nodes: g.nodes,
    initializers: g.initializers,
    inputs: [{ name: 'x', elemType: DataType.FLOAT, shape: [n] }],
    outputs: [{ name: 'y', elemType: DataType.FLOAT, shape: [n] }],
    doc: '',
  };
  const bytes = encodeModel({ irVersion: 7, opset: ONNX_OPSET, producerName: 'test', producerVersion: '0', doc: '', metadata: {}, graph });
  return { bytes, valueScale };
}

function withRange(q: EwgsQuantizer, lower: number, upper: number): EwgsQuantizer {
  q.lower.assign(Float32Array.of(lower));
  q.upper.assign(Float32Array.of(upper));
  return q;
}

function withScale<Q extends { alpha: Tensor } | { step: Tensor }>(q: Q, value: number): Q {
  ('alpha' in q ? q.alpha : q.step).assign(Float32Array.of(value));
  return q;
}

describe('activation quantizers as QDQ subgraphs', () => {
  const quantizers: [string, () => TensorQuantizer][] = [
    ...[2, 3, 4, 5].map((b): [string, () => TensorQuantizer] => [`apot ${b}-bit`, () => withScale(new ApotActivationQuantizer({ bits: b }), 1.7)]),
    ['apot 4-bit imagenet variant', () => withScale(new ApotActivationQuantizer({ bits: 4, variant: 'imagenet' }), 2.2)],
    ...[2, 4, 8].map((b): [string, () => TensorQuantizer] => [`ewgs ${b}-bit`, () => withRange(new EwgsQuantizer({ role: 'activation', bits: b }), 0.1, 2.3)]),
    ['ewgs 4-bit, negative lower bound', () => withRange(new EwgsQuantizer({ role: 'activation', bits: 4 }), -0.2, 1.9)],
    ...[2, 8].map((b): [string, () => TensorQuantizer] => [`lsq ${b}-bit`, () => withScale(new LsqQuantizer({ role: 'activation', bits: b }), 0.21)]),
    ['pact 3-bit', () => withScale(new PactQuantizer(3), 2.5)],
    ['uniform (DoReFa) 4-bit', () => new UniformQuantizer('activation', 4)],
  ];
  for (const [name, make] of quantizers) {
    test(`${name}: onnxruntime reproduces every quantized value`, async () => {
      const q = make();
      const rng = Rng.derive(5, name.length);
      // Inputs over and beyond the clip range; random, so none sits exactly on a threshold.
      const x = Float32Array.from({ length: 20000 }, () => -0.5 + 4 * rng.next());
      const expected = tidy(() => noGrad(() => q.apply(Tensor.fromArray(x, [x.length]), 'act').toArray()));
      const { bytes, valueScale } = activationModel(q, x.length);
      const actual = await onnxRun(bytes, { x: new ort.Tensor('float32', x, [x.length]) }, 'y');
      const mismatches = [...expected.keys()].filter((i) => Math.abs(actual[i] * valueScale - expected[i]) > 1e-5 * (1 + Math.abs(expected[i])));
      assert.deepEqual(mismatches.slice(0, 5).map((i) => [x[i], expected[i], actual[i] * valueScale]), [], `${name}: ${mismatches.length} values differ`);
    });
  }
});

describe('exported file structure', () => {
  for (const c of [CASES[1], CASES[4]]) {
    test(`${c.method}: opset ${ONNX_OPSET}, int8 weight codes for every quantized layer, no float copy`, () => {
      const { model } = prepare(c, 3);
      const s = structure(exportOnnx(model));
      assert.equal(s.opset, ONNX_OPSET);
      const layers = quantizedLayers(model).filter(([, l]) => l.weightQuantizer);
      assert.ok(layers.length > 0);
      for (const [path] of layers) {
        assert.equal(s.initializers.get(`${path}.weight_codes`), DataType.INT8, `${path}.weight_codes`);
        assert.equal(s.initializers.has(`${path}.weight`), false, `${path} also has float weights`);
      }
      const activations = quantizedLayers(model).filter(([, l]) => l.actQuantizer).length;
      assert.equal(s.opTypes.filter((t) => t === 'QuantizeLinear').length, activations);
      assert.equal(s.opTypes.filter((t) => t === 'DequantizeLinear').length, activations + layers.length);
      // APoT activations go through the level table; EWGS's lower bound is subtracted.
      const apotActivations = quantizedLayers(model).filter(([, l]) => l.actQuantizer?.method === 'apot').length;
      assert.equal(s.opTypes.filter((t) => t === 'Gather').length, apotActivations);
      assert.equal(apotActivations > 0, c.method === 'apot');
      assert.equal(s.opTypes.includes('Sub'), true);
    });
  }

  test('a float model has float weights and no quantization nodes', () => {
    const { model } = prepare(null, 2);
    const s = structure(exportOnnx(model));
    assert.equal(s.initializers.get('conv1.weight'), DataType.FLOAT);
    assert.equal(s.opTypes.some((t) => t.endsWith('Linear') || t === 'Gather'), false);
    assert.deepEqual(new Set(s.opTypes), new Set(['Conv', 'BatchNormalization', 'Relu', 'Add', 'Slice', 'Pad', 'GlobalAveragePool', 'Flatten', 'Gemm']));
  });
});

describe('what ONNX export refuses', () => {
  test('a model in training mode', () => {
    const { model } = prepare(CASES[3], 4);
    model.train();
    assert.throws(() => exportOnnx(model), /training mode; call model.eval\(\) first/);
  });

  test("weight codes beyond int8 (APoT's unclamped 8-bit first layer, EWGS 8-bit weights)", () => {
    const apot8 = prepare({ method: 'apot', bits: 4, firstLast: 'apot8', shortcut: 'B' }, 5).model;
    const w = apot8.conv1.weight.toArray();
    w[0] = -2 * Math.max(...w); // code -254: the signed-maximum scale does not clamp
    apot8.conv1.weight.assign(w);
    assert.throws(() => exportOnnx(apot8), /^Error: conv1: int8 8-bit weight codes span \[-254, 127\], outside int8/);
    const ewgs8 = prepare({ method: 'ewgs', bits: 8, firstLast: 'float', shortcut: 'A' }, 6).model;
    assert.throws(() => exportOnnx(ewgs8), /layer1\.0\.conv1: ewgs 8-bit weight codes span \[-255, \d+\], outside int8/);
  });

  test('a module the graph cannot trace: the error names the layer', () => {
    class Doubler extends Module {
      forward(x: Tensor): Tensor {
        return ops.affine(x, 2, 0);
      }
    }
    assert.throws(() => exportOnnx(new Doubler().train(false)), /model \(Doubler\): a layer tinyquant cannot trace/);
  });
});

describe('writeOnnxFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tinyquant-onnx-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('writes a model onnxruntime loads from disk, and no file at all when the export fails', async () => {
    const { model, images } = prepare(CASES[0], 8);
    const file = join(dir, 'model.onnx');
    const size = writeOnnxFile(file, model, { normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] } });
    assert.ok(size > 0);
    const a = agreement(modelLogits(model, images), await onnxLogits(file, images));
    assert.equal(a.sameTop1, SHAPE[0]);
    model.train();
    assert.throws(() => writeOnnxFile(join(dir, 'bad.onnx'), model), /training mode/);
    assert.deepEqual(readdirSync(dir), ['model.onnx']);
    assert.equal(existsSync(join(dir, 'bad.onnx')), false);
  });
});

describe('onnxExporter (tinyquant export --format onnx)', () => {
  test('returns the model for --out, with the normalization in its metadata, and a summary', async () => {
    const { model, images } = prepare(CASES[0], 10);
    const config = { ...DEFAULT_CONFIG, method: 'apot' as const, wbits: 2, abits: 2 };
    const trained = { model, config, firstLast: 'int8', source: 'run/last.safetensors', inputShape: [3, 32, 32] as const, plan: null, classes: null };
    const noModel = () => Promise.reject(new Error('the ONNX exporter does not use the integer model'));
    const r = await onnxExporter({ trained, integerModel: noModel, out: 'model.onnx', warn: () => {} });
    assert.equal(r.files.length, 1);
    assert.equal(r.files[0].path, 'model.onnx');
    assert.match(r.summary[0], /model\.onnx: \d+ bytes, ONNX opset 13/);
    const { metadata } = structure(r.files[0].bytes);
    assert.equal(metadata.get('tinyquant.normalization.mean'), '0.491,0.482,0.447');
    assert.equal(metadata.get('tinyquant.method'), 'apot W2A2, first/last int8');
    assert.equal(agreement(modelLogits(model, images), await onnxLogits(r.files[0].bytes, images)).sameTop1, SHAPE[0]);
  });
});

describe('compareWithOnnxRuntime', () => {
  test('classifies a loader with both and reports agreement, accuracies and speed', async () => {
    const { model } = prepare(CASES[4], 9);
    const [, channels, height, width] = SHAPE;
    const rng = Rng.derive(9, 1);
    const count = 24;
    const dataset: ImageDataset = {
      name: 'random',
      split: 'test',
      images: Uint8Array.from({ length: count * channels * height * width }, () => rng.int(256)),
      labels: Int32Array.from({ length: count }, () => rng.int(CLASSES)),
      count,
      channels,
      height,
      width,
      classes: Array.from({ length: CLASSES }, (_, k) => `class${k}`),
      source: 'test',
    };
    const loader = createEvalLoader(dataset, { batchSize: 10, normalization: 'apot', workers: 0 });
    try {
      const r = await compareWithOnnxRuntime(model, exportOnnx(model), loader);
      assert.equal(r.images, count);
      assert.equal(r.sameTop1, 100);
      assert.equal(r.top1Onnx, r.top1Model);
      // Logits are O(1); the differences are float rounding unless a rare code flip (see QUANTIZED_TOLERANCE).
      assert.ok(r.maxLogitDiff < 5e-2, `max logit difference ${r.maxLogitDiff}`);
      assert.ok(r.onnxImagesPerSecond > 0);
    } finally {
      await loader.close();
    }
    model.train();
    const unused = createEvalLoader(dataset, { batchSize: 10, workers: 0 });
    await assert.rejects(compareWithOnnxRuntime(model, new Uint8Array(0), unused), /eval mode/);
    await unused.close();
  });
});
