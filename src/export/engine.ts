/**
 * The integer-only inference engine: runs a lowered model (ir.ts) on uint8 images with integer
 * arithmetic only (int32 accumulators, rounding multiply-shift requantization, threshold or
 * rounding activation codes; see int-ops.ts for why no float is involved). Plain TypeScript over
 * typed arrays: no Node APIs, so it runs in a browser as it is.
 *
 * Two arithmetic paths give bit-identical results: `multiply` (acc += w * x) and `shift-add`
 * (acc += ±(x << p) for each power of two of |w|: APoT levels are sums of at most two or three).
 * Zero weights are skipped by both.
 *
 * Convolutions run tap by tap over a zero-padded copy of the input: for stride 1 each tap is one
 * long run over the padded width (the two extra columns per row are never read back), which keeps
 * the inner loop simple for the JIT.
 */
import { argmax, countBelow, powerOfTwoTerms, roundToCode, roundingMulShift } from './int-ops.js';
import type { ActivationQuant, ConvOp, DType, IntegerModel, Op, QuantizeOp, Requant, SumPoolOp, TensorInfo } from './ir.js';
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

/** Taps of one conv with nonzero weights, grouped by output channel. */
interface Taps {
  /** taps of output channel o: start[o] .. start[o + 1] - 1 */
  readonly start: Int32Array;
  /** Offset of the tap's first input element in the padded input. */
  readonly offset: Int32Array;
  readonly weight: Int32Array;
  /** shift-add: terms of tap t are termStart[t] .. termStart[t + 1] - 1, as signed shifts (sign * (shift + 1)). */
  readonly termStart: Int32Array;
  readonly terms: Int8Array;
}

function buildTaps(op: ConvOp, paddedH: number, paddedW: number): Taps {
  const { outChannels: oc, inChannels: ic, kernel: k, weights } = op;
  const start = new Int32Array(oc + 1);
  const offsets: number[] = [];
  const values: number[] = [];
  for (let o = 0; o < oc; o++) {
    for (let c = 0; c < ic; c++) {
      for (let i = 0; i < k; i++) {
        for (let j = 0; j < k; j++) {
          const w = weights.levels[weights.codes[((o * ic + c) * k + i) * k + j]];
          if (w === 0) continue;
          offsets.push((c * paddedH + i) * paddedW + j);
          values.push(w);
        }
      }
    }
    start[o + 1] = values.length;
  }
  const termStart = new Int32Array(values.length + 1);
  const terms: number[] = [];
  values.forEach((w, t) => {
    for (const p of powerOfTwoTerms(w)) terms.push(Math.sign(w) * (p + 1));
    termStart[t + 1] = terms.length;
  });
  return { start, offset: Int32Array.from(offsets), weight: Int32Array.from(values), termStart, terms: Int8Array.from(terms) };
}

class ConvRunner {
  readonly op: ConvOp;
  readonly outH: number;
  readonly outW: number;
  readonly paddedW: number;
  readonly padded: Int32Array;
  /** Accumulators of one output channel: OH rows of the padded width (stride 1) or of OW. */
  readonly acc: Int32Array;
  readonly rowPitch: number;
  readonly taps: Taps;
  readonly inH: number;
  readonly inW: number;

  constructor(op: ConvOp, input: TensorInfo, output: TensorInfo) {
    this.op = op;
    [, this.inH, this.inW] = input.shape;
    [, this.outH, this.outW] = output.shape;
    const paddedH = this.inH + 2 * op.padding;
    this.paddedW = this.inW + 2 * op.padding;
    this.padded = new Int32Array(op.inChannels * paddedH * this.paddedW);
    this.rowPitch = op.stride === 1 ? this.paddedW : this.outW;
    this.acc = new Int32Array(this.outH * this.rowPitch);
    this.taps = buildTaps(op, paddedH, this.paddedW);
  }

  /** Copy the input into the interior of the padded buffer (the border stays zero). */
  load(input: IntArray): void {
    const { inH, inW, paddedW, padded } = this;
    const p = this.op.padding;
    const paddedH = inH + 2 * p;
    for (let c = 0; c < this.op.inChannels; c++) {
      for (let y = 0; y < inH; y++) {
        const src = (c * inH + y) * inW;
        const dst = (c * paddedH + y + p) * paddedW + p;
        for (let x = 0; x < inW; x++) padded[dst + x] = input[src + x];
      }
    }
  }

  /** Accumulate output channel o into `acc` with multiplies. */
  accumulateMultiply(o: number): void {
    const { acc, padded, taps, outH, outW, paddedW } = this;
    const stride = this.op.stride;
    acc.fill(0);
    for (let t = taps.start[o]; t < taps.start[o + 1]; t++) {
      const off = taps.offset[t];
      const w = taps.weight[t];
      if (stride === 1) {
        const n = (outH - 1) * paddedW + outW;
        for (let j = 0; j < n; j++) acc[j] += w * padded[off + j];
      } else {
        for (let y = 0; y < outH; y++) {
          const rowIn = off + y * stride * paddedW;
          const rowOut = y * outW;
          for (let x = 0; x < outW; x++) acc[rowOut + x] += w * padded[rowIn + x * stride];
        }
      }
    }
  }

  /** Accumulate output channel o into `acc` with shifts and adds only. */
  accumulateShiftAdd(o: number): void {
    const { acc, padded, taps, outH, outW, paddedW } = this;
    const stride = this.op.stride;
    acc.fill(0);
    for (let t = taps.start[o]; t < taps.start[o + 1]; t++) {
      const off = taps.offset[t];
      for (let q = taps.termStart[t]; q < taps.termStart[t + 1]; q++) {
        const term = taps.terms[q];
        const shift = Math.abs(term) - 1;
        const negative = term < 0;
        if (stride === 1) {
          const n = (outH - 1) * paddedW + outW;
          if (negative) for (let j = 0; j < n; j++) acc[j] -= padded[off + j] << shift;
          else for (let j = 0; j < n; j++) acc[j] += padded[off + j] << shift;
        } else {
          for (let y = 0; y < outH; y++) {
            const rowIn = off + y * stride * paddedW;
            const rowOut = y * outW;
            if (negative) for (let x = 0; x < outW; x++) acc[rowOut + x] -= padded[rowIn + x * stride] << shift;
            else for (let x = 0; x < outW; x++) acc[rowOut + x] += padded[rowIn + x * stride] << shift;
          }
        }
      }
    }
  }
}

/** Requantize one value of channel c and apply an activation quantization. */
function quantizeValue(q: ActivationQuant, r: Requant, c: number, x: number): number {
  let v = roundingMulShift(x, r.mult[c], r.shift[c]) + r.bias[c];
  if (q.relu && v < q.zeroPoint) v = q.zeroPoint;
  const rule = q.rule;
  if (rule.kind === 'thresholds') return rule.values[countBelow(rule.thresholds, v)];
  return roundToCode(v, rule.fracBits, rule.minCode, rule.maxCode);
}

export class IntegerEngine {
  readonly model: IntegerModel;
  readonly arithmetic: Arithmetic;
  readonly inputShape: readonly [number, number, number];
  readonly imageSize: number;
  readonly classes: number;
  readonly #buffers: IntArray[];
  readonly #convs = new Map<ConvOp, ConvRunner>();

  constructor(model: IntegerModel, opts: EngineOptions = {}) {
    validateIntegerModel(model);
    this.model = model;
    this.arithmetic = opts.arithmetic ?? 'multiply';
    if (this.arithmetic !== 'multiply' && this.arithmetic !== 'shift-add') throw new Error(`engine: arithmetic must be multiply or shift-add, got "${this.arithmetic}"`);
    this.inputShape = inputShape(model);
    this.imageSize = this.inputShape[0] * this.inputShape[1] * this.inputShape[2];
    this.classes = tensorSize(model.tensors[model.output]);
    this.#buffers = model.tensors.map((t) => allocate(t.dtype, tensorSize(t)));
    for (const op of model.ops) {
      if (op.kind === 'conv') this.#convs.set(op, new ConvRunner(op, model.tensors[op.input], model.tensors[op.output]));
    }
  }

  /** Int32 logits of one image: uint8, [C, H, W] planes (the CIFAR binary layout). */
  infer(image: Uint8Array): Int32Array {
    if (!(image instanceof Uint8Array) || image.length !== this.imageSize) {
      throw new Error(`engine: an image must be ${this.imageSize} bytes (uint8 [${this.inputShape.join(', ')}], channel planes), got ${image?.length ?? typeof image}`);
    }
    for (const op of this.model.ops) this.#run(op, image);
    return Int32Array.from(this.#buffers[this.model.output]);
  }

  /** Every tensor's values after running one image, in tensor order (to compare implementations tensor by tensor). */
  trace(image: Uint8Array): IntArray[] {
    this.infer(image);
    return this.#buffers.map((b) => b.slice());
  }

  /** Logits of `count` images stored back to back; count * classes values. */
  inferBatch(images: Uint8Array, count: number): Int32Array {
    if (!Number.isInteger(count) || count < 0 || images.length !== count * this.imageSize) {
      throw new Error(`engine: ${count} images of uint8 [${this.inputShape.join(', ')}] need ${count * this.imageSize} bytes, got ${images.length}`);
    }
    const out = new Int32Array(count * this.classes);
    for (let n = 0; n < count; n++) out.set(this.infer(images.subarray(n * this.imageSize, (n + 1) * this.imageSize)), n * this.classes);
    return out;
  }

  /** Top-1 class of each of `count` images (first maximum on ties). */
  predict(images: Uint8Array, count: number): Int32Array {
    const logits = this.inferBatch(images, count);
    return Int32Array.from({ length: count }, (_, n) => argmax(logits, n * this.classes, this.classes));
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
        this.#sumPool(op);
        return;
    }
  }

  #input(output: number, lut: Int8Array, image: Uint8Array): void {
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
    const out = this.#buffers[op.output];
    const { outH, outW, rowPitch, acc } = runner;
    const plane = outH * outW;
    const e = op.epilogue;
    const r = op.requant;
    const shortcut = e.kind === 'residual' ? e.shortcut : null;
    const sc = shortcut ? this.#buffers[shortcut.input] : null;
    const scShape = shortcut ? this.model.tensors[shortcut.input].shape : null;
    for (let o = 0; o < op.outChannels; o++) {
      if (this.arithmetic === 'multiply') runner.accumulateMultiply(o);
      else runner.accumulateShiftAdd(o);
      const [mult, shift, bias] = [r.mult[o], r.shift[o], r.bias[o]];
      const scChannel = shortcut ? o - shortcut.channelOffset : -1;
      const scPlane = scShape && scChannel >= 0 && scChannel < scShape[0] ? scChannel * scShape[1] * scShape[2] : -1;
      for (let y = 0; y < outH; y++) {
        for (let x = 0; x < outW; x++) {
          const a = acc[y * rowPitch + x];
          const dst = o * plane + y * outW + x;
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
          if (e.relu && v < 0) v = 0;
          const limit = 2 ** (e.bits - 1);
          out[dst] = v < -limit ? -limit : v > limit - 1 ? limit - 1 : v;
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

  #sumPool(op: SumPoolOp): void {
    const input = this.#buffers[op.input];
    const out = this.#buffers[op.output];
    const [channels, h, w] = this.model.tensors[op.input].shape;
    const plane = h * w;
    for (let c = 0; c < channels; c++) {
      let sum = 0;
      for (let i = c * plane; i < (c + 1) * plane; i++) sum += input[i];
      out[c] = sum;
    }
  }
}
