/**
 * Hostile tensor files (issue 17), each refused with a TensorFileError naming the file, and before
 * anything large is allocated: safetensors with a repeated key, a tiny .pth whose stride-0 tensor
 * or many views of one storage would take gigabytes, storages declaring more data than the file,
 * zip entries declaring (or inflating to) far more than the archive, pickles that copy one object
 * again and again. Found by, and kept covered by, the fuzz targets (test/fuzz/).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { deflateRawSync } from 'node:zlib';
import { TensorFileError, isNamedTensor, loadStateDict, parseSafetensors, parseTensorFile, unpickle } from '../src/io/index.js';
import { ZipArchive } from '../src/io/zip.js';
import { type TorchCheckpoint, concat, torchCheckpoint } from './fuzz/inputs.js';
import { buildZip } from './zip-builder.js';

/** Asserts a TensorFileError whose one-line message starts with the file's name and matches `pattern`. */
function assertRefused(load: () => unknown, file: string, pattern: RegExp): void {
  assert.throws(load, (error: Error) => {
    assert.ok(error instanceof TensorFileError, `${error.constructor.name}: ${error.message}`);
    assert.ok(error.message.startsWith(`${file}: `), error.message);
    assert.ok(!error.message.includes('\n'), error.message);
    assert.match(error.message, pattern);
    return true;
  });
}

/** A safetensors file from header text (not padded) and data bytes. */
function safetensors(header: string, data = new Uint8Array(4)): Uint8Array {
  const text = Buffer.from(header, 'utf8');
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(text.length), true);
  return concat(length, text, data);
}

const ENTRY = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';

test('safetensors: a tensor listed twice in the header is refused, naming the file and the tensor', () => {
  assertRefused(() => parseSafetensors(safetensors(`{"conv.weight":${ENTRY},"conv.weight":${ENTRY}}`), 'dup.safetensors'), 'dup.safetensors', /the header lists tensor 'conv\.weight' twice/);
  assertRefused(() => parseSafetensors(safetensors(`{"__metadata__":{},"w":${ENTRY},"__metadata__":{}}`), 'meta.safetensors'), 'meta.safetensors', /lists __metadata__ twice/);
  const nested = `{"w":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}}`;
  assertRefused(() => parseSafetensors(safetensors(nested), 'field.safetensors'), 'field.safetensors', /repeats a key: key "dtype" appears twice in the object at \$\.w/);
  // a key repeated in different objects, or inside a string, is no repeat
  const fine = parseSafetensors(safetensors(`{"a":${ENTRY},"b \\"a\\":":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}`), 'fine.safetensors');
  assert.deepEqual([...fine.tensors.keys()], ['a', 'b "a":']);

  const dir = mkdtempSync(join(tmpdir(), 'tq-hostile-'));
  try {
    const file = join(dir, 'model.safetensors');
    writeFileSync(file, safetensors(`{"w":${ENTRY},"w":${ENTRY}}`));
    assertRefused(() => loadStateDict(file), file, /tensor 'w' twice/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** One FloatStorage of `numel` elements and the given tensors over it. */
function checkpoint(format: TorchCheckpoint['format'], numel: number, tensors: TorchCheckpoint['tensors'], omitData = false): Uint8Array {
  return torchCheckpoint({ format, storages: [{ cls: 'FloatStorage', numel }], tensors, omitData });
}

test('.pth: a stride-0 tensor of 2^31 elements over one stored float is refused before allocating, in both formats', () => {
  for (const format of ['zip', 'legacy'] as const) {
    const bytes = checkpoint(format, 1, [{ storage: 0, offset: 0, dims: [{ size: 2 ** 31 - 1, stride: 0 }] }]);
    assert.ok(bytes.length < 1000, `${bytes.length} bytes`);
    assertRefused(() => parseTensorFile(bytes, 'stride0.pth'), 'stride0.pth', /tensor of size \[2147483647\], stride \[0\].*would hold 2147483647 elements, more than the 1048580 allowed for the 1 of its storages \(a stride 0/);
  }
  // an expanded tensor of a few elements still loads (torch.load gives it too; see tensor_zoo.pth)
  const small = parseTensorFile(checkpoint('zip', 2, [{ storage: 0, offset: 0, dims: [{ size: 3, stride: 0 }, { size: 2, stride: 1 }] }]), 'expanded.pth');
  const tensor = (small as Map<string, unknown>).get('layer0.weight');
  assert.ok(isNamedTensor(tensor));
  assert.deepEqual(tensor.shape, [3, 2]);
});

test('.pth: thousands of tensors over one storage are refused once they would copy more than 4 times the storages', () => {
  const tensors = Array.from({ length: 1100 }, () => ({ storage: 0, offset: 0, dims: [{ size: 1000, stride: 1 }] }));
  assertRefused(() => parseTensorFile(checkpoint('zip', 1000, tensors), 'views.pth'), 'views.pth', /would hold 1053000 elements, more than the 1052576 allowed for the 1000 of its storages/);
});

test('.pth (legacy): storages declaring more data than the file holds are refused before any tensor is allocated', () => {
  const bytes = checkpoint('legacy', 2 ** 28, [{ storage: 0, offset: 0, dims: [{ size: 2 ** 28, stride: 1 }] }], true);
  assertRefused(() => parseTensorFile(bytes, 'legacy.pth'), 'legacy.pth', /storage '0': the storages declare 1073741824 bytes of data, more than the file's \d+/);
});

/** Offsets of the uncompressed-size fields of an entry in a (non-zip64) archive: local header +22, central header +24. */
function setDeclaredSize(zip: Uint8Array, name: string, size: number): void {
  const bytes = Buffer.from(zip.buffer, zip.byteOffset, zip.byteLength);
  for (const [signature, field] of [[0x04034b50, 22], [0x02014b50, 24]] as const) {
    for (let at = bytes.indexOf(Buffer.from(name)); at >= 0; at = bytes.indexOf(Buffer.from(name), at + 1)) {
      const header = at - (signature === 0x04034b50 ? 30 : 46);
      if (header >= 0 && bytes.readUInt32LE(header) === signature) bytes.writeUInt32LE(size, header + field);
    }
  }
}

test('zip: entries declaring or inflating to far more than the archive are refused before inflating', () => {
  // 20 MiB of zeros deflate to about 20 KB: more than 100 times the archive (plus 16 MiB)
  const zeros = new Uint8Array(20 * 2 ** 20);
  const bomb = buildZip([['zeros.bin', zeros]], { deflate: true });
  assert.ok(bomb.length < 40_000, `${bomb.length} bytes`);
  assert.throws(() => new ZipArchive(bomb).read('zeros.bin'), /zip entry 'zeros\.bin' inflates to 20971520 bytes: .* more than the \d+ allowed for its \d+ bytes \(a decompression bomb\?\)/);
  const declared = buildZip([['big.bin', deflateRawSync(new Uint8Array(100))]], { deflate: true });
  setDeclaredSize(declared, 'big.bin', 3_000_000_000);
  assert.throws(() => new ZipArchive(declared).read('big.bin'), /inflates to 3000000000 bytes/);

  // in a checkpoint, a storage's entry must hold exactly its elements, checked before it is read
  const archive = new ZipArchive(checkpoint('zip', 4, [{ storage: 0, offset: 0, dims: [{ size: 4, stride: 1 }] }]));
  const repacked = buildZip([...archive.entries.keys()].map((name) => [name, archive.read(name)]), { deflate: true });
  setDeclaredSize(repacked, 'archive/data/0', 2 ** 31);
  assertRefused(() => parseTensorFile(repacked, 'sized.pth'), 'sized.pth', /storage '0' holds 4 F32 elements \(16 bytes\), its zip entry 2147483648 bytes/);
});

/** Raw pickle opcodes (protocol 4). */
function opcodes(...parts: (number | number[])[]): Uint8Array {
  return Uint8Array.from([0x80, 4, ...parts.flat(), 0x2e]);
}

test('pickle: one memoized dict copied by OrderedDict() again and again is refused; a long integer decodes in linear time', () => {
  // a dict of 1000 entries in memo 0, then 20000 times OrderedDict(memo[0]): 20 million copied entries from 160 KB
  const dict = [0x7d, 0x94, 0x28, ...Array.from({ length: 1000 }, (_, i) => [0x4a, i & 0xff, i >> 8, 0, 0, 0x4e]).flat(), 0x75];
  const copy = [0x68, 1, 0x68, 0, 0x85, 0x52, 0x30]; // BINGET OrderedDict, BINGET dict, TUPLE1, REDUCE, POP
  const orderedDict = [0x8c, 11, ...Buffer.from('collections'), 0x8c, 11, ...Buffer.from('OrderedDict'), 0x93, 0x94, 0x30];
  const bytes = opcodes(dict, 0x30, orderedDict, Array.from({ length: 20000 }, () => copy).flat(), 0x4e);
  assertRefused(() => unpickle(bytes, 'copies.pkl'), 'copies.pkl', /collections\.OrderedDict: the pickle's calls copy \d+ items, more than 16 times its \d+ bytes/);

  // LONG4 of 1 MB: 2^(8 * 2^20 - 1) - 1 (decoding byte by byte would take minutes)
  const long = new Uint8Array(2 ** 20).fill(0xff);
  long[long.length - 1] = 0x7f;
  const value = unpickle(opcodes(0x8b, [0, 0, 0x10, 0], [...long]), 'long.pkl').value;
  assert.equal(value, (1n << BigInt(8 * 2 ** 20 - 1)) - 1n);
});

test('tensor-file errors stay on one line whatever the file names: control characters are escaped', () => {
  assertRefused(() => unpickle(opcodes(0x0a), 'op.pkl'), 'op.pkl', /unsupported pickle opcode 0xa \(pickle opcode at byte 2\)$/);
  const global = opcodes([0x8c, 3, ...Buffer.from('o\ns'), 0x8c, 6, ...Buffer.from('system'), 0x93]);
  assertRefused(() => unpickle(global, 'g.pkl'), 'g.pkl', /refusing to load global 'o\\ns\.system'/);
  const zip = buildZip([['a\nb', new Uint8Array(1)]], {});
  zip[30 + 3] ^= 1; // the entry's data, after the local header and the name: a CRC mismatch
  assert.throws(() => new ZipArchive(zip).read('a\nb'), /^Error: zip entry 'a\\nb' is corrupt \(CRC mismatch\)$/);
  assertRefused(() => parseSafetensors(safetensors(`{"x\\ny":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`), 'n.safetensors'), 'n.safetensors', /tensor 'x\\ny': F32 \[2\] needs 8 bytes/);
});
