/**
 * EWGS: element-wise gradient scaling (Lee, Kim, Ham, CVPR 2021), as the reference code defines it
 * (spec: shared/docs/quant-methods.md §2).
 *
 * Learnable lower and upper bounds l, u per tensor: xn = clip((x - l) / (u - l), 0, 1), uniform
 * rounding onto L = 2^b levels, weights mapped to [-1, 1], activations kept in [0, 1]; the layer
 * multiplies its output by |output_scale|. Backward: g * (1 + delta * sign(g) * (xn - xq)), with
 * delta fixed or estimated from the Hessian trace (src/quant/hessian.ts).
 */
import type { Buf, QuantSpec, Shape } from '../backend/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import {
  type IntegerForm,
  type NamedBuffer,
  type NamedParameter,
  type Role,
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
  scalarBuffer,
  tensorStats,
} from './quantizer.js';

/** Hooks of the Hessian estimation into a quantizer's forward and backward. */
export interface EwgsProbe {
  apply(x: Tensor, layer: string): Tensor;
  /** Receives the gradient w.r.t. the quantizer's output during backward. */
  observe(gOut: Buf): void;
}

export const EWGS_BITS = [1, 2, 3, 4, 5, 6, 7, 8] as const;

/** 1 / sqrt(1 - 2/pi): scales the std of post-ReLU activations (half-normal) for u_A's init. */
const HALF_NORMAL_STD_FACTOR = 1 / Math.sqrt(1 - 2 / Math.PI);

export interface EwgsOptions {
  readonly bits: number;
  readonly role: Role;
  /** Fixed backward scaling factor delta (0 = plain STE, the reference's `--baseline`). */
  readonly delta?: number;
  readonly perChannel?: boolean;
  /** Output channels of the weight, for per-channel bounds. */
  readonly channels?: number;
}

export class EwgsQuantizer implements TensorQuantizer {
  readonly method = 'ewgs' as const;
  readonly role: Role;
  readonly bits: number;
  readonly lower: ReturnType<typeof quantParameter>;
  readonly upper: ReturnType<typeof quantParameter>;
  /** The backward scaling factor, a buffer like the reference's `bkwd_scaling_factorW/A`. */
  readonly deltaBuffer: Tensor;
  readonly parameters: readonly NamedParameter[];
  readonly buffers: readonly NamedBuffer[];
  readonly needsCalibration = true;
  /** Set during Hessian estimation (src/quant/hessian.ts): replaces the forward, observes gradients. */
  probe: EwgsProbe | null = null;
  readonly #levels: number;
  readonly #channels: number;
  #lastSpec: QuantSpec | null = null;

  constructor(opts: EwgsOptions) {
    checkBits('ewgs', opts.role, opts.bits, EWGS_BITS);
    this.role = opts.role;
    this.bits = opts.bits;
    this.#levels = 2 ** opts.bits;
    this.#channels = opts.role === 'weight' && opts.perChannel ? (opts.channels ?? 1) : 1;
    // Placeholders until calibrate() sets them from data, as the reference initializes them.
    this.lower = quantParameter(0, this.#channels);
    this.upper = quantParameter(1, this.#channels);
    this.deltaBuffer = scalarBuffer(opts.delta ?? 0);
    const suffix = opts.role === 'weight' ? 'W' : 'A';
    this.parameters = [
      [`u${suffix}`, this.upper],
      [`l${suffix}`, this.lower],
    ];
    this.buffers = [[`bkwd_scaling_factor${suffix}`, this.deltaBuffer]];
  }

  /** The backward scaling factor; it lives in its buffer so that checkpoints carry it. */
  get delta(): number {
    return this.deltaBuffer.item();
  }

  set delta(value: number) {
    if (!(value >= 0) || !Number.isFinite(value)) throw new Error(`ewgs: delta must be finite and >= 0, got ${value}`);
    this.deltaBuffer.assign(Float32Array.of(value));
  }

  /** The spec of the most recent forward pass. */
  get lastSpec(): QuantSpec | null {
    return this.#lastSpec;
  }

  /** Outputs per unit of xq: 2 for weights ([-1, 1]), 1 for activations ([0, 1]). */
  get outScale(): number {
    return this.role === 'weight' ? 2 : 1;
  }

  spec(layer: string): QuantSpec {
    const l = checkedValues(this.lower, `lower bound (l${this.role === 'weight' ? 'W' : 'A'})`, layer, 'ewgs', false);
    const u = checkedValues(this.upper, `upper bound (u${this.role === 'weight' ? 'W' : 'A'})`, layer, 'ewgs', false);
    const width = Array.from(u, (ui, c) => ui - l[c]);
    if (width.some((w) => !(w > 0))) {
      throw new Error(`${layer}: ewgs ${this.role} interval is empty or inverted (u - l = ${width.join(', ')}); the quantizer diverged`);
    }
    return {
      channels: this.#channels,
      scale: channelArray(width, this.#channels),
      offset: l,
      outScale: channelArray(this.outScale, this.#channels),
      outOffset: channelArray(this.role === 'weight' ? -1 : 0, this.#channels),
      lo: 0,
      hi: 1,
      symmetric: false,
      levels: null,
      steps: this.#levels - 1,
      loInclusive: true,
      hiInclusive: true,
      passClipped: false,
      delta: this.delta,
    };
  }

  apply(x: Tensor, layer: string): Tensor {
    return this.probe ? this.probe.apply(x, layer) : this.applyDirect(x, layer);
  }

  /** The quantizer's own forward, also when a probe is installed. */
  applyDirect(x: Tensor, layer: string): Tensor {
    const probe = this.probe;
    return fakeQuantize(x, { ...this.#op(layer), observe: probe ? (g: Buf) => probe.observe(g) : undefined });
  }

  fakeQuantOp(_shape: Shape, layer: string): FakeQuantOp | null {
    return this.probe ? null : this.#op(layer);
  }

  #op(layer: string): FakeQuantOp {
    const spec = this.spec(layer);
    this.#lastSpec = spec;
    const k = this.outScale;
    const width = spec.scale;
    // dL/dl = sum_in g_xn (xn - 1) / (u - l), dL/du = -sum_in g_xn xn / (u - l), g_xn = outScale * g'.
    return {
      spec,
      params: [this.upper, this.lower],
      rule: (sums) => [
        perChannel(sums, (c) => (-k * quantSum(sums, S.insideX, c)) / width[c]),
        perChannel(sums, (c) => (k * (quantSum(sums, S.insideX, c) - quantSum(sums, S.inside, c))) / width[c]),
      ],
    };
  }

  /** Reference init: weights l, u = -+3 std(W); activations l = min(a), u = 3 std(a) / sqrt(1 - 2/pi). */
  calibrate(x: Tensor): void {
    if (this.role === 'weight') {
      const stats = tensorStats(x, this.#channels);
      this.upper.assign(Float32Array.from(stats, (s) => 3 * s.std));
      this.lower.assign(Float32Array.from(stats, (s) => -3 * s.std));
    } else {
      const [s] = tensorStats(x);
      this.upper.assign(Float32Array.of(3 * s.std * HALF_NORMAL_STD_FACTOR));
      this.lower.assign(Float32Array.of(s.min));
    }
  }

  integerForm(): IntegerForm {
    const spec = this.#lastSpec;
    if (!spec) throw new Error('ewgs: integerForm() before any forward pass');
    const n = this.#levels - 1;
    // Weights: value = (2k - n) / n; activations: value = k / n (k = 0..n).
    const codes = Int32Array.from({ length: n + 1 }, (_, k) => (this.role === 'weight' ? 2 * k - n : k));
    return {
      method: 'ewgs',
      role: this.role,
      bits: this.bits,
      signed: this.role === 'weight',
      codes,
      scale: new Float64Array(spec.channels).fill(1 / n),
      spec,
    };
  }
}
