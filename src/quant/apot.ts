/**
 * APoT: additive powers-of-two quantization (Li, Dong, Wang, ICLR 2020), as the reference code
 * defines it (spec: shared/docs/quant-methods.md §1).
 *
 * Weights: standardized over the whole layer, divided by a learnable alpha, clipped to [-1, 1],
 * projected (by magnitude) onto the APoT level set of b - 1 bits, scaled back by alpha; 2-bit
 * weights are ternary. Activations: divided by alpha, clipped at 1, projected onto the unsigned
 * level set of b bits. Alpha's gradient is the RCF rule (projection error inside, +-1 outside).
 */
import type { QuantSpec, Shape } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import { record, type Tensor } from '../tensor/tensor.js';
import {
  type IntegerForm,
  type NamedParameter,
  type TensorQuantizer,
  type FakeQuantOp,
  S,
  channelArray,
  checkBits,
  checkedValues,
  fakeQuantize,
  perChannel,
  quantParameter,
  quantSum,
  tensorStats,
} from './quantizer.js';

/** The two reference versions differ in gradients and initial alphas (spec §1.10). */
export type ApotVariant = 'cifar' | 'imagenet';

/** Term sets of the reference `build_power_value(B)`, as exponents of 2 (0 is always allowed too). */
const TERM_EXPONENTS: Record<number, number[][]> = {
  2: [[1, 2, 3]],
  3: [[1, 2, 4], [3]],
  4: [[1, 3, 5], [2, 4, 6]],
  5: [[1, 3, 6], [2, 4, 7], [5]],
  6: [[1, 4, 7], [2, 5, 8], [3, 6, 9]],
};

/**
 * The APoT level set of an unsigned budget of B bits as exact integer numerators over a common
 * denominator: level = numerator / denominator, sorted, 0 first, denominator last. B = 1 is the
 * uniform {0, 1} (2-bit ternary weights).
 */
export function apotIntegerLevels(B: number): { numerators: number[]; denominator: number } {
  if (B === 1) return { numerators: [0, 1], denominator: 1 };
  const sets = TERM_EXPONENTS[B];
  if (!sets) throw new Error(`apot: no level set for ${B} bits`);
  // Work in units of 2^-maxExponent so every sum is an exact integer.
  const maxExp = Math.max(...sets.flat());
  let sums = [0];
  for (const set of sets) {
    const terms = [0, ...set.map((e) => 2 ** (maxExp - e))];
    sums = sums.flatMap((s) => terms.map((t) => s + t));
  }
  const unique = [...new Set(sums)].sort((a, b) => a - b);
  const max = unique[unique.length - 1];
  const g = unique.reduce((acc, v) => gcd(acc, v), max);
  return { numerators: unique.map((v) => v / g), denominator: max / g };
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** Normalized levels in [0, 1] (the reference's float32 values: the float32 nearest each fraction). */
export function apotLevels(B: number): Float32Array {
  const { numerators, denominator } = apotIntegerLevels(B);
  return Float32Array.from(numerators, (n) => n / denominator);
}

export const APOT_WEIGHT_BITS = [2, 3, 4, 5] as const;
export const APOT_ACT_BITS = [2, 3, 4, 5] as const;

export interface ApotWeightOptions {
  readonly bits: number;
  readonly variant?: ApotVariant;
  readonly perChannel?: boolean;
  readonly channels?: number;
  /**
   * Pass the weight gradient also where |w/alpha| > 1 ("calibrated gradient"). The CIFAR code
   * always does; the ImageNet code does at 2 bits only. Overrides the variant's rule when set.
   */
  readonly calibratedGradient?: boolean;
  /** Multiply alpha's gradient by this constant (ImageNet code option, off = 1). */
  readonly alphaGradScale?: number;
  readonly initAlpha?: number;
}

export class ApotWeightQuantizer implements TensorQuantizer {
  readonly method = 'apot' as const;
  readonly role = 'weight' as const;
  readonly bits: number;
  readonly variant: ApotVariant;
  readonly alpha: ReturnType<typeof quantParameter>;
  readonly parameters: readonly NamedParameter[];
  readonly buffers = [];
  readonly needsCalibration = false;
  readonly #levels: Float32Array | null;
  readonly #passClipped: boolean;
  readonly #alphaGradScale: number;
  readonly #channels: number;
  #lastSpec: QuantSpec | null = null;

  constructor(opts: ApotWeightOptions) {
    checkBits('apot', 'weight', opts.bits, APOT_WEIGHT_BITS);
    this.bits = opts.bits;
    this.variant = opts.variant ?? 'cifar';
    this.#channels = opts.perChannel ? (opts.channels ?? 1) : 1;
    this.alpha = quantParameter(opts.initAlpha ?? 3.0, this.#channels);
    this.parameters = [['weight_quant.wgt_alpha', this.alpha]];
    // 2-bit weights are ternary: uniform rounding of the clipped value (the reference's fix).
    this.#levels = opts.bits === 2 ? null : apotLevels(opts.bits - 1);
    this.#passClipped = opts.calibratedGradient ?? (this.variant === 'cifar' || opts.bits === 2);
    this.#alphaGradScale = opts.alphaGradScale ?? 1;
  }

  apply(w: Tensor, layer: string): Tensor {
    const alpha = checkedValues(this.alpha, 'weight clipping alpha (wgt_alpha)', layer, 'apot', true);
    const { mean, std } = tensorStats(w)[0];
    if (!(std > 0)) throw new Error(`${layer}: apot cannot standardize weights with standard deviation ${std}`);
    // Standardization folds into the normalization: xn = (w - mean) / (std * alpha).
    const spec: QuantSpec = {
      channels: this.#channels,
      scale: channelArray(Array.from(alpha, (a) => a * std), this.#channels),
      offset: channelArray(mean, this.#channels),
      outScale: alpha,
      outOffset: channelArray(0, this.#channels),
      lo: -1,
      hi: 1,
      symmetric: this.#levels !== null,
      levels: this.#levels,
      steps: 1,
      loInclusive: true,
      hiInclusive: true,
      passClipped: this.#passClipped,
      delta: 0,
    };
    this.#lastSpec = spec;
    const k = this.#alphaGradScale;
    const input = this.variant === 'imagenet' ? throughStandardization(w, mean, std) : w;
    return fakeQuantize(input, {
      spec,
      params: [this.alpha],
      rule: (sums) => [
        perChannel(sums, (c) => k * (quantSum(sums, S.insideErr, c) + quantSum(sums, S.above, c) - quantSum(sums, S.below, c))),
      ],
    });
  }

  calibrate(): void {}

  integerForm(): IntegerForm {
    if (!this.#lastSpec) throw new Error('apot: integerForm() before any forward pass');
    const { numerators, denominator } = apotIntegerLevels(this.bits === 2 ? 1 : this.bits - 1);
    const codes = Int32Array.from(new Set([...numerators.map((n) => -n), ...numerators]), (v) => v).sort();
    return {
      method: 'apot',
      role: 'weight',
      bits: this.bits,
      signed: true,
      codes,
      scale: Float64Array.from(this.alpha.toArray(), (a) => a / denominator),
      spec: this.#lastSpec,
    };
  }
}

/**
 * The ImageNet code differentiates through the standardization (like Weight Standardization). The
 * fused op treats mean and std as constants and returns g = dL/dw~ / std; with w~ = (w - mean) / std
 * the full gradient is g - mean(g) - w~ * sum(g * w~) / (N - 1). This identity node, placed before
 * the quantizer, applies that projection to the gradient on its way back to w.
 */
function throughStandardization(w: Tensor, mean: number, std: number): Tensor {
  const be = getBackend();
  const n = w.size;
  return record('apotStandardize', be.clone(w.buf), [w], (g) => {
    const standardized = be.affine(w.buf, 1 / std, -mean / std);
    const sumG = be.stats(g, 1)[0];
    const projected = be.affine(g, 1, -sumG / n);
    be.axpyInPlace(projected, standardized, -be.dot(g, standardized) / (n - 1));
    be.free(standardized);
    return [projected];
  });
}

export interface ApotActivationOptions {
  readonly bits: number;
  readonly variant?: ApotVariant;
  readonly initAlpha?: number;
  readonly alphaGradScale?: number;
}

export class ApotActivationQuantizer implements TensorQuantizer {
  readonly method = 'apot' as const;
  readonly role = 'activation' as const;
  readonly bits: number;
  readonly variant: ApotVariant;
  readonly alpha: ReturnType<typeof quantParameter>;
  readonly parameters: readonly NamedParameter[];
  readonly buffers = [];
  readonly needsCalibration = false;
  readonly #levels: Float32Array;
  readonly #alphaGradScale: number;
  #lastSpec: QuantSpec | null = null;

  constructor(opts: ApotActivationOptions) {
    checkBits('apot', 'activation', opts.bits, APOT_ACT_BITS);
    this.bits = opts.bits;
    this.variant = opts.variant ?? 'cifar';
    this.alpha = quantParameter(opts.initAlpha ?? (this.variant === 'cifar' ? 8.0 : 6.0));
    this.parameters = [['act_alpha', this.alpha]];
    this.#levels = apotLevels(opts.bits);
    this.#alphaGradScale = opts.alphaGradScale ?? 1;
  }

  apply(a: Tensor, layer: string): Tensor {
    return fakeQuantize(a, this.fakeQuantOp(a.shape, layer));
  }

  fakeQuantOp(_shape: Shape, layer: string): FakeQuantOp {
    const [alpha] = checkedValues(this.alpha, 'activation clipping alpha (act_alpha)', layer, 'apot', true);
    const spec: QuantSpec = {
      channels: 1,
      scale: Float32Array.of(alpha),
      offset: Float32Array.of(0),
      outScale: Float32Array.of(alpha),
      outOffset: Float32Array.of(0),
      // The CIFAR code clamps only the top (inputs are post-ReLU); the ImageNet code clamps [0, 1].
      lo: this.variant === 'cifar' ? -Infinity : 0,
      hi: 1,
      symmetric: false,
      levels: this.#levels,
      steps: 1,
      loInclusive: true,
      hiInclusive: true,
      passClipped: false,
      delta: 0,
    };
    this.#lastSpec = spec;
    const k = this.#alphaGradScale;
    return {
      spec,
      params: [this.alpha],
      rule: (sums) => [Float32Array.of(k * (quantSum(sums, S.insideErr) + quantSum(sums, S.above)))],
    };
  }

  calibrate(): void {}

  integerForm(): IntegerForm {
    if (!this.#lastSpec) throw new Error('apot: integerForm() before any forward pass');
    const { numerators, denominator } = apotIntegerLevels(this.bits);
    return {
      method: 'apot',
      role: 'activation',
      bits: this.bits,
      signed: false,
      codes: Int32Array.from(numerators),
      scale: Float64Array.of(this.alpha.item() / denominator),
      spec: this.#lastSpec,
    };
  }
}
