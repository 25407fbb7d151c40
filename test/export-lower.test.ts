/**
 * Lowering + integer engine against the fake-quantized model, per method, bit-width, shortcut
 * option and first/last-layer policy, on tiny ResNets and synthetic images:
 * - op by op: every integer op, fed the engine's own (dequantized) input, reproduces the float
 *   layer it came from: activation codes identical (a mismatch is allowed only within 2^-10 of a
 *   step from a threshold, where fixed-point rounding decides), residual and logit values within
 *   two units of their fixed-point scale;
 * - end to end: the same top-1 class on most images (a flipped code near a threshold changes the
 *   downstream values of an untrained random network, so some disagreement is expected there);
 * - the shift-add path is bit-identical to the multiply path.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { IntegerEngine, type IntArray } from '../src/export/engine.js';
import { argmax, fixedValue } from '../src/export/int-ops.js';
import type { ConvOp, IntegerModel, QuantizeOp } from '../src/export/ir.js';
import { LoweringError } from '../src/export/lower.js';
import { BasicBlock, ResNet } from '../src/models/resnet.js';
import { BatchNorm, Conv2d, Linear, Sequential } from '../src/nn/layers.js';
import type { Module } from '../src/nn/module.js';
import { isQuantizedLayer, type QuantizedLayer } from '../src/quant/qlayers.js';
import * as ops from '../src/tensor/ops.js';
import { Tensor, noGrad, tidy } from '../src/tensor/tensor.js';
import { CLASSES, NORMALIZATION, type TinyOptions, lowerTiny, tinyQuantizedModel } from './export-fixtures.js';
import { normalizeImages } from '../src/export/calibrate.js';
import { fakeQuantLogits, measureAgreement, perturbedTop1 } from '../src/export/agreement.js';

before(() => setBackend('js'));

/** The engine's values of a tensor as a float tensor of shape [1, C, H, W] (or [1, C] for vectors). */
function dequantized(ir: IntegerModel, values: IntArray, id: number, asVector = false): Tensor {
  const t = ir.tensors[id];
  const data = Float32Array.from(values, (v) => v * t.scale);
  return Tensor.fromArray(data, asVector ? [1, t.shape[0]] : [1, ...t.shape]);
}

function moduleAt(model: Module, path: string): Module {
  const m = [...model.namedModules()].find(([p]) => p === path)?.[1];
  assert.ok(m, `no module at ${path}`);
  return m;
}

/** The batch norm that follows a conv of the ResNet (null for the classifier). */
function batchNormAfter(model: ResNet, path: string): BatchNorm | null {
  if (path === 'conv1') return model.bn1;
  if (path === 'linear') return null;
  const conv = /^(layer\d+\.\d+)\.conv([12])$/.exec(path);
  if (conv) return (moduleAt(model, conv[1]) as BasicBlock)[conv[2] === '1' ? 'bn1' : 'bn2'];
  const shortcut = /^(layer\d+\.\d+\.shortcut)\.0$/.exec(path);
  assert.ok(shortcut, `unexpected conv ${path}`);
  return ((moduleAt(model, shortcut[1]) as Sequential).layers[1] as BatchNorm);
}

/** |alpha| * op(x, Q(w)) + bias of a (quantized) layer, without its input quantizer. */
function layerOutput(layer: Conv2d | Linear, x: Tensor): Tensor {
  const q = isQuantizedLayer(layer) ? (layer as QuantizedLayer & (Conv2d | Linear)) : null;
  const w = q?.weightQuantizer ? q.weightQuantizer.apply(layer.weight, 'test') : layer.weight;
  const y = layer instanceof Conv2d ? ops.conv2d(x, w, layer.bias, layer.params) : ops.linear(x, w, layer.bias);
  return q?.outputScale ? ops.scaleByAbs(y, q.outputScale) : y;
}

interface Mismatch {
  readonly op: string;
  readonly count: number;
  readonly of: number;
  readonly worstUnits: number;
}

/** Codes that differ, and the largest difference in units of the output scale. */
function compare(name: string, got: Float32Array, ref: Float32Array, scale: number): Mismatch {
  assert.equal(got.length, ref.length, `${name}: sizes`);
  let [count, worst] = [0, 0];
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - ref[i]) / scale;
    if (d > 1e-3 + 1e-5 * Math.abs(ref[i] / scale)) count++;
    worst = Math.max(worst, d);
  }
  return { op: name, count, of: got.length, worstUnits: worst };
}

/**
 * Each op's integer result against the float computation of the same layer on the engine's own
 * input for that op (so an earlier flipped code does not propagate). Returns per-op mismatches.
 */
function opByOp(model: ResNet, ir: IntegerModel, trace: IntArray[]): Mismatch[] {
  const out: Mismatch[] = [];
  const scaled = (id: number): Float32Array => Float32Array.from(trace[id], (v) => v * ir.tensors[id].scale);
  tidy(() =>
    noGrad(() => {
      for (const op of ir.ops) {
        if (op.kind === 'quantize') out.push(checkQuantize(model, ir, trace, op, scaled(op.output)));
        if (op.kind === 'conv') {
          const m = checkConv(model, ir, trace, op, scaled(op.output));
          if (m) out.push(m);
        }
      }
    }),
  );
  return out;
}

function checkQuantize(model: ResNet, ir: IntegerModel, trace: IntArray[], op: QuantizeOp, got: Float32Array): Mismatch {
  const scale = ir.tensors[op.output].scale;
  if (op.name === 'linear.input') {
    let features = dequantized(ir, trace[op.input], op.input, true);
    if (model.bn2) features = model.bn2.call(features);
    const aq = isQuantizedLayer(model.linear) ? model.linear.actQuantizer : null;
    // Post-training 8-bit input: the reference is round(x / scale) clamped to the code range.
    const rule = op.rule;
    assert.ok(aq || rule.kind === 'round');
    const ref = aq
      ? aq.apply(features, 'linear').toArray()
      : Float32Array.from(features.toArray(), (v) => (rule.kind === 'round' ? Math.max(rule.minCode, Math.min(rule.maxCode, Math.round(v / scale))) : NaN) * scale);
    return compare(op.name, got, ref, scale);
  }
  const layer = moduleAt(model, op.name) as Conv2d & QuantizedLayer;
  return compare(op.name, got, layer.actQuantizer!.apply(dequantized(ir, trace[op.input], op.input), op.name).toArray(), scale);
}

function checkConv(model: ResNet, ir: IntegerModel, trace: IntArray[], op: ConvOp, got: Float32Array): Mismatch | null {
  const layer = moduleAt(model, op.name) as Conv2d | Linear;
  if (!(isQuantizedLayer(layer) && layer.weightQuantizer) || op.weights.scheme === 'int8' && (layer as QuantizedLayer).weightQuantizer?.integerForm().codes[0]! < -127) {
    return null; // post-training or clamped weights: approximate by design, covered end to end
  }
  const input = dequantized(ir, trace[op.input], op.input, layer instanceof Linear);
  let y = layerOutput(layer, input);
  const bn = batchNormAfter(model, op.name);
  if (bn) y = bn.call(y);
  const scale = ir.tensors[op.output].scale;
  const e = op.epilogue;
  if (e.kind === 'activation') {
    const block = moduleAt(model, op.name.replace(/\.conv1$/, '')) as BasicBlock;
    return compare(op.name, got, (block.conv2 as Conv2d & QuantizedLayer).actQuantizer!.apply(y, op.name).toArray(), scale);
  }
  if (e.kind === 'residual' && e.shortcut) {
    const s = e.shortcut;
    let sc = dequantized(ir, trace[s.input], s.input);
    const channels = ir.tensors[op.output].shape[0];
    if (s.stride > 1 || sc.shape[1] !== channels) sc = ops.shortcutPad(sc, s.stride, s.channelOffset, channels - sc.shape[1] - s.channelOffset);
    y = ops.add(y, sc);
  }
  if (e.kind === 'residual' && e.relu) y = ops.relu(y);
  return compare(op.name, got, y.toArray(), scale);
}

function expectExactOps(model: ResNet, ir: IntegerModel, trace: IntArray[], what: string): void {
  for (const m of opByOp(model, ir, trace)) {
    const conv = ir.ops.find((op): op is ConvOp => op.kind === 'conv' && op.name === m.op);
    if (conv && conv.epilogue.kind !== 'activation') {
      // Residual / logit values: three roundings of half a unit (multiply-shift, bias, shortcut rescale).
      assert.ok(m.worstUnits <= 1.52, `${what} ${m.op}: ${m.worstUnits.toFixed(3)} units from the float result`);
    } else {
      assert.ok(m.count <= Math.max(1, m.of / 500), `${what} ${m.op}: ${m.count} of ${m.of} codes differ from the fake-quantized layer`);
    }
  }
}

/** Float logits of the fake-quantized model on the images the engine saw (its int8 input, dequantized). */
function fakeQuantLogitsOnEngineInput(model: ResNet, ir: IntegerModel, images: Uint8Array, count: number): Float32Array {
  const input = ir.ops[0];
  assert.equal(input.kind, 'input');
  const { scale, shape } = ir.tensors[input.output];
  const plane = shape[1] * shape[2];
  const x = Float32Array.from(images.subarray(0, count * shape[0] * plane), (p, i) => input.lut[(Math.floor(i / plane) % shape[0]) * 256 + p] * scale);
  return tidy(() => noGrad(() => model.call(Tensor.fromArray(x, [count, ...shape])).toArray()));
}

const CASES: (TinyOptions & { readonly label: string; readonly inputBits?: 8 | 16 })[] = [
  ...[2, 3, 4, 5].map((b) => ({ label: `apot W${b}A${b}`, method: 'apot' as const, wbits: b })),
  { label: 'apot W4A4 option B, apot8 first/last', method: 'apot', wbits: 4, shortcut: 'B', firstLast: 'apot8' },
  { label: 'apot W3A3 per-channel, same first/last, int16 input', method: 'apot', wbits: 3, perChannel: true, firstLast: 'same', inputBits: 16 },
  ...[1, 2, 4].map((b) => ({ label: `ewgs W${b}A${b}`, method: 'ewgs' as const, wbits: b })),
  { label: 'ewgs W2A2 float first/last, BN head', method: 'ewgs', wbits: 2, firstLast: 'float', headBatchNorm: true },
  { label: 'ewgs W3A3 same first/last (output scales on conv1 and linear)', method: 'ewgs', wbits: 3, firstLast: 'same' },
  ...[2, 4].map((b) => ({ label: `uniform W${b}A${b}`, method: 'uniform' as const, wbits: b })),
  ...[2, 4].map((b) => ({ label: `pact W${b}A${b}`, method: 'pact' as const, wbits: b })),
  ...[2, 3, 8].map((b) => ({ label: `lsq W${b}A${b}`, method: 'lsq' as const, wbits: b })),
  { label: 'lsq W4A4 option B, BN head, int8 first/last', method: 'lsq', wbits: 4, shortcut: 'B', headBatchNorm: true },
];

describe('lowered integer model vs the fake-quantized model', () => {
  for (const c of CASES) {
    test(c.label, () => {
      const tiny = tinyQuantizedModel(c);
      const warnings: string[] = [];
      const ir = lowerTiny(tiny, c, { inputBits: c.inputBits, warn: (m) => warnings.push(m) });
      const count = 12;
      const { images } = tiny.images;
      const size = 3 * 16 * 16;
      const multiply = new IntegerEngine(ir);
      const shiftAdd = new IntegerEngine(ir, { arithmetic: 'shift-add' });
      for (let n = 0; n < 2; n++) expectExactOps(tiny.model, ir, multiply.trace(images.subarray(n * size, (n + 1) * size)), `${c.label} image ${n}`);
      const logits = multiply.inferBatch(images.subarray(0, count * size), count);
      assert.deepEqual(shiftAdd.inferBatch(images.subarray(0, count * size), count), logits, 'shift-add and multiply differ');
      const float = fakeQuantLogitsOnEngineInput(tiny.model, ir, images, count);
      let same = 0;
      for (let n = 0; n < count; n++) same += argmax(float, n * 10, 10) === argmax(logits, n * 10, 10) ? 1 : 0;
      assert.ok(same >= count - 2, `${c.label}: same top-1 on ${same} of ${count} images`);
      if (c.firstLast === 'float') assert.ok(ir.meta.notes.some((n) => /post-training/.test(n)), 'float first/last layers are noted as a deviation');
    });
  }
});

test('agreement measurement: both models on labelled images, and the float model against itself', () => {
  const o: TinyOptions = { method: 'lsq', wbits: 3 };
  const tiny = tinyQuantizedModel(o);
  const ir = lowerTiny(tiny, o);
  const count = 12;
  const { images, channels, height, width } = tiny.images;
  const labels = Int32Array.from({ length: count }, (_, i) => i % 10);
  const data = { name: 'tiny', split: 'test' as const, images: images.subarray(0, count * 768), labels, count, channels, height, width, classes: [...CLASSES], source: 'synthetic' };
  const r = measureAgreement(tiny.model, ir, data);
  const float = fakeQuantLogits(tiny.model, data.images, count, [channels, height, width], NORMALIZATION);
  const ints = new IntegerEngine(ir).inferBatch(data.images, count);
  const pct = (pred: (n: number) => number): number => (100 * labels.filter((l, n) => pred(n) === l).length) / count;
  assert.equal(r.images, count);
  assert.equal(r.fakeQuantTop1, pct((n) => argmax(float, n * 10, 10)));
  assert.equal(r.integerTop1, pct((n) => argmax(ints, n * 10, 10)));
  assert.equal(r.sameTop1, (100 * labels.filter((_, n) => argmax(float, n * 10, 10) === argmax(ints, n * 10, 10)).length) / count);
  assert.equal(perturbedTop1(tiny.model, data, NORMALIZATION, 0), 100);
});

describe('lowering choices and refusals', () => {
  test('a float model (no quantizers) is refused', () => {
    const model = new ResNet({ blocks: [1], widths: [8], numClasses: 10, inChannels: 3, shortcut: 'A', headBatchNorm: false, init: 'kaiming-normal-fan-in', seed: 0 });
    const tiny = { model, images: tinyQuantizedModel({ method: 'lsq', wbits: 4 }).images };
    assert.throws(() => lowerTiny(tiny, { method: 'lsq', wbits: 4 }), (e: Error) => e instanceof LoweringError && /no quantizers/.test(e.message));
  });

  test('APoT int8 first/last weights below -127 are clamped with a warning naming the layer', () => {
    const o: TinyOptions = { method: 'apot', wbits: 4, firstLast: 'apot8', seed: 3 };
    const tiny = tinyQuantizedModel(o);
    // Make the most negative first-conv weight 1.5x the largest positive one: its code is about -190.
    const w = tiny.model.conv1.weight.toArray();
    const max = Math.max(...w);
    w[w.indexOf(Math.min(...w))] = -1.5 * max;
    tiny.model.conv1.weight.assign(w);
    const warnings: string[] = [];
    const ir = lowerTiny(tiny, o, { warn: (m) => warnings.push(m) });
    assert.ok(warnings.some((m) => /^conv1: \d+ int8 weight code\(s\) below -127 \(lowest -19\d/.test(m)), warnings.join('\n'));
    const conv1 = ir.ops.find((op): op is ConvOp => op.kind === 'conv' && op.name === 'conv1')!;
    assert.equal(Math.min(...conv1.weights.levels), -127);
  });

  test('residual stream: int8 mode stores int8 tensors and stays close to the int16 model', () => {
    const o: TinyOptions = { method: 'lsq', wbits: 4 };
    const tiny = tinyQuantizedModel(o);
    const wide = lowerTiny(tiny, o, { residualBits: 16 });
    const narrow = lowerTiny(tiny, o, { residualBits: 8 });
    const residual = (ir: IntegerModel) => ir.tensors.filter((t) => /output$/.test(t.name) && !/shortcut/.test(t.name)).map((t) => t.dtype);
    assert.ok(residual(wide).every((d) => d === 'int16'));
    assert.ok(residual(narrow).every((d) => d === 'int8'));
    const count = 16;
    const pixels = tiny.images.images.subarray(0, count * 768);
    const a = new IntegerEngine(wide).predict(pixels, count);
    const b = new IntegerEngine(narrow).predict(pixels, count);
    assert.ok(a.filter((p, i) => p === b[i]).length >= count - 4);
  });

  test('the input lookup table folds the normalization (int8 or int16): zero-padding stays integer 0', () => {
    const o: TinyOptions = { method: 'uniform', wbits: 2 };
    const tiny = tinyQuantizedModel(o);
    const x = normalizeImages(Uint8Array.from({ length: 3 * 256 }, (_, i) => i % 256), 1, 3, NORMALIZATION);
    for (const [bits, dtype, top] of [[8, 'int8', 127], [16, 'int16', 32767]] as const) {
      const ir = lowerTiny(tiny, o, { inputBits: bits });
      const input = ir.ops[0];
      assert.equal(input.kind, 'input');
      const { scale, dtype: actual } = ir.tensors[input.output];
      assert.equal(actual, dtype);
      assert.equal(Math.max(...input.lut.map(Math.abs)), top);
      x.forEach((v, i) => assert.ok(Math.abs(input.lut[i] * scale - v) <= scale / 2 + 1e-6, `${bits} bits: pixel ${i % 256} of channel ${Math.floor(i / 256)}`));
    }
  });

  test('identity shortcuts inside a stage add without rescaling; stage transitions rescale', () => {
    const o: TinyOptions = { method: 'ewgs', wbits: 4 };
    const tiny = tinyQuantizedModel(o);
    const ir = lowerTiny(tiny, o);
    const shortcuts = ir.ops.filter((op): op is ConvOp => op.kind === 'conv' && op.epilogue.kind === 'residual' && op.epilogue.shortcut !== null);
    const identity = shortcuts.filter((op) => op.name === 'layer1.0.conv2');
    assert.equal(identity.length, 1);
    const s = identity[0].epilogue.kind === 'residual' ? identity[0].epilogue.shortcut! : null;
    assert.deepEqual([s!.mult, s!.shift], [2 ** 30, 30]);
    assert.equal(ir.tensors[s!.input].scale, ir.tensors[identity[0].output].scale);
    const transition = shortcuts.find((op) => op.name === 'layer2.0.conv2')!;
    const t = transition.epilogue.kind === 'residual' ? transition.epilogue.shortcut! : null;
    const ratio = ir.tensors[t!.input].scale / ir.tensors[transition.output].scale;
    assert.notEqual(ratio, 1);
    assert.ok(Math.abs(fixedValue(t!) / ratio - 1) < 1e-8, `${fixedValue(t!)} vs ${ratio}`);
  });
  test('IR v2 fields: square kernels as pairs, dense convs, no ceilings, the global average pool as a named [H, W] window', () => {
    const o: TinyOptions = { method: 'apot', wbits: 3, shortcut: 'B' };
    const ir = lowerTiny(tinyQuantizedModel(o), o);
    assert.equal(ir.version, 2);
    for (const op of ir.ops) {
      if (op.kind === 'quantize') assert.equal(op.ceiling, null, op.name);
      if (op.kind !== 'conv') continue;
      assert.equal(op.groups, 1, op.name);
      assert.equal(op.kernel[0], op.kernel[1], op.name);
      if (op.epilogue.kind !== 'logits') assert.equal(op.epilogue.ceiling, null, op.name);
    }
    const strided = ir.ops.find((op): op is ConvOp => op.kind === 'conv' && op.name === 'layer2.0.conv1')!;
    assert.deepEqual([strided.kernel, strided.stride, strided.padding], [[3, 3], [2, 2], [1, 1]]);
    const pools = ir.ops.filter((op) => op.kind === 'sumpool');
    assert.equal(pools.length, 1);
    const pool = pools[0];
    assert.ok(pool.kind === 'sumpool');
    assert.deepEqual([pool.name, pool.kernel, pool.stride, pool.padding], ['pool', ir.tensors[pool.input].shape.slice(1), [1, 1], [0, 0]]);
    assert.deepEqual(ir.tensors[pool.output].shape, [32, 1, 1]);
  });
});
