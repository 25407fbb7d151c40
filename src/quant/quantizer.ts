/**
 * The quantizer interface shared by every method, and the one differentiable fake-quantize op they
 * all reduce to (the backend's fused `quantize` / `quantizeBackward`, see QuantSpec).
 *
 * A method supplies, per tensor it quantizes, a QuantSpec (how to normalize, clip and project) and
 * a rule turning the backward's per-channel sums into gradients of its own parameters.
 */
import { type Buf, QUANT_SUMS, type QuantSpec, STAT_FIELDS, type Shape } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import type { BatchNorm } from '../nn/layers.js';
import { Parameter } from '../nn/module.js';
import { recordAddRelu } from '../tensor/ops.js';
import { Tensor, record } from '../tensor/tensor.js';

export type MethodName = 'apot' | 'ewgs' | 'uniform' | 'pact' | 'lsq';
export const methodNames: readonly MethodName[] = ['apot', 'ewgs', 'uniform', 'pact', 'lsq'];

export type Role = 'weight' | 'activation';

/** A training method, or the fixed 8-bit quantization of first and last layers. */
export type QuantizerKind = MethodName | 'int8';

/**
 * The integer form of a quantizer's output, for export: every output value is
 * `scale[c] * codes[k]` for some code index k (codes sorted ascending, small integers), and
 * `spec` maps an input to its code as in training.
 */
export interface IntegerForm {
  readonly method: QuantizerKind;
  readonly role: Role;
  readonly bits: number;
  readonly signed: boolean;
  /** Integer value of each representable level, ascending. */
  readonly codes: Int32Array;
  /** Real value of integer 1, per channel (one entry when per tensor). */
  readonly scale: Float64Array;
  readonly spec: QuantSpec;
}

/** A named tensor a quantizer contributes to its layer's state dict (dotted names allowed). */
export type NamedParameter = readonly [name: string, p: Parameter];
export type NamedBuffer = readonly [name: string, t: Tensor];

export interface TensorQuantizer {
  readonly method: QuantizerKind;
  readonly role: Role;
  readonly bits: number;
  /** Learnable parameters, named as the reference implementation names them. */
  readonly parameters: readonly NamedParameter[];
  readonly buffers: readonly NamedBuffer[];
  /** Whether an activation quantizer's `calibrate` must see a batch before the first training step. */
  readonly needsCalibration: boolean;
  /** Fake-quantize x (differentiable w.r.t. x and the parameters). */
  apply(x: Tensor, layer: string): Tensor;
  /**
   * The one fake-quantize op that `apply` runs on a tensor of this shape, so that the op producing
   * the tensor may run it fused (batch norm + ReLU + quantize); null when `apply` does more (weight
   * preprocessing, an EWGS Hessian probe). Absent on weight-only quantizers.
   */
  fakeQuantOp?(shape: Shape, layer: string): FakeQuantOp | null;
  /**
   * Data-driven initialization from the tensor this quantizer will see: the (loaded) float weights,
   * or a batch of inputs. Runs on the calibration pass (see quantize.ts `calibrate`).
   */
  calibrate(x: Tensor): void;
  integerForm(): IntegerForm;
}

/** A one-element (0-d, like PyTorch's scalar parameters) or per-channel quantizer parameter. */
export function quantParameter(value: number | Float32Array, channels = 1): Parameter {
  const values = typeof value === 'number' ? new Float32Array(channels).fill(value) : value;
  return new Parameter(values, channels === 1 && typeof value === 'number' ? [] : [values.length], 'quant');
}

/** A 0-d buffer (e.g. EWGS's backward scaling factor). */
export function scalarBuffer(value: number): Tensor {
  return Tensor.fromArray(Float32Array.of(value), []);
}

/** Values of a parameter after checking they are finite and, when `positive`, > 0. */
export function checkedValues(p: Tensor, what: string, layer: string, method: MethodName, positive: boolean): Float32Array {
  const values = p.toArray();
  for (const v of values) {
    if (!Number.isFinite(v) || (positive && v <= 0)) {
      throw new Error(
        `${layer}: ${method} ${what} is ${v}${positive ? ' (it must be finite and > 0)' : ' (it must be finite)'}; ` +
          'the quantizer parameters diverged (try a lower learning rate for the quantizer parameter group)',
      );
    }
  }
  return values;
}

export function checkBits(method: MethodName, role: Role, bits: number, supported: readonly number[]): void {
  if (!supported.includes(bits)) {
    throw new Error(`${method}: ${role} bit-width ${bits} is not supported (supported: ${supported.join(', ')})`);
  }
}

/** Parameter gradients computed from the backward's per-channel sums, one array per parameter. */
export type ParamGradRule = (sums: Float64Array) => Float32Array[];

/** Observer of the gradient w.r.t. the quantizer output (EWGS's Hessian estimation uses it). */
export type GradObserver = (gOut: Buf) => void;

/** One fake-quantize: the spec, and the parameters whose gradients `rule` computes from its sums (in order). */
export interface FakeQuantOp {
  readonly spec: QuantSpec;
  readonly params: readonly Tensor[];
  readonly rule: ParamGradRule;
  readonly observe?: GradObserver;
}

/** A fake-quantize with nothing learnable (DoReFa, 8-bit layers). */
export function fixedOp(spec: QuantSpec): FakeQuantOp {
  return { spec, params: [], rule: () => [] };
}

/** The differentiable fake-quantize op. */
export function fakeQuantize(x: Tensor, op: FakeQuantOp): Tensor {
  return recordFakeQuantize(x, getBackend().quantize(x.buf, op.spec), op);
}

/**
 * The residual join relu(a + b) and its fake-quantized form by `op` (per tensor), computed in one
 * backend pass: the block output and the next quantized layer's input.
 */
export function addReluFakeQuantize(a: Tensor, b: Tensor, op: FakeQuantOp): { y: Tensor; q: Tensor } {
  const { y, q } = getBackend().addReluQuantize(a.buf, b.buf, op.spec);
  const join = recordAddRelu(a, b, y);
  return { y: join, q: recordFakeQuantize(join, q, op) };
}

/** Record y = fake-quantize(x) by `op`, computed by the caller, on the tape. */
function recordFakeQuantize(x: Tensor, y: Buf, op: FakeQuantOp): Tensor {
  const be = getBackend();
  return record('fakeQuantize', y, [x, ...op.params], (g, pending) => {
    op.observe?.(g);
    // x's gradient from its other consumers (a residual shortcut) takes this one in place.
    const { gx, sums } = be.quantizeBackward(x.buf, g, op.spec, x.requiresGrad ? pending(x) : undefined);
    return [keepIf(x, gx), ...paramGrads(op, sums)];
  });
}

/**
 * bn(x) fake-quantized by `op` in one backend op that never stores the batch-norm output (training
 * mode; `op` per tensor): the input of a quantized layer that follows batch norm (and ReLU).
 */
export function batchNormFakeQuantize(x: Tensor, bn: BatchNorm, op: FakeQuantOp): Tensor {
  const be = getBackend();
  const p = bn.backendParams(x);
  const [gamma, beta] = [bn.weight, bn.bias];
  const { y, saved } = be.batchNormQuantizeTrain(x.buf, gamma.buf, beta.buf, bn.runningMean.buf, bn.runningVar.buf, p, op.spec);
  return record(
    'batchNormFakeQuantize',
    y,
    [x, gamma, beta, ...op.params],
    (g) => {
      op.observe?.(g);
      const r = be.batchNormQuantizeBackward(g, x.buf, gamma.buf, beta.buf, saved, p, op.spec);
      return [keepIf(x, r.gx), keepIf(gamma, r.gGamma), keepIf(beta, r.gBeta), ...paramGrads(op, r.sums)];
    },
    () => be.freeSaved(saved),
  );
}

/** The gradient when t needs one; else it is freed. */
function keepIf(t: Tensor, grad: Buf): Buf | null {
  if (t.requiresGrad) return grad;
  getBackend().free(grad);
  return null;
}

function paramGrads(op: FakeQuantOp, sums: Float64Array): (Buf | null)[] {
  const grads = op.params.some((p) => p.requiresGrad) ? op.rule(sums) : [];
  return op.params.map((p, i) => (p.requiresGrad ? getBackend().upload(grads[i], p.shape) : null));
}

/** Sum of field `k` (0..QUANT_SUMS-1) over all channels, or per channel. */
export function quantSum(sums: Float64Array, k: number, channel?: number): number {
  if (channel !== undefined) return sums[channel * QUANT_SUMS + k];
  let total = 0;
  for (let c = 0; c < sums.length / QUANT_SUMS; c++) total += sums[c * QUANT_SUMS + k];
  return total;
}

/** Indices of the per-channel sums (see QuantSpec). */
export const S = { inside: 0, insideX: 1, insideErr: 2, below: 3, above: 4 } as const;

/** Per-channel gradient from a per-channel formula over the sums. */
export function perChannel(sums: Float64Array, f: (channel: number) => number): Float32Array {
  const channels = sums.length / QUANT_SUMS;
  return Float32Array.from({ length: channels }, (_, c) => f(c));
}

/** Whole-tensor (or per-channel along dim 0) statistics. */
export interface TensorStats {
  readonly count: number;
  readonly mean: number;
  /** Unbiased (N - 1) standard deviation, as torch.std. */
  readonly std: number;
  readonly min: number;
  readonly max: number;
  readonly meanAbs: number;
}

export function tensorStats(x: Tensor, channels = 1): TensorStats[] {
  const raw = getBackend().stats(x.buf, channels);
  const count = x.size / channels;
  return Array.from({ length: channels }, (_, c) => {
    const [sum, sumSq, min, max, absSum] = raw.subarray(c * STAT_FIELDS, (c + 1) * STAT_FIELDS);
    const mean = sum / count;
    const variance = count > 1 ? Math.max(0, (sumSq - sum * mean) / (count - 1)) : 0;
    return { count, mean, std: Math.sqrt(variance), min, max, meanAbs: absSum / count };
  });
}

/** A per-channel (or per-tensor) float32 array from a number or per-channel values. */
export function channelArray(values: number | ArrayLike<number>, channels: number): Float32Array {
  return typeof values === 'number' ? new Float32Array(channels).fill(values) : Float32Array.from(values);
}

/** Channels of a weight (dimension 0) when quantized per channel. */
export function weightChannels(shape: Shape, perChannel: boolean): number {
  return perChannel ? shape[0] : 1;
}
