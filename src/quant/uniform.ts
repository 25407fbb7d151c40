/**
 * Uniform quantization with the straight-through estimator, DoReFa-style (spec §3.1).
 * Activations: round((2^k - 1) * clip(a, 0, 1)) / (2^k - 1). Weights (k >= 2):
 * t = tanh(w), wn = t / (2 max|t|) + 1/2, wq = 2 round((2^k - 1) wn) / (2^k - 1) - 1, with max|t|
 * treated as a constant (as most PyTorch reimplementations do; the original TensorFlow code
 * differentiated it). Weights (k = 1): sign(w) * mean|w|, mean|w| a constant, gradient passed
 * straight through. No learnable parameters.
 */
import type { QuantSpec } from '../backend/backend.js';
import * as ops from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import { type FakeQuantOp, type IntegerForm, type Role, type TensorQuantizer, checkBits, fakeQuantize, fixedOp, tensorStats } from './quantizer.js';

export const UNIFORM_BITS = [1, 2, 3, 4, 5, 6, 7, 8] as const;

/**
 * A per-tensor grid spec. Its users have no learnable parameter (DoReFa, 8-bit layers) or one whose
 * gradient sums clipped elements only (PACT's alpha), so the in-range sums are skipped.
 */
export function uniformSpec(scale: number, offset: number, outScale: number, outOffset: number, steps: number, rest: Partial<QuantSpec> = {}): QuantSpec {
  return {
    channels: 1,
    scale: Float32Array.of(scale),
    offset: Float32Array.of(offset),
    outScale: Float32Array.of(outScale),
    outOffset: Float32Array.of(outOffset),
    lo: 0,
    hi: 1,
    symmetric: false,
    levels: null,
    steps,
    loInclusive: true,
    hiInclusive: true,
    passClipped: false,
    delta: 0,
    onlyClippedSums: true,
    ...rest,
  };
}

export class UniformQuantizer implements TensorQuantizer {
  readonly method = 'uniform' as const;
  readonly role: Role;
  readonly bits: number;
  readonly parameters = [];
  readonly buffers = [];
  readonly needsCalibration = false;
  #lastSpec: QuantSpec | null = null;

  constructor(role: Role, bits: number) {
    checkBits('uniform', role, bits, UNIFORM_BITS);
    this.role = role;
    this.bits = bits;
  }

  apply(x: Tensor): Tensor {
    const n = 2 ** this.bits - 1;
    if (this.role === 'activation') return fakeQuantize(x, this.fakeQuantOp()!);
    if (this.bits === 1) {
      const m = tensorStats(x)[0].meanAbs;
      return this.#quantize(x, uniformSpec(m, 0, m, 0, 1, { lo: -Infinity, hi: Infinity, symmetric: true, levels: Float32Array.of(1) }));
    }
    const t = ops.tanh(x);
    const { min, max } = tensorStats(t)[0];
    const m = Math.max(Math.abs(min), Math.abs(max));
    return this.#quantize(t, uniformSpec(2 * m, -m, 2, -1, n));
  }

  /** Activations only: weights go through tanh (or a mean scale) first. */
  fakeQuantOp(): FakeQuantOp | null {
    if (this.role !== 'activation') return null;
    const spec = uniformSpec(1, 0, 1, 0, 2 ** this.bits - 1);
    this.#lastSpec = spec;
    return fixedOp(spec);
  }

  #quantize(x: Tensor, spec: QuantSpec): Tensor {
    this.#lastSpec = spec;
    return fakeQuantize(x, fixedOp(spec));
  }

  calibrate(): void {}

  integerForm(): IntegerForm {
    const spec = this.#lastSpec;
    if (!spec) throw new Error('uniform: integerForm() before any forward pass');
    const n = 2 ** this.bits - 1;
    const weight = this.role === 'weight';
    if (weight && this.bits === 1) {
      return { method: 'uniform', role: 'weight', bits: 1, signed: true, codes: Int32Array.of(-1, 1), scale: Float64Array.of(spec.outScale[0]), spec };
    }
    return {
      method: 'uniform',
      role: this.role,
      bits: this.bits,
      signed: weight,
      codes: Int32Array.from({ length: n + 1 }, (_, k) => (weight ? 2 * k - n : k)),
      scale: Float64Array.of(1 / n),
      spec,
    };
  }
}
