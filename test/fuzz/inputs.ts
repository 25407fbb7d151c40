/**
 * Input makers for the fuzz targets (and the hostile-input tests): byte-level mutations of valid
 * files (flips, truncation, splices, edited length fields) as fast-check arbitraries, a small pickle
 * writer for generated Python values (written from the pickle opcode list, independent of the
 * reader), and PyTorch checkpoints of given storages and tensors built with it.
 */
import fc from 'fast-check';
import { buildZip } from '../zip-builder.js';

/** One edit of a byte string; positions are fractions of its length, so they shrink towards the start. */
export type Mutation =
  | { kind: 'set'; at: number; value: number }
  | { kind: 'bit'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; length: number }
  | { kind: 'copy'; from: number; to: number; length: number }
  | { kind: 'number'; at: number; value: number; width: 1 | 2 | 4 | 8; littleEndian: boolean };

const POSITION_STEPS = 2 ** 30;
/**
 * A fraction in [0, 1), uniform: fc.double draws uniformly from the doubles (most of them tiny) and
 * fast-check biases towards small values, either of which would put most edits on a file's first bytes.
 */
export const position = fc.noBias(fc.integer({ min: 0, max: POSITION_STEPS - 1 })).map((i) => i / POSITION_STEPS);

/** Values that break size arithmetic: zero, one, powers of two and their neighbours, all ones. */
const interestingNumber = fc.oneof(
  fc.constantFrom(0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 2 ** 32, 2 ** 40, 2 ** 53 - 1),
  fc.nat(),
);

export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), at: position, value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('bit' as const), at: position, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: position }),
  fc.record({ kind: fc.constant('insert' as const), at: position, bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: position, length: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant('copy' as const), from: position, to: position, length: fc.integer({ min: 1, max: 600 }) }),
  fc.record({
    kind: fc.constant('number' as const),
    at: position,
    value: interestingNumber,
    width: fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const),
    littleEndian: fc.boolean(),
  }),
);

/** Up to `max` mutations (at least one). */
export const mutations = (max = 6): fc.Arbitrary<Mutation[]> => fc.array(mutation, { minLength: 1, maxLength: max });

function index(at: number, length: number): number {
  return Math.min(length, Math.floor(at * length));
}

function writeNumber(out: Uint8Array, at: number, value: number, width: number, littleEndian: boolean): void {
  let v = BigInt(value);
  for (let i = 0; i < width && at + i < out.length; i++) {
    out[littleEndian ? at + i : at + width - 1 - i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

/** The bytes after the edits, applied in order (the input is not changed). */
export function mutate(original: Uint8Array, edits: readonly Mutation[]): Uint8Array {
  let bytes: Uint8Array = Uint8Array.from(original);
  for (const m of edits) {
    const n = bytes.length;
    switch (m.kind) {
      case 'set':
        if (n > 0) bytes[Math.min(n - 1, index(m.at, n))] = m.value;
        break;
      case 'bit':
        if (n > 0) bytes[Math.min(n - 1, index(m.at, n))] ^= 1 << m.bit;
        break;
      case 'truncate':
        bytes = bytes.slice(0, index(m.at, n));
        break;
      case 'insert': {
        const at = index(m.at, n);
        bytes = concat(bytes.subarray(0, at), m.bytes, bytes.subarray(at));
        break;
      }
      case 'delete': {
        const at = index(m.at, n);
        bytes = concat(bytes.subarray(0, at), bytes.subarray(at + m.length));
        break;
      }
      case 'copy': {
        const from = index(m.from, n);
        const to = index(m.to, n);
        bytes = concat(bytes.subarray(0, to), bytes.subarray(from, from + m.length), bytes.subarray(to));
        break;
      }
      case 'number':
        if (n > 0) writeNumber(bytes, Math.min(n - 1, index(m.at, n)), m.value, m.width, m.littleEndian);
        break;
    }
  }
  return bytes;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A valid input (as bytes) and edits to it; mutated inputs are what most targets run. */
export interface Mutated<S> {
  seed: S;
  edits: Mutation[];
}

export function mutatedFrom<S>(seeds: fc.Arbitrary<S>, max = 6): fc.Arbitrary<Mutated<S>> {
  return fc.record({ seed: seeds, edits: mutations(max) });
}

// ---- a pickle writer for generated values ---------------------------------------------------------

/** The Python values the writer knows: lists and tuples are arrays (`tuple` marks the latter). */
export type PyLike =
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | { long: bigint }
  | { list: PyLike[] }
  | { tuple: PyLike[] }
  | { dict: [PyLike, PyLike][] }
  /** A global itself (a class), or called with `args` (REDUCE). */
  | { global: [string, string]; args?: PyLike[] }
  /** A persistent id (BINPERSID), as PyTorch refers to storages. */
  | { persid: PyLike };

/** Arbitrary Python values up to a small depth (ints, floats, strings, bytes, containers, allowlisted and other globals). */
export const pyValue: fc.Arbitrary<PyLike> = fc.letrec<{ value: PyLike }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.integer({ min: -(2 ** 52), max: 2 ** 52 }),
    fc.double(),
    fc.string({ maxLength: 20 }),
    fc.uint8Array({ maxLength: 20 }),
    fc.record({ list: fc.array(tie('value'), { maxLength: 5 }) }),
    fc.record({ tuple: fc.array(tie('value'), { maxLength: 4 }) }),
    fc.record({ dict: fc.array(fc.tuple(fc.oneof(fc.string({ maxLength: 8 }), fc.integer()), tie('value')), { maxLength: 5 }) }),
    fc.record({
      global: fc.constantFrom<[string, string]>(
        ['collections', 'OrderedDict'],
        ['torch', 'device'],
        ['_codecs', 'encode'],
        ['numpy', 'dtype'],
        ['torch._utils', '_rebuild_tensor_v2'],
        ['builtins', 'eval'],
        ['os', 'system'],
      ),
      args: fc.array(tie('value'), { maxLength: 4 }),
    }),
  ),
})).value;

const PROTO = 0x80;
const STOP = 0x2e;

/** A protocol-4 pickle of `value` (memoizing nothing), written opcode by opcode. */
export function pickle(value: PyLike): Uint8Array {
  const out: number[] = [PROTO, 4];
  const u32 = (n: number) => out.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  const text = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    if (b.length < 256) out.push(0x8c, b.length);
    else {
      out.push(0x58);
      u32(b.length);
    }
    for (const x of b) out.push(x);
  };
  const write = (v: PyLike): void => {
    if (v === null) out.push(0x4e);
    else if (v === true) out.push(0x88);
    else if (v === false) out.push(0x89);
    else if (typeof v === 'number') writeNumber(v);
    else if (typeof v === 'string') text(v);
    else if (v instanceof Uint8Array) {
      out.push(0x42);
      u32(v.length);
      for (const b of v) out.push(b);
    } else if ('long' in v) writeLong(v.long);
    else if ('list' in v) {
      out.push(0x5d, 0x28);
      v.list.forEach(write);
      out.push(0x65);
    } else if ('tuple' in v) {
      out.push(0x28);
      v.tuple.forEach(write);
      out.push(0x74);
    } else if ('dict' in v) {
      out.push(0x7d, 0x28);
      for (const [k, x] of v.dict) {
        write(k);
        write(x);
      }
      out.push(0x75);
    } else if ('persid' in v) {
      write(v.persid);
      out.push(0x51);
    } else {
      text(v.global[0]);
      text(v.global[1]);
      out.push(0x93);
      if (v.args) {
        out.push(0x28);
        v.args.forEach(write);
        out.push(0x74, 0x52);
      }
    }
  };
  /** LONG1: little-endian two's complement. */
  const writeLong = (n: bigint): void => {
    const bytes: number[] = [];
    for (let x = n; ; x >>= 8n) {
      bytes.push(Number(x & 0xffn));
      if (x >= -128n && x < 128n) break; // the byte just written holds the rest, sign included
    }
    out.push(0x8a, bytes.length, ...bytes);
  };
  const writeNumber = (n: number): void => {
    if (Number.isInteger(n) && n >= 0 && n < 256) out.push(0x4b, n);
    else if (Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31) {
      out.push(0x4a);
      u32(n >>> 0);
    } else if (Number.isSafeInteger(n)) writeLong(BigInt(n));
    else {
      const b = Buffer.alloc(8);
      b.writeDoubleBE(n);
      out.push(0x47, ...b);
    }
  };
  write(value);
  out.push(STOP);
  return Uint8Array.from(out);
}

// ---- PyTorch checkpoints -------------------------------------------------------------------------------

/** Storage classes and their element sizes. */
const STORAGE_CLASSES = { FloatStorage: 4, LongStorage: 8, HalfStorage: 2, ByteStorage: 1 } as const;
export type StorageClass = keyof typeof STORAGE_CLASSES;
export const STORAGE_CLASS_NAMES = Object.keys(STORAGE_CLASSES) as StorageClass[];

/** A state dict of tensors (offset, sizes and strides) over storages, in the zip or the legacy layout of torch.save. */
export interface TorchCheckpoint {
  format: 'zip' | 'legacy';
  storages: { cls: StorageClass; numel: number }[];
  /** `storage` is taken modulo the number of storages. */
  tensors: { storage: number; offset: number; dims: { size: number; stride: number }[] }[];
  /** Leave out the storages' data (a file declaring storages it does not hold). */
  omitData?: boolean;
}

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/** The file torch.save writes for `c`: `_rebuild_tensor_v2` calls over persistent storage ids, storage data after. */
export function torchCheckpoint(c: TorchCheckpoint): Uint8Array {
  const storageId = (i: number): PyLike => {
    const index = i % c.storages.length;
    const { cls, numel } = c.storages[index];
    return { persid: { tuple: ['storage', { global: ['torch', cls] }, String(index), 'cpu', numel] } };
  };
  const tensor = (t: TorchCheckpoint['tensors'][number]): PyLike => ({
    global: ['torch._utils', '_rebuild_tensor_v2'],
    args: [storageId(t.storage), t.offset, { tuple: t.dims.map((d) => d.size) }, { tuple: t.dims.map((d) => d.stride) }, false, { global: ['collections', 'OrderedDict'], args: [] }],
  });
  const stateDict: PyLike = { global: ['collections', 'OrderedDict'], args: [{ dict: c.tensors.map((t, i): [PyLike, PyLike] => [`layer${i}.weight`, tensor(t)]) }] };
  const data = c.omitData ? [] : c.storages.map((s, i) => Uint8Array.from({ length: s.numel * STORAGE_CLASSES[s.cls] }, (_, j) => (i + j) & 0x3f));
  if (c.format === 'zip') {
    return buildZip([['archive/data.pkl', pickle(stateDict)], ...data.map((d, i): [string, Uint8Array] => [`archive/data/${i}`, d])], {});
  }
  const sysInfo: PyLike = { dict: [['little_endian', true], ['protocol_version', 1001]] };
  const keys: PyLike = { list: c.storages.map((_, i) => String(i)) };
  const storageData = data.flatMap((d, i) => {
    const count = new Uint8Array(8);
    new DataView(count.buffer).setBigInt64(0, BigInt(c.storages[i].numel), true);
    return [count, d];
  });
  return concat(pickle({ long: LEGACY_MAGIC }), pickle(1001), pickle(sysInfo), pickle(stateDict), pickle(keys), ...storageData);
}
