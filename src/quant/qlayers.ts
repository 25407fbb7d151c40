/**
 * Quantized layers: a convolution or linear layer that fake-quantizes its input with an activation
 * quantizer and its weight with a weight quantizer before the float op. They keep the float
 * weights of the layer they replace (QAT continues from them) and register the quantizers'
 * parameters and buffers under the reference implementations' names.
 */
import type { Shape } from '../backend/backend.js';
import { Conv2d, Linear } from '../nn/layers.js';
import { type Module, Parameter } from '../nn/module.js';
import * as ops from '../tensor/ops.js';
import { type Tensor, noGrad } from '../tensor/tensor.js';
import { type FakeQuantOp, type TensorQuantizer, quantParameter, tensorStats } from './quantizer.js';

export interface QuantizedLayer extends Module {
  readonly weightQuantizer: TensorQuantizer | null;
  readonly actQuantizer: TensorQuantizer | null;
  /** EWGS's learnable output scale (|alpha| multiplies the layer output; applied to the weights), or null. */
  readonly outputScale: Parameter | null;
  /** When set, the next forward pass initializes the quantizers from its input first. */
  calibrating: boolean;
  /** The layer on an input already on its activation quantizer's levels (not quantized again). */
  forwardQuantized(q: Tensor): Tensor;
}

export function isQuantizedLayer(m: Module): m is QuantizedLayer {
  return m instanceof QConv2d || m instanceof QLinear;
}

export interface QuantizerPair {
  readonly weight: TensorQuantizer | null;
  readonly activation: TensorQuantizer | null;
  readonly outputScale?: boolean;
}

/** Hand the quantizers' named parameters and buffers to the layer's registration functions. */
function attachQuantizers(q: QuantizerPair, addParameter: (name: string, p: Parameter) => void, addBuffer: (name: string, t: Tensor) => void): void {
  for (const quantizer of [q.weight, q.activation]) {
    for (const [name, p] of quantizer?.parameters ?? []) addParameter(name, p);
    for (const [name, t] of quantizer?.buffers ?? []) addBuffer(name, t);
  }
}

/**
 * The shared forward of QConv2d and QLinear: quantize input and weight, run the float op, scale.
 * On a calibration pass (after the float weights are loaded), weight quantizers initialize from the
 * weights and activation quantizers that learn from data from their input, first (in network order, each
 * seeing the already-quantized upstream activations, as the EWGS reference does).
 */
function quantizedForward(
  layer: QuantizedLayer,
  x: Tensor,
  weight: Parameter,
  bias: Parameter | null,
  op: (input: Tensor, w: Tensor, b: Tensor | null) => Tensor,
  inputQuantized = false,
): Tensor {
  const path = layer.path;
  const wq = layer.weightQuantizer;
  const aq = layer.actQuantizer;
  if (layer.calibrating) {
    noGrad(() => {
      wq?.calibrate(weight);
      if (aq?.needsCalibration) aq.calibrate(x);
      if (layer.outputScale) {
        // EWGS: alpha = mean|op(x, W)| / mean|op(Q(x), Q(W))| on the calibration batch.
        const full = tensorStats(op(x, weight, bias))[0].meanAbs;
        const quantized = tensorStats(op(aq ? aq.apply(x, path) : x, wq ? wq.apply(weight, path) : weight, bias))[0].meanAbs;
        layer.outputScale.assign(Float32Array.of(full / quantized));
      }
    });
    layer.calibrating = false;
  }
  const input = aq && !inputQuantized ? aq.apply(x, path) : x;
  const w = wq ? wq.apply(weight, path) : weight;
  const scale = layer.outputScale;
  if (!scale) return op(input, w, bias);
  // |alpha| * op(a, w, b) == op(a, |alpha| w, |alpha| b): scaling the (small) weight and bias
  // instead of the output saves two passes over every activation map, with the same gradients.
  return op(input, ops.scaleByAbs(w, scale), bias ? ops.scaleByAbs(bias, scale) : null);
}

export class QConv2d extends Conv2d implements QuantizedLayer {
  readonly weightQuantizer: TensorQuantizer | null;
  readonly actQuantizer: TensorQuantizer | null;
  readonly outputScale: Parameter | null;
  calibrating = false;

  constructor(conv: Conv2d, q: QuantizerPair) {
    super(conv.inChannels, conv.outChannels, conv.kernel, {
      stride: conv.params.stride,
      padding: conv.params.padding,
      groups: conv.params.groups,
      reuse: conv,
    });
    this.weightQuantizer = q.weight;
    this.actQuantizer = q.activation;
    attachQuantizers(q, (n, p) => this.registerParameter(n, p), (n, t) => this.registerBuffer(n, t));
    this.outputScale = q.outputScale ? this.registerParameter('output_scale', quantParameter(1)) : null;
  }

  override forward(x: Tensor): Tensor {
    return this.#forward(x, false);
  }

  /**
   * The input quantizer's op when the op producing this layer's input can apply it in the same
   * pass (training only, a per-tensor quantizer, not on a calibration pass, which needs the float
   * input); null otherwise. The training-fusion pass (src/graph/fuse.ts) uses it with
   * `forwardQuantized`.
   */
  fusableInputOp(shape: Shape): FakeQuantOp | null {
    if (!this.training || this.calibrating) return null;
    const op = this.actQuantizer?.fakeQuantOp?.(shape, this.path) ?? null;
    return op && op.spec.channels === 1 ? op : null;
  }

  /** The layer on an input its producer already fake-quantized with `fusableInputOp`'s op. */
  forwardQuantized(q: Tensor): Tensor {
    return this.inContext(() => this.#forward(q, true));
  }

  #forward(x: Tensor, inputQuantized: boolean): Tensor {
    const conv = (input: Tensor, w: Tensor, b: Tensor | null): Tensor => ops.conv2d(input, w, b, this.params);
    return quantizedForward(this, x, this.weight, this.bias, conv, inputQuantized);
  }
}

export class QLinear extends Linear implements QuantizedLayer {
  readonly weightQuantizer: TensorQuantizer | null;
  readonly actQuantizer: TensorQuantizer | null;
  readonly outputScale: Parameter | null;
  calibrating = false;

  constructor(linear: Linear, q: QuantizerPair) {
    super(linear.inFeatures, linear.outFeatures, { reuse: linear });
    this.weightQuantizer = q.weight;
    this.actQuantizer = q.activation;
    attachQuantizers(q, (n, p) => this.registerParameter(n, p), (n, t) => this.registerBuffer(n, t));
    this.outputScale = q.outputScale ? this.registerParameter('output_scale', quantParameter(1)) : null;
  }

  override forward(x: Tensor): Tensor {
    return quantizedForward(this, x, this.weight, this.bias, (input, w, b) => ops.linear(input, w, b));
  }

  forwardQuantized(q: Tensor): Tensor {
    return this.inContext(() => quantizedForward(this, q, this.weight, this.bias, (input, w, b) => ops.linear(input, w, b), true));
  }
}
