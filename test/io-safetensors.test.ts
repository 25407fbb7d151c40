import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type NamedTensor,
  type TensorMap,
  TensorFileError,
  parseSafetensors,
  readSafetensorsFile,
  serializeSafetensors,
  toFloat32,
  writeSafetensorsFile,
} from '../src/io/index.js';
import { dtypeSize } from '../src/io/tensors.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/io/tiny_state_dict.safetensors', import.meta.url));

function sampleTensors(): TensorMap {
  const tensors: NamedTensor[] = [
    { dtype: 'U8', shape: [3], data: Uint8Array.from([0, 7, 255]) },
    { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1.5, -2, 0, 3.25, 1e-30, -0]) },
    { dtype: 'F64', shape: [], data: Float64Array.from([Math.PI]) },
    { dtype: 'F16', shape: [2], data: Uint16Array.from([0x3c00, 0xc000]) },
    { dtype: 'BF16', shape: [1, 1], data: Uint16Array.from([0x3f80]) },
    { dtype: 'I64', shape: [2], data: BigInt64Array.from([-(2n ** 62n), 5n]) },
    { dtype: 'I32', shape: [1], data: Int32Array.from([-7]) },
    { dtype: 'I16', shape: [2], data: Int16Array.from([-32768, 32767]) },
    { dtype: 'I8', shape: [1], data: Int8Array.from([-128]) },
    { dtype: 'BOOL', shape: [2], data: Uint8Array.from([1, 0]) },
    { dtype: 'U16', shape: [1], data: Uint16Array.from([65535]) },
    { dtype: 'U32', shape: [1], data: Uint32Array.from([4e9]) },
    { dtype: 'U64', shape: [1], data: BigUint64Array.from([2n ** 64n - 1n]) },
    { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
  ];
  return new Map(tensors.map((tensor, i) => [`t${i}.${tensor.dtype.toLowerCase()}`, tensor]));
}

function headerOf(bytes: Uint8Array): { length: number; text: string } {
  const length = Number(Buffer.from(bytes).readBigUInt64LE(0));
  return { length, text: Buffer.from(bytes.subarray(8, 8 + length)).toString('utf8') };
}

test('every dtype round-trips through the writer and the reader, with metadata', () => {
  const tensors = sampleTensors();
  const bytes = serializeSafetensors(tensors, { format: 'pt', method: 'apot' });
  const { tensors: loaded, metadata } = parseSafetensors(bytes, 'round-trip');
  assert.deepEqual(metadata, { format: 'pt', method: 'apot' });
  assert.deepEqual(new Set(loaded.keys()), new Set(tensors.keys()));
  for (const [name, tensor] of tensors) assert.deepEqual(loaded.get(name), tensor, name);
});

test('the writer pads the header with spaces to 8 bytes and aligns every tensor to its element size', () => {
  const bytes = serializeSafetensors(sampleTensors());
  const { length, text } = headerOf(bytes);
  assert.equal(length % 8, 0);
  assert.match(text, /^\{.*\} *$/);
  assert.equal(text.trimEnd().length > length - 8, true, 'at most 7 bytes of padding');
  const header = JSON.parse(text) as Record<string, { dtype: NamedTensor['dtype']; data_offsets: [number, number] }>;
  assert.equal('__metadata__' in header, false, 'no metadata entry when there is none');
  let end = 0;
  for (const entry of Object.values(header)) {
    assert.equal((8 + length + entry.data_offsets[0]) % dtypeSize(entry.dtype), 0, `${entry.dtype} aligned`);
    end = Math.max(end, entry.data_offsets[1]);
  }
  assert.equal(bytes.length, 8 + length + end);
});

test('a file written by an independent (Python) writer is read with its metadata', () => {
  const { tensors, metadata } = readSafetensorsFile(FIXTURE);
  assert.deepEqual(metadata, { format: 'pt', note: 'tiny' });
  assert.deepEqual([...tensors.keys()].sort(), [
    'bn.bias',
    'bn.num_batches_tracked',
    'bn.running_mean',
    'bn.running_var',
    'bn.weight',
    'conv.bias',
    'conv.weight',
    'fc.bias',
    'fc.weight',
  ]);
  assert.deepEqual(tensors.get('conv.weight')?.shape, [3, 2, 3, 3]);
  assert.deepEqual(tensors.get('bn.num_batches_tracked'), { dtype: 'I64', shape: [], data: BigInt64Array.from([3n]) });
  // the reader, then the writer, then the reader again changes nothing
  assert.deepEqual(parseSafetensors(serializeSafetensors(tensors, metadata), 'again').tensors, tensors);
});

test('writeSafetensorsFile writes atomically and readSafetensorsFile reads it back', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tinyquant-io-st-'));
  try {
    const file = path.join(dir, 'weights.safetensors');
    writeSafetensorsFile(file, sampleTensors());
    writeSafetensorsFile(file, new Map([['only', { dtype: 'F32', shape: [1], data: Float32Array.from([2]) }]]));
    assert.deepEqual(readSafetensorsFile(file).tensors, new Map([['only', { dtype: 'F32', shape: [1], data: Float32Array.from([2]) }]]));
    assert.deepEqual(fs.readdirSync(dir), ['weights.safetensors']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the writer refuses inconsistent tensors', () => {
  const bad = (tensor: NamedTensor, name = 'w') => () => serializeSafetensors(new Map([[name, tensor]]));
  assert.throws(bad({ dtype: 'F32', shape: [2, 2], data: new Float32Array(3) }), /tensor 'w': 3 elements do not fill shape \[2, 2\]/);
  assert.throws(bad({ dtype: 'F32', shape: [2], data: new Float64Array(2) as unknown as Float32Array }), /tensor 'w': F32 data must be a Float32Array, got Float64Array/);
  assert.throws(bad({ dtype: 'F32', shape: [-1], data: new Float32Array(0) }), /tensor 'w': invalid shape/);
  assert.throws(bad({ dtype: 'F32', shape: [0], data: new Float32Array(0) }, '__metadata__'), /cannot be a tensor name/);
  assert.throws(() => serializeSafetensors(new Map(), { n: 1 as unknown as string }), /__metadata__ must map strings to strings/);
});

/** A file with a hand-written header (padded to 8 bytes) and `dataLength` bytes of data. */
function handBuilt(header: unknown, dataLength: number, declaredLength?: number): Uint8Array {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  const json = Buffer.from(text.padEnd(Math.ceil(Buffer.byteLength(text) / 8) * 8, ' '));
  const out = Buffer.alloc(8 + json.length + dataLength);
  out.writeBigUInt64LE(BigInt(declaredLength ?? json.length), 0);
  json.copy(out, 8);
  return out;
}

const f32 = (shape: number[], begin: number, end: number) => ({ dtype: 'F32', shape, data_offsets: [begin, end] });

test('hand-built headers within the spec are accepted', () => {
  const bytes = handBuilt({ b: f32([2], 8, 16), a: f32([2], 0, 8), empty: f32([0], 16, 16), __metadata__: {} }, 16);
  const { tensors } = parseSafetensors(bytes, 'ok.safetensors');
  assert.deepEqual([...tensors.keys()], ['a', 'b', 'empty'], 'tensors come in data order');
});

test('invalid files are refused with an error naming the file and the tensor', () => {
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(5), /5 bytes is too short for a safetensors file/],
    [handBuilt({ a: f32([1], 0, 4) }, 4, 1000), /header length 1000 goes beyond the end of the file/],
    [handBuilt('{"a": ', 0), /the header is not valid JSON/],
    [handBuilt('[1, 2]', 0), /the header is not a JSON object/],
    [handBuilt({ a: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } }, 1), /tensor 'a': unsupported dtype "F8_E4M3"/],
    [handBuilt({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, 4), /tensor 'a': shape must be a list of non-negative integers/],
    [handBuilt({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4), /tensor 'a': data_offsets must be \[begin, end\]/],
    [handBuilt({ a: { ...f32([1], 0, 4), extra: 1 } }, 4), /tensor 'a': unexpected header field 'extra'/],
    [handBuilt({ a: 'F32' }, 4), /tensor 'a': header entry is not an object/],
    [handBuilt({ a: f32([2, 2], 0, 12) }, 12), /tensor 'a': F32 \[2, 2\] needs 16 bytes but data_offsets \[0, 12\] span 12/],
    [handBuilt({ a: f32([2], 0, 8) }, 4), /tensor 'a': data_offsets \[0, 8\] go beyond the 4 bytes of data/],
    [handBuilt({ a: f32([2], 0, 8), b: f32([2], 4, 12) }, 12), /tensor 'b': data_offsets \[4, 12\] overlaps the previous tensor/],
    [handBuilt({ a: f32([1], 0, 4), b: f32([1], 8, 12) }, 12), /tensor 'b': data_offsets \[8, 12\] leaves a hole \[4, 8\)/],
    [handBuilt({ a: f32([1], 0, 4) }, 8), /tensors cover 4 bytes of data but the file holds 8/],
    [handBuilt({ __metadata__: { n: 1 } }, 0), /__metadata__ must map strings to strings/],
  ];
  for (const [bytes, pattern] of cases) {
    assert.throws(() => parseSafetensors(bytes, 'bad.safetensors'), (error: Error) => {
      assert.ok(error instanceof TensorFileError);
      assert.ok(error.message.startsWith('bad.safetensors: '), error.message);
      assert.match(error.message, pattern);
      return true;
    });
  }
});

test('toFloat32 decodes half, bfloat16 and integer types exactly', () => {
  const halves = Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0xfc00, 0x8000, 0x3555, 0x7e00]);
  const decoded = toFloat32({ dtype: 'F16', shape: [9], data: halves });
  assert.deepEqual([...decoded], [1, -2, 65504, 2 ** -24, Infinity, -Infinity, -0, Math.fround(0.333251953125), NaN]);
  const bf16 = toFloat32({ dtype: 'BF16', shape: [3], data: Uint16Array.from([0x3f80, 0xc0a0, 0x3e00]) });
  assert.deepEqual([...bf16], [1, -5, 0.125]);
  assert.deepEqual([...toFloat32({ dtype: 'I64', shape: [2], data: BigInt64Array.from([-3n, 2n ** 40n]) })], [-3, 2 ** 40]);
  assert.deepEqual([...toFloat32({ dtype: 'BOOL', shape: [2], data: Uint8Array.from([1, 0]) })], [1, 0]);
  const f32 = Float32Array.from([1, 2]);
  assert.equal(toFloat32({ dtype: 'F32', shape: [2], data: f32 }), f32, 'F32 data is returned as is');
});

test('weights files: an integer tensor where a weight belongs is refused by name; integer counters are dropped', async () => {
  const { readWeights } = await import('../src/train/checkpoint.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tinyquant-io-dtype-'));
  try {
    const file = path.join(dir, 'w.safetensors');
    writeSafetensorsFile(file, new Map([
      ['conv.weight', { dtype: 'I32', shape: [2], data: Int32Array.from([1, 2]) }],
      ['bn.num_batches_tracked', { dtype: 'I64', shape: [], data: BigInt64Array.from([3n]) }],
    ]) as TensorMap);
    assert.throws(() => readWeights(file), /w\.safetensors: tensor "conv\.weight" is I32; weights and buffers must be floating point/);
    writeSafetensorsFile(file, new Map([
      ['conv.weight', { dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) }],
      ['bn.num_batches_tracked', { dtype: 'I64', shape: [], data: BigInt64Array.from([3n]) }],
    ]) as TensorMap);
    assert.deepEqual([...readWeights(file).keys()], ['conv.weight']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
