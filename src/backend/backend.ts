/**
 * The backend boundary: every numeric operation of tinyquant goes through this one interface.
 *
 * Two implementations exist: `js` (pure TypeScript, the reference) and `native` (a Node-API addon
 * over oneDNN). Semantics are defined on *logical* row-major tensors (NCHW for images, OIHW for
 * convolution weights, (N, C) for matrices); a backend may keep a buffer in any physical layout it
 * likes (the native one keeps activations in oneDNN's blocked layouts) as long as `download` returns
 * the logical row-major values.
 *
 * Ownership: every method that returns a `Buf` returns a new buffer that the caller owns and must
 * release with `free` (the autograd layer does this deterministically at the end of each step).
 * Methods named `...InPlace` or documented as updating an argument write into that argument.
 * No method keeps a reference to its arguments after it returns, except where documented
 * (`BatchNormSaved` holds what backward needs).
 *
 * Floating point: float32 storage. Reductions that produce a JavaScript `number` (sums, dot
 * products, statistics) accumulate in double precision.
 */

export type Shape = readonly number[];

export type BackendName = 'js' | 'native';

/** A backend-owned buffer of float32 values with a logical shape. */
export interface Buf {
  readonly shape: Shape;
  readonly backend: BackendName;
}

export interface Conv2dParams {
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
  readonly groups: number;
}

export interface Pool2dParams {
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
}

/**
 * Opaque state that a training-mode batch norm forward hands to its backward: batch mean,
 * batch variance (biased) or inverse std, and, where the backend fused the ReLU, its mask.
 * Owned by the caller; release with `freeSaved`.
 */
export interface BatchNormSaved {
  readonly backend: BackendName;
}

export interface BatchNormParams {
  readonly eps: number;
  /** PyTorch convention: running = (1 - momentum) * running + momentum * batch. */
  readonly momentum: number;
  /** Apply ReLU to the output (fused). Backward then masks the incoming gradient by output > 0. */
  readonly relu: boolean;
}

export interface CrossEntropyResult {
  /** Mean loss over the batch (with label smoothing applied when requested). */
  readonly loss: number;
  /** Softmax probabilities, (N, C); the backward needs them. Caller owns it. */
  readonly probs: Buf;
  /** Number of rows whose arg-max equals the label (ties: lowest index wins). */
  readonly correct: number;
}

/**
 * PyTorch SGD: g' = g + wd p; v = momentum v + (1 - dampening) g'; p -= lr (nesterov ? g' + momentum v : v).
 * The caller starts from a zero buffer and passes dampening 0 on a parameter's first step, which
 * gives PyTorch's "v = g' on the first step".
 */
export interface SgdParams {
  readonly lr: number;
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;
}

export interface AdamParams {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** AdamW (decoupled: p -= lr * wd * p) when true; Adam with L2 added to the gradient when false. */
  readonly decoupled: boolean;
  /** 1-based step count, for bias correction. */
  readonly step: number;
}

/**
 * One fused quantize-dequantize pass shared by every quantization method. Per element, with
 * c the channel (dimension 0 split in `channels` equal contiguous chunks; 1 = per tensor):
 *
 *   xn = (x - offset[c]) / scale[c]                     normalized value
 *   xc = clip(xn, lo, hi)
 *   q  = project(xc)                                     see `levels` / `steps` / `symmetric`
 *   y  = q * outScale[c] + outOffset[c]
 *
 * `lo` and `hi` may be -Infinity / +Infinity: no clipping on that side. xn is computed in float32,
 * dividing (not multiplying by a reciprocal), so that clip decisions match PyTorch's.
 *
 * project: with `levels` (strictly increasing, non-negative, normalized) the nearest level, ties to
 * the lower one (APoT; found by binary search over exact midpoints, never by a distance to every
 * level); otherwise a uniform grid `roundHalfEven(xc * steps) / steps`. With `symmetric`, the
 * projection is applied to |xc| and the sign restored (sign(0) = 0).
 *
 * Backward, given the upstream gradient g of y:
 *   inside = lo <(=) xn <(=) hi   (inclusivity per `loInclusive` / `hiInclusive`)
 *   g'     = g * (1 + delta * sign(g) * (xc - q))        EWGS element-wise scaling (delta = 0: STE)
 *   gx     = (inside || passClipped ? g' : 0) * outScale[c] / scale[c]
 * and, per channel, the sums (float64):
 *   [0] sum over inside of g'          [1] sum over inside of g' * xn
 *   [2] sum over inside of g' * (q - xn)
 *   [3] sum of g over outside elements below the range   [4] ... above the range
 * from which each method derives the gradients of its own scalar parameters. With
 * `onlyClippedSums` (a method whose rule reads [3] and [4] only, or that has no parameters), [0..2]
 * are 0 and a backend may skip the projection where the gradient does not need it (delta = 0).
 */
export interface QuantSpec {
  readonly channels: number;
  readonly scale: Float32Array;
  readonly offset: Float32Array;
  readonly outScale: Float32Array;
  readonly outOffset: Float32Array;
  readonly lo: number;
  readonly hi: number;
  readonly symmetric: boolean;
  readonly levels: Float32Array | null;
  readonly steps: number;
  readonly loInclusive: boolean;
  readonly hiInclusive: boolean;
  readonly passClipped: boolean;
  readonly delta: number;
  readonly onlyClippedSums?: boolean;
}

export const QUANT_SUMS = 5;

/** Per-channel statistics in one pass: [sum, sumSq, min, max, absSum] for each channel (float64). */
export const STAT_FIELDS = 5;

export interface Backend<B extends Buf = Buf, S extends BatchNormSaved = BatchNormSaved> {
  readonly name: BackendName;
  /** Worker threads the backend uses for one op (1 for `js`). */
  readonly threads: number;

  // ---- memory -----------------------------------------------------------------------------
  upload(data: Float32Array, shape: Shape): B;
  /** Logical row-major copy of the values. */
  download(x: B): Float32Array;
  zeros(shape: Shape): B;
  /** A copy with the same shape (and the same physical layout). */
  clone(x: B): B;
  free(x: B): void;
  freeSaved(s: S): void;
  /** Row-major reinterpretation to a shape of the same size; returns a new buffer. */
  reshape(x: B, shape: Shape): B;
  /** Bytes of backend memory currently allocated (live buffers), for leak checks. */
  liveBytes(): number;

  // ---- elementwise and reductions -------------------------------------------------------------
  /** a + b (same shape). */
  add(a: B, b: B): B;
  /** max(a + b, 0): a residual join. */
  addRelu(a: B, b: B): B;
  /** alpha * x + beta, elementwise. */
  affine(x: B, alpha: number, beta: number): B;
  /** a * b elementwise (same shape). */
  mul(a: B, b: B): B;
  relu(x: B): B;
  /** gy where y > 0, else 0 (y is the ReLU output). */
  reluBackward(gy: B, y: B): B;
  /** min(max(x, 0), ceiling) (ReLU6 for ceiling 6); NaN stays NaN. `ceiling` must be positive and finite. */
  clippedRelu(x: B, ceiling: number): B;
  /**
   * gy where 0 < y < ceiling (strictly), else 0 (y is the clipped ReLU output), as PyTorch's
   * hardtanh backward: the gradient is 0 at both clipping points.
   */
  clippedReluBackward(gy: B, y: B, ceiling: number): B;
  tanh(x: B): B;
  /** gy * (1 - y^2) (y is the tanh output). */
  tanhBackward(gy: B, y: B): B;
  /** dst += alpha * src, in place. */
  axpyInPlace(dst: B, src: B, alpha: number): void;
  /** sum(a * b) in float64. */
  dot(a: B, b: B): number;
  /** Per-channel (dimension-0 chunks) [sum, sumSq, min, max, absSum]; length STAT_FIELDS * channels. */
  stats(x: B, channels: number): Float64Array;
  /** Number of elements that are NaN or infinite. */
  countNonFinite(x: B): number;

  // ---- convolution ----------------------------------------------------------------------------
  /** x (N, C, H, W), w (O, C/groups, kh, kw), bias (O) or null -> (N, O, OH, OW). */
  conv2d(x: B, w: B, bias: B | null, p: Conv2dParams): B;
  conv2dBackwardData(gy: B, w: B, xShape: Shape, p: Conv2dParams): B;
  /** Gradient of the weight (and of the bias when `withBias`). */
  conv2dBackwardWeights(gy: B, x: B, wShape: Shape, withBias: boolean, p: Conv2dParams): { gw: B; gb: B | null };

  // ---- batch normalization (input (N, C) or (N, C, H, W)) --------------------------------------
  /** Batch statistics; updates runningMean / runningVar in place (unbiased variance, PyTorch style). */
  batchNormTrain(x: B, gamma: B, beta: B, runningMean: B, runningVar: B, p: BatchNormParams): { y: B; saved: S };
  batchNormInfer(x: B, gamma: B, beta: B, runningMean: B, runningVar: B, p: BatchNormParams): B;
  /** y is the forward output (needed when `p.relu`). */
  batchNormBackward(gy: B, x: B, y: B, gamma: B, saved: S, p: BatchNormParams): { gx: B; gGamma: B; gBeta: B };

  /**
   * `quantize(batchNormTrain(x, ...).y, spec)` without storing the batch-norm output: the input of a
   * quantized layer after batch norm (and ReLU) in training. `spec` must be per tensor (1 channel).
   * Updates the running statistics as batchNormTrain does; returns the quantized output as `y`.
   */
  batchNormQuantizeTrain(x: B, gamma: B, beta: B, runningMean: B, runningVar: B, p: BatchNormParams, spec: QuantSpec): { y: B; saved: S };
  /** Backward of batchNormQuantizeTrain from the gradient of its output; `sums` are the quantizer's (see QuantSpec). */
  batchNormQuantizeBackward(
    gq: B, x: B, gamma: B, beta: B, saved: S, p: BatchNormParams, spec: QuantSpec,
  ): { gx: B; gGamma: B; gBeta: B; sums: Float64Array };

  // ---- pooling ------------------------------------------------------------------------------
  avgPool2d(x: B, p: Pool2dParams): B;
  avgPool2dBackward(gy: B, xShape: Shape, p: Pool2dParams): B;
  /**
   * Max over each window (PyTorch's max_pool2d, ceil_mode = false): padding positions never win
   * (they count as -infinity), a NaN in a window wins over every number.
   */
  maxPool2d(x: B, p: Pool2dParams): B;
  /**
   * The gradient goes to the one input position that maxPool2d picked in each window: the first
   * maximum in window order (rows, then columns), or the last NaN, as PyTorch does; overlapping
   * windows add up. x is the forward input (the position is recomputed from it).
   */
  maxPool2dBackward(gy: B, x: B, p: Pool2dParams): B;
  /** (N, C, H, W) -> (N, C): mean over H and W. */
  globalAvgPool(x: B): B;
  globalAvgPoolBackward(gy: B, xShape: Shape): B;

  // ---- fully connected -------------------------------------------------------------------------
  /** x (N, K), w (M, K), bias (M) or null -> (N, M). */
  linear(x: B, w: B, bias: B | null): B;
  linearBackwardData(gy: B, w: B): B;
  linearBackwardWeights(gy: B, x: B, withBias: boolean): { gw: B; gb: B | null };

  // ---- ResNet option-A shortcut ----------------------------------------------------------------
  /**
   * Take every `stride`-th pixel (starting at 0) and zero-pad channels: `padBefore` zero channels,
   * the input channels, then `padAfter` zero channels.
   */
  shortcutPad(x: B, stride: number, padBefore: number, padAfter: number): B;
  shortcutPadBackward(gy: B, xShape: Shape, stride: number, padBefore: number): B;

  // ---- loss -----------------------------------------------------------------------------------
  /**
   * Softmax cross-entropy of logits (N, C) against integer labels, mean over N. With label
   * smoothing s the target is (1 - s) one-hot + s / C.
   */
  softmaxCrossEntropy(logits: B, labels: Int32Array, smoothing: number): CrossEntropyResult;
  /** Gradient of the mean loss w.r.t. the logits, times `scale` (the upstream gradient). */
  softmaxCrossEntropyBackward(probs: B, labels: Int32Array, smoothing: number, scale: number): B;

  // ---- optimizers (update param and state in place) -------------------------------------------
  sgdStep(param: B, grad: B, momentumBuf: B | null, p: SgdParams): void;
  adamStep(param: B, grad: B, m: B, v: B, p: AdamParams): void;

  // ---- quantization ---------------------------------------------------------------------------
  quantize(x: B, spec: QuantSpec): B;
  /**
   * The residual join y = addRelu(a, b) and q = quantize(y, spec) in one pass: the join's output
   * and the next quantized layer's input. `spec` must be per tensor (1 channel).
   */
  addReluQuantize(a: B, b: B, spec: QuantSpec): { y: B; q: B };
  /**
   * Returns gx and the per-channel sums (length QUANT_SUMS * channels). With `accumulate` (a
   * gradient of x's shape), gx is added into it in place and `accumulate` itself is returned as gx.
   */
  quantizeBackward(x: B, gy: B, spec: QuantSpec, accumulate?: B): { gx: B; sums: Float64Array };
}

/** Number of elements of a shape. */
export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

/** Output spatial size of a convolution or pooling window. */
export function outSize(inSize: number, kernel: number, stride: number, pad: number): number {
  return Math.floor((inSize + 2 * pad - kernel) / stride) + 1;
}
