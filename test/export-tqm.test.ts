/**
 * The tqm format: bit-identical round trips (bytes and engine outputs), weights packed at their
 * bit-width, clear errors for truncated, tampered, other-version and bad-field files, and atomic
 * writes that never leave a partial file.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { IntegerEngine } from '../src/export/engine.js';
import type { ConvOp, IntegerModel } from '../src/export/ir.js';
import { modelReport } from '../src/export/report.js';
import { sha256 } from '../src/export/sha256.js';
import { TQM_HEADER_BYTES, TqmError, decodeTqm, encodeTqm } from '../src/export/tqm.js';
import { readTqm, writeTqm } from '../src/export/tqm-file.js';
import { IntegerModelError } from '../src/export/validate.js';
import { type TinyOptions, lowerTiny, tinyQuantizedModel } from './export-fixtures.js';
import { irCases } from './ir-models.js';

const APOT: TinyOptions = { method: 'apot', wbits: 3, shortcut: 'B' };
const EWGS: TinyOptions = { method: 'ewgs', wbits: 2, firstLast: 'float', headBatchNorm: true };
let dir: string;
let apot: { ir: IntegerModel; images: Uint8Array };
let ewgs: IntegerModel;

before(() => {
  setBackend('js');
  dir = mkdtempSync(join(tmpdir(), 'tq-tqm-'));
  const tiny = tinyQuantizedModel(APOT);
  apot = { ir: lowerTiny(tiny, APOT), images: tiny.images.images.subarray(0, 8 * 768) };
  ewgs = lowerTiny(tinyQuantizedModel(EWGS), EWGS);
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Recompute the checksum after editing the bytes, as a careful forger would. */
function resign(bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  out.set(sha256(out.subarray(0, 12), out.subarray(TQM_HEADER_BYTES)), 12);
  return out;
}

const u32 = (b: Uint8Array, at: number): number => new DataView(b.buffer, b.byteOffset).getUint32(at, true);

/** Offset of tensor 0's dtype byte: after the meta string, the tensor count and tensor 0's name. */
function firstTensorDtypeOffset(b: Uint8Array): number {
  const tensors = TQM_HEADER_BYTES + 4 + u32(b, TQM_HEADER_BYTES) + 4;
  return tensors + 4 + u32(b, tensors);
}

describe('round trip', () => {
  test('decode(encode(m)) re-encodes to the same bytes and runs identically', () => {
    for (const ir of [apot.ir, ewgs]) {
      const bytes = encodeTqm(ir);
      const back = decodeTqm(bytes);
      assert.deepEqual(encodeTqm(back), bytes);
      assert.deepEqual(back.meta, ir.meta);
      assert.deepEqual(back.tensors, ir.tensors);
      ir.ops.forEach((op, i) => assert.deepEqual(back.ops[i], op, `op ${i}`));
    }
    const count = 8;
    assert.deepEqual(new IntegerEngine(decodeTqm(encodeTqm(apot.ir))).inferBatch(apot.images, count), new IntegerEngine(apot.ir).inferBatch(apot.images, count));
  });

  test('every synthetic v2 case (all op kinds and options) decodes to an equal model; bytes are stable', () => {
    for (const { name, model } of irCases()) {
      const bytes = encodeTqm(model);
      const back = decodeTqm(bytes);
      assert.deepEqual(back, model, name);
      assert.deepEqual(encodeTqm(back), bytes, name);
      assert.deepEqual(encodeTqm(irCases().find((c) => c.name === name)!.model), bytes, `${name}: the same seed gives the same bytes`);
    }
  });

  test('a payload larger than the first buffer of the writer (64 KiB) round-trips', () => {
    const big: IntegerModel = { ...apot.ir, meta: { ...apot.ir.meta, notes: [...apot.ir.meta.notes, 'x'.repeat(100_000)] } };
    const bytes = encodeTqm(big);
    assert.ok(bytes.length > 100_000);
    assert.deepEqual(encodeTqm(decodeTqm(bytes)), bytes);
    assert.deepEqual(decodeTqm(bytes).ops, apot.ir.ops);
  });

  test('writeTqm / readTqm through a file', () => {
    const path = join(dir, 'model.tqm');
    const n = writeTqm(path, apot.ir);
    assert.equal(readFileSync(path).length, n);
    assert.deepEqual(encodeTqm(readTqm(path)), encodeTqm(apot.ir));
  });

  test('weights are stored packed at their bit-width', () => {
    const convs = ewgs.ops.filter((op): op is ConvOp => op.kind === 'conv');
    assert.ok(convs.filter((op) => op.weights.bits === 2).length >= 6);
    const packed = convs.reduce((a, op) => a + Math.ceil((op.weights.codes.length * op.weights.bits) / 8), 0);
    assert.equal(modelReport(ewgs).totals.weightBytes, packed);
    // The same codes declared 4-bit take exactly the extra packed bytes.
    const wider: IntegerModel = { ...ewgs, ops: ewgs.ops.map((op) => (op.kind === 'conv' && op.weights.bits === 2 ? { ...op, weights: { ...op.weights, bits: 4 } } : op)) };
    const extra = convs.filter((op) => op.weights.bits === 2).reduce((a, op) => a + Math.ceil(op.weights.codes.length / 2) - Math.ceil(op.weights.codes.length / 4), 0);
    assert.equal(encodeTqm(wider).length - encodeTqm(ewgs).length, extra);
  });
});

describe('damaged files are refused with a clear error', () => {
  const expectError = (bytes: Uint8Array, pattern: RegExp, type: new (...a: never[]) => Error = TqmError): void => {
    assert.throws(() => decodeTqm(bytes), (e: Error) => e instanceof type && pattern.test(e.message), `expected ${pattern}`);
  };

  test('truncated anywhere', () => {
    const bytes = encodeTqm(apot.ir);
    for (const cut of [0, 3, 43]) expectError(bytes.subarray(0, cut), /truncated: \d+ bytes, shorter than the 44-byte header/);
    for (const cut of [44, 200, bytes.length - 1]) expectError(bytes.subarray(0, cut), new RegExp(`truncated: the header announces ${bytes.length} bytes, the file has ${cut}`));
    const longer = new Uint8Array(bytes.length + 3);
    longer.set(bytes);
    expectError(longer, /3 unexpected bytes after the announced/);
  });

  test('tampered contents, magic or version', () => {
    const bytes = encodeTqm(apot.ir);
    for (const at of [TQM_HEADER_BYTES + 1, Math.floor(bytes.length / 2), bytes.length - 1]) {
      const t = bytes.slice();
      t[at] ^= 0x10;
      expectError(t, /checksum mismatch: the contents were modified or corrupted/);
    }
    const magic = bytes.slice();
    magic[0] = 0x50;
    expectError(magic, /not a tqm file \(bad magic bytes\)/);
    const older = bytes.slice();
    older[4] = 1;
    expectError(older, /tqm format version 1 was written by an older tinyquant \(this one reads version 2\): re-export the model from its checkpoint with `tinyquant export --checkpoint <run>\/best.json --format tqm/);
    const newer = bytes.slice();
    newer[4] = 3;
    expectError(newer, /tqm format version 3 was written by a newer tinyquant \(this one reads version 2\)/);
  });

  test('a bad field behind a valid checksum names the field', () => {
    const bytes = encodeTqm(apot.ir);
    const dtype = firstTensorDtypeOffset(bytes);
    const badEnum = bytes.slice();
    badEnum[dtype] = 9;
    expectError(resign(badEnum), /tensor 0 dtype 9 is not one of 0..3/);
    const badShape = bytes.slice();
    new DataView(badShape.buffer).setUint32(dtype + 1, 4, true); // tensor 0 ("image") gets 4 channels
    expectError(resign(badShape), /op 0 \(input\): lut needs 1024 entries/, IntegerModelError);
    const badMeta = bytes.slice();
    badMeta[TQM_HEADER_BYTES + 4] = 0x7b + 1; // '{' -> '|'
    expectError(resign(badMeta), /meta is not valid JSON/);
  });

  test('bad v2 fields name the op and the field', () => {
    const [dense, depthwise, residual] = irCases().map((c) => c.model);
    /** The offset of the `index`-th u32 after the name of op `name` (the conv fields: input, output, inChannels, outChannels, groups, kernel h, w, ...). */
    const after = (bytes: Uint8Array, name: string, index: number): number => {
      const text = new TextEncoder().encode(name);
      for (let at = TQM_HEADER_BYTES; at + 4 + text.length < bytes.length; at++) {
        if (u32(bytes, at) === text.length && text.every((b, i) => bytes[at + 4 + i] === b)) return at + 4 + text.length + 4 * index;
      }
      throw new Error(`${name} not found`);
    };
    const patched = (model: IntegerModel, name: string, index: number, value: number): Uint8Array => {
      const bytes = encodeTqm(model);
      new DataView(bytes.buffer).setUint32(after(bytes, name, index), value, true);
      return resign(bytes);
    };
    expectError(patched(depthwise, 'dw1', 4, 0), /op 2 \(conv\) dw1 groups must be in \[1, 65536\], got 0/);
    expectError(patched(depthwise, 'dw1', 5, 70000), /op 2 \(conv\) dw1 kernel h must be in \[1, 65536\], got 70000/);
    expectError(patched(depthwise, 'dw1', 9, 5), /op 2 \(conv dw1\): output dw1\.out has shape \[8,6,5\], expected \[8,14,5\]/, IntegerModelError);
    expectError(patched(depthwise, 'dw1', 4, 3), /op 2 \(conv dw1\): groups 3 must divide inChannels 8 and outChannels 8/, IntegerModelError);
    expectError(patched(dense, 'pool1', 2, 0), /op 3 \(maxpool\) pool1 kernel h must be in \[1, 65536\], got 0/);
    expectError(patched(dense, 'pool1', 6, 2), /op 3 \(maxpool pool1\): padding \[2,1\] must be at most half the kernel \[3,2\]/, IntegerModelError);
    const add = residual.ops.findIndex((op) => op.kind === 'add');
    expectError(patched(residual, 'layer2.add', 0, 999), new RegExp(`op ${add} \\(add layer2\\.add\\): a\\.input 999 is not a tensor written by an earlier op`), IntegerModelError);
    const kind = encodeTqm(residual);
    kind[after(kind, 'layer2.add', 0) - 'layer2.add'.length - 5] = 9;
    expectError(resign(kind), new RegExp(`op ${add} kind 9 is not one of 0..5 \\(input, conv, quantize, sumpool, maxpool, add\\)`));
  });

  test('readTqm names the file', () => {
    const path = join(dir, 'cut.tqm');
    writeFileSync(path, encodeTqm(apot.ir).subarray(0, 100));
    assert.throws(() => readTqm(path), new RegExp(`^TqmError: ${path.replace(/[.]/g, '\\.')}: truncated`));
    assert.throws(() => readTqm(join(dir, 'missing.tqm')), /missing\.tqm: cannot read/);
  });
});

describe('atomic writes', () => {
  const invalid = (): IntegerModel => {
    const ops = apot.ir.ops.map((op) => (op.kind === 'conv' && op.name === 'layer1.0.conv2' ? { ...op, requant: { ...op.requant, shift: new Uint8Array(op.outChannels).fill(70) } } : op));
    return { ...apot.ir, ops };
  };

  test('an invalid model is refused before anything is written; an existing file is kept', () => {
    const path = join(dir, 'keep.tqm');
    writeTqm(path, ewgs);
    const before = readFileSync(path);
    assert.throws(() => writeTqm(path, invalid()), (e: Error) => e instanceof IntegerModelError && /layer1\.0\.conv2.*shift\[0\] = 70 is above 62/.test(e.message));
    assert.deepEqual(readFileSync(path), before);
    assert.throws(() => writeTqm(join(dir, 'new.tqm'), invalid()), IntegerModelError);
    assert.equal(existsSync(join(dir, 'new.tqm')), false);
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
  });

  test('a write into a missing directory fails cleanly', () => {
    assert.throws(() => writeTqm(join(dir, 'no-such-dir', 'm.tqm'), apot.ir), /cannot write .*m\.tqm/);
    assert.equal(existsSync(join(dir, 'no-such-dir')), false);
  });
});
