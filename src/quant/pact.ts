/**
 * PACT (Choi et al. 2018): activations clipped to [0, alpha] with a learnable alpha, then uniform
 * k-bit rounding (spec §3.2). d/da passes where 0 <= a < alpha; d/dalpha is the sum of the upstream
 * gradient over a >= alpha only. Its L2 regularization of alpha is the parameter group's weight
 * decay. Weights use the DoReFa scheme (src/quant/uniform.ts), as in the PACT paper.
 */
import type { QuantSpec, Shape } from '../backend/backend.js';
import type { Tensor } from '../tensor/tensor.js';
import {
  type IntegerForm,
  type NamedParameter,
  type TensorQuantizer,
  type FakeQuantOp,
  S,
  checkBits,
  checkedValues,
  fakeQuantize,
  quantParameter,
  quantSum,
} from './quantizer.js';
import { uniformSpec } from './uniform.js';

export const PACT_BITS = [1, 2, 3, 4, 5, 6, 7, 8] as const;

export class PactQuantizer implements TensorQuantizer {
  readonly method = 'pact' as const;
  readonly role = 'activation' as const;
  readonly bits: number;
  readonly alpha: ReturnType<typeof quantParameter>;
  readonly parameters: readonly NamedParameter[];
  readonly buffers = [];
  readonly needsCalibration = false;
  #lastSpec: QuantSpec | null = null;

  constructor(bits: number, initAlpha = 10) {
    checkBits('pact', 'activation', bits, PACT_BITS);
    this.bits = bits;
    this.alpha = quantParameter(initAlpha);
    this.parameters = [['act_alpha', this.alpha]];
  }

  apply(a: Tensor, layer: string): Tensor {
    return fakeQuantize(a, this.fakeQuantOp(a.shape, layer));
  }

  fakeQuantOp(_shape: Shape, layer: string): FakeQuantOp {
    const [alpha] = checkedValues(this.alpha, 'activation clipping alpha (act_alpha)', layer, 'pact', true);
    const spec = uniformSpec(alpha, 0, alpha, 0, 2 ** this.bits - 1, { hiInclusive: false });
    this.#lastSpec = spec;
    return { spec, params: [this.alpha], rule: (sums) => [Float32Array.of(quantSum(sums, S.above))] };
  }

  calibrate(): void {}

  integerForm(): IntegerForm {
    const spec = this.#lastSpec;
    if (!spec) throw new Error('pact: integerForm() before any forward pass');
    const n = 2 ** this.bits - 1;
    return {
      method: 'pact',
      role: 'activation',
      bits: this.bits,
      signed: false,
      codes: Int32Array.from({ length: n + 1 }, (_, k) => k),
      scale: Float64Array.of(spec.outScale[0] / n),
      spec,
    };
  }
}
