/**
 * Fixed 8-bit weight quantization for the first and last layers (spec §1.6, §6.2):
 * - 'apot': the APoT reference wrapper, round(w / max(w) * 127) * max(w) / 127 with the *signed*
 *   maximum and no clamp (codes can go below -127);
 * - 'symmetric': max|w| and codes in [-127, 127], what a device runs.
 * Straight-through gradient in both cases; nothing learnable.
 */
import type { QuantSpec } from '../backend/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import { type IntegerForm, type TensorQuantizer, fakeQuantize, fixedOp, tensorStats } from './quantizer.js';
import { uniformSpec } from './uniform.js';

export type Int8Mode = 'apot' | 'symmetric';

export class Int8WeightQuantizer implements TensorQuantizer {
  readonly method = 'int8' as const;
  readonly role = 'weight' as const;
  readonly bits = 8;
  readonly parameters = [];
  readonly buffers = [];
  readonly needsCalibration = false;
  #lastSpec: QuantSpec | null = null;
  #codeRange: [number, number] = [-127, 127];

  constructor(readonly mode: Int8Mode) {}

  apply(w: Tensor, layer: string): Tensor {
    const { min, max } = tensorStats(w)[0];
    const m = this.mode === 'apot' ? max : Math.max(Math.abs(min), Math.abs(max));
    if (!(m > 0) || !Number.isFinite(m)) throw new Error(`${layer}: 8-bit weight quantization needs a positive weight maximum, got ${m}`);
    const spec = uniformSpec(m, 0, m, 0, 127, { lo: this.mode === 'apot' ? -Infinity : -1, hi: this.mode === 'apot' ? Infinity : 1, passClipped: true });
    this.#lastSpec = spec;
    this.#codeRange = [Math.min(-127, Math.round((min / m) * 127)), 127];
    return fakeQuantize(w, fixedOp(spec));
  }

  calibrate(): void {}

  integerForm(): IntegerForm {
    const spec = this.#lastSpec;
    if (!spec) throw new Error('int8: integerForm() before any forward pass');
    const [lo, hi] = this.#codeRange;
    return {
      method: 'int8',
      role: 'weight',
      bits: 8,
      signed: true,
      codes: Int32Array.from({ length: hi - lo + 1 }, (_, k) => lo + k),
      scale: Float64Array.of(spec.outScale[0] / 127),
      spec,
    };
  }
}
