/**
 * The integer engine on WebAssembly kernels (source.ts, embedded by binary.ts): the same ops and
 * the same integers as the TypeScript engine (../engine.ts) and the C build, SIMD128 inside, one
 * thread. Browser-safe: no Node APIs; compiling is asynchronous (`WasmIntegerEngine.create`)
 * because browsers refuse to compile modules over 4 KB synchronously on their main thread.
 *
 * At construction every tensor, table and descriptor (abi.ts) gets its own place in the instance's
 * memory: weights as int16 rows in the kernels' patch order, activation tables with thresholds
 * and code steps replicated for SIMD compares, ceilings and residual clamps folded as the C build
 * folds them (clip.ts); convolution scratch (padded input, patches, accumulators, rows) is shared.
 * An inference copies the image in, calls one kernel per op and copies the logits out.
 */
import { residualClamp, ruleWithCeiling } from '../clip.js';
import { EngineBase, type IntArray } from '../engine.js';
import { INT32_MIN } from '../int-ops.js';
import { type ActivationQuant, type AddOp, type ConvOp, DTYPE_INFO, type DType, type IntegerModel, type Op, type PoolOp, type QuantizeOp, type Requant, type TensorInfo, tensorSize } from '../ir.js';
import { EPILOGUE_TAG, SIMD_THRESHOLDS, type StructName, type StructValues, dtypeTag, encodeStruct } from './abi.js';
import { WASM_BASE64 } from './binary.js';

type Kernel = (descriptor: number) => void;

interface KernelExports {
  readonly memory: WebAssembly.Memory;
  readonly __heap_base: WebAssembly.Global;
  readonly tqw_conv: Kernel;
  readonly tqw_quantize: Kernel;
  readonly tqw_pool: Kernel;
  readonly tqw_add: Kernel;
  readonly tqw_input: Kernel;
}

/** Bytes after every region: the kernels read and write up to 14 bytes past a patch run. */
const SLACK = 64;
const PAGE = 65536;

let bytes: Uint8Array<ArrayBuffer> | undefined;
let compiled: Promise<WebAssembly.Module> | undefined;

function wasmBytes(): Uint8Array<ArrayBuffer> {
  return (bytes ??= Uint8Array.from(atob(WASM_BASE64), (ch) => ch.charCodeAt(0)));
}

/** Whether this JavaScript engine runs the kernels (WebAssembly with SIMD128 and bulk memory). */
export function wasmSupported(): boolean {
  return typeof WebAssembly === 'object' && typeof WebAssembly.validate === 'function' && WebAssembly.validate(wasmBytes());
}

function kernelsModule(): Promise<WebAssembly.Module> {
  if (!wasmSupported()) return Promise.reject(new Error('wasm engine: this JavaScript engine has no WebAssembly with SIMD128 (use the TypeScript engine, backend "ts")'));
  return (compiled ??= WebAssembly.compile(wasmBytes()));
}

const roundUp = (n: number, k: number): number => Math.ceil(n / k) * k;

const VIEW: Readonly<Record<DType, new (buffer: ArrayBuffer, offset: number, length: number) => IntArray>> = {
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  int32: Int32Array,
};

/** A bump allocator over the instance's memory, growing it as needed. */
class Heap {
  readonly #memory: WebAssembly.Memory;
  #top: number;

  constructor(memory: WebAssembly.Memory, base: number) {
    this.#memory = memory;
    this.#top = base;
  }

  alloc(bytes: number): number {
    const at = roundUp(this.#top, 16);
    this.#top = at + bytes + SLACK;
    const missing = this.#top - this.#memory.buffer.byteLength;
    if (missing <= 0) return at;
    try {
      this.#memory.grow(Math.ceil(missing / PAGE));
    } catch {
      throw new Error(`wasm engine: the model needs ${Math.ceil(this.#top / 2 ** 20)} MB of WebAssembly memory, more than this JavaScript engine gives (use the TypeScript engine, backend "ts")`);
    }
    return at;
  }

  view(dtype: DType, at: number, length: number): IntArray {
    return new VIEW[dtype](this.#memory.buffer as ArrayBuffer, at, length);
  }

  /** A copy of `data` in memory; its offset. */
  put(dtype: DType, data: ArrayLike<number>): number {
    const at = this.alloc(data.length * DTYPE_INFO[dtype].bytes);
    this.view(dtype, at, data.length).set(data);
    return at;
  }
}

/** Conv scratch sizes in bytes (the maximum over convs is allocated once). */
interface Scratch {
  hwc: number;
  columns: number;
  acc: number;
  row: number;
  scRow: number;
}

/** Patch length of a conv (group channels x kernel) rounded up to the 8 int16 of a SIMD vector. */
function patchStride(op: ConvOp): number {
  return roundUp((op.inChannels / op.groups) * op.kernel[0] * op.kernel[1], 8);
}

/** Weights as int16 [o][kpad] in patch order (i, j, c) (source.ts im2col), the pad zero. */
function patchWeights(op: ConvOp): Int16Array {
  const [kh, kw] = op.kernel;
  const cg = op.inChannels / op.groups;
  const kpad = patchStride(op);
  const { codes, levels } = op.weights;
  const out = new Int16Array(op.outChannels * kpad);
  for (let o = 0; o < op.outChannels; o++) {
    for (let c = 0; c < cg; c++) {
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) out[o * kpad + (i * kw + j) * cg + c] = levels[codes[((o * cg + c) * kh + i) * kw + j]];
      }
    }
  }
  return out;
}

/** Each value eight times: one int16 SIMD vector per value. */
function replicate8(values: ArrayLike<number>): Int16Array {
  return Int16Array.from({ length: values.length * 8 }, (_, i) => values[i >> 3]);
}

/**
 * The thresholds' int16 form for the kernels' eight-lane compares (source.ts activation_row):
 * s = the largest power of two dividing them all (at most 30) and T[k] / 2^s - 1, or null when
 * there are more than SIMD_THRESHOLDS or a bound leaves [-32767, 32766].
 */
export function narrowThresholds(thresholds: Int32Array): { shift: number; bounds: Int16Array } | null {
  if (thresholds.length > SIMD_THRESHOLDS) return null;
  const shift = Math.min(30, ...Array.from(thresholds, (t) => (t === 0 ? 30 : 31 - Math.clz32(t & -t))));
  const bounds = Array.from(thresholds, (t) => (t >> shift) - 1);
  return bounds.every((b) => b >= -32767 && b <= 32766) ? { shift, bounds: Int16Array.from(bounds) } : null;
}

type Fields<P extends string, D extends string> = Readonly<Record<`${P}_${D}`, number>>;

/** A tensor's height and width as descriptor fields `P_h`, `P_w`. */
function plane<P extends string>(prefix: P, t: TensorInfo): Fields<P, 'h' | 'w'> {
  return { [`${prefix}_h`]: t.shape[1], [`${prefix}_w`]: t.shape[2] } as Fields<P, 'h' | 'w'>;
}

/** A tensor's [C, H, W] as descriptor fields `P_c`, `P_h`, `P_w`; zeros for none. */
function chw<P extends string>(prefix: P, t: TensorInfo | null): Fields<P, 'c' | 'h' | 'w'> {
  if (!t) return { [`${prefix}_c`]: 0, [`${prefix}_h`]: 0, [`${prefix}_w`]: 0 } as Fields<P, 'c' | 'h' | 'w'>;
  return { [`${prefix}_c`]: t.shape[0], ...plane(prefix, t) } as Fields<P, 'c' | 'h' | 'w'>;
}

/** The sliding window of a conv or pool as descriptor fields. */
function window(op: ConvOp | PoolOp): Fields<'kernel' | 'stride' | 'pad', 'h' | 'w'> {
  const [[kernel_h, kernel_w], [stride_h, stride_w], [pad_h, pad_w]] = [op.kernel, op.stride, op.padding];
  return { kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w };
}

export class WasmIntegerEngine extends EngineBase {
  readonly backend = 'wasm';
  readonly #heap: Heap;
  readonly #tensors: number[];
  readonly #image: Uint8Array;
  readonly #logits: Int32Array;
  readonly #program: { readonly kernel: Kernel; readonly descriptor: number }[] = [];
  readonly #kernels: KernelExports;

  /** An engine for `model` on its own instance of the kernels (compiled once per process). */
  static async create(model: IntegerModel): Promise<WasmIntegerEngine> {
    const module = await kernelsModule();
    return new WasmIntegerEngine(model, await WebAssembly.instantiate(module, {}));
  }

  private constructor(model: IntegerModel, instance: WebAssembly.Instance) {
    super(model);
    this.#kernels = instance.exports as unknown as KernelExports;
    this.#heap = new Heap(this.#kernels.memory, this.#kernels.__heap_base.value as number);
    this.#tensors = model.tensors.map((t) => this.#heap.alloc(tensorSize(t) * DTYPE_INFO[t.dtype].bytes));
    const imageAt = this.#heap.alloc(this.imageSize);
    const scratch = this.#scratch(model);
    for (const op of model.ops) this.#program.push(this.#compile(op, imageAt, scratch));
    // The memory no longer grows: these views stay valid.
    this.#image = this.#heap.view('uint8', imageAt, this.imageSize) as Uint8Array;
    this.#logits = this.#heap.view('int32', this.#tensors[model.output], this.classes) as Int32Array;
  }

  protected run(image: Uint8Array): Int32Array {
    this.#image.set(image);
    for (const { kernel, descriptor } of this.#program) kernel(descriptor);
    return this.#logits.slice();
  }

  protected tensorValues(): IntArray[] {
    return this.model.tensors.map((t, id) => this.#heap.view(t.dtype, this.#tensors[id], tensorSize(t)).slice());
  }

  #struct<S extends StructName>(name: S, values: StructValues<S>): number {
    return this.#heap.put('int32', encodeStruct(name, values));
  }

  /** Allocates the largest scratch any conv (or quantize row) needs; the offsets. */
  #scratch(model: IntegerModel): Scratch {
    const size: Scratch = { hwc: 0, columns: 0, acc: 0, row: 0, scRow: 0 };
    for (const op of model.ops) {
      if (op.kind !== 'conv' && op.kind !== 'quantize') continue;
      const [, h, w] = model.tensors[op.input].shape;
      const [, outH, outW] = model.tensors[op.output].shape;
      const rows8 = roundUp(outH * outW, 8);
      size.row = Math.max(size.row, rows8 * 4);
      if (op.kind !== 'conv') continue;
      if (op.epilogue.kind === 'residual' && op.epilogue.shortcut) size.scRow = Math.max(size.scRow, rows8 * 4);
      size.hwc = Math.max(size.hwc, (h + 2 * op.padding[0]) * (w + 2 * op.padding[1]) * op.inChannels * 2);
      size.columns = Math.max(size.columns, op.groups * rows8 * patchStride(op) * 2);
      size.acc = Math.max(size.acc, op.outChannels * rows8 * 4);
    }
    const [hwc, columns, acc, row, scRow] = [size.hwc, size.columns, size.acc, size.row, size.scRow].map((n) => this.#heap.alloc(n));
    return { hwc, columns, acc, row, scRow };
  }

  #compile(op: Op, imageAt: number, scratch: Scratch): { kernel: Kernel; descriptor: number } {
    const k = this.#kernels;
    switch (op.kind) {
      case 'input': {
        const [channels, h, w] = this.inputShape;
        const out = this.model.tensors[op.output];
        const values = { image: imageAt, lut: this.#heap.put('int16', op.lut), output: this.#tensors[op.output], out_dtype: dtypeTag(out.dtype), channels, plane: h * w };
        return { kernel: k.tqw_input, descriptor: this.#struct('tqw_input_op', values) };
      }
      case 'conv':
        return { kernel: k.tqw_conv, descriptor: this.#conv(op, scratch) };
      case 'quantize':
        return { kernel: k.tqw_quantize, descriptor: this.#quantize(op, scratch) };
      case 'sumpool':
      case 'maxpool':
        return { kernel: k.tqw_pool, descriptor: this.#pool(op) };
      case 'add':
        return { kernel: k.tqw_add, descriptor: this.#add(op) };
    }
  }

  #requant(r: Requant): { mult: number; shift: number; bias: number } {
    return { mult: this.#heap.put('int32', r.mult), shift: this.#heap.put('uint8', r.shift), bias: this.#heap.put('int32', r.bias) };
  }

  /** A tqw_activation for `q` of layer `name`: the rule with its ceiling folded in, as the C build emits it. */
  #activation(q: ActivationQuant, name: string): number {
    const rule = ruleWithCeiling(q);
    const floor = q.relu ? q.zeroPoint : INT32_MIN;
    if (rule.kind === 'round') {
      return this.#struct('tqw_activation', { floor, count: -1, thresholds: 0, values: 0, narrow_shift: -1, thresholds8: 0, steps8: 0, frac_bits: rule.fracBits, min_code: rule.minCode, max_code: rule.maxCode });
    }
    const { thresholds, values } = rule;
    if (thresholds.length > 0x7fff) throw new Error(`wasm engine: ${name}: ${thresholds.length} activation thresholds, the kernels take at most ${0x7fff}`);
    const bad = values.find((v) => v < DTYPE_INFO.int16.min || v > DTYPE_INFO.int16.max);
    if (bad !== undefined) throw new Error(`wasm engine: ${name}: activation value ${bad} is outside int16`);
    const narrow = narrowThresholds(thresholds);
    return this.#struct('tqw_activation', {
      floor,
      count: thresholds.length,
      thresholds: this.#heap.put('int32', thresholds),
      values: this.#heap.put('int16', values),
      narrow_shift: narrow?.shift ?? -1,
      thresholds8: narrow ? this.#heap.put('int16', replicate8(narrow.bounds)) : 0,
      // values[k + 1] - values[k], wrapped to int16: the kernels' wrapping sums of them end at values[count], an int16
      steps8: narrow ? this.#heap.put('int16', replicate8(Array.from(thresholds, (_, k) => values[k + 1] - values[k]))) : 0,
      frac_bits: 0,
      min_code: 0,
      max_code: 0,
    });
  }

  #conv(op: ConvOp, scratch: Scratch): number {
    const input = this.model.tensors[op.input];
    const output = this.model.tensors[op.output];
    const e = op.epilogue;
    const [lo, hi] = e.kind === 'residual' ? residualClamp(e.relu, e.ceiling, e.bits) : [0, 0];
    const s = e.kind === 'residual' ? e.shortcut : null;
    const sc: TensorInfo | null = s ? this.model.tensors[s.input] : null;
    return this.#struct('tqw_conv_op', {
      input: this.#tensors[op.input],
      in_dtype: dtypeTag(input.dtype),
      ...chw('in', input),
      output: this.#tensors[op.output],
      out_dtype: dtypeTag(output.dtype),
      ...chw('out', output),
      ...window(op),
      groups: op.groups,
      kpad: patchStride(op),
      weights: this.#heap.put('int16', patchWeights(op)),
      ...this.#requant(op.requant),
      epilogue: EPILOGUE_TAG[e.kind],
      activation: e.kind === 'activation' ? this.#activation(e, op.name) : 0,
      lo,
      hi,
      sc: s ? this.#tensors[s.input] : 0,
      sc_dtype: sc ? dtypeTag(sc.dtype) : 0,
      ...chw('sc', sc),
      sc_stride: s?.stride ?? 1,
      sc_offset: s?.channelOffset ?? 0,
      sc_mult: s?.mult ?? 0,
      sc_shift: s?.shift ?? 0,
      hwc: scratch.hwc,
      columns: scratch.columns,
      acc: scratch.acc,
      row: scratch.row,
      sc_row: scratch.scRow,
    });
  }

  #quantize(op: QuantizeOp, scratch: Scratch): number {
    const input = this.model.tensors[op.input];
    const [channels, h, w] = input.shape;
    return this.#struct('tqw_quantize_op', {
      input: this.#tensors[op.input],
      in_dtype: dtypeTag(input.dtype),
      output: this.#tensors[op.output],
      out_dtype: dtypeTag(this.model.tensors[op.output].dtype),
      channels,
      plane: h * w,
      per_channel: op.requant.mult.length > 1 ? 1 : 0,
      ...this.#requant(op.requant),
      activation: this.#activation(op, op.name),
      row: scratch.row,
    });
  }

  #pool(op: PoolOp): number {
    const input = this.model.tensors[op.input];
    const output = this.model.tensors[op.output];
    return this.#struct('tqw_pool_op', {
      max: op.kind === 'maxpool' ? 1 : 0,
      channels: input.shape[0],
      ...plane('in', input),
      ...plane('out', output),
      ...window(op),
      in_dtype: dtypeTag(input.dtype),
      out_dtype: dtypeTag(output.dtype),
      input: this.#tensors[op.input],
      output: this.#tensors[op.output],
    });
  }

  #add(op: AddOp): number {
    const [lo, hi] = residualClamp(op.relu, op.ceiling, op.bits);
    const t = this.model.tensors;
    return this.#struct('tqw_add_op', {
      size: tensorSize(t[op.output]),
      a_mult: op.a.mult,
      b_mult: op.b.mult,
      lo,
      hi,
      a_shift: op.a.shift,
      b_shift: op.b.shift,
      a_dtype: dtypeTag(t[op.a.input].dtype),
      b_dtype: dtypeTag(t[op.b.input].dtype),
      out_dtype: dtypeTag(t[op.output].dtype),
      a: this.#tensors[op.a.input],
      b: this.#tensors[op.b.input],
      output: this.#tensors[op.output],
    });
  }
}
