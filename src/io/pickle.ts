/**
 * A restricted unpickler for PyTorch checkpoints: it reads the pickle opcodes `torch.save` writes
 * (protocols 2 to 5) and builds plain JavaScript values. It runs no code from the file: the only
 * globals a pickle may name are the few on an allowlist (tensor rebuilding, storage classes,
 * OrderedDict, torch.device, bytes, numpy scalars), each implemented here as a pure function.
 * Anything else (`os.system`, `builtins.eval`, an `argparse.Namespace`, a pickled nn.Module) is
 * refused at the opcode that names it.
 *
 * Python values map to: None -> null, bool -> boolean, int -> number (bigint beyond 2^53),
 * float -> number, str -> string, bytes -> Uint8Array, list -> array, tuple -> frozen array,
 * dict / OrderedDict -> Map, tensor -> NamedTensor, torch.device -> its string ('cuda:0').
 */
import { ByteReader, decodeUtf8, TensorFileError, withFileContext } from './bytes.js';
import {
  type DType,
  type NamedTensor,
  type TypedArray,
  allocateTensorData,
  bytesOf,
  halfToFloat,
  isNamedTensor,
  numel,
} from './tensors.js';
import { quoted } from '../util/text.js';

/** A Python object with no plain JavaScript equivalent (a class, a storage, a numpy dtype). */
export class PyOpaque {
  constructor(readonly description: string) {}
}

export type PyKey = string | number | bigint | boolean | null;
export type PyDict = Map<PyKey, PyValue>;
export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | readonly PyValue[]
  | PyDict
  | NamedTensor
  | PyOpaque;

/**
 * The elements the tensors of one file may copy out of its storages: tensors usually split their
 * storages (or share one, as tied weights do) and expanded ones repeat a few elements; a stride-0
 * tensor of a billion elements over one element, or thousands of tensors over one storage, is a
 * small file asking for a huge allocation. So the tensors may hold MAX_VIEW_FACTOR times the
 * storages' elements in all, plus VIEW_SLACK.
 */
const MAX_VIEW_FACTOR = 4;
const VIEW_SLACK = 2 ** 20;

/** The elements of the storages of one file, and of the tensors over them (see MAX_VIEW_FACTOR). */
export class TensorBudget {
  #storageElements = 0;
  #tensorElements = 0;

  addStorage(numel: number): void {
    this.#storageElements += numel;
  }

  /** Counts a tensor's elements before it is allocated. */
  claim(count: number, where: string): void {
    this.#tensorElements += count;
    const limit = MAX_VIEW_FACTOR * this.#storageElements + VIEW_SLACK;
    if (this.#tensorElements > limit) {
      throw new Error(
        `${where}: the file's tensors would hold ${this.#tensorElements} elements, more than the ${limit} allowed for the ${this.#storageElements} of its storages (a stride 0 or many views of one storage expand them)`,
      );
    }
  }
}

/**
 * A PyTorch storage: `numel` elements of `dtype`. Tensors are views into storages; their data is
 * copied out when the storage's elements arrive (at once in the zip format, after the whole pickle
 * in the legacy format). The storages of one file share one `budget`.
 */
export class TorchStorage extends PyOpaque {
  #elements: TypedArray | null = null;
  readonly #waiting: ((elements: TypedArray) => void)[] = [];

  constructor(
    readonly dtype: DType,
    readonly numel: number,
    readonly key: string,
    readonly budget = new TensorBudget(),
  ) {
    super(`torch storage ${quoted(key)} (${numel} x ${dtype})`);
    budget.addStorage(numel);
  }

  get loaded(): boolean {
    return this.#elements !== null;
  }

  /** Provides the elements; tensors waiting on this storage are filled now. */
  supply(elements: TypedArray): void {
    if (this.#elements) throw new Error(`storage ${quoted(this.key)} is loaded twice`);
    if (elements.length !== this.numel) {
      throw new Error(`storage ${quoted(this.key)} should hold ${this.numel} ${this.dtype} elements, the file has ${elements.length}`);
    }
    this.#elements = elements;
    for (const use of this.#waiting.splice(0)) use(elements);
  }

  /** Calls `use` with the elements, now or once they are supplied. */
  whenLoaded(use: (elements: TypedArray) => void): void {
    if (this.#elements) use(this.#elements);
    else this.#waiting.push(use);
  }
}

/** A storage class such as torch.FloatStorage; it appears in the persistent ids of storages. */
export class TorchStorageType extends PyOpaque {
  constructor(
    readonly name: string,
    readonly dtype: DType,
  ) {
    super(`class ${name}`);
  }
}

/** An allowlisted callable global; `construct` implements it without running anything else. */
class PyGlobal extends PyOpaque {
  constructor(
    readonly name: string,
    readonly construct: (args: readonly PyValue[]) => PyValue,
  ) {
    super(`global ${name}`);
  }
}

class NumpyDType extends PyOpaque {
  byteOrder = '<';

  constructor(readonly code: string) {
    super(`numpy.dtype(${quoted(code)})`);
  }

  /** numpy.dtype's pickled state is (version, byteorder, ...). */
  setState(state: PyValue): void {
    if (!Array.isArray(state) || typeof state[1] !== 'string') throw new Error(`${this.description}: unexpected state`);
    this.byteOrder = state[1];
  }

  decodeScalar(raw: Uint8Array): number | bigint | boolean {
    const size = Number(this.code.slice(1));
    if (raw.byteLength !== size) throw new Error(`${this.description} scalar has ${raw.byteLength} bytes`);
    const littleEndian = this.byteOrder === '>' ? raw.slice().reverse() : raw;
    const view = new DataView(littleEndian.buffer, littleEndian.byteOffset, size);
    switch (this.code) {
      case 'f8':
        return view.getFloat64(0, true);
      case 'f4':
        return view.getFloat32(0, true);
      case 'f2':
        return halfToFloat(view.getUint16(0, true));
      case 'b1':
        return raw[0] !== 0;
    }
    if (/^[iu][1248]$/.test(this.code)) return decodeInteger(littleEndian, this.code[0] === 'i');
    throw new Error(`numpy scalars of dtype ${quoted(this.code)} are not supported`);
  }
}

/** Little-endian integer bytes to a number, or a bigint when beyond 2^53 (through hex text: linear in the length). */
function decodeInteger(bytes: Uint8Array, signed: boolean): number | bigint {
  if (bytes.byteLength === 0) return 0;
  let value = BigInt(`0x${Buffer.from(bytes).reverse().toString('hex')}`);
  if (signed && bytes.byteLength > 0 && bytes[bytes.byteLength - 1] & 0x80) value -= 1n << BigInt(8 * bytes.byteLength);
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
}

function describe(value: PyValue): string {
  if (value === null) return 'None';
  if (value instanceof PyOpaque) return value.description;
  if (value instanceof Map) return 'a dict';
  if (value instanceof Uint8Array) return 'bytes';
  if (Array.isArray(value)) return Object.isFrozen(value) ? 'a tuple' : 'a list';
  if (isNamedTensor(value)) return 'a tensor';
  if (typeof value === 'string') return `string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)}`;
  return `${typeof value} ${String(value)}`;
}

// ---- the allowlisted globals -------------------------------------------------------------------

function asIndex(value: PyValue, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new Error(`${what} must be a non-negative integer, got ${describe(value)}`);
  }
  return value;
}

function asIndexList(value: PyValue, what: string): number[] {
  if (!Array.isArray(value)) throw new Error(`${what} must be a tuple of integers, got ${describe(value)}`);
  return (value as readonly PyValue[]).map((x) => asIndex(x, what));
}

/** Tensors larger than typed arrays can sensibly hold are refused before allocating. */
const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;

function isContiguous(shape: number[], strides: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && strides[d] !== expected) return false;
    expected *= shape[d];
  }
  return true;
}

/** Copies the strided view (offset, shape, strides) of `source` into the contiguous `target`. */
function gather(source: TypedArray, target: TypedArray, offset: number, shape: number[], strides: number[]): void {
  if (target.length === 0) return;
  if (isContiguous(shape, strides)) {
    const size = source.BYTES_PER_ELEMENT;
    bytesOf(target).set(bytesOf(source).subarray(offset * size, (offset + target.length) * size));
    return;
  }
  const from = source as { [index: number]: number | bigint };
  const to = target as { [index: number]: number | bigint };
  const index = new Array<number>(shape.length).fill(0);
  let position = offset;
  for (let i = 0; i < target.length; i++) {
    to[i] = from[position];
    for (let d = shape.length - 1; d >= 0; d--) {
      // odometer step: advance the last dimension, carry into earlier ones
      index[d]++;
      position += strides[d];
      if (index[d] < shape[d]) break;
      position -= strides[d] * shape[d];
      index[d] = 0;
    }
  }
}

/** torch._utils._rebuild_tensor(storage, storage_offset, size, stride). */
function rebuildTensor(name: string, [storage, offsetArg, sizeArg, strideArg]: readonly PyValue[]): NamedTensor {
  if (!(storage instanceof TorchStorage)) throw new Error(`${name}: expected a storage, got ${describe(storage)}`);
  const offset = asIndex(offsetArg, `${name}: storage offset`);
  const shape = asIndexList(sizeArg, `${name}: size`);
  const strides = asIndexList(strideArg, `${name}: stride`);
  const where = `tensor of size [${shape.join(', ')}], stride [${strides.join(', ')}], offset ${offset}`;
  if (strides.length !== shape.length) throw new Error(`${where}: size and stride differ in length`);
  const count = numel(shape);
  if (count > MAX_TENSOR_ELEMENTS) throw new Error(`${where} is too large`);
  if (count > 0) {
    const last = shape.reduce((sum, size, d) => sum + (size - 1) * strides[d], offset);
    if (last >= storage.numel) throw new Error(`${where} reaches beyond its ${storage.description}`);
  }
  storage.budget.claim(count, where);
  const data = allocateTensorData(storage.dtype, count);
  storage.whenLoaded((elements) => gather(elements, data, offset, shape, strides));
  return { dtype: storage.dtype, shape, data };
}

/** torch._utils._rebuild_parameter[_with_state](data, requires_grad, backward_hooks[, state]). */
function rebuildParameter(name: string, args: readonly PyValue[]): NamedTensor {
  if (!isNamedTensor(args[0])) throw new Error(`${name}: expected a tensor, got ${describe(args[0])}`);
  return args[0];
}

function newDict(name: string, args: readonly PyValue[]): PyDict {
  if (args.length === 0) return new Map();
  if (!(args[0] instanceof Map)) throw new Error(`${name}: expected a dict, got ${describe(args[0])}`);
  return new Map(args[0]);
}

/** torch.device(type[, index]) -> 'cpu', 'cuda:0'. */
function torchDevice(name: string, args: readonly PyValue[]): string {
  if (typeof args[0] !== 'string') throw new Error(`${name}: expected a device type, got ${describe(args[0])}`);
  return args.length === 2 && args[1] !== null ? `${args[0]}:${asIndex(args[1], `${name}: index`)}` : args[0];
}

/** _codecs.encode(text, encoding): how protocol 2 pickles bytes. */
function encodeText(name: string, args: readonly PyValue[]): Uint8Array {
  const [text, encoding = 'utf-8'] = args;
  if (typeof text !== 'string') throw new Error(`${name}: expected a string, got ${describe(text)}`);
  if (encoding === 'latin1' || encoding === 'latin-1') {
    const codes = Array.from(text, (c) => c.codePointAt(0) ?? 0);
    if (codes.some((c) => c > 0xff)) throw new Error(`${name}: text is not latin-1`);
    return Uint8Array.from(codes);
  }
  if (encoding === 'utf-8' || encoding === 'utf8') return new TextEncoder().encode(text);
  throw new Error(`${name}: unsupported encoding ${describe(encoding)}`);
}

function numpyDType(name: string, args: readonly PyValue[]): NumpyDType {
  if (typeof args[0] !== 'string') throw new Error(`${name}: expected a type code, got ${describe(args[0])}`);
  return new NumpyDType(args[0]);
}

function numpyScalar(name: string, args: readonly PyValue[]): number | bigint | boolean {
  const [dtype, raw] = args;
  if (!(dtype instanceof NumpyDType) || !(raw instanceof Uint8Array)) {
    throw new Error(`${name}: expected (dtype, bytes), got (${describe(dtype)}, ${describe(raw)})`);
  }
  return dtype.decodeScalar(raw);
}

const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: 'F32',
  DoubleStorage: 'F64',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

interface GlobalImpl {
  /** Accepted numbers of arguments, [min, max]. */
  arity: [number, number];
  construct(name: string, args: readonly PyValue[]): PyValue;
}

const CALLABLE_GLOBALS: Record<string, GlobalImpl> = {
  'collections.OrderedDict': { arity: [0, 1], construct: newDict },
  'collections.Counter': { arity: [0, 1], construct: newDict },
  'torch._utils._rebuild_tensor': { arity: [4, 4], construct: rebuildTensor },
  // (storage, offset, size, stride, requires_grad, backward_hooks[, metadata]): only the first four matter
  'torch._utils._rebuild_tensor_v2': { arity: [6, 7], construct: rebuildTensor },
  'torch._utils._rebuild_parameter': { arity: [3, 3], construct: rebuildParameter },
  'torch._utils._rebuild_parameter_with_state': { arity: [4, 4], construct: rebuildParameter },
  'torch.device': { arity: [1, 2], construct: torchDevice },
  '_codecs.encode': { arity: [1, 2], construct: encodeText },
  'numpy.dtype': { arity: [1, 3], construct: numpyDType },
  'numpy.core.multiarray.scalar': { arity: [2, 2], construct: numpyScalar },
  'numpy._core.multiarray.scalar': { arity: [2, 2], construct: numpyScalar },
};

function checkArity(name: string, [min, max]: [number, number], args: readonly PyValue[]): void {
  if (args.length < min || args.length > max) {
    const expected = min === max ? `${min}` : `${min} to ${max}`;
    throw new Error(`${name} takes ${expected} arguments, the pickle passes ${args.length}`);
  }
}

const ALLOWED_GLOBALS = new Map<string, PyOpaque>([
  ...Object.entries(STORAGE_DTYPES).map(([cls, dtype]): [string, PyOpaque] => [
    `torch.${cls}`,
    new TorchStorageType(`torch.${cls}`, dtype),
  ]),
  ...Object.entries(CALLABLE_GLOBALS).map(([name, { arity, construct }]): [string, PyOpaque] => [
    name,
    new PyGlobal(name, (args) => {
      checkArity(name, arity, args);
      return construct(name, args);
    }),
  ]),
]);

function resolveGlobal(module: string, name: string): PyOpaque {
  const qualified = `${module}.${name}`;
  const allowed = ALLOWED_GLOBALS.get(qualified);
  if (!allowed) {
    throw new Error(
      `refusing to load global ${quoted(qualified)}: only tensors and plain data (numbers, strings, lists, dicts) are accepted, and nothing in the file is executed`,
    );
  }
  return allowed;
}

// ---- the opcode interpreter --------------------------------------------------------------------

export interface UnpickleOptions {
  /** Where the pickle starts in the buffer (legacy PyTorch files hold several in a row). */
  start?: number;
  /** Resolves the persistent ids (BINPERSID) through which PyTorch pickles refer to storages. */
  persistentLoad?: (pid: PyValue) => PyValue;
}

const HIGHEST_PROTOCOL = 5;
const MAX_COPY_FACTOR = 16;
const COPY_SLACK = 1 << 20;

class Unpickler {
  /** The current stack; MARK saves it on `marks` and starts a new one (as CPython does). */
  private stack: PyValue[] = [];
  private readonly marks: PyValue[][] = [];
  private readonly memo = new Map<number, PyValue>();
  private copied = 0;

  constructor(
    readonly reader: ByteReader,
    private readonly persistentLoad: UnpickleOptions['persistentLoad'],
  ) {}

  push(value: PyValue): void {
    this.stack.push(value);
  }

  pop(): PyValue {
    if (this.stack.length === 0) throw new Error('pickle stack underflow');
    return this.stack.pop() as PyValue;
  }

  top(): PyValue {
    if (this.stack.length === 0) throw new Error('pickle stack underflow');
    return this.stack[this.stack.length - 1];
  }

  mark(): void {
    this.marks.push(this.stack);
    this.stack = [];
  }

  /** The items pushed since the last MARK, which is removed. */
  popMark(): PyValue[] {
    const items = this.stack;
    const previous = this.marks.pop();
    if (!previous) throw new Error('pickle has no MARK to pop');
    this.stack = previous;
    return items;
  }

  memoPut(index: number): void {
    this.memo.set(index, this.top());
  }

  memoGet(index: number): void {
    if (!this.memo.has(index)) throw new Error(`pickle memo has no entry ${index}`);
    this.push(this.memo.get(index) as PyValue);
  }

  text(length: number): string {
    return decodeUtf8(this.reader.take(length, 'a string'), 'a pickled string');
  }

  bytes(length: number): Uint8Array {
    return this.reader.take(length, 'a bytes object').slice();
  }

  /** A newline-terminated ASCII field of GLOBAL. */
  line(): string {
    const { bytes, pos } = this.reader;
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw new Error('truncated pickle: GLOBAL without its newline');
    return decodeUtf8(this.reader.take(end - pos + 1).subarray(0, -1), 'a global name');
  }

  tuple(items: PyValue[]): readonly PyValue[] {
    return Object.freeze(items);
  }

  /** The top `n` items, removed. */
  popN(n: number): PyValue[] {
    if (this.stack.length < n) throw new Error('pickle stack underflow');
    return this.stack.splice(this.stack.length - n, n);
  }

  memoSize(): number {
    return this.memo.size;
  }

  /** Sets alternating keys and values into the dict on top of the stack. */
  setItems(items: PyValue[]): void {
    const dict = this.top();
    if (!(dict instanceof Map)) throw new Error(`SETITEM on ${describe(dict)}`);
    if (items.length % 2 !== 0) throw new Error('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) dict.set(dictKey(items[i]), items[i + 1]);
  }

  /** DICT: a dict of the alternating keys and values pushed since the last MARK. */
  dictFromMark(): void {
    const items = this.popMark();
    this.push(new Map());
    this.setItems(items);
  }

  appendItems(items: PyValue[]): void {
    const list = this.top();
    if (!Array.isArray(list) || Object.isFrozen(list)) throw new Error(`APPEND to ${describe(list)}`);
    for (const item of items) (list as PyValue[]).push(item);
  }

  /** REDUCE and NEWOBJ: call the allowlisted global below `args` with them. */
  callWith(args: PyValue): void {
    const callable = this.pop();
    if (!(callable instanceof PyGlobal)) throw new Error(`${describe(callable)} cannot be called`);
    if (!Array.isArray(args)) throw new Error(`${callable.name} called with ${describe(args)} instead of a tuple`);
    const result = callable.construct(args);
    this.chargeCopy(result, callable.name);
    this.push(result);
  }

  /**
   * Globals that copy their argument (OrderedDict(d), _codecs.encode(s)) could copy one memoized
   * object again and again: the copies of one pickle may not exceed MAX_COPY_FACTOR times its length.
   */
  chargeCopy(result: PyValue, name: string): void {
    this.copied += result instanceof Map ? result.size : result instanceof Uint8Array ? result.byteLength : 1;
    if (this.copied > MAX_COPY_FACTOR * this.reader.bytes.byteLength + COPY_SLACK) {
      throw new Error(`${name}: the pickle's calls copy ${this.copied} items, more than ${MAX_COPY_FACTOR} times its ${this.reader.bytes.byteLength} bytes`);
    }
  }

  /** NEWOBJ_EX: NEWOBJ with keyword arguments, which must be empty. */
  newObjEx(): void {
    const kwargs = this.pop();
    if (!(kwargs instanceof Map) || kwargs.size > 0) {
      throw new Error('NEWOBJ_EX with keyword arguments is not supported');
    }
    this.callWith(this.pop());
  }

  stackGlobal(): void {
    const [module, name] = this.popN(2);
    if (typeof module !== 'string' || typeof name !== 'string') throw new Error('STACK_GLOBAL needs two strings');
    this.push(resolveGlobal(module, name));
  }

  build(state: PyValue): void {
    const target = this.top();
    if (target instanceof NumpyDType) target.setState(state);
    // An OrderedDict's state is its attributes (a state dict's `_metadata` version table): dropped.
    else if (!(target instanceof Map)) throw new Error(`BUILD on ${describe(target)} is not supported`);
  }

  persistent(pid: PyValue): void {
    if (!this.persistentLoad) {
      throw new Error('the pickle refers to external data (a persistent id) where none is expected');
    }
    this.push(this.persistentLoad(pid));
  }

  /** Executes opcodes up to STOP and returns the value on top of the stack. */
  run(): PyValue {
    for (;;) {
      const at = this.reader.pos;
      try {
        const opcode = this.reader.u8('a pickle opcode');
        if (opcode === STOP) return this.pop();
        const handler = OPCODES.get(opcode);
        if (!handler) {
          const printable = opcode >= 0x20 && opcode < 0x7f ? ` ('${String.fromCharCode(opcode)}')` : '';
          throw new Error(`unsupported pickle opcode 0x${opcode.toString(16)}${printable}`);
        }
        handler(this);
      } catch (error) {
        if (error instanceof TensorFileError) throw error;
        throw new Error(`${(error as Error).message} (pickle opcode at byte ${at})`, { cause: error });
      }
    }
  }
}

function dictKey(value: PyValue): PyKey {
  if (value === null || ['string', 'number', 'bigint', 'boolean'].includes(typeof value)) return value as PyKey;
  throw new Error(`dict keys of type ${describe(value)} are not supported`);
}

function checkProtocol(protocol: number): void {
  if (protocol < 2 || protocol > HIGHEST_PROTOCOL) throw new Error(`unsupported pickle protocol ${protocol}`);
}

const STOP = 0x2e; // '.'

/** One entry per supported opcode (its byte value), named as in CPython's pickle.py. */
const OPCODES = new Map<number, (u: Unpickler) => void>([
  [0x80 /* PROTO */, (u) => checkProtocol(u.reader.u8())],
  [0x95 /* FRAME */, (u) => u.reader.u64('a frame length')], // frames only help buffering
  [0x28 /* MARK */, (u) => u.mark()],
  [0x30 /* POP */, (u) => u.pop()],
  [0x31 /* POP_MARK */, (u) => u.popMark()],
  [0x32 /* DUP */, (u) => u.push(u.top())],
  [0x4e /* NONE */, (u) => u.push(null)],
  [0x88 /* NEWTRUE */, (u) => u.push(true)],
  [0x89 /* NEWFALSE */, (u) => u.push(false)],
  [0x4b /* BININT1 */, (u) => u.push(u.reader.u8())],
  [0x4d /* BININT2 */, (u) => u.push(u.reader.u16())],
  [0x4a /* BININT */, (u) => u.push(u.reader.i32())],
  [0x8a /* LONG1 */, (u) => u.push(decodeInteger(u.reader.take(u.reader.u8(), 'a long'), true))],
  [0x8b /* LONG4 */, (u) => u.push(decodeInteger(u.reader.take(u.reader.i32(), 'a long'), true))],
  [0x47 /* BINFLOAT */, (u) => u.push(u.reader.f64BigEndian())],
  [0x8c /* SHORT_BINUNICODE */, (u) => u.push(u.text(u.reader.u8()))],
  [0x58 /* BINUNICODE */, (u) => u.push(u.text(u.reader.u32()))],
  [0x8d /* BINUNICODE8 */, (u) => u.push(u.text(u.reader.u64()))],
  [0x55 /* SHORT_BINSTRING */, (u) => u.push(u.text(u.reader.u8()))],
  [0x54 /* BINSTRING */, (u) => u.push(u.text(u.reader.i32()))],
  [0x43 /* SHORT_BINBYTES */, (u) => u.push(u.bytes(u.reader.u8()))],
  [0x42 /* BINBYTES */, (u) => u.push(u.bytes(u.reader.u32()))],
  [0x8e /* BINBYTES8 */, (u) => u.push(u.bytes(u.reader.u64()))],
  [0x96 /* BYTEARRAY8 */, (u) => u.push(u.bytes(u.reader.u64()))],
  [0x7d /* EMPTY_DICT */, (u) => u.push(new Map())],
  [0x64 /* DICT */, (u) => u.dictFromMark()],
  [0x73 /* SETITEM */, (u) => u.setItems(u.popN(2))],
  [0x75 /* SETITEMS */, (u) => u.setItems(u.popMark())],
  [0x5d /* EMPTY_LIST */, (u) => u.push([])],
  [0x6c /* LIST */, (u) => u.push(u.popMark())],
  [0x61 /* APPEND */, (u) => u.appendItems([u.pop()])],
  [0x65 /* APPENDS */, (u) => u.appendItems(u.popMark())],
  [0x29 /* EMPTY_TUPLE */, (u) => u.push(u.tuple([]))],
  [0x74 /* TUPLE */, (u) => u.push(u.tuple(u.popMark()))],
  [0x85 /* TUPLE1 */, (u) => u.push(u.tuple(u.popN(1)))],
  [0x86 /* TUPLE2 */, (u) => u.push(u.tuple(u.popN(2)))],
  [0x87 /* TUPLE3 */, (u) => u.push(u.tuple(u.popN(3)))],
  [0x71 /* BINPUT */, (u) => u.memoPut(u.reader.u8())],
  [0x72 /* LONG_BINPUT */, (u) => u.memoPut(u.reader.u32())],
  [0x94 /* MEMOIZE */, (u) => u.memoPut(u.memoSize())],
  [0x68 /* BINGET */, (u) => u.memoGet(u.reader.u8())],
  [0x6a /* LONG_BINGET */, (u) => u.memoGet(u.reader.u32())],
  [0x63 /* GLOBAL */, (u) => u.push(resolveGlobal(u.line(), u.line()))],
  [0x93 /* STACK_GLOBAL */, (u) => u.stackGlobal()],
  [0x52 /* REDUCE */, (u) => u.callWith(u.pop())],
  [0x81 /* NEWOBJ */, (u) => u.callWith(u.pop())],
  [0x92 /* NEWOBJ_EX */, (u) => u.newObjEx()],
  [0x62 /* BUILD */, (u) => u.build(u.pop())],
  [0x51 /* BINPERSID */, (u) => u.persistent(u.pop())],
]);

/**
 * Unpickles one pickle from `bytes` (starting at `options.start`); returns the value and the offset
 * just past its STOP opcode. `file` names the source in errors.
 */
export function unpickle(
  bytes: Uint8Array,
  file: string,
  options: UnpickleOptions = {},
): { value: PyValue; end: number } {
  return withFileContext(file, () => {
    const reader = new ByteReader(bytes, options.start ?? 0);
    const value = new Unpickler(reader, options.persistentLoad).run();
    return { value, end: reader.pos };
  });
}
