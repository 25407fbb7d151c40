import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TensorFileError } from '../src/io/bytes.js';
import { type PyValue, TorchStorage, TorchStorageType, unpickle } from '../src/io/pickle.js';
import { type NamedTensor, isNamedTensor } from '../src/io/tensors.js';
import { Rng } from '../src/util/rng.js';

// ---- a tiny pickle assembler: each helper returns the bytes of one opcode with its argument ----

const utf8 = (text: string): number[] => [...new TextEncoder().encode(text)];
const le = (value: number | bigint, bytes: number): number[] =>
  Array.from({ length: bytes }, (_, i) => Number((BigInt(value) >> BigInt(8 * i)) & 0xffn));

const op = {
  proto: (n: number) => [0x80, n],
  frame: (n: number) => [0x95, ...le(n, 8)],
  mark: [0x28],
  stop: [0x2e],
  pop: [0x30],
  popMark: [0x31],
  dup: [0x32],
  none: [0x4e],
  true: [0x88],
  false: [0x89],
  int1: (n: number) => [0x4b, n],
  int2: (n: number) => [0x4d, ...le(n, 2)],
  int4: (n: number) => [0x4a, ...le(n, 4)],
  long1: (n: bigint, bytes: number) => [0x8a, bytes, ...le(n, bytes)],
  float: (x: number) => {
    const view = new DataView(new ArrayBuffer(8));
    view.setFloat64(0, x, false);
    return [0x47, ...new Uint8Array(view.buffer)];
  },
  unicode: (s: string) => [0x58, ...le(utf8(s).length, 4), ...utf8(s)],
  shortUnicode: (s: string) => [0x8c, utf8(s).length, ...utf8(s)],
  unicode8: (s: string) => [0x8d, ...le(utf8(s).length, 8), ...utf8(s)],
  binstring: (s: string) => [0x54, ...le(utf8(s).length, 4), ...utf8(s)],
  shortBinstring: (s: string) => [0x55, utf8(s).length, ...utf8(s)],
  bytes8: (b: number[]) => [0x8e, ...le(b.length, 8), ...b],
  shortBytes: (b: number[]) => [0x43, b.length, ...b],
  emptyDict: [0x7d],
  dict: [0x64],
  setitem: [0x73],
  setitems: [0x75],
  emptyList: [0x5d],
  list: [0x6c],
  append: [0x61],
  appends: [0x65],
  emptyTuple: [0x29],
  tuple: [0x74],
  tuple1: [0x85],
  tuple2: [0x86],
  tuple3: [0x87],
  binput: (i: number) => [0x71, i],
  longBinput: (i: number) => [0x72, ...le(i, 4)],
  memoize: [0x94],
  binget: (i: number) => [0x68, i],
  longBinget: (i: number) => [0x6a, ...le(i, 4)],
  global: (module: string, name: string) => [0x63, ...utf8(`${module}\n${name}\n`)],
  stackGlobal: [0x93],
  reduce: [0x52],
  newobj: [0x81],
  newobjEx: [0x92],
  build: [0x62],
  binpersid: [0x51],
};

function pickle(...parts: number[][]): Uint8Array {
  return Uint8Array.from(parts.flat());
}

const SOURCE = 'crafted.pkl';

function load(bytes: Uint8Array, persistentLoad?: (pid: PyValue) => PyValue): PyValue {
  return unpickle(bytes, SOURCE, { persistentLoad }).value;
}

function assertFileError(run: () => unknown, pattern: RegExp): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof TensorFileError, `expected a TensorFileError, got ${String(error)}`);
    assert.ok(error.message.startsWith(`${SOURCE}: `), error.message);
    assert.match(error.message, pattern);
    return true;
  });
}

// ---- malicious pickles -----------------------------------------------------------------------

const marker = path.join(os.tmpdir(), `tinyquant-io-pickle-test-${process.pid}`);
const DANGEROUS = [
  ['os', 'system'],
  ['posix', 'system'],
  ['builtins', 'eval'],
  ['__builtin__', 'eval'],
  ['builtins', 'exec'],
  ['subprocess', 'Popen'],
  ['builtins', 'getattr'],
  ['argparse', 'Namespace'],
  ['torch', 'load'],
];

test('globals outside the allowlist are refused at GLOBAL, before anything is called', () => {
  for (const [module, name] of DANGEROUS) {
    const command = op.unicode(`touch ${marker}`);
    const bytes = pickle(op.proto(2), op.global(module, name), command, op.tuple1, op.reduce, op.stop);
    assertFileError(
      () => load(bytes),
      new RegExp(`refusing to load global '${module}\\.${name}'.*only tensors.*\\(pickle opcode at byte 2\\)`),
    );
  }
  assert.equal(fs.existsSync(marker), false);
});

test('globals outside the allowlist are refused at STACK_GLOBAL (protocol 4)', () => {
  for (const [module, name] of DANGEROUS) {
    const bytes = pickle(
      op.proto(4),
      op.frame(40),
      op.shortUnicode(module),
      op.memoize,
      op.shortUnicode(name),
      op.memoize,
      op.stackGlobal,
      op.shortUnicode(`touch ${marker}`),
      op.tuple1,
      op.reduce,
      op.stop,
    );
    assertFileError(() => load(bytes), new RegExp(`refusing to load global '${module}\\.${name}'.*only tensors`));
  }
  assert.equal(fs.existsSync(marker), false);
});

test('protocol 0/1 object-building opcodes are not accepted', () => {
  const inst = pickle(op.proto(2), op.mark, [0x69, ...utf8('os\nsystem\n')], op.stop); // INST
  assertFileError(() => load(inst), /unsupported pickle opcode 0x69 \('i'\)/);
  const textInt = pickle([0x49, ...utf8('12\n')], op.stop); // INT (protocol 0)
  assertFileError(() => load(textInt), /unsupported pickle opcode 0x49/);
});

// ---- plain values ----------------------------------------------------------------------------

test('decodes the scalar, string and bytes opcodes', () => {
  const bytes = pickle(
    op.proto(2),
    op.mark,
    op.none,
    op.true,
    op.false,
    op.int1(200),
    op.int2(40000),
    op.int4(-123456),
    op.long1(-2n, 1),
    op.long1(2n ** 63n, 9),
    op.float(-0.1),
    op.shortBinstring('py2 str'),
    op.binstring('é'),
    op.unicode8('eight'),
    op.bytes8([1, 2, 255]),
    op.shortBytes([]),
    op.tuple,
    op.stop,
  );
  assert.deepEqual(load(bytes), [
    null,
    true,
    false,
    200,
    40000,
    -123456,
    -2,
    2n ** 63n,
    -0.1,
    'py2 str',
    'é',
    'eight',
    Uint8Array.from([1, 2, 255]),
    new Uint8Array(0),
  ]);
});

test('builds lists, tuples and dicts with marks, memo, POP and DUP', () => {
  const bytes = pickle(
    op.proto(2),
    op.mark,
    op.mark, op.int1(1), op.unicode('one'), op.int1(2), op.unicode('two'), op.dict, // DICT from a mark
    op.mark, op.int1(7), op.list, op.longBinput(300), // LIST, memo entry 300
    op.longBinget(300), op.int1(8), op.append, op.pop, // the same list object, appended to
    op.emptyList, op.mark, op.int1(1), op.int1(2), op.appends,
    op.int1(9), op.dup, op.tuple2,
    op.mark, op.int1(99), op.popMark, // discarded
    op.emptyDict, op.unicode('k'), op.emptyTuple, op.setitem,
    op.tuple,
    op.stop,
  );
  const value = load(bytes) as readonly PyValue[];
  assert.deepEqual(value, [
    new Map<PyValue, PyValue>([
      [1, 'one'],
      [2, 'two'],
    ]),
    [7, 8],
    [1, 2],
    [9, 9],
    new Map([['k', []]]),
  ]);
  assert.ok(Object.isFrozen(value) && Object.isFrozen(value[3]), 'tuples are frozen');
  assert.ok(!Object.isFrozen(value[1]), 'lists are not');
});

test('NEWOBJ and NEWOBJ_EX build allowlisted classes; BUILD keeps an OrderedDict a dict', () => {
  const ordered = [...op.global('collections', 'OrderedDict'), ...op.emptyTuple];
  const bytes = pickle(
    op.proto(4),
    op.mark,
    ordered, op.newobj, op.unicode('a'), op.int1(1), op.setitem,
    ordered, op.emptyDict, op.newobjEx,
    ordered, op.reduce, op.emptyDict, op.unicode('_metadata'), op.emptyDict, op.setitem, op.build,
    op.tuple3,
    op.stop,
  );
  assert.deepEqual(load(bytes), [new Map([['a', 1]]), new Map(), new Map()]);
});

test('torch.device, _codecs.encode and numpy scalars become plain values', () => {
  const numpyScalar = (code: string, raw: number[]) => [
    ...op.global('numpy.core.multiarray', 'scalar'),
    ...op.global('numpy', 'dtype'), ...op.unicode(code), ...op.false, ...op.true, ...op.tuple3, ...op.reduce,
    ...op.mark, ...op.int1(3), ...op.unicode('<'), ...op.none, ...op.tuple, ...op.build,
    ...op.shortBytes(raw), ...op.tuple2, ...op.reduce,
  ];
  const bytes = pickle(
    op.proto(2),
    op.mark,
    op.global('torch', 'device'), op.unicode('cuda'), op.int1(1), op.tuple2, op.reduce,
    op.global('torch', 'device'), op.unicode('cpu'), op.tuple1, op.reduce,
    op.global('_codecs', 'encode'), op.unicode('\u00ff\u0000a'), op.unicode('latin1'), op.tuple2, op.reduce,
    numpyScalar('f8', le(0x4059000000000000n, 8)), // 100.0
    numpyScalar('i2', le(-3 & 0xffff, 2)),
    numpyScalar('b1', [1]),
    op.tuple,
    op.stop,
  );
  assert.deepEqual(load(bytes), ['cuda:1', 'cpu', Uint8Array.from([255, 0, 97]), 100, -3, true]);
});

// ---- malformed pickles -----------------------------------------------------------------------

test('malformed pickles give clear errors naming the source', () => {
  const cases: [Uint8Array, RegExp][] = [
    [pickle(), /truncated or corrupt: a pickle opcode/],
    [pickle(op.proto(2), op.none), /truncated or corrupt: a pickle opcode/],
    [pickle(op.proto(6), op.none, op.stop), /unsupported pickle protocol 6/],
    [pickle(op.proto(2), op.reduce, op.stop), /stack underflow/],
    [pickle(op.proto(2), op.int1(1), op.tuple, op.stop), /no MARK/],
    [pickle(op.proto(2), op.binget(5), op.stop), /memo has no entry 5/],
    [pickle(op.proto(2), [0x58, 0xff, 0xff, 0xff, 0x7f], op.stop), /a string needs 2147483647 bytes/],
    [pickle(op.proto(2), [0x63, ...utf8('os')]), /GLOBAL without its newline/],
    [pickle(op.proto(2), [0x58, 2, 0, 0, 0, 0xc3, 0x28], op.stop), /not valid UTF-8/],
    [pickle(op.proto(2), op.emptyDict, op.emptyTuple, op.int1(1), op.setitem, op.stop), /dict keys of type a tuple/],
    [pickle(op.proto(2), op.emptyTuple, op.int1(1), op.append, op.stop), /APPEND to a tuple/],
    [pickle(op.proto(2), op.emptyList, op.none, op.build, op.stop), /BUILD on a list/],
    [pickle(op.proto(2), op.global('torch', 'FloatStorage'), op.emptyTuple, op.reduce, op.stop), /class torch\.FloatStorage cannot be called/],
    [pickle(op.proto(2), op.global('torch._utils', '_rebuild_tensor_v2'), op.emptyTuple, op.reduce, op.stop), /_rebuild_tensor_v2 takes 6 to 7 arguments/],
    [pickle(op.proto(2), op.unicode('pid'), op.binpersid, op.stop), /persistent id/],
  ];
  for (const [bytes, pattern] of cases) assertFileError(() => load(bytes), pattern);
});

// ---- tensors ---------------------------------------------------------------------------------

const FLOAT_STORAGE = [...op.global('torch', 'FloatStorage')];

/** _rebuild_tensor_v2(<storage 0>, offset, size, stride, False, OrderedDict()). */
function tensorOpcodes(offset: number, size: number[], stride: number[]): number[] {
  return [
    ...op.global('torch._utils', '_rebuild_tensor_v2'),
    ...op.mark,
    ...op.mark,
    ...op.unicode('storage'), ...FLOAT_STORAGE, ...op.unicode('0'), ...op.unicode('cpu'), ...op.int1(24),
    ...op.tuple,
    ...op.binpersid,
    ...op.int1(offset),
    ...op.mark, ...size.flatMap((s) => op.int1(s)), ...op.tuple,
    ...op.mark, ...stride.flatMap((s) => op.int1(s)), ...op.tuple,
    ...op.false,
    ...op.global('collections', 'OrderedDict'), ...op.emptyTuple, ...op.reduce,
    ...op.tuple,
    ...op.reduce,
  ];
}

/** Loads tensors sharing one 24-element F32 storage [0, 1, ..., 23], supplied after unpickling. */
function loadViews(views: [number, number[], number[]][]): { tensors: NamedTensor[]; storage: TorchStorage } {
  const storage = new TorchStorage('F32', 24, '0');
  const bytes = pickle(op.proto(2), op.mark, ...views.map((view) => tensorOpcodes(...view)), op.list, op.stop);
  const persistentLoad = (pid: PyValue): PyValue => {
    assert.ok(Array.isArray(pid) && pid[0] === 'storage');
    assert.ok(pid[1] instanceof TorchStorageType && pid[1].dtype === 'F32');
    return storage;
  };
  const tensors = load(bytes, persistentLoad) as NamedTensor[];
  return { tensors, storage };
}

/** What element [i0, i1, ...] of a strided view reads, by definition. */
function stridedValues(storage: Float32Array, offset: number, size: number[], stride: number[]): number[] {
  const out: number[] = [];
  const visit = (dim: number, position: number): void => {
    if (dim === size.length) {
      out.push(storage[position]);
      return;
    }
    for (let i = 0; i < size[dim]; i++) visit(dim + 1, position + i * stride[dim]);
  };
  visit(0, offset);
  return out;
}

test('tensors are rebuilt from storage, offset, size and stride, including shared and strided views', () => {
  const views: [number, number[], number[]][] = [
    [0, [4, 6], [6, 1]], // contiguous
    [0, [6, 4], [1, 6]], // transposed
    [0, [2, 3, 4], [1, 8, 2]], // arbitrary strides, up to the last element
    [5, [3], [0]], // expanded (stride 0)
    [7, [], []], // scalar
    [0, [0, 5], [5, 1]], // empty
  ];
  const { tensors, storage } = loadViews(views);
  assert.ok(tensors.every(isNamedTensor));
  assert.ok(tensors.every((t) => t.data.every((x) => x === 0)), 'no data before the storage is supplied');
  const elements = Float32Array.from({ length: 24 }, (_, i) => i);
  storage.supply(elements);
  views.forEach(([offset, size, stride], i) => {
    assert.equal(tensors[i].dtype, 'F32');
    assert.deepEqual(tensors[i].shape, size);
    assert.deepEqual([...tensors[i].data], stridedValues(elements, offset, size, stride), `view ${i}`);
  });
  tensors[0].data[0] = 100;
  assert.equal(tensors[1].data[0], 0, 'each tensor owns its data');
});

test('views that reach beyond their storage are refused', () => {
  assertFileError(() => loadViews([[0, [5, 5], [5, 1]]]), /tensor of size \[5, 5\], stride \[5, 1\], offset 0 reaches beyond its torch storage '0' \(24 x F32\)/);
  assertFileError(() => loadViews([[20, [2, 3], [3, 1]]]), /reaches beyond/);
  assertFileError(() => loadViews([[0, [2, 3], [3]]]), /size and stride differ in length/);
});

test('a storage checks the number of elements supplied', () => {
  const storage = new TorchStorage('I64', 3, 'k');
  assert.throws(() => storage.supply(new BigInt64Array(2)), /storage 'k' should hold 3 I64 elements, the file has 2/);
});

test('random corruption of a pickle gives a TensorFileError or a value, nothing else', () => {
  const fixture = fs.readFileSync(new URL('../../test/fixtures/io/plain_p4.pkl', import.meta.url));
  const rng = new Rng(20240601);
  for (let trial = 0; trial < 400; trial++) {
    const bytes = Uint8Array.from(fixture);
    for (let flips = 1 + rng.int(3); flips > 0; flips--) bytes[rng.int(bytes.length)] = rng.int(256);
    const cut = trial % 4 === 0 ? rng.int(bytes.length) : bytes.length;
    try {
      load(bytes.subarray(0, cut));
    } catch (error) {
      assert.ok(error instanceof TensorFileError, `trial ${trial}: ${String(error)}`);
    }
  }
});
