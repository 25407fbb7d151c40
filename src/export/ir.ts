/**
 * The lowered integer model: what `tqm` files store, what the integer engine (engine.ts) runs, and
 * what a C code generator translates. Plain data only: a list of tensors and a list of ops over
 * them, every number an integer except the informational `scale`s.
 *
 * ## Data layout
 * One image at a time. Every tensor is [C, H, W] (channel planes, row-major; vectors are
 * [C, 1, 1]). The model input is the uint8 image, CHW, exactly as CIFAR's binary files store it:
 * C planes of H x W bytes.
 *
 * ## Tensors
 * `dtype` is the storage type (int8, uint8, int16, int32); `scale` is the real value of integer 1
 * (0 where a single scale does not apply). Activation tensors hold the consumer's *integer level
 * values* (APoT: level numerators r_a, e.g. 0..48 at 4 bits; uniform methods: the code k), not
 * level indices.
 *
 * ## Integer operations (int-ops.ts; C99 equivalents given there)
 * - `rms(a, m, n)` = roundingMulShift: floor((a*m + 2^(n-1)) / 2^n) with a 64-bit product
 *   (n = 0: a*m). Round half up. Results always fit int32 (the lowering checked the bounds).
 * - `countBelow(T, y)`: number of thresholds T[k] (ascending) with y > T[k].
 * - `roundToCode(y, f, lo, hi)` = clamp((y + 2^(f-1) - 1) >> f, lo, hi) (f = 0: clamp(y, lo, hi)),
 *   `>>` arithmetic. Ties go to the lower code.
 * - Accumulators are int32 and never overflow (worst case checked at lowering: sum over a
 *   window of max|weight| * max|input|).
 *
 * ## Ops, in execution order
 * `input` -> output int8 or int16 [C,H,W]: out[c,y,x] = lut[c*256 + image[c,y,x]].
 *
 * `conv` (also a linear layer: a conv whose kernel covers its whole [C,H,W] input, since CHW order
 *   is the flattened order; groups G: output channel o reads input channels g*C/G .. (g+1)*C/G - 1
 *   of its group g = floor(o / (O/G)); depthwise is G = C = O):
 *   w[o,c,i,j] = weights.levels[weights.codes[((o*(C/G) + c)*KH + i)*KW + j]]   (integer weight value)
 *   acc[o,y,x] = sum_{c<C/G,i,j} w[o,c,i,j] * in[g*C/G + c, y*SH + i - PH, x*SW + j - PW]   (zero outside)
 *   v = rms(acc, requant.mult[o], requant.shift[o]) + requant.bias[o]      (int32; per output channel)
 *   then the epilogue:
 *   - `activation` (the input of the next conv, a quantized activation):
 *       if relu: v = max(v, zeroPoint);  if ceiling !== null: v = min(v, ceiling) (clipped ReLU, ReLU6);
 *       code = rule(v);  out = value(code)   (uint8 or int8)
 *   - `residual` (the ResNet residual stream, int16 or int8 fixed point):
 *       if shortcut: v += rms(sc[o - channelOffset, y*stride, x*stride], shortcut.mult, shortcut.shift)
 *                    when 0 <= o - channelOffset < channels of sc, else v += 0   (option A pads zero
 *                    channels; identity and option B use stride 1, offset 0)
 *       if relu: v = max(v, 0);  if ceiling !== null: v = min(v, ceiling);
 *       out = clamp(v, -2^(bits-1), 2^(bits-1) - 1)
 *   - `logits`: out = v (int32).
 *
 * `quantize` (residual stream or pooled sums -> the activation values of a quantized input):
 *   v = rms(in[c,y,x], requant.mult[c'], requant.shift[c']) + requant.bias[c'] with c' = c, or 0
 *   when requant has one entry; then as the `activation` epilogue (relu, zeroPoint, rule, value).
 *
 * `sumpool`: out[c,y,x] = sum over i < KH, j < KW of in[c, y*SH + i - PH, x*SW + j - PW] (int32, zero
 *   outside the input; the 1/(KH*KW) of average pooling, padding counted as PyTorch's default does,
 *   is folded into the next op's multiplier). Global average pooling is the window [H, W].
 *
 * `maxpool`: out[c,y,x] = max over the window positions inside the input of in[c, ...] (same dtype,
 *   scale and values as the input: activation values grow with the real value, so the max commutes
 *   with the quantization).
 *
 * `add` (a residual join of two tensors of equal shape, neither of them a conv's direct output):
 *   v = rms(a[c,y,x], a.mult, a.shift) + rms(b[c,y,x], b.mult, b.shift);  then as the `residual`
 *   epilogue (relu, ceiling, clamp to bits).
 *
 * Code rules: `thresholds` (non-uniform levels, APoT): code = countBelow(thresholds, v),
 *   value = values[code]. `round` (uniform levels): code = roundToCode(v, fracBits, minCode, maxCode),
 *   value = code.
 *
 * The model's output is the int32 logits tensor; real logits = scale * value. Prediction = the
 * first index of the maximum.
 *
 * ## Where the reals went (for readers, not needed to run)
 * Each conv's real output is M_c * acc + B_c with M_c = s_w[c] * s_in (* |alpha| for EWGS) *
 * gamma_c / sqrt(var_c + eps) and B_c = beta_c - gamma_c * mean_c / sqrt(var_c + eps) (+ the
 * layer bias); requant holds (M_c / u, (B_c - offset) / u) for the output unit u of the target:
 * the residual scale, the logit scale, or the consumer quantizer's step / 2^fracBits (APoT:
 * alpha / D / 2^fracBits, so the midpoints between level numerators n_k are the integers
 * (n_k + n_{k+1}) * 2^(fracBits-1)).
 */

export const IR_VERSION = 2;

/** [height, width] of a kernel, stride or padding. */
export type Pair = readonly [number, number];

export type DType = 'int8' | 'uint8' | 'int16' | 'int32';
export const DTYPES: readonly DType[] = ['int8', 'uint8', 'int16', 'int32'];

/** Bytes per element and the value range of each storage type. */
export const DTYPE_INFO: Readonly<Record<DType, { readonly bytes: number; readonly min: number; readonly max: number }>> = {
  int8: { bytes: 1, min: -128, max: 127 },
  uint8: { bytes: 1, min: 0, max: 255 },
  int16: { bytes: 2, min: -32768, max: 32767 },
  int32: { bytes: 4, min: -0x80000000, max: 0x7fffffff },
};

export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  /** [C, H, W]. */
  readonly shape: readonly [number, number, number];
  /** Real value of integer 1 (informational); 0 where no single scale applies. */
  readonly scale: number;
  /** Smallest and largest integer the tensor can hold (within the dtype): bounds for overflow checks. */
  readonly range: readonly [number, number];
}

/** Per output channel (or one entry for the whole tensor): v = rms(x, mult, shift) + bias. */
export interface Requant {
  readonly mult: Int32Array;
  readonly shift: Uint8Array;
  readonly bias: Int32Array;
}

export type CodeRule =
  | { readonly kind: 'thresholds'; readonly thresholds: Int32Array; readonly values: Int32Array }
  | { readonly kind: 'round'; readonly fracBits: number; readonly minCode: number; readonly maxCode: number };

/** The quantization of a value v (after requantization) to the integer an activation tensor holds. */
export interface ActivationQuant {
  readonly relu: boolean;
  /** Upper clip of v (clipped ReLU such as ReLU6, in units of v), or null. */
  readonly ceiling: number | null;
  /** v of real 0 (the quantizer's offset moved it off 0): the ReLU's floor. */
  readonly zeroPoint: number;
  readonly rule: CodeRule;
}

/** Packed weights: one level index per weight (OIHW order) and the index -> integer table. */
export interface WeightTensor {
  readonly bits: number;
  /** 'apot': sums of powers of two; 'uniform': evenly spaced integers; 'int8': 8-bit first/last layers. */
  readonly scheme: 'apot' | 'uniform' | 'int8';
  readonly levels: Int32Array;
  readonly codes: Uint8Array;
}

export interface Shortcut {
  readonly input: number;
  readonly stride: number;
  readonly channelOffset: number;
  readonly mult: number;
  readonly shift: number;
}

export type Epilogue =
  | ({ readonly kind: 'activation' } & ActivationQuant)
  | { readonly kind: 'residual'; readonly relu: boolean; readonly ceiling: number | null; readonly bits: number; readonly shortcut: Shortcut | null }
  | { readonly kind: 'logits' };

export interface InputOp {
  readonly kind: 'input';
  readonly output: number;
  /** channels * 256 entries: the normalized pixel in units of the output scale (int8 or int16 values). */
  readonly lut: Int16Array;
}

export interface ConvOp {
  readonly kind: 'conv';
  /** The layer of the trained model this op comes from (e.g. `layer2.0.conv1`). */
  readonly name: string;
  readonly input: number;
  readonly output: number;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernel: Pair;
  readonly stride: Pair;
  readonly padding: Pair;
  /** Channel groups (1: dense; inChannels = outChannels = groups: depthwise). */
  readonly groups: number;
  readonly weights: WeightTensor;
  readonly requant: Requant;
  readonly epilogue: Epilogue;
}

export interface QuantizeOp extends ActivationQuant {
  readonly kind: 'quantize';
  readonly name: string;
  readonly input: number;
  readonly output: number;
  readonly requant: Requant;
}

export interface PoolOp {
  readonly kind: 'sumpool' | 'maxpool';
  readonly name: string;
  readonly input: number;
  readonly output: number;
  readonly kernel: Pair;
  readonly stride: Pair;
  readonly padding: Pair;
}

/** One input of an `add`: rescaled by rms(x, mult, shift) to the output's units. */
export interface AddInput {
  readonly input: number;
  readonly mult: number;
  readonly shift: number;
}

export interface AddOp {
  readonly kind: 'add';
  readonly name: string;
  readonly a: AddInput;
  readonly b: AddInput;
  readonly output: number;
  readonly relu: boolean;
  readonly ceiling: number | null;
  /** 8 or 16: the output's storage bits (int8 or int16). */
  readonly bits: number;
}

export type Op = InputOp | ConvOp | QuantizeOp | PoolOp | AddOp;

export interface ModelMeta {
  /** Architecture name (e.g. `resnet20`). */
  readonly model: string;
  readonly method: string;
  readonly wbits: number;
  readonly abits: number;
  readonly firstLast: string;
  /** Per-channel normalization of pixel/255 that the trained model expects (folded into the input LUT). */
  readonly normalization: { readonly mean: readonly number[]; readonly std: readonly number[] };
  readonly residualBits: number;
  readonly classes: readonly string[];
  /** Deviations from the fake-quantized model and lowering warnings, one sentence each. */
  readonly notes: readonly string[];
}

export interface IntegerModel {
  readonly version: number;
  readonly meta: ModelMeta;
  readonly tensors: readonly TensorInfo[];
  readonly ops: readonly Op[];
  /** The int32 logits tensor. */
  readonly output: number;
}

/** Elements of a tensor. */
export function tensorSize(t: TensorInfo): number {
  return t.shape[0] * t.shape[1] * t.shape[2];
}

/** The image the model takes: [C, H, W] of the input op's output. */
export function inputShape(model: IntegerModel): readonly [number, number, number] {
  const op = model.ops[0];
  if (op?.kind !== 'input') throw new Error('integer model: the first op must be the input op');
  return model.tensors[op.output].shape;
}

/** Output size of a convolution along one axis. */
export function convOutSize(size: number, kernel: number, stride: number, padding: number): number {
  return Math.floor((size + 2 * padding - kernel) / stride) + 1;
}
