/**
 * The triple-MAC kernel of the C export (runtime-triple.ts): kernels.ts takes it for dense convs
 * whose input range and weight levels leave at least 4 dot steps between field reads (tripleChunk)
 * and keeps the dual-MAC kernel otherwise; the logits equal the integer engine's on the host (gcc
 * -std=c99 -Wall -Wextra -Werror -pedantic) and on a Cortex-M4 under QEMU, for a W2A2 ResNet and
 * for a conv at the chunk's bound (inputs and weights at their extremes: a longer chunk would
 * overflow the field, which the test shows by running the C with one chunk for the whole row), and for
 * other kernel shapes and signed codes.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { generateC } from '../src/export/c/generate.js';
import { kernelLayers, tripleChunk } from '../src/export/c/kernels.js';
import { deviceToolsMissing, runOnDevice, runOnHost } from '../src/export/c/toolchain.js';
import { IntegerEngine } from '../src/export/engine.js';
import type { ConvOp, IntegerModel, QuantizeOp } from '../src/export/ir.js';
import { validateIntegerModel } from '../src/export/validate.js';
import { lowerTiny, tinyQuantizedModel } from './export-fixtures.js';
import { IrModelBuilder, randomImages } from './ir-models.js';

function assertSameLogits(actual: Int32Array, expected: Int32Array, what: string): void {
  assert.equal(actual.length, expected.length, what);
  const first = actual.findIndex((v, i) => v !== expected[i]);
  assert.equal(first, -1, `${what}: logit ${first} is ${actual[first]}, the engine's ${expected[first]}`);
}

/**
 * Codes 0..7 (input channels 0 and 1 held at 7 by a large bias), then a 3x3 conv to int32 outputs
 * with weight levels up to `top` in magnitude: output channel 0 all +top, channel 1 all -top, the
 * rest random. P = 7 top: top 6 gives 3 x 4 x 42 = 504 <= 511 (chunk 4, the least the kernel
 * takes), top 7 gives 3 steps (the dual-MAC kernel).
 */
function boundaryModel(top: number): IntegerModel {
  const b = new IrModelBuilder(21);
  let x = b.input(3, 9, 10, 'int8');
  x = b.quantize('codes', x, { rule: 'uniform', bits: 3 }, true);
  const model = b.build('triple-boundary', b.conv('edge', x, { out: 6, kernel: [3, 3], padding: [1, 1], weights: 'uniform', target: { kind: 'logits' } }));
  const ops = model.ops.map((op) => {
    if (op.kind === 'quantize') return { ...op, requant: { ...op.requant, bias: Int32Array.from(op.requant.bias, (v, c) => (c < 2 ? 1 << 20 : v)) } } satisfies QuantizeOp;
    if (op.kind !== 'conv') return op;
    const levels = Int32Array.from(op.weights.levels, (v) => (v === 3 ? top : v === -3 ? -top : 2 * v)); // -3..3 -> -top, -4, -2, 0, 2, 4, top
    const patch = op.weights.codes.length / op.outChannels;
    const codes = Uint8Array.from(op.weights.codes, (c, i) => (i < patch ? levels.indexOf(top) : i < 2 * patch ? levels.indexOf(-top) : c));
    return { ...op, weights: { ...op.weights, levels, codes } } satisfies ConvOp;
  });
  const out = { ...model, ops };
  validateIntegerModel(out);
  return out;
}

/** 2-bit codes (unsigned and signed) into convs of other shapes than 3x3 stride 1: 1x1 stride 2, 2x3 padded, 3x3 stride 2 (the value-by-value and border im2col). */
function shapesModel(): IntegerModel {
  const b = new IrModelBuilder(8);
  let x = b.input(3, 11, 10, 'int8');
  x = b.quantize('codes', x, { rule: 'uniform', bits: 2 }, true);
  x = b.conv('pointwise', x, { out: 8, kernel: [1, 1], stride: [2, 2], weights: 'uniform', target: { kind: 'activation', act: { rule: 'signed', bits: 2 } } });
  x = b.conv('nonsquare', x, { out: 7, kernel: [2, 3], padding: [0, 1], weights: 'uniform', target: { kind: 'activation', act: { rule: 'uniform', bits: 2 } } });
  x = b.conv('strided', x, { out: 6, kernel: [3, 3], stride: [2, 2], padding: [1, 1], weights: 'uniform', target: { kind: 'activation', act: { rule: 'uniform', bits: 2 } } });
  return b.build('triple-shapes', b.linear('fc', x, 5));
}

const conv = (model: IntegerModel): ConvOp => model.ops.find((op): op is ConvOp => op.kind === 'conv')!;

before(() => setBackend('js'));

describe('triple-MAC kernel', () => {
  test('tripleChunk: the largest multiple of 4 within the field bounds, null below 4', () => {
    assert.equal(tripleChunk(boundaryModel(6), conv(boundaryModel(6))), 4);
    assert.equal(tripleChunk(boundaryModel(7), conv(boundaryModel(7))), null);
  });

  test('a conv whose bounds allow fewer than 4 steps keeps the dual-MAC kernel; at the bound it takes the triple-MAC kernel; same logits on the host', () => {
    const images = randomImages(boundaryModel(6), 3, 4);
    for (const [top, kind] of [[6, 'triple'], [7, 'dsp']] as const) {
      const model = boundaryModel(top);
      const generated = generateC(model, { headerName: 'model.h' });
      const k = model.ops.indexOf(conv(model));
      assert.equal(generated.kernels[k]?.kind, kind, `levels up to ${top}`);
      assert.deepEqual(generated.notes, []);
      assertSameLogits(runOnHost(generated, images, 3).logits, new IntegerEngine(model).inferBatch(images, 3), `levels up to ${top}`);
    }
  });

  test('1x1 stride 2, 2x3 and 3x3 stride 2 kernels, signed and unsigned codes: on the triple-MAC kernel, same logits on the host', () => {
    const model = shapesModel();
    const generated = generateC(model, { headerName: 'model.h' });
    const kinds = model.ops.flatMap((op, k) => (op.kind === 'conv' ? [`${op.name} ${generated.kernels[k]?.kind}`] : []));
    assert.deepEqual(kinds, ['pointwise triple', 'nonsquare triple', 'strided triple', 'fc dsp']);
    assert.match(generated.source, /tq_conv_triple_int8\(&\w+, \d+, \d+,[^;]*; \/\* nonsquare \*\//);
    const images = randomImages(model, 4, 3);
    assertSameLogits(runOnHost(generated, images, 4).logits, new IntegerEngine(model).inferBatch(images, 4), 'shapes');
  });

  test('at the bound the chunk is tight: the whole row (12 steps) between field reads gives other logits', () => {
    const model = boundaryModel(6);
    const images = randomImages(model, 2, 4);
    const generated = generateC(model, { headerName: 'model.h' });
    const call = /tq_conv_triple_uint8\(&tq_conv_2, (\d+), 4,/;
    assert.match(generated.source, call);
    const longer = { ...generated, source: generated.source.replace(call, 'tq_conv_triple_uint8(&tq_conv_2, $1, 12,') };
    const expected = new IntegerEngine(model).inferBatch(images, 2);
    const logits = runOnHost(longer, images, 2).logits;
    assert.ok(logits.some((v, i) => v !== expected[i]), 'a chunk of 12 steps overflows the 10-bit field');
  });

  test('W2A2 ResNet (LSQ, per channel): every conv but the int8 first and last on the triple-MAC kernel; the export report names them', () => {
    const options = { method: 'lsq', wbits: 2, perChannel: true } as const;
    const t = tinyQuantizedModel(options);
    const model = lowerTiny(t, options);
    const generated = generateC(model, { headerName: 'model.h' });
    const onTriple = model.ops.flatMap((op, k) => (op.kind === 'conv' && generated.kernels[k]?.kind === 'triple' ? [op.name] : []));
    const dense = model.ops.flatMap((op) => (op.kind === 'conv' && op.weights.scheme !== 'int8' ? [op.name] : []));
    assert.ok(dense.length >= 6);
    assert.deepEqual(onTriple, dense);
    assert.match(kernelLayers(model, generated.kernels).join('\n'), new RegExp(`^triple-MAC kernel .*: ${dense[0].replaceAll('.', '\\.')} \\(block \\d+, every \\d+ steps\\)`));
    assertSameLogits(runOnHost(generated, t.images.images, t.images.count).logits, new IntegerEngine(model).inferBatch(t.images.images, t.images.count), 'W2A2 host');
  });
});

describe('triple-MAC kernel on a Cortex-M4 (QEMU mps2-an386)', () => {
  const missing = deviceToolsMissing();
  test('W2A2 ResNet, the conv at the bound and the other shapes: same logits as the engine (MLA and LDRD written out)', { skip: missing ? `skipped: ${missing}` : false }, () => {
    const options = { method: 'lsq', wbits: 2, perChannel: true } as const;
    const t = tinyQuantizedModel(options);
    const resnet = lowerTiny(t, options);
    const n = 2;
    const some = t.images.images.subarray(0, (t.images.images.length / t.images.count) * n);
    const generated = generateC(resnet, { headerName: 'model.h' });
    assert.match(generated.source, /tq_conv_triple_uint8\(/);
    assertSameLogits(runOnDevice(generated, some, n).logits, new IntegerEngine(resnet).inferBatch(some, n), 'W2A2 Cortex-M4');
    const boundary = boundaryModel(6);
    const images = randomImages(boundary, 2, 4);
    assertSameLogits(runOnDevice(generateC(boundary, { headerName: 'model.h' }), images, 2).logits, new IntegerEngine(boundary).inferBatch(images, 2), 'bound Cortex-M4');
    const shapes = shapesModel();
    const shapeImages = randomImages(shapes, 2, 3);
    assertSameLogits(runOnDevice(generateC(shapes, { headerName: 'model.h' }), shapeImages, 2).logits, new IntegerEngine(shapes).inferBatch(shapeImages, 2), 'shapes Cortex-M4');
  });
});
