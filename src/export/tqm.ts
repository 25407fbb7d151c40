/**
 * The `tqm` file format: an integer model (ir.ts) in a compact, versioned, checksummed binary
 * file. Browser-safe (bytes in, bytes out; files: tqm-file.ts).
 *
 * Layout (all integers little-endian):
 *   0   4  magic "TQM\0"
 *   4   2  format version (u16, currently 2; version 1 held the IR version 1 op set)
 *   6   2  reserved, 0
 *   8   4  payload length in bytes (u32)
 *   12 32  SHA-256 of bytes 0..11 followed by the payload
 *   44  .. payload
 * The file is exactly 44 + payload length bytes.
 *
 * Payload, in order (str = u32 byte length + UTF-8; arrays are preceded by a u32 count unless said):
 *   meta      str (JSON of ModelMeta)
 *   tensors   u32 count, then per tensor: str name, u8 dtype (0 int8, 1 uint8, 2 int16, 3 int32),
 *             u32 C, H, W, f64 scale, i32 range min, i32 range max
 *   ops       u32 count, then per op a u8 kind and its fields:
 *     0 input     u32 output, u32 count + i16 lut
 *     1 conv      str name, u32 input, output, inChannels, outChannels, groups, window,
 *                 weights: u8 bits, u8 scheme (0 apot, 1 uniform, 2 int8), u32 count + i16 levels,
 *                          u32 count + packed codes (ceil(count * bits / 8) bytes, see bitpack.ts),
 *                 requant, epilogue: u8 kind (0 activation, 1 residual, 2 logits) then
 *                   activation: activation
 *                   residual:   u8 relu, ceiling, u8 bits, u8 has shortcut, [u32 input, u32 stride,
 *                               u32 channelOffset, i32 mult, u8 shift]
 *     2 quantize  str name, u32 input, output, requant, activation
 *     3 sumpool   str name, u32 input, output, window
 *     4 maxpool   str name, u32 input, output, window
 *     5 add       str name, addend a, addend b, u32 output, u8 relu, ceiling, u8 bits
 *   output    u32 tensor id
 *   window     = u32 kernel h, w, u32 stride h, w, u32 padding h, w
 *   activation = u8 relu, ceiling, i32 zeroPoint, rule
 *   ceiling    = u8 has ceiling, [i32 ceiling]
 *   addend     = u32 input, i32 mult, u8 shift
 *   requant = u32 n, i32[n] mult (no count), u8[n] shift, i32[n] bias
 *   rule    = u8 kind: 0 thresholds: i32[] thresholds, i32[] values; 1 round: u8 fracBits, i32 minCode, i32 maxCode
 */
import { packBits, packedBytes, unpackBits } from './bitpack.js';
import {
  type ActivationQuant,
  type AddInput,
  type CodeRule,
  DTYPES,
  type Epilogue,
  type IntegerModel,
  IR_VERSION,
  type ModelMeta,
  type Op,
  type Pair,
  type PoolOp,
  type Requant,
  type TensorInfo,
  type WeightTensor,
} from './ir.js';
import { hasControlCharacters, printable } from '../util/text.js';
import { sha256 } from './sha256.js';
import { validateIntegerModel } from './validate.js';

export const TQM_MAGIC = Uint8Array.of(0x54, 0x51, 0x4d, 0x00);
export const TQM_VERSION = 2;
export const TQM_HEADER_BYTES = 44;

const OP_KINDS = ['input', 'conv', 'quantize', 'sumpool', 'maxpool', 'add'] as const;
const SCHEMES = ['apot', 'uniform', 'int8'] as const;
const EPILOGUES = ['activation', 'residual', 'logits'] as const;
const RULES = ['thresholds', 'round'] as const;

/** A tqm file that cannot be read: truncated, modified, another version, or a bad field. */
export class TqmError extends Error {
  override name = 'TqmError';
}

// ---- writing ---------------------------------------------------------------------------------

class ByteWriter {
  #buf = new Uint8Array(1 << 16);
  #view = new DataView(this.#buf.buffer);
  length = 0;

  #reserve(n: number): number {
    if (this.length + n > this.#buf.length) {
      const grown = new Uint8Array(Math.max(this.#buf.length * 2, this.length + n));
      grown.set(this.#buf.subarray(0, this.length));
      this.#buf = grown;
      this.#view = new DataView(grown.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }

  u8(v: number): void {
    this.#view.setUint8(this.#reserve(1), v);
  }
  u32(v: number): void {
    this.#view.setUint32(this.#reserve(4), v, true);
  }
  i32(v: number): void {
    this.#view.setInt32(this.#reserve(4), v, true);
  }
  f64(v: number): void {
    this.#view.setFloat64(this.#reserve(8), v, true);
  }
  bytes(b: Uint8Array): void {
    const at = this.#reserve(b.length); // may replace #buf: reserve before reading it
    this.#buf.set(b, at);
  }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u32(b.length);
    this.bytes(b);
  }
  i16(v: number): void {
    this.#view.setInt16(this.#reserve(2), v, true);
  }
  /** A count, then the values (ByteReader.i16s reads them back). */
  i16s(values: ArrayLike<number>): void {
    this.u32(values.length);
    for (let i = 0; i < values.length; i++) this.i16(values[i]);
  }
  i32s(values: ArrayLike<number>, withCount = true): void {
    if (withCount) this.u32(values.length);
    for (let i = 0; i < values.length; i++) this.i32(values[i]);
  }
  result(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
}

function writeRequant(w: ByteWriter, r: Requant): void {
  w.u32(r.mult.length);
  w.i32s(r.mult, false);
  w.bytes(r.shift);
  w.i32s(r.bias, false);
}

function writeRule(w: ByteWriter, rule: CodeRule): void {
  w.u8(RULES.indexOf(rule.kind));
  if (rule.kind === 'thresholds') {
    w.i32s(rule.thresholds);
    w.i32s(rule.values);
  } else {
    w.u8(rule.fracBits);
    w.i32(rule.minCode);
    w.i32(rule.maxCode);
  }
}

function writeWeights(w: ByteWriter, weights: WeightTensor): void {
  w.u8(weights.bits);
  w.u8(SCHEMES.indexOf(weights.scheme));
  w.i16s(weights.levels);
  w.u32(weights.codes.length);
  w.bytes(packBits(weights.codes, weights.bits));
}

function writeCeiling(w: ByteWriter, ceiling: number | null): void {
  w.u8(ceiling === null ? 0 : 1);
  if (ceiling !== null) w.i32(ceiling);
}

function writeActivation(w: ByteWriter, q: ActivationQuant): void {
  w.u8(q.relu ? 1 : 0);
  writeCeiling(w, q.ceiling);
  w.i32(q.zeroPoint);
  writeRule(w, q.rule);
}

function writeWindow(w: ByteWriter, op: { readonly kernel: Pair; readonly stride: Pair; readonly padding: Pair }): void {
  [...op.kernel, ...op.stride, ...op.padding].forEach((v) => w.u32(v));
}

function writeAddend(w: ByteWriter, x: AddInput): void {
  w.u32(x.input);
  w.i32(x.mult);
  w.u8(x.shift);
}

function writeEpilogue(w: ByteWriter, e: Epilogue): void {
  w.u8(EPILOGUES.indexOf(e.kind));
  if (e.kind === 'activation') {
    writeActivation(w, e);
  } else if (e.kind === 'residual') {
    w.u8(e.relu ? 1 : 0);
    writeCeiling(w, e.ceiling);
    w.u8(e.bits);
    w.u8(e.shortcut ? 1 : 0);
    if (e.shortcut) {
      const s = e.shortcut;
      [s.input, s.stride, s.channelOffset].forEach((v) => w.u32(v));
      w.i32(s.mult);
      w.u8(s.shift);
    }
  }
}

function writeOp(w: ByteWriter, op: Op): void {
  w.u8(OP_KINDS.indexOf(op.kind));
  switch (op.kind) {
    case 'input':
      w.u32(op.output);
      w.i16s(op.lut);
      return;
    case 'conv':
      w.str(op.name);
      [op.input, op.output, op.inChannels, op.outChannels, op.groups].forEach((v) => w.u32(v));
      writeWindow(w, op);
      writeWeights(w, op.weights);
      writeRequant(w, op.requant);
      writeEpilogue(w, op.epilogue);
      return;
    case 'quantize':
      w.str(op.name);
      w.u32(op.input);
      w.u32(op.output);
      writeRequant(w, op.requant);
      writeActivation(w, op);
      return;
    case 'sumpool':
    case 'maxpool':
      w.str(op.name);
      w.u32(op.input);
      w.u32(op.output);
      writeWindow(w, op);
      return;
    case 'add':
      w.str(op.name);
      writeAddend(w, op.a);
      writeAddend(w, op.b);
      w.u32(op.output);
      w.u8(op.relu ? 1 : 0);
      writeCeiling(w, op.ceiling);
      w.u8(op.bits);
  }
}

function writeTensor(w: ByteWriter, t: TensorInfo): void {
  w.str(t.name);
  w.u8(DTYPES.indexOf(t.dtype));
  t.shape.forEach((d) => w.u32(d));
  w.f64(t.scale);
  w.i32(t.range[0]);
  w.i32(t.range[1]);
}

function header(payloadLength: number): Uint8Array {
  const h = new Uint8Array(12);
  h.set(TQM_MAGIC);
  const view = new DataView(h.buffer);
  view.setUint16(4, TQM_VERSION, true);
  view.setUint32(8, payloadLength, true);
  return h;
}

/** The tqm bytes of a (valid) integer model. */
export function encodeTqm(model: IntegerModel): Uint8Array {
  validateIntegerModel(model);
  const w = new ByteWriter();
  w.str(JSON.stringify(model.meta));
  w.u32(model.tensors.length);
  model.tensors.forEach((t) => writeTensor(w, t));
  w.u32(model.ops.length);
  model.ops.forEach((op) => writeOp(w, op));
  w.u32(model.output);
  const payload = w.result();
  const head = header(payload.length);
  const out = new Uint8Array(TQM_HEADER_BYTES + payload.length);
  out.set(head);
  out.set(sha256(head, payload), 12);
  out.set(payload, TQM_HEADER_BYTES);
  return out;
}

// ---- reading ---------------------------------------------------------------------------------

class ByteReader {
  readonly #view: DataView;
  pos = 0;

  constructor(readonly data: Uint8Array) {
    this.#view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  }

  get remaining(): number {
    return this.data.length - this.pos;
  }

  #claim(n: number, what: string): number {
    if (!(n >= 0) || n > this.remaining) throw new TqmError(`payload ends inside ${what} (offset ${this.pos}, ${n} bytes needed)`);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u8(what: string): number {
    return this.#view.getUint8(this.#claim(1, what));
  }
  u32(what: string): number {
    return this.#view.getUint32(this.#claim(4, what), true);
  }
  i32(what: string): number {
    return this.#view.getInt32(this.#claim(4, what), true);
  }
  f64(what: string): number {
    return this.#view.getFloat64(this.#claim(8, what), true);
  }
  bytes(n: number, what: string): Uint8Array {
    const at = this.#claim(n, what);
    return this.data.slice(at, at + n);
  }
  /** A count of items of at least `minBytes` each, checked against what is left before anything is allocated. */
  count(what: string, minBytes: number): number {
    const n = this.u32(what);
    if (n * minBytes > this.remaining) throw new TqmError(`${what} ${n} cannot fit in the ${this.remaining} bytes left`);
    return n;
  }
  str(what: string): string {
    const n = this.u32(`${what} length`);
    const bytes = this.bytes(n, what);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw new TqmError(`${what} is not valid UTF-8`);
    }
  }
  /** A tensor or op name: a string without control characters (errors quote it). */
  name(what: string): string {
    const name = this.str(what);
    if (hasControlCharacters(name)) throw new TqmError(`${what} ${JSON.stringify(name)} holds control characters`);
    return name;
  }
  i16s(what: string): Int32Array {
    const count = this.u32(`${what} count`);
    const at = this.#claim(2 * count, what);
    return Int32Array.from({ length: count }, (_, i) => this.#view.getInt16(at + 2 * i, true));
  }
  i32s(what: string, count = this.u32(`${what} count`)): Int32Array {
    const at = this.#claim(4 * count, what);
    return Int32Array.from({ length: count }, (_, i) => this.#view.getInt32(at + 4 * i, true));
  }
  /** An enum value stored as its index. */
  oneOf<T extends string>(names: readonly T[], what: string): T {
    const i = this.u8(what);
    if (i >= names.length) throw new TqmError(`${what} ${i} is not one of 0..${names.length - 1} (${names.join(', ')})`);
    return names[i];
  }
  /** A u32 that must lie in [lo, hi]. */
  u32In(what: string, lo: number, hi: number): number {
    const v = this.u32(what);
    if (v < lo || v > hi) throw new TqmError(`${what} must be in [${lo}, ${hi}], got ${v}`);
    return v;
  }
  flag(what: string): boolean {
    const v = this.u8(what);
    if (v > 1) throw new TqmError(`${what} must be 0 or 1, got ${v}`);
    return v === 1;
  }
}

function readRequant(r: ByteReader, where: string): Requant {
  const n = r.u32(`${where} requant count`);
  return { mult: r.i32s(`${where} requant mult`, n), shift: r.bytes(n, `${where} requant shift`), bias: r.i32s(`${where} requant bias`, n) };
}

function readRule(r: ByteReader, where: string): CodeRule {
  const kind = r.oneOf(RULES, `${where} code rule`);
  if (kind === 'thresholds') return { kind, thresholds: r.i32s(`${where} thresholds`), values: r.i32s(`${where} values`) };
  return { kind, fracBits: r.u8(`${where} fracBits`), minCode: r.i32(`${where} minCode`), maxCode: r.i32(`${where} maxCode`) };
}

function readWeights(r: ByteReader, where: string): WeightTensor {
  const bits = r.u8(`${where} weight bits`);
  const scheme = r.oneOf(SCHEMES, `${where} weight scheme`);
  const levels = r.i16s(`${where} weight levels`);
  const count = r.u32(`${where} weight count`);
  if (!(bits >= 1 && bits <= 8)) throw new TqmError(`${where}: weight bits must be 1..8, got ${bits}`);
  return { bits, scheme, levels, codes: unpackBits(r.bytes(packedBytes(count, bits), `${where} packed weights`), count, bits) };
}

/** Largest kernel, stride, padding, channel count or group count a file may hold (as validate.ts allows). */
const MAX_EXTENT = 1 << 16;

function readCeiling(r: ByteReader, where: string): number | null {
  return r.flag(`${where} has ceiling`) ? r.i32(`${where} ceiling`) : null;
}

function readActivation(r: ByteReader, where: string): ActivationQuant {
  return { relu: r.flag(`${where} relu`), ceiling: readCeiling(r, where), zeroPoint: r.i32(`${where} zeroPoint`), rule: readRule(r, where) };
}

function readPair(r: ByteReader, what: string, lo: number): Pair {
  return [r.u32In(`${what} h`, lo, MAX_EXTENT), r.u32In(`${what} w`, lo, MAX_EXTENT)];
}

function readWindow(r: ByteReader, where: string): Pick<PoolOp, 'kernel' | 'stride' | 'padding'> {
  return { kernel: readPair(r, `${where} kernel`, 1), stride: readPair(r, `${where} stride`, 1), padding: readPair(r, `${where} padding`, 0) };
}

function readAddend(r: ByteReader, what: string): AddInput {
  return { input: r.u32(`${what} input`), mult: r.i32(`${what} mult`), shift: r.u8(`${what} shift`) };
}

function readEpilogue(r: ByteReader, where: string): Epilogue {
  const kind = r.oneOf(EPILOGUES, `${where} epilogue`);
  if (kind === 'activation') return { kind, ...readActivation(r, where) };
  if (kind === 'logits') return { kind };
  const relu = r.flag(`${where} relu`);
  const ceiling = readCeiling(r, where);
  const bits = r.u8(`${where} residual bits`);
  const shortcut = r.flag(`${where} has shortcut`)
    ? { input: r.u32(`${where} shortcut input`), stride: r.u32(`${where} shortcut stride`), channelOffset: r.u32(`${where} shortcut channel offset`), mult: r.i32(`${where} shortcut mult`), shift: r.u8(`${where} shortcut shift`) }
    : null;
  return { kind, relu, ceiling, bits, shortcut };
}

function readOp(r: ByteReader, index: number): Op {
  const kind = r.oneOf(OP_KINDS, `op ${index} kind`);
  const where = `op ${index} (${kind})`;
  switch (kind) {
    case 'input': {
      const output = r.u32(`${where} output`);
      return { kind, output, lut: Int16Array.from(r.i16s(`${where} lut`)) };
    }
    case 'conv': {
      const name = r.name(`${where} name`);
      const at = `${where} ${name}`;
      const [input, output] = [r.u32(`${at} input`), r.u32(`${at} output`)];
      const [inChannels, outChannels, groups] = ['inChannels', 'outChannels', 'groups'].map((f) => r.u32In(`${at} ${f}`, 1, MAX_EXTENT));
      const window = readWindow(r, at);
      return { kind, name, input, output, inChannels, outChannels, groups, ...window, weights: readWeights(r, name), requant: readRequant(r, name), epilogue: readEpilogue(r, name) };
    }
    case 'quantize': {
      const name = r.name(`${where} name`);
      const input = r.u32(`${name} input`);
      const output = r.u32(`${name} output`);
      const requant = readRequant(r, name);
      return { kind, name, input, output, requant, ...readActivation(r, name) };
    }
    case 'sumpool':
    case 'maxpool': {
      const name = r.name(`${where} name`);
      const at = `${where} ${name}`;
      return { kind, name, input: r.u32(`${at} input`), output: r.u32(`${at} output`), ...readWindow(r, at) };
    }
    case 'add': {
      const name = r.name(`${where} name`);
      const at = `${where} ${name}`;
      const [a, b] = [readAddend(r, `${at} a`), readAddend(r, `${at} b`)];
      return { kind, name, a, b, output: r.u32(`${at} output`), relu: r.flag(`${at} relu`), ceiling: readCeiling(r, at), bits: r.u8(`${at} bits`) };
    }
  }
}

function readTensor(r: ByteReader, index: number): TensorInfo {
  const where = `tensor ${index}`;
  const name = r.name(`${where} name`);
  const dtype = r.oneOf(DTYPES, `${where} dtype`);
  const shape = [r.u32(`${where} C`), r.u32(`${where} H`), r.u32(`${where} W`)] as const;
  return { name, dtype, shape, scale: r.f64(`${where} scale`), range: [r.i32(`${where} range min`), r.i32(`${where} range max`)] };
}

function readMeta(r: ByteReader): ModelMeta {
  const text = r.str('meta');
  let meta: unknown;
  try {
    meta = JSON.parse(text);
  } catch (e) {
    throw new TqmError(`meta is not valid JSON: ${printable((e as Error).message)}`);
  }
  // its fields are checked with the rest of the model (validate.ts)
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) throw new TqmError('meta is not a JSON object');
  return meta as ModelMeta;
}

function checkHeader(bytes: Uint8Array): number {
  if (bytes.length < TQM_HEADER_BYTES) throw new TqmError(`truncated: ${bytes.length} bytes, shorter than the ${TQM_HEADER_BYTES}-byte header`);
  if (!TQM_MAGIC.every((b, i) => bytes[i] === b)) throw new TqmError('not a tqm file (bad magic bytes)');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint16(4, true);
  if (version < TQM_VERSION) {
    throw new TqmError(
      `tqm format version ${version} was written by an older tinyquant (this one reads version ${TQM_VERSION}): ` +
        're-export the model from its checkpoint with `tinyquant export --checkpoint <run>/best.json --format tqm --out <file>`',
    );
  }
  if (version !== TQM_VERSION) throw new TqmError(`tqm format version ${version} was written by a newer tinyquant (this one reads version ${TQM_VERSION})`);
  if (view.getUint16(6, true) !== 0) throw new TqmError('reserved header field is not 0');
  const payload = view.getUint32(8, true);
  const expected = TQM_HEADER_BYTES + payload;
  if (bytes.length < expected) throw new TqmError(`truncated: the header announces ${expected} bytes, the file has ${bytes.length}`);
  if (bytes.length > expected) throw new TqmError(`${bytes.length - expected} unexpected bytes after the announced ${expected}`);
  const digest = sha256(bytes.subarray(0, 12), bytes.subarray(TQM_HEADER_BYTES));
  if (!digest.every((b, i) => bytes[12 + i] === b)) throw new TqmError('checksum mismatch: the contents were modified or corrupted');
  return payload;
}

/** Parse and validate tqm bytes; errors are TqmError (format) or IntegerModelError (bad model field). */
export function decodeTqm(bytes: Uint8Array): IntegerModel {
  checkHeader(bytes);
  const r = new ByteReader(bytes.subarray(TQM_HEADER_BYTES));
  const meta = readMeta(r);
  const tensors = Array.from({ length: r.count('tensor count', 33) }, (_, i) => readTensor(r, i));
  const ops = Array.from({ length: r.count('op count', 9) }, (_, i) => readOp(r, i));
  const output = r.u32('output tensor');
  if (r.remaining !== 0) throw new TqmError(`${r.remaining} unread bytes at the end of the payload`);
  const model: IntegerModel = { version: IR_VERSION, meta, tensors, ops, output };
  validateIntegerModel(model);
  return model;
}
