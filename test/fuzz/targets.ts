/**
 * The fuzz targets: every parser of the project with its inputs (valid files the target builds,
 * then mutated; generated structures) and its validity check. See harness.ts for the property.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { threadId } from 'node:worker_threads';
import fc from 'fast-check';
import { parseCifar, type CifarKind } from '../../src/data/cifar.js';
import { DataFileError } from '../../src/data/errors.js';
import { readMaybeGzip } from '../../src/data/files.js';
import { parseIdx } from '../../src/data/idx.js';
import { ImageDecodeError, decodeImage } from '../../src/data/image-decode.js';
import { TarError, readTar, readTarFile, type TarEntry } from '../../src/data/tar.js';
import { IntegerEngine } from '../../src/export/engine.js';
import { type IntegerModel, inputShape } from '../../src/export/ir.js';
import { formatReport } from '../../src/export/report-text.js';
import { modelReport } from '../../src/export/report.js';
import { sha256 } from '../../src/export/sha256.js';
import { TQM_HEADER_BYTES, TqmError, decodeTqm, encodeTqm } from '../../src/export/tqm.js';
import { IntegerModelError } from '../../src/export/validate.js';
import { ConfigError, readConfigFile, resolveConfig } from '../../src/train/config.js';
import { parseGrid } from '../../src/experiments/grid.js';
import { TensorFileError, withFileContext } from '../../src/io/bytes.js';
import { type PyValue, unpickle } from '../../src/io/pickle.js';
import { parseTensorFile } from '../../src/io/pth.js';
import { parseSafetensors, serializeSafetensors } from '../../src/io/safetensors.js';
import { type DType, type NamedTensor, type TensorMap, allocateTensorData, dtypeSize, isNamedTensor, numel } from '../../src/io/tensors.js';
import { BatchNorm, Conv2d, Linear, Sequential } from '../../src/nn/layers.js';
import { readWeights } from '../../src/train/checkpoint.js';
import { setBackend } from '../../src/backend/index.js';
import { ZipArchive, crc32 } from '../../src/io/zip.js';
import { cifarRecords, encodeGreyPng, encodeJpeg, encodePng, gzip, idxFile, paxRecord, tarArchive, tarEntry, type TarInput } from '../fixtures/data/make.js';
import { irCases } from '../ir-models.js';
import { buildZip } from '../zip-builder.js';
import { type FuzzTarget, scratchRoot } from './harness.js';
import { STORAGE_CLASS_NAMES, type Mutated, type Mutation, type PyLike, type TorchCheckpoint, concat, mutate, mutatedFrom, mutations, pickle, position, pyValue, torchCheckpoint } from './inputs.js';

setBackend('js'); // the weights target builds a small model

const REPO = fileURLToPath(new URL('../../../', import.meta.url)); // from dist/test/fuzz/
const IO_FIXTURES = join(REPO, 'test/fixtures/io');

/** Writes a file into this thread's scratch directory (removed by FuzzHost.close), for the parsers that read files. */
function writeScratch(name: string, bytes: Uint8Array | string): string {
  const dir = join(scratchRoot(), String(threadId));
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

const fixture = (name: string): Uint8Array => new Uint8Array(readFileSync(join(IO_FIXTURES, name)));

// ---- tar, gzip --------------------------------------------------------------------------------------

const tarName = fc.oneof(
  fc.stringMatching(/^(\.\/)?[a-z]{1,8}(\/[a-z0-9_.-]{1,12}){0,3}\/?$/),
  fc.string({ minLength: 1, maxLength: 40, unit: 'binary' }),
  fc.string({ minLength: 101, maxLength: 200 }).map((s) => `long/${s.replace(/\0/g, '')}`),
);

interface TarSeed {
  entries: TarInput[];
  longNames: 'gnu' | 'pax' | 'ustar';
  /** A pax header giving the first entry this size (negative ones once pointed the reader backwards). */
  paxSize: string | null;
}

const tarInputs: fc.Arbitrary<TarSeed> = fc.record({
  entries: fc.array(
    fc.record({ name: tarName, data: fc.uint8Array({ maxLength: 1200 }), type: fc.constantFrom<'file' | 'directory'>('file', 'directory') }),
    { maxLength: 4 },
  ),
  longNames: fc.constantFrom<'gnu' | 'pax' | 'ustar'>('gnu', 'pax', 'ustar'),
  paxSize: fc.option(fc.constantFrom('-512', '0', '12', '513', 'abc', '99999999999999999999', '1e3'), { freq: 3 }),
});

/** Rewrites the checksum of every 512-byte block that looks like a header, so that damage gets past the checksum check. */
function fixTarChecksums(bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (let at = 0; at + 512 <= out.length; at += 512) {
    if (String.fromCharCode(...out.subarray(at + 257, at + 262)) !== 'ustar') continue;
    out.fill(0x20, at + 148, at + 156);
    let sum = 0;
    for (let i = at; i < at + 512; i++) sum += out[i];
    out.set(Buffer.from(`${sum.toString(8).padStart(6, '0')}\0 `, 'latin1'), at + 148);
  }
  return out;
}

interface TarCase {
  archive: Mutated<TarSeed>;
  fixChecksums: boolean;
}

const tarCases: fc.Arbitrary<TarCase> = fc.record({ archive: mutatedFrom(tarInputs), fixChecksums: fc.boolean() });

function tarBytes({ archive, fixChecksums }: TarCase): Uint8Array {
  const { entries, longNames, paxSize } = archive.seed;
  const pax = paxSize === null ? [] : tarEntry('PaxHeader', 'x', paxRecord('size', paxSize));
  const bytes = mutate(Buffer.concat([...pax, tarArchive(entries, longNames)]), archive.edits);
  return fixChecksums ? fixTarChecksums(bytes) : bytes;
}

function checkTarEntries(entries: TarEntry[], inputBytes: number): void {
  for (const e of entries) {
    assert.equal(typeof e.name, 'string');
    assert.ok(['file', 'directory', 'other'].includes(e.type));
    assert.ok(Number.isSafeInteger(e.size) && e.size >= 0);
    if (e.type === 'file') assert.equal(e.data.length, e.size);
    assert.ok(e.data.length <= inputBytes, 'an entry holds more bytes than the archive');
  }
}

async function collect(entries: AsyncIterable<TarEntry>): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  for await (const entry of entries) out.push(entry);
  return out;
}

const tar: FuzzTarget<TarCase> = {
  name: 'tar',
  inputs: tarCases,
  errors: [TarError],
  async run(input) {
    const bytes = tarBytes(input);
    checkTarEntries(await collect(readTarFile(writeScratch('input.tar', bytes))), bytes.length);
  },
};

/** The same archives arriving in chunks of random sizes (the reader's reads across chunk boundaries). */
const tarStream: FuzzTarget<{ archive: TarCase; cuts: number[] }> = {
  name: 'tar (chunked stream)',
  inputs: fc.record({ archive: tarCases, cuts: fc.array(position, { maxLength: 12 }) }),
  errors: [TarError],
  async run({ archive, cuts }) {
    const bytes = tarBytes(archive);
    const points = [...new Set(cuts.map((c) => Math.floor(c * bytes.length)))].sort((a, b) => a - b);
    const chunks = [0, ...points].map((start, i) => Buffer.from(bytes.subarray(start, points[i] ?? bytes.length)));
    async function* stream(): AsyncGenerator<Buffer> {
      yield* chunks;
    }
    checkTarEntries(await collect(readTar(stream(), 'input.tar')), bytes.length);
  },
};

const tarGz: FuzzTarget<{ archive: TarCase; gzipEdits: Mutation[] | null }> = {
  name: 'tar.gz',
  inputs: fc.record({ archive: tarCases, gzipEdits: fc.option(mutations(3)) }),
  errors: [TarError],
  async run({ archive, gzipEdits }) {
    const tarred = tarBytes(archive);
    const bytes = gzipEdits ? mutate(gzip(tarred), gzipEdits) : gzip(tarred);
    checkTarEntries(await collect(readTarFile(writeScratch('input.tar.gz', bytes))), Math.max(bytes.length, tarred.length));
  },
};

const GZIP_LIMIT = 1 << 16;

const gzipTarget: FuzzTarget<Mutated<Uint8Array>> = {
  name: 'gzip (data files)',
  inputs: mutatedFrom(fc.uint8Array({ maxLength: 4000 }), 4),
  errors: [DataFileError],
  run({ seed, edits }) {
    const bytes = mutate(gzip(seed), edits);
    const data = readMaybeGzip(writeScratch('input.bin.gz', bytes), { maxBytes: GZIP_LIMIT, what: 'a fuzz input' });
    assert.ok(data.length <= Math.max(GZIP_LIMIT, bytes.length));
  },
};

// ---- IDX, CIFAR ---------------------------------------------------------------------------------------

const idx: FuzzTarget<Mutated<{ dims: number[]; rank: number }>> = {
  name: 'IDX',
  inputs: mutatedFrom(
    fc.oneof(
      fc.record({ dims: fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 8 })), rank: fc.constant(3) }),
      fc.record({ dims: fc.tuple(fc.integer({ min: 0, max: 40 })), rank: fc.constant(1) }),
    ),
  ),
  errors: [DataFileError],
  run({ seed, edits }) {
    const data = Uint8Array.from({ length: numel(seed.dims) }, (_, i) => (i * 37) & 0xff);
    const bytes = mutate(idxFile(seed.dims, data), edits);
    const parsed = parseIdx(bytes, seed.rank, 'input-idx');
    assert.equal(parsed.dims.length, seed.rank);
    assert.equal(parsed.data.length, numel(parsed.dims));
  },
};

interface CifarCase {
  kind: CifarKind;
  labels: number[][];
  edits: Mutation[];
  names: string[] | null;
}

const cifar: FuzzTarget<CifarCase> = {
  name: 'CIFAR binary',
  inputs: fc.constantFrom<CifarKind>('cifar10', 'cifar100').chain((kind) =>
    fc.record({
      kind: fc.constant(kind),
      labels: fc.array(
        kind === 'cifar10' ? fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 1, maxLength: 1 }) : fc.tuple(fc.integer({ min: 0, max: 19 }), fc.integer({ min: 0, max: 99 })),
        { minLength: 1, maxLength: 3 },
      ),
      edits: mutations(4),
      names: fc.option(fc.array(fc.string({ minLength: 1, maxLength: 6 }), { minLength: 9, maxLength: 11 })),
    }),
  ),
  errors: [DataFileError],
  run({ kind, labels, edits, names }) {
    const bytes = mutate(cifarRecords(labels), edits);
    const data = parseCifar(kind, 'train', [{ source: 'input.bin', bytes }], kind === 'cifar10' ? { classes: names ?? undefined } : { classes: Array.from({ length: 100 }, (_, i) => `c${i}`) });
    assert.equal(data.images.length, data.count * 3072);
    assert.ok(data.count * 3073 <= bytes.length);
    for (const label of data.labels) assert.ok(label >= 0 && label < data.classes.length);
  },
};

// ---- images ---------------------------------------------------------------------------------------------

interface ImageCase {
  /** Index into IMAGE_SEEDS. */
  seed: number;
  edits: Mutation[];
  /** Recompute each PNG chunk's CRC after the edits, so that damage reaches the decoder. */
  fixCrc: boolean;
  channels: 1 | 3 | null;
}

/** PNG chunks: length, type, data, CRC over type and data. */
function fixPngCrcs(bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes);
  const view = new DataView(out.buffer);
  for (let at = 8; at + 12 <= out.length; ) {
    const length = view.getUint32(at);
    if (at + 12 + length > out.length) break;
    view.setUint32(at + 8 + length, crc32(out.subarray(at + 4, at + 8 + length)));
    at += 12 + length;
  }
  return out;
}

/** Small RGB and grey PNGs and RGB JPEGs of a few sizes, encoded once. */
const IMAGE_SEEDS: Uint8Array[] = [[1, 1], [5, 3], [8, 8], [13, 7]].flatMap(([width, height]) => {
  const rgb = Uint8Array.from({ length: width * height * 3 }, (_, i) => (i * 29) & 0xff);
  return [encodePng(width, height, rgb), encodeGreyPng(width, height, rgb.subarray(0, width * height)), encodeJpeg(width, height, rgb)];
});

function imageBytes(c: ImageCase): Uint8Array {
  const original = IMAGE_SEEDS[c.seed];
  const bytes = mutate(original, c.edits);
  return c.fixCrc && original[0] === 0x89 ? fixPngCrcs(bytes) : bytes;
}

const image: FuzzTarget<ImageCase> = {
  name: 'images (PNG, JPEG)',
  inputs: fc.record({
    seed: fc.integer({ min: 0, max: IMAGE_SEEDS.length - 1 }),
    edits: mutations(4),
    fixCrc: fc.boolean(),
    channels: fc.constantFrom<1 | 3 | null>(1, 3, null),
  }),
  errors: [ImageDecodeError],
  libraries: /node_modules\/(jpeg-js|pngjs)\//,
  run(c) {
    const decoded = decodeImage(imageBytes(c), c.channels ?? undefined);
    assert.ok(decoded.width >= 1 && decoded.height >= 1);
    assert.equal(decoded.pixels.length, decoded.channels * decoded.width * decoded.height);
    if (c.channels) assert.equal(decoded.channels, c.channels);
  },
};

// ---- zip, pickle, .pth, safetensors ---------------------------------------------------------------------

/** Every tensor in a loaded value holds exactly its shape's elements (memo references can make cycles: each value is visited once). */
function checkPyValue(root: PyValue): void {
  const seen = new Set<PyValue>();
  const pending: PyValue[] = [root];
  while (pending.length > 0) {
    const value = pending.pop() as PyValue;
    if (typeof value !== 'object' || value === null || seen.has(value)) continue;
    seen.add(value);
    if (isNamedTensor(value)) assert.equal(value.data.length, numel(value.shape));
    else if (value instanceof Map) pending.push(...value.values());
    else if (Array.isArray(value)) pending.push(...value);
  }
}

const zipInputs = fc.record({
  entries: fc.uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 12, unit: 'binary' }), fc.uint8Array({ maxLength: 300 })), { maxLength: 4, selector: ([name]) => name }),
  options: fc.record({ deflate: fc.boolean(), zip64: fc.boolean(), comment: fc.string({ maxLength: 10 }) }),
});

const zip: FuzzTarget<Mutated<{ entries: [string, Uint8Array][]; options: { deflate: boolean; zip64: boolean; comment: string } }>> = {
  name: 'zip / zip64',
  inputs: mutatedFrom(zipInputs),
  errors: [TensorFileError],
  run({ seed, edits }) {
    const bytes = mutate(buildZip(seed.entries, seed.options), edits);
    withFileContext('input.zip', () => {
      const archive = new ZipArchive(bytes);
      for (const [name, entry] of archive.entries) assert.equal(archive.read(name).length, entry.size);
    });
  },
};

const ZIP_CHECKPOINTS = ['tiny_state_dict.pth', 'tensor_zoo.pth', 'tensor_zoo_p5.pth', 'apot_checkpoint.pth.tar', 'apot_checkpoint_deflated.pth.tar', 'ewgs_checkpoint.pth'];
const LEGACY_CHECKPOINTS = ['tiny_state_dict_legacy.pth', 'tensor_zoo_legacy.pth', 'legacy_storage_view.pth'];

/** A fixture's zip entries with its pickle edited, re-packed with correct CRCs: the edits reach the unpickler. */
function repackWithPickle(name: string, edits: Mutation[], deflate: boolean): Uint8Array {
  const archive = new ZipArchive(fixture(name));
  const entries = [...archive.entries.keys()].map((entry): [string, Uint8Array] => {
    const data = archive.read(entry);
    return [entry, entry.endsWith('/data.pkl') ? mutate(data, edits) : data];
  });
  return buildZip(entries, { deflate });
}

const pthZip: FuzzTarget<{ name: string; edits: Mutation[]; where: 'file' | 'pickle'; deflate: boolean }> = {
  name: '.pth (zip)',
  inputs: fc.record({ name: fc.constantFrom(...ZIP_CHECKPOINTS), edits: mutations(), where: fc.constantFrom<'file' | 'pickle'>('file', 'pickle'), deflate: fc.boolean() }),
  errors: [TensorFileError],
  run({ name, edits, where, deflate }) {
    const bytes = where === 'file' ? mutate(fixture(name), edits) : repackWithPickle(name, edits, deflate);
    checkPyValue(parseTensorFile(bytes, 'input.pth'));
  },
};

const pthLegacy: FuzzTarget<{ name: string; edits: Mutation[] }> = {
  name: '.pth (legacy)',
  inputs: fc.record({ name: fc.constantFrom(...LEGACY_CHECKPOINTS), edits: mutations() }),
  errors: [TensorFileError],
  run({ name, edits }) {
    checkPyValue(parseTensorFile(mutate(fixture(name), edits), 'input.pth'));
  },
};

/** Element counts, offsets, sizes and strides: mostly small, sometimes huge (the shapes of decompression and stride-0 bombs). */
const smallOrHuge = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 6 }) }, { weight: 1, arbitrary: fc.constantFrom(2 ** 20, 2 ** 31 - 1, 2 ** 31, 2 ** 40) });
interface CheckpointCase extends TorchCheckpoint {
  edits: Mutation[] | null;
}

const checkpointCases: fc.Arbitrary<CheckpointCase> = fc.record({
  format: fc.constantFrom<'zip' | 'legacy'>('zip', 'legacy'),
  storages: fc.array(fc.record({ cls: fc.constantFrom(...STORAGE_CLASS_NAMES), numel: fc.integer({ min: 0, max: 12 }) }), { minLength: 1, maxLength: 3 }),
  tensors: fc.array(fc.record({ storage: fc.nat(2), offset: smallOrHuge, dims: fc.array(fc.record({ size: smallOrHuge, stride: smallOrHuge }), { maxLength: 3 }) }), { minLength: 1, maxLength: 4 }),
  edits: fc.option(mutations(3), { freq: 4 }),
});

function checkpointBytes(c: CheckpointCase): Uint8Array {
  const bytes = torchCheckpoint(c);
  return c.edits ? mutate(bytes, c.edits) : bytes;
}

const pthGenerated: FuzzTarget<CheckpointCase> = {
  name: '.pth (generated)',
  inputs: checkpointCases,
  errors: [TensorFileError],
  run(c) {
    const bytes = checkpointBytes(c);
    const value = parseTensorFile(bytes, 'input.pth');
    checkPyValue(value);
  },
};

/** A generated value pickled here, or one of the pickles Python wrote. */
type PyLikeOrFixture = { generated: PyLike } | { fixture: string };

const picklePlain: FuzzTarget<{ value: PyLikeOrFixture; edits: Mutation[] | null }> = {
  name: 'pickle',
  inputs: fc.record({
    value: fc.oneof(pyValue.map((v) => ({ generated: v })), fc.constantFrom('plain_p2.pkl', 'plain_p4.pkl', 'plain_p5.pkl').map((f) => ({ fixture: f }))),
    edits: fc.option(mutations()),
  }),
  errors: [TensorFileError],
  run({ value, edits }) {
    const original = 'fixture' in value ? fixture(value.fixture) : pickle(value.generated);
    checkPyValue(unpickle(edits ? mutate(original, edits) : original, 'input.pkl').value);
  },
};

const DTYPES: DType[] = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'];

const tensorMaps: fc.Arbitrary<TensorMap> = fc
  .uniqueArray(
    fc.record({
      name: fc.string({ minLength: 1, maxLength: 10, unit: 'binary' }).filter((n) => n !== '__metadata__'),
      dtype: fc.constantFrom(...DTYPES),
      shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
    }),
    { maxLength: 4, selector: (t) => t.name },
  )
  .map((specs) => new Map(specs.map(({ name, dtype, shape }) => [name, { dtype, shape, data: allocateTensorData(dtype, numel(shape)) }])));

/** Edits of the header's JSON text (duplicated keys, edited numbers), written back with a correct header length. */
function editHeader(bytes: Uint8Array, edits: Mutation[]): Uint8Array {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = mutate(bytes.subarray(8, 8 + length), edits);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(header.length), true);
  return concat(prefix, header, bytes.subarray(8 + length));
}

const safetensors: FuzzTarget<{ tensors: TensorMap; edits: Mutation[]; where: 'file' | 'header' | 'duplicate' }> = {
  name: 'safetensors',
  inputs: fc.record({ tensors: tensorMaps, edits: mutations(), where: fc.constantFrom<'file' | 'header' | 'duplicate'>('file', 'header', 'duplicate') }),
  errors: [TensorFileError],
  run({ tensors, edits, where }) {
    let bytes = serializeSafetensors(tensors);
    if (where === 'file') bytes = mutate(bytes, edits);
    else if (where === 'header') bytes = editHeader(bytes, edits);
    else bytes = editHeader(bytes, [{ kind: 'copy', from: 1 / 100, to: 1 / 100, length: 40 }, ...edits.slice(0, 1)]);
    const { tensors: parsed } = parseSafetensors(bytes, 'input.safetensors');
    let total = 0;
    for (const t of parsed.values()) {
      assert.equal(t.data.length, numel(t.shape));
      total += t.data.length * dtypeSize(t.dtype);
    }
    assert.ok(total <= bytes.length);
  },
};

/** A small model's weights, as safetensors: some values replaced (NaN, infinities, negative variances), maybe one tensor made I32. */
interface WeightsCase {
  edits: { key: number; index: number; value: number }[];
  integerKey: number | null;
}

const weightsModel = (): Sequential => new Sequential(new Conv2d(2, 3, 3), new BatchNorm(3), new Linear(3, 2));

const weights: FuzzTarget<WeightsCase> = {
  name: 'weights (into a model)',
  inputs: fc.record({
    edits: fc.array(fc.record({ key: fc.nat(12), index: fc.nat(60), value: fc.constantFrom(NaN, Infinity, -Infinity, -1, -1e-30, 0.5) }), { maxLength: 3 }),
    integerKey: fc.option(fc.nat(12), { freq: 4 }),
  }),
  // the loaders refuse with an Error naming the file (checked below)
  errors: [TensorFileError, Error],
  run({ edits, integerKey }) {
    const model = weightsModel();
    const entries = [...model.stateDict()];
    for (const { key, index, value } of edits) {
      const data = entries[key % entries.length][1].data;
      data[index % data.length] = value;
    }
    const tensor = ([name, t]: (typeof entries)[number], i: number): [string, NamedTensor] => {
      const shape = [...t.shape];
      if (integerKey === null || i !== integerKey % entries.length) return [name, { dtype: 'F32', shape, data: t.data }];
      return [name, { dtype: 'I32', shape, data: Int32Array.from(t.data, (v) => (Number.isFinite(v) ? v : 0)) }];
    };
    const tensors: TensorMap = new Map(entries.map(tensor));
    const path = writeScratch('weights.safetensors', serializeSafetensors(tensors));
    try {
      model.loadStateDict(readWeights(path), { source: path });
    } catch (error) {
      assert.ok((error as Error).message.includes(path), `the error does not name the file: ${(error as Error).message}`);
      throw error;
    }
    // what loaded is finite, and no variance is negative
    for (const [name, t] of model.stateEntries()) {
      const values = t.toArray();
      assert.ok(values.every(Number.isFinite), `${name} holds a non-finite value`);
      if (name.endsWith('running_var')) assert.ok(values.every((v) => v >= 0), `${name} holds a negative variance`);
    }
  },
};

// ---- tqm ---------------------------------------------------------------------------------------------------

const TQM_SEEDS = irCases(3).map((c) => encodeTqm(c.model));

/** The header's payload length and checksum recomputed, so that the edits reach the decoder and the validator. */
function resealTqm(bytes: Uint8Array): Uint8Array {
  if (bytes.length < TQM_HEADER_BYTES) return bytes;
  const out = Uint8Array.from(bytes);
  new DataView(out.buffer).setUint32(8, out.length - TQM_HEADER_BYTES, true);
  out.set(sha256(out.subarray(0, 12), out.subarray(TQM_HEADER_BYTES)), 12);
  return out;
}

const tqm: FuzzTarget<{ model: number; edits: Mutation[]; reseal: boolean }> = {
  name: 'tqm',
  inputs: fc.record({ model: fc.integer({ min: 0, max: TQM_SEEDS.length - 1 }), edits: mutations(), reseal: fc.boolean() }),
  errors: [TqmError, IntegerModelError],
  run({ model, edits, reseal }) {
    const bytes = mutate(TQM_SEEDS[model], edits);
    inspectModel(decodeTqm(reseal ? resealTqm(bytes) : bytes));
  },
};

/** What `tinyquant inspect` and the integer engine do with a model that loaded. */
function inspectModel(model: IntegerModel): void {
  formatReport('input.tqm', 0, modelReport(model));
  const [c, h, w] = inputShape(model);
  new IntegerEngine(model).infer(new Uint8Array(c * h * w).fill(200));
}

/** A seed model with its meta JSON replaced (the payload starts with it: u32 length, UTF-8), resealed. */
function withMeta(bytes: Uint8Array, meta: unknown): Uint8Array {
  const payload = bytes.subarray(TQM_HEADER_BYTES);
  const oldLength = new DataView(payload.buffer, payload.byteOffset).getUint32(0, true);
  const text = Buffer.from(JSON.stringify(meta) ?? 'null', 'utf8');
  const length = new Uint8Array(4);
  new DataView(length.buffer).setUint32(0, text.length, true);
  return resealTqm(concat(bytes.subarray(0, TQM_HEADER_BYTES), length, text, payload.subarray(4 + oldLength)));
}

const metaValue = fc.oneof(fc.jsonValue({ maxDepth: 1 }), fc.constantFrom('resnet20', 4, 16, [0.5, 0.5, 0.5], ['a', 'b'], { mean: [0.5], std: [0.25] }, { mean: 'abc', std: [0] }));

const tqmMeta: FuzzTarget<{ model: number; fields: Record<string, unknown> }> = {
  name: 'tqm (meta)',
  inputs: fc.record({
    model: fc.integer({ min: 0, max: TQM_SEEDS.length - 1 }),
    fields: fc.dictionary(fc.constantFrom('model', 'method', 'wbits', 'abits', 'firstLast', 'normalization', 'residualBits', 'classes', 'notes', 'extra'), metaValue, { maxKeys: 4 }),
  }),
  errors: [TqmError, IntegerModelError],
  run({ model, fields }) {
    const meta = { ...decodeTqm(TQM_SEEDS[model]).meta, ...fields };
    inspectModel(decodeTqm(withMeta(TQM_SEEDS[model], meta)));
  },
};

// ---- configs and grids ---------------------------------------------------------------------------------------

const PRESETS = join(REPO, 'presets');
const PRESET_TEXTS = readdirSync(PRESETS).filter((f) => f.endsWith('.yaml')).map((f) => readFileSync(join(PRESETS, f), 'utf8'));

const configValue = fc.oneof(
  fc.constantFrom('resnet20', 'cifar10', 'mnist', 'apot', 'ewgs', 'float', 'cosine', 'sgd', 'adam', 'kind:weight', '(', '0x10'),
  fc.integer({ min: -2, max: 300 }),
  fc.double(),
  fc.boolean(),
  fc.jsonValue({ maxDepth: 2 }),
);
const CONFIG_KEYS = ['model', 'dataset', 'method', 'wbits', 'abits', 'epochs', 'batch', 'lr', 'schedule', 'paramGroups', 'ewgs', 'imageSize', 'channels', 'resize', 'valSplit', 'seed', 'unknown'];

const configObjects = fc.dictionary(fc.constantFrom(...CONFIG_KEYS), fc.oneof(configValue, fc.record({ kind: configValue, epochs: configValue, milestones: configValue })), { maxKeys: 6 });

interface TextCase {
  /** JSON or YAML text: a generated object, or a preset grid. */
  text: string;
  json: boolean;
  edits: Mutation[] | null;
}

function textCases(objects: fc.Arbitrary<unknown>, seeds: readonly string[]): fc.Arbitrary<TextCase> {
  const generated = fc.tuple(objects, fc.boolean()).map(([object, json]) => ({ text: JSON.stringify(object, null, json ? 0 : 2), json }));
  const presets = seeds.length ? [fc.constantFrom(...seeds).map((text) => ({ text, json: false }))] : [];
  return fc.record({ source: fc.oneof(generated, ...presets), edits: fc.option(mutations(4)) }).map(({ source, edits }) => ({ ...source, edits }));
}

/** The text, edited, in a file named by its format (readConfigFile goes by the extension). */
function writeText(c: TextCase): string {
  const bytes = Buffer.from(c.text, 'utf8');
  return writeScratch(c.json ? 'input.json' : 'input.yaml', c.edits ? mutate(bytes, c.edits) : bytes);
}

const config: FuzzTarget<TextCase> = {
  name: 'config (YAML/JSON)',
  inputs: textCases(configObjects, []),
  errors: [ConfigError],
  run(c) {
    const path = writeText(c);
    // a resolved config is itself a valid config
    resolveConfig(resolveConfig(readConfigFile(path), path), path);
  },
};

const grid: FuzzTarget<TextCase> = {
  name: 'experiment grid',
  inputs: textCases(fc.dictionary(fc.constantFrom('name', 'models', 'datasets', 'methods', 'bits', 'seeds', 'recipe', 'scales', 'start'), configValue, { maxKeys: 6 }), PRESET_TEXTS),
  errors: [ConfigError],
  run(c) {
    const path = writeText(c);
    parseGrid(readConfigFile(path), path, REPO);
  },
};

/** Every parser, by name. */
export const FUZZ_TARGETS = [
  tar,
  tarStream,
  tarGz,
  gzipTarget,
  idx,
  cifar,
  image,
  zip,
  picklePlain,
  pthZip,
  pthLegacy,
  pthGenerated,
  safetensors,
  weights,
  tqm,
  tqmMeta,
  config,
  grid,
] as unknown as readonly FuzzTarget[];
