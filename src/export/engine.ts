/**
 * The integer-only inference engine: runs a lowered model (ir.ts) on uint8 images with integer
 * arithmetic only (int32 accumulators, rounding multiply-shift requantization, threshold or
 * rounding activation codes; see int-ops.ts for why no float is involved). Plain TypeScript over
 * typed arrays: no Node APIs, so it runs in a browser as it is.
 *
 * Two arithmetic paths give bit-identical results: `multiply` (dense dot products, acc += w * x)
 * and `shift-add` (no multiplies: every nonzero weight is a signed sum of powers of two, APoT levels
 * of at most two; the inputs are summed per power and each sum shifted once, see ShiftAddGroups).
 *
 * Convolutions (dense, grouped, depthwise; a linear layer is a conv over its whole input) unfold
 * the zero-padded input into one patch per output pixel and group (im2col) and take dot products
 * with the weight rows, accumulating in a local int32 variable (the fastest shape for the JIT);
 * typed arrays are int16 where values fit (weights, inputs), int32 for accumulators. Pools visit
 * the part of each window inside the input; adds rescale both operands element by element.
 */
import { argmaxRows, countBelow, powerOfTwoTerms, roundToCode, roundingMulShift } from './int-ops.js';
import type { ActivationQuant, AddOp, ConvOp, DType, IntegerModel, Op, PoolOp, QuantizeOp, Requant, TensorInfo } from './ir.js';
import { inputShape, tensorSize } from './ir.js';
import { validateIntegerModel } from './validate.js';

export type Arithmetic = 'multiply' | 'shift-add';

export interface EngineOptions {
  readonly arithmetic?: Arithmetic;
}

export type IntArray = Int8Array | Uint8Array | Int16Array | Int32Array;

function allocate(dtype: DType, n: number): IntArray {
  switch (dtype) {
    case 'int8':
      return new Int8Array(n);
    case 'uint8':
      return new Uint8Array(n);
    case 'int16':
      return new Int16Array(n);
    case 'int32':
      return new Int32Array(n);
  }
}

/**
 * Shift-add form of a conv's weights. Each nonzero weight is a signed sum of powers of two; per
 * output channel the patch entries are grouped by power: acc = sum over p of
 * ((sum of x_k with a +2^p term) - (sum of x_k with a -2^p term)) << p. Group g of channel o
 * (groupStart[o] <= g < groupStart[o + 1]) has shift[g] and the patch indices
 * index[plusStart[g] .. minusStart[g]) added and index[minusStart[g] .. plusStart[g + 1]) subtracted.
 */
export interface ShiftAddGroups {
  readonly groupStart: Int32Array;
  readonly shift: Int8Array;
  readonly plusStart: Int32Array;
  readonly minusStart: Int32Array;
  readonly index: Int32Array;
}

export function shiftAddGroups(weights: Int16Array, outChannels: number): ShiftAddGroups {
  const patch = weights.length / outChannels;
  const groupStart = [0];
  const [shift, plusStart, minusStart, index]: number[][] = [[], [], [], []];
  for (let o = 0; o < outChannels; o++) {
    const byPower = new Map<number, { plus: number[]; minus: number[] }>();
    for (let k = 0; k < patch; k++) {
      const w = weights[o * patch + k];
      for (const p of powerOfTwoTerms(w)) {
        if (!byPower.has(p)) byPower.set(p, { plus: [], minus: [] });
        byPower.get(p)![w > 0 ? 'plus' : 'minus'].push(k);
      }
    }
    for (const [p, { plus, minus }] of [...byPower].sort((a, b) => a[0] - b[0])) {
      shift.push(p);
      plusStart.push(index.length);
      index.push(...plus);
      minusStart.push(index.length);
      index.push(...minus);
    }
    groupStart.push(shift.length);
  }
  plusStart.push(index.length);
  return {
    groupStart: Int32Array.from(groupStart),
    shift: Int8Array.from(shift),
    plusStart: Int32Array.from(plusStart),
    minusStart: Int32Array.from(minusStart),
    index: Int32Array.from(index),
  };
}

/** Integer weight values of a conv, [channel][patch] (OIHW; a patch is one group's C/G x KH x KW window). */
export function weightValues(op: ConvOp): Int16Array {
  return Int16Array.from(op.weights.codes, (c) => op.weights.levels[c]);
}

/**
 * One conv: the input is copied into a zero-padded buffer and unfolded, group by group, into one
 * patch per output pixel (im2col, [group][pixel][patch], patch k = (c * KH + i) * KW + j over the
 * group's C/G channels: the weights' OIHW order); each output is a dot product of a weight row
 * with a patch of its group, accumulated in a local variable. Groups only move the row and column
 * offsets, so the innermost loops are the same for dense, grouped and depthwise convs.
 */
class ConvRunner {
  readonly op: ConvOp;
  readonly outH: number;
  readonly outW: number;
  readonly inH: number;
  readonly inW: number;
  readonly paddedH: number;
  readonly paddedW: number;
  /** Input channels of one group. */
  readonly groupChannels: number;
  /** Output channels of one group. */
  readonly groupOutChannels: number;
  readonly patch: number;
  readonly padded: Int16Array;
  /** [group][pixel][patch] */
  readonly columns: Int16Array;
  /** [channel][pixel] */
  readonly acc: Int32Array;
  /** Integer weight values, [channel][patch]. */
  readonly weights: Int16Array;
  #shiftAdd: ShiftAddGroups | undefined;

  constructor(op: ConvOp, input: TensorInfo, output: TensorInfo) {
    this.op = op;
    [, this.inH, this.inW] = input.shape;
    [, this.outH, this.outW] = output.shape;
    this.paddedH = this.inH + 2 * op.padding[0];
    this.paddedW = this.inW + 2 * op.padding[1];
    this.groupChannels = op.inChannels / op.groups;
    this.groupOutChannels = op.outChannels / op.groups;
    this.patch = this.groupChannels * op.kernel[0] * op.kernel[1];
    this.padded = new Int16Array(op.inChannels * this.paddedH * this.paddedW);
    this.columns = new Int16Array(op.groups * this.outH * this.outW * this.patch);
    this.acc = new Int32Array(op.outChannels * this.outH * this.outW);
    this.weights = weightValues(op);
  }

  /** The shift-add form of the weights, built on first use (most of the setup time, and only the shift-add path reads it). */
  get shiftAdd(): ShiftAddGroups {
    return (this.#shiftAdd ??= shiftAddGroups(this.weights, this.op.outChannels));
  }

  /** Padded copy (the border stays zero) and the patches of every output pixel, group after group. */
  load(input: IntArray): void {
    const { inH, inW, paddedH, paddedW, padded, columns, groupChannels } = this;
    const { padding, stride, kernel, inChannels, groups } = this.op;
    const [ph, pw] = padding;
    const [sh, sw] = stride;
    const [kh, kw] = kernel;
    for (let c = 0; c < inChannels; c++) {
      for (let y = 0; y < inH; y++) {
        const src = (c * inH + y) * inW;
        const dst = (c * paddedH + y + ph) * paddedW + pw;
        for (let x = 0; x < inW; x++) padded[dst + x] = input[src + x];
      }
    }
    let at = 0;
    for (let g = 0; g < groups; g++) {
      const firstChannel = g * groupChannels;
      for (let y = 0; y < this.outH; y++) {
        for (let x = 0; x < this.outW; x++) {
          for (let c = firstChannel; c < firstChannel + groupChannels; c++) {
            for (let i = 0; i < kh; i++) {
              const row = (c * paddedH + y * sh + i) * paddedW + x * sw;
              for (let j = 0; j < kw; j++) columns[at++] = padded[row + j];
            }
          }
        }
      }
    }
  }

  /** acc[o][pixel] = sum_k w[o][k] * patch[pixel][k] for every group (see accumulateGroup). */
  accumulateMultiply(): void {
    const pixels = this.outH * this.outW;
    for (let g = 0; g < this.op.groups; g++) this.#accumulateGroup(g * this.groupOutChannels, g * pixels * this.patch, pixels);
  }

  /**
   * The dot products of output channels first .. first + groupOutChannels - 1 with the patches at
   * `columnsStart`, in blocks of two pixels by four output channels (eight sums from six loads per
   * patch index); remainders one by one.
   */
  #accumulateGroup(first: number, columnsStart: number, pixels: number): void {
    const { acc, columns, weights, patch } = this;
    const channels = this.groupOutChannels;
    const blockedChannels = channels - (channels % 4);
    const blockedPixels = pixels - (pixels % 2);
    for (let px = 0; px < blockedPixels; px += 2) {
      const b0 = columnsStart + px * patch;
      const b1 = b0 + patch;
      for (let o = first; o < first + blockedChannels; o += 4) {
        const r0 = o * patch;
        const r1 = r0 + patch;
        const r2 = r1 + patch;
        const r3 = r2 + patch;
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0; // prettier-ignore
        for (let k = 0; k < patch; k++) {
          const x0 = columns[b0 + k];
          const x1 = columns[b1 + k];
          const w0 = weights[r0 + k];
          const w1 = weights[r1 + k];
          const w2 = weights[r2 + k];
          const w3 = weights[r3 + k];
          s00 += w0 * x0;
          s01 += w1 * x0;
          s02 += w2 * x0;
          s03 += w3 * x0;
          s10 += w0 * x1;
          s11 += w1 * x1;
          s12 += w2 * x1;
          s13 += w3 * x1;
        }
        acc[o * pixels + px] = s00;
        acc[(o + 1) * pixels + px] = s01;
        acc[(o + 2) * pixels + px] = s02;
        acc[(o + 3) * pixels + px] = s03;
        acc[o * pixels + px + 1] = s10;
        acc[(o + 1) * pixels + px + 1] = s11;
        acc[(o + 2) * pixels + px + 1] = s12;
        acc[(o + 3) * pixels + px + 1] = s13;
      }
    }
    for (let px = 0; px < pixels; px++) {
      const from = first + (px < blockedPixels ? blockedChannels : 0);
      for (let o = from; o < first + channels; o++) acc[o * pixels + px] = this.#dot(o * patch, columnsStart + px * patch);
    }
  }

  #dot(row: number, base: number): number {
    const { columns, weights, patch } = this;
    let sum = 0;
    for (let k = 0; k < patch; k++) sum += weights[row + k] * columns[base + k];
    return sum;
  }

  /** The same sums with adds and shifts only (see ShiftAddGroups). */
  accumulateShiftAdd(): void {
    const { acc, columns, patch, groupOutChannels } = this;
    const { groupStart, shift, plusStart, minusStart, index } = this.shiftAdd;
    const pixels = this.outH * this.outW;
    for (let group = 0; group < this.op.groups; group++) {
      const columnsStart = group * pixels * patch;
      const first = group * groupOutChannels;
      for (let px = 0; px < pixels; px++) {
        const base = columnsStart + px * patch;
        for (let o = first; o < first + groupOutChannels; o++) {
          let total = 0;
          for (let g = groupStart[o]; g < groupStart[o + 1]; g++) {
            let sum = 0;
            for (let t = plusStart[g]; t < minusStart[g]; t++) sum += columns[base + index[t]];
            for (let t = minusStart[g]; t < plusStart[g + 1]; t++) sum -= columns[base + index[t]];
            total += sum << shift[g];
          }
          acc[o * pixels + px] = total;
        }
      }
    }
  }
}

/** Requantize one value of channel c and apply an activation quantization (the `activation` epilogue and `quantize`). */
export function quantizeValue(q: ActivationQuant, r: Requant, c: number, x: number): number {
  let v = roundingMulShift(x, r.mult[c], r.shift[c]) + r.bias[c];
  if (q.relu && v < q.zeroPoint) v = q.zeroPoint;
  if (q.ceiling !== null && v > q.ceiling) v = q.ceiling;
  const rule = q.rule;
  if (rule.kind === 'thresholds') return rule.values[countBelow(rule.thresholds, v)];
  return roundToCode(v, rule.fracBits, rule.minCode, rule.maxCode);
}

/** The `residual` epilogue's and `add`'s output: relu, ceiling, clamp to a signed `bits`-bit integer. */
export function residualValue(v: number, relu: boolean, ceiling: number | null, bits: number): number {
  if (relu && v < 0) v = 0;
  if (ceiling !== null && v > ceiling) v = ceiling;
  const limit = 1 << (bits - 1); // bits <= 16: a shift, not Math.pow (this runs once per stored element)
  return v < -limit ? -limit : v > limit - 1 ? limit - 1 : v;
}

/** Which implementation runs an engine's kernels. */
export type EngineBackend = 'ts' | 'wasm';

/** What every integer engine offers (this file's IntegerEngine, wasm/engine.ts's WasmIntegerEngine): the same logits bit for bit. */
export interface InferenceEngine {
  readonly backend: EngineBackend;
  readonly model: IntegerModel;
  readonly inputShape: readonly [number, number, number];
  readonly imageSize: number;
  readonly classes: number;
  /** Int32 logits of one image: uint8, [C, H, W] planes (the CIFAR binary layout). */
  infer(image: Uint8Array): Int32Array;
  /** Logits of `count` images stored back to back; count * classes values. */
  inferBatch(images: Uint8Array, count: number): Int32Array;
  /** Top-1 class of each of `count` images (first maximum on ties). */
  predict(images: Uint8Array, count: number): Int32Array;
  /** Every tensor's values after running one image, in tensor order (to compare implementations tensor by tensor). */
  trace(image: Uint8Array): IntArray[];
}

/** The model checks, input checks and batching of every engine; a subclass runs one image and reads its tensors. */
export abstract class EngineBase implements InferenceEngine {
  abstract readonly backend: EngineBackend;
  readonly model: IntegerModel;
  readonly inputShape: readonly [number, number, number];
  readonly imageSize: number;
  readonly classes: number;

  constructor(model: IntegerModel) {
    validateIntegerModel(model);
    this.model = model;
    this.inputShape = inputShape(model);
    this.imageSize = this.inputShape[0] * this.inputShape[1] * this.inputShape[2];
    this.classes = tensorSize(model.tensors[model.output]);
  }

  /** Runs every op on a checked image; returns a copy of the logits. */
  protected abstract run(image: Uint8Array): Int32Array;

  /** Copies of every tensor's values as the last run left them. */
  protected abstract tensorValues(): IntArray[];

  infer(image: Uint8Array): Int32Array {
    if (!(image instanceof Uint8Array) || image.length !== this.imageSize) {
      throw new Error(`engine: an image must be ${this.imageSize} bytes (uint8 [${this.inputShape.join(', ')}], channel planes), got ${image?.length ?? typeof image}`);
    }
    return this.run(image);
  }

  trace(image: Uint8Array): IntArray[] {
    this.infer(image);
    return this.tensorValues();
  }

  inferBatch(images: Uint8Array, count: number): Int32Array {
    if (!Number.isInteger(count) || count < 0 || images.length !== count * this.imageSize) {
      throw new Error(`engine: ${count} images of uint8 [${this.inputShape.join(', ')}] need ${count * this.imageSize} bytes, got ${images.length}`);
    }
    const out = new Int32Array(count * this.classes);
    for (let n = 0; n < count; n++) out.set(this.infer(images.subarray(n * this.imageSize, (n + 1) * this.imageSize)), n * this.classes);
    return out;
  }

  predict(images: Uint8Array, count: number): Int32Array {
    return argmaxRows(this.inferBatch(images, count), this.classes);
  }
}

/** The TypeScript kernels (see the file comment); `createEngine` (engines.ts) picks the WebAssembly ones where they load. */
export class IntegerEngine extends EngineBase {
  readonly backend = 'ts';
  readonly arithmetic: Arithmetic;
  readonly #buffers: IntArray[];
  readonly #convs = new Map<ConvOp, ConvRunner>();

  constructor(model: IntegerModel, opts: EngineOptions = {}) {
    super(model);
    this.arithmetic = opts.arithmetic ?? 'multiply';
    if (this.arithmetic !== 'multiply' && this.arithmetic !== 'shift-add') throw new Error(`engine: arithmetic must be multiply or shift-add, got "${this.arithmetic}"`);
    this.#buffers = model.tensors.map((t) => allocate(t.dtype, tensorSize(t)));
    for (const op of model.ops) {
      if (op.kind === 'conv') this.#convs.set(op, new ConvRunner(op, model.tensors[op.input], model.tensors[op.output]));
    }
  }

  protected run(image: Uint8Array): Int32Array {
    for (const op of this.model.ops) this.#run(op, image);
    return Int32Array.from(this.#buffers[this.model.output]);
  }

  protected tensorValues(): IntArray[] {
    return this.#buffers.map((b) => b.slice());
  }

  #run(op: Op, image: Uint8Array): void {
    switch (op.kind) {
      case 'input':
        this.#input(op.output, op.lut, image);
        return;
      case 'conv':
        this.#conv(op);
        return;
      case 'quantize':
        this.#quantize(op);
        return;
      case 'sumpool':
      case 'maxpool':
        this.#pool(op);
        return;
      case 'add':
        this.#add(op);
        return;
    }
  }

  #input(output: number, lut: Int16Array, image: Uint8Array): void {
    const out = this.#buffers[output];
    const [channels, h, w] = this.inputShape;
    const plane = h * w;
    for (let c = 0; c < channels; c++) {
      for (let i = c * plane; i < (c + 1) * plane; i++) out[i] = lut[c * 256 + image[i]];
    }
  }

  #conv(op: ConvOp): void {
    const runner = this.#convs.get(op)!;
    runner.load(this.#buffers[op.input]);
    if (this.arithmetic === 'multiply') runner.accumulateMultiply();
    else runner.accumulateShiftAdd();
    const out = this.#buffers[op.output];
    const { outH, outW, acc } = runner;
    const plane = outH * outW;
    const e = op.epilogue;
    const r = op.requant;
    const shortcut = e.kind === 'residual' ? e.shortcut : null;
    const sc = shortcut ? this.#buffers[shortcut.input] : null;
    const scShape = shortcut ? this.model.tensors[shortcut.input].shape : null;
    for (let o = 0; o < op.outChannels; o++) {
      const [mult, shift, bias] = [r.mult[o], r.shift[o], r.bias[o]];
      const scChannel = shortcut ? o - shortcut.channelOffset : -1;
      const scPlane = scShape && scChannel >= 0 && scChannel < scShape[0] ? scChannel * scShape[1] * scShape[2] : -1;
      for (let y = 0; y < outH; y++) {
        for (let x = 0; x < outW; x++) {
          const dst = o * plane + y * outW + x;
          const a = acc[dst];
          if (e.kind === 'activation') {
            out[dst] = quantizeValue(e, r, o, a);
            continue;
          }
          let v = roundingMulShift(a, mult, shift) + bias;
          if (e.kind === 'logits') {
            out[dst] = v;
            continue;
          }
          if (shortcut && scPlane >= 0) {
            const s = sc![scPlane + y * shortcut.stride * scShape![2] + x * shortcut.stride];
            v += roundingMulShift(s, shortcut.mult, shortcut.shift);
          }
          out[dst] = residualValue(v, e.relu, e.ceiling, e.bits);
        }
      }
    }
  }

  #quantize(op: QuantizeOp): void {
    const input = this.#buffers[op.input];
    const out = this.#buffers[op.output];
    const [channels, h, w] = this.model.tensors[op.input].shape;
    const plane = h * w;
    const perChannel = op.requant.mult.length > 1;
    for (let c = 0; c < channels; c++) {
      const rc = perChannel ? c : 0;
      for (let i = c * plane; i < (c + 1) * plane; i++) out[i] = quantizeValue(op, op.requant, rc, input[i]);
    }
  }

  /**
   * Sum or max over each window, clipped to the input: the positions in the padding add 0 to a
   * sum (they are counted in its divisor, folded into the next op) and take no part in a max.
   */
  #pool(op: PoolOp): void {
    const input = this.#buffers[op.input];
    const out = this.#buffers[op.output];
    const [channels, h, w] = this.model.tensors[op.input].shape;
    const [, outH, outW] = this.model.tensors[op.output].shape;
    const [kh, kw] = op.kernel;
    const [sh, sw] = op.stride;
    const [ph, pw] = op.padding;
    const isMax = op.kind === 'maxpool';
    let at = 0;
    for (let c = 0; c < channels; c++) {
      const plane = c * h * w;
      for (let y = 0; y < outH; y++) {
        const top = y * sh - ph;
        const [i0, i1] = [Math.max(top, 0), Math.min(top + kh, h)];
        for (let x = 0; x < outW; x++) {
          const left = x * sw - pw;
          const [j0, j1] = [Math.max(left, 0), Math.min(left + kw, w)];
          let result = isMax ? -Infinity : 0;
          for (let i = i0; i < i1; i++) {
            const row = plane + i * w;
            for (let j = j0; j < j1; j++) {
              const v = input[row + j];
              if (!isMax) result += v;
              else if (v > result) result = v;
            }
          }
          out[at++] = result;
        }
      }
    }
  }

  #add(op: AddOp): void {
    const a = this.#buffers[op.a.input];
    const b = this.#buffers[op.b.input];
    const out = this.#buffers[op.output];
    const { a: ra, b: rb, relu, ceiling, bits } = op;
    for (let i = 0; i < out.length; i++) {
      const v = roundingMulShift(a[i], ra.mult, ra.shift) + roundingMulShift(b[i], rb.mult, rb.shift);
      out[i] = residualValue(v, relu, ceiling, bits);
    }
  }
}
