import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type PyValue,
  type TensorMap,
  TensorFileError,
  detectTensorFormat,
  extractStateDict,
  isNamedTensor,
  loadStateDict,
  loadTensorFile,
  parseTensorFile,
  toFloat32,
  unpickle,
} from '../src/io/index.js';
import { bytesOf } from '../src/io/tensors.js';
import { ZipArchive } from '../src/io/zip.js';
import { type ZipOptions, buildZip } from './zip-builder.js';
import { Rng } from '../src/util/rng.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/io/', import.meta.url));
const fixture = (name: string): string => path.join(FIXTURES, name);

// ---- expected.json: what torch.load returns for each fixture (see scripts/fixtures/make_io_fixtures.py)

interface TensorExpectation {
  dtype: string;
  shape: number[];
  hex: string;
  values?: number[];
}
type Leaf =
  | null
  | boolean
  | number
  | string
  | { int: string }
  | { bytes: string }
  | { device: string }
  | { empty: 'dict' | 'list' | 'tuple' }
  | { tensor: string };
interface Expected {
  files: Record<string, string>;
  contents: Record<string, Record<string, Leaf>>;
  tensors: Record<string, TensorExpectation>;
}
const expected = JSON.parse(fs.readFileSync(fixture('expected.json'), 'utf8')) as Expected;

const hex = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');

/** Leaves by path, as the fixture script flattens torch.load's result. */
function flatten(value: PyValue, prefix: string, out: Map<string, PyValue>): Map<string, PyValue> {
  const isContainer = value instanceof Map || Array.isArray(value);
  const size = value instanceof Map ? value.size : Array.isArray(value) ? value.length : -1;
  if (!isContainer || size === 0 || isNamedTensor(value)) {
    out.set(prefix, value);
    return out;
  }
  const entries: [unknown, PyValue][] = value instanceof Map ? [...value] : (value as PyValue[]).map((v, i) => [i, v]);
  for (const [key, item] of entries) flatten(item, prefix ? `${prefix}/${String(key)}` : String(key), out);
  return out;
}

function assertTensor(actual: PyValue, id: string, where: string): void {
  const want = expected.tensors[id];
  assert.ok(isNamedTensor(actual), `${where}: expected a tensor`);
  assert.equal(actual.dtype, want.dtype, `${where}: dtype`);
  assert.deepEqual(actual.shape, want.shape, `${where}: shape`);
  assert.equal(actual.data.length, want.shape.reduce((a, b) => a * b, 1), `${where}: element count`);
  assert.equal(hex(bytesOf(actual.data)), want.hex, `${where}: data`);
  if (want.values) assert.deepEqual([...toFloat32(actual)], want.values, `${where}: toFloat32`);
}

function assertLeaf(actual: PyValue, want: Leaf, where: string): void {
  if (want === null || typeof want !== 'object') {
    assert.equal(actual, want, where);
  } else if ('int' in want) {
    assert.ok(typeof actual === 'number' || typeof actual === 'bigint', `${where}: expected an int`);
    assert.equal(String(actual), want.int, where);
  } else if ('bytes' in want) {
    assert.ok(actual instanceof Uint8Array, `${where}: expected bytes`);
    assert.equal(hex(actual), want.bytes, where);
  } else if ('device' in want) {
    assert.equal(actual, want.device, where);
  } else if ('empty' in want) {
    const sequence = Object.isFrozen(actual) ? 'tuple' : 'list';
    const kind = actual instanceof Map ? 'dict' : Array.isArray(actual) ? sequence : '?';
    assert.equal(kind, want.empty, where);
  } else {
    assertTensor(actual, want.tensor, where);
  }
}

function assertMatchesTorch(value: PyValue, file: string): void {
  const want = expected.contents[expected.files[file]];
  const actual = flatten(value, '', new Map());
  assert.deepEqual([...actual.keys()].sort(), Object.keys(want).sort(), `${file}: paths`);
  for (const [where, leaf] of Object.entries(want)) assertLeaf(actual.get(where) ?? null, leaf, `${file}: ${where}`);
}

function loadFixture(name: string): PyValue {
  return name.endsWith('.pkl') ? unpickle(fs.readFileSync(fixture(name)), name).value : loadTensorFile(fixture(name));
}

for (const name of Object.keys(expected.files)) {
  test(`${name} loads to exactly what torch.load returns`, () => assertMatchesTorch(loadFixture(name), name));
}

// ---- state dicts -----------------------------------------------------------------------------

const STATE_DICT_FILES = [
  'tiny_state_dict.pth',
  'tiny_state_dict_legacy.pth',
  'tiny_state_dict.safetensors',
  'apot_checkpoint.pth.tar', // under 'state_dict', names prefixed with 'module.'
  'apot_checkpoint_deflated.pth.tar',
  'ewgs_checkpoint.pth', // under 'model'
];

function assertTinyStateDict(stateDict: TensorMap, where: string): void {
  const want = expected.contents[expected.files['tiny_state_dict.pth']];
  assert.deepEqual([...stateDict.keys()], Object.keys(want), `${where}: names`);
  for (const [name, leaf] of Object.entries(want)) assertLeaf(stateDict.get(name) ?? null, leaf, `${where}: ${name}`);
}

test('the model state dict is found in plain state dicts and in APoT / EWGS style checkpoints', () => {
  for (const name of STATE_DICT_FILES) assertTinyStateDict(loadStateDict(fixture(name)), name);
  const stateDict = loadStateDict(fixture('apot_checkpoint.pth.tar'));
  assert.equal(stateDict.get('bn.num_batches_tracked')?.dtype, 'I64', 'integer buffers are kept');
});

test('a checkpoint without a state dict is reported with its top-level keys', () => {
  const file = fixture('tensor_zoo.pth');
  assert.throws(() => loadStateDict(file), (error: Error) => {
    assert.ok(error instanceof TensorFileError);
    assert.match(error.message, new RegExp(`^${file}: no state dict found: the file holds a dict with keys base, transposed, .*'state_dict', 'model_state_dict', 'model'`));
    return true;
  });
  assert.throws(() => extractStateDict([1, 2], 'list.pth'), /TensorFileError: list\.pth: no state dict found: the file holds a list/);
  assert.throws(() => extractStateDict(new Map(), 'empty.pth'), /empty\.pth: no state dict found/);
});

test('the module. prefix is only stripped when every name has it', () => {
  const tensor = { dtype: 'F32' as const, shape: [1], data: new Float32Array(1) };
  const mixed = new Map([
    ['module.a', tensor],
    ['b', tensor],
  ]);
  assert.deepEqual([...extractStateDict(mixed, 'x').keys()], ['module.a', 'b']);
  const wrapped = new Map<string, PyValue>([['model_state_dict', new Map([['module.a', tensor]])]]);
  assert.deepEqual([...extractStateDict(wrapped, 'x').keys()], ['a']);
});

// ---- formats and bad files -------------------------------------------------------------------

test('the format is detected from the content', () => {
  const format = (name: string) => detectTensorFormat(fs.readFileSync(fixture(name)));
  assert.equal(format('tiny_state_dict.pth'), 'torch-zip');
  assert.equal(format('tiny_state_dict_legacy.pth'), 'torch-legacy');
  assert.equal(format('tiny_state_dict.safetensors'), 'safetensors');
  assert.equal(format('expected.json'), null);
  // a safetensors header of 128 bytes starts the file with 0x80, as a pickle does
  const header = JSON.stringify({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }).padEnd(128, ' ');
  const safetensors = Buffer.alloc(8 + 128 + 4);
  safetensors.writeBigUInt64LE(128n, 0);
  safetensors.write(header, 8);
  assert.equal(safetensors[0], 0x80);
  assert.equal(detectTensorFormat(safetensors), 'safetensors');
  assert.ok(parseTensorFile(safetensors, 'x.safetensors') instanceof Map);
});

const PWNED_MARKER = '/tmp/tinyquant-io-pwned'; // what the malicious fixtures would create

test('checkpoints that ask for code are refused, naming the file and the global', () => {
  const cases: [string, string][] = [
    ['evil_os_system.pth', 'posix.system'],
    ['evil_eval_legacy.pth', '__builtin__.eval'],
    ['evil_popen_p4.pth', 'subprocess.Popen'],
    ['namespace_checkpoint.pth', 'argparse.Namespace'],
  ];
  for (const [name, global] of cases) {
    const file = fixture(name);
    assert.throws(() => loadTensorFile(file), (error: Error) => {
      assert.ok(error instanceof TensorFileError);
      assert.ok(error.message.startsWith(`${file}: refusing to load global '${global}'`), error.message);
      assert.match(error.message, /only tensors and plain data/);
      return true;
    });
  }
  assert.equal(fs.existsSync(PWNED_MARKER), false);
});

function withTempDir(run: (dir: string) => void): void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tinyquant-io-pth-'));
  try {
    run(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('unreadable, empty, foreign and plain-pickle files give clear errors naming them', () => {
  withTempDir((dir) => {
    const write = (name: string, bytes: Uint8Array | string): string => {
      fs.writeFileSync(path.join(dir, name), bytes);
      return path.join(dir, name);
    };
    const cases: [string, RegExp][] = [
      [path.join(dir, 'missing.pth'), /missing\.pth: cannot read: ENOENT/],
      [write('empty.pth', ''), /empty\.pth: not a tensor file .* starts with nothing/],
      [write('notes.pth', 'hello world'), /notes\.pth: not a tensor file .* starts with 68 65 6c 6c 6f 20 77 6f/],
      [write('plain.pkl', Uint8Array.from([0x80, 2, 0x7d, 0x71, 0, 0x2e])), /plain\.pkl: a pickle without the PyTorch magic number/],
      [write('old.pth.tar', Buffer.concat([Buffer.alloc(257), Buffer.from('ustar\x0000'), Buffer.alloc(242)])), /old\.pth\.tar: a tar archive, not a tensor file/],
    ];
    for (const [file, pattern] of cases) {
      assert.throws(
        () => loadTensorFile(file),
        (error: Error) => error instanceof TensorFileError && pattern.test(error.message),
      );
    }
  });
});

test('a legacy file saved on a big-endian machine is refused', () => {
  const bytes = Uint8Array.from(fs.readFileSync(fixture('tiny_state_dict_legacy.pth')));
  const flag = Buffer.from(bytes).indexOf('little_endian') + 'little_endian'.length;
  const newTrue = bytes.indexOf(0x88, flag);
  assert.ok(newTrue > flag && newTrue < flag + 4, 'sys_info has little_endian=True');
  bytes[newTrue] = 0x89; // NEWFALSE
  assert.throws(() => parseTensorFile(bytes, 'be.pth'), /TensorFileError: be\.pth: legacy PyTorch file saved on a big-endian machine/);
});

test('every truncation of a checkpoint or safetensors file is reported, naming the file', () => {
  for (const name of ['tiny_state_dict.pth', 'tiny_state_dict_legacy.pth', 'tiny_state_dict.safetensors']) {
    const bytes = fs.readFileSync(fixture(name));
    for (let cut = 0; cut < bytes.length; cut++) {
      assert.throws(
        () => parseTensorFile(bytes.subarray(0, cut), name),
        (error: Error) => error instanceof TensorFileError && error.message.startsWith(`${name}: `),
        `${name} cut at ${cut}`,
      );
    }
  }
});

test('random corruption gives a TensorFileError or a value, never a crash', () => {
  const rng = new Rng(7);
  const names = ['tiny_state_dict.pth', 'tensor_zoo_legacy.pth', 'tiny_state_dict.safetensors', 'ewgs_checkpoint.pth'];
  for (const name of names) {
    const original = fs.readFileSync(fixture(name));
    for (let trial = 0; trial < 150; trial++) {
      const bytes = Uint8Array.from(original);
      for (let flips = 1 + rng.int(4); flips > 0; flips--) bytes[rng.int(bytes.length)] = rng.int(256);
      try {
        parseTensorFile(bytes, name);
      } catch (error) {
        const clear = error instanceof TensorFileError && error.message.startsWith(`${name}: `);
        assert.ok(clear, `${name} trial ${trial}: ${String(error)}`);
      }
    }
  }
});

// ---- zip variants: the same checkpoint re-packed deflated, with zip64 records, with a comment ----

function checkpointEntries(name: string): [string, Uint8Array][] {
  const archive = new ZipArchive(fs.readFileSync(fixture(name)));
  return [...archive.entries.keys()].map((entry) => [entry, archive.read(entry)]);
}

test('zip checkpoints load whether stored or deflated, with zip64 records or an archive comment', () => {
  const entries = checkpointEntries('tiny_state_dict.pth');
  const variants: ZipOptions[] = [
    {},
    { deflate: true },
    { zip64: true },
    { zip64: true, deflate: true },
    { comment: 'PK\x05\x06, a decoy signature in the comment' },
  ];
  for (const options of variants) {
    const name = `repacked ${JSON.stringify(options)}`;
    assertMatchesTorch(parseTensorFile(buildZip(entries, options), name), 'tiny_state_dict.pth');
  }
});

test('zip damage is reported: CRC mismatch, missing or duplicated entries, unknown compression', () => {
  const entries = checkpointEntries('tiny_state_dict.pth');
  const corrupt = buildZip(entries, {});
  const firstData = Buffer.from(corrupt).indexOf('data/0') + 'data/0'.length;
  corrupt[firstData] ^= 1;
  assert.throws(() => parseTensorFile(corrupt, 'crc.pth'), /crc\.pth: zip entry '.*\/data\/0' is corrupt \(CRC mismatch\)/);

  const withoutStorage = entries.filter(([name]) => !name.endsWith('/data/3'));
  assert.throws(() => parseTensorFile(buildZip(withoutStorage, {}), 'missing.pth'), /missing\.pth: zip entry '.*\/data\/3' is missing/);

  const twoPickles = [...entries, ['other/data.pkl', entries[0][1]] as [string, Uint8Array]];
  assert.throws(() => parseTensorFile(buildZip(twoPickles, {}), 'two.pth'), /two\.pth: .*one <archive>\/data\.pkl entry, this one has 2/);

  const bzip2 = buildZip(entries, {});
  const centralMethod = Buffer.from(bzip2).indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])) + 10;
  bzip2[centralMethod] = 12;
  assert.throws(() => parseTensorFile(bzip2, 'bz.pth'), /bz\.pth: zip entry '.*' uses compression method 12/);
});
