/**
 * LSQ: learned step size quantization (Esser et al., ICLR 2020; spec §3.3).
 * v_bar = round(clip(v / s, -Q_N, Q_P)), v_hat = v_bar * s; signed weights use
 * Q_N = 2^(b-1), Q_P = 2^(b-1) - 1, unsigned activations Q_N = 0, Q_P = 2^b - 1.
 * d/dv passes strictly inside (-Q_N, Q_P); d/ds = sum g * (round(v/s) - v/s) inside, -Q_N below,
 * Q_P above, times the gradient scale 1/sqrt(N * Q_P), where N is the number of weights of the
 * layer for weights and the number of features per example (C*H*W) for activations (the paper's
 * "number of features" is ambiguous; this is our reading).
 */
import { type QuantSpec, type Shape, numel } from '../backend/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import {
  type IntegerForm,
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
  tensorStats,
} from './quantizer.js';

export const LSQ_BITS = [2, 3, 4, 5, 6, 7, 8] as const;

export interface LsqOptions {
  readonly role: Role;
  readonly bits: number;
  readonly perChannel?: boolean;
  readonly channels?: number;
}

export class LsqQuantizer implements TensorQuantizer {
  readonly method = 'lsq' as const;
  readonly role: Role;
  readonly bits: number;
  readonly step: ReturnType<typeof quantParameter>;
  readonly parameters: readonly NamedParameter[];
  readonly buffers = [];
  readonly needsCalibration: boolean;
  readonly qn: number;
  readonly qp: number;
  readonly #channels: number;
  #lastSpec: QuantSpec | null = null;

  constructor(opts: LsqOptions) {
    checkBits('lsq', opts.role, opts.bits, LSQ_BITS);
    this.role = opts.role;
    this.bits = opts.bits;
    const signed = opts.role === 'weight';
    this.qn = signed ? 2 ** (opts.bits - 1) : 0;
    this.qp = signed ? 2 ** (opts.bits - 1) - 1 : 2 ** opts.bits - 1;
    this.#channels = signed && opts.perChannel ? (opts.channels ?? 1) : 1;
    this.step = quantParameter(1, this.#channels);
    this.parameters = [[signed ? 'weight_step' : 'act_step', this.step]];
    this.needsCalibration = !signed;
  }

  apply(v: Tensor, layer: string): Tensor {
    return fakeQuantize(v, this.fakeQuantOp(v.shape, layer));
  }

  fakeQuantOp(shape: Shape, layer: string): FakeQuantOp {
    const s = checkedValues(this.step, `step size (${this.parameters[0][0]})`, layer, 'lsq', true);
    const c = this.#channels;
    const spec: QuantSpec = {
      channels: c,
      scale: s,
      offset: channelArray(0, c),
      outScale: s,
      outOffset: channelArray(0, c),
      lo: -this.qn,
      hi: this.qp,
      symmetric: false,
      levels: null,
      steps: 1,
      loInclusive: false,
      hiInclusive: false,
      passClipped: false,
      delta: 0,
    };
    this.#lastSpec = spec;
    const size = numel(shape);
    const perExample = this.role === 'weight' ? size / c : shape.length > 1 ? size / shape[0] : size;
    const gradScale = 1 / Math.sqrt(perExample * this.qp);
    const { qn, qp } = this;
    return {
      spec,
      params: [this.step],
      rule: (sums) => [
        perChannel(sums, (ch) => gradScale * (quantSum(sums, S.insideErr, ch) - qn * quantSum(sums, S.below, ch) + qp * quantSum(sums, S.above, ch))),
      ],
    };
  }

  /** s = 2 mean|v| / sqrt(Q_P), from the float weights or the first batch of activations. */
  calibrate(x: Tensor): void {
    const stats = tensorStats(x, this.#channels);
    this.step.assign(Float32Array.from(stats, (st) => (2 * st.meanAbs) / Math.sqrt(this.qp)));
  }

  integerForm(): IntegerForm {
    const spec = this.#lastSpec;
    if (!spec) throw new Error('lsq: integerForm() before any forward pass');
    return {
      method: 'lsq',
      role: this.role,
      bits: this.bits,
      signed: this.role === 'weight',
      codes: Int32Array.from({ length: this.qn + this.qp + 1 }, (_, k) => k - this.qn),
      scale: Float64Array.from(this.step.toArray()),
      spec,
    };
  }
}
