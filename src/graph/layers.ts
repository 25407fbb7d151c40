/**
 * What each layer is as a graph node: the one place that maps layer classes (src/nn, src/quant) to
 * node ops. A layer with sub-modules is not a node: the tracer goes inside it.
 */
import { AvgPool2d, BatchNorm, ClippedReLU, Conv2d, Flatten, GlobalAvgPool, Identity, Linear, MaxPool2d, ReLU, ShortcutPad } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { QConv2d, QLinear, isQuantizedLayer } from '../quant/qlayers.js';
import type { LayerQuantizers, NodeOp, Pair } from './graph.js';

/** The forward methods whose computation the node ops describe. */
const KNOWN_FORWARDS = new Set<unknown>(
  [AvgPool2d, BatchNorm, ClippedReLU, Conv2d, Flatten, GlobalAvgPool, Identity, Linear, MaxPool2d, ReLU, ShortcutPad, QConv2d, QLinear].map((c) => c.prototype.forward),
);

function quantizersOf(m: Module): LayerQuantizers | null {
  return isQuantizedLayer(m) ? { weight: m.weightQuantizer, activation: m.actQuantizer, outputScale: m.outputScale } : null;
}

function pair(p: readonly number[]): Pair {
  return [p[0], p[1]];
}

/**
 * The node op of a leaf layer, 'identity' for a layer that returns its input, or null when unknown:
 * also for a subclass of a known layer that computes something else in its own `forward`.
 */
export function layerOp(m: Module): NodeOp | 'identity' | null {
  if (!KNOWN_FORWARDS.has(m.forward)) return null;
  if (m instanceof Conv2d) {
    const [, , kh, kw] = m.weight.shape;
    return {
      kind: 'conv',
      weight: m.weight,
      bias: m.bias,
      inChannels: m.inChannels,
      outChannels: m.outChannels,
      kernel: [kh, kw],
      stride: pair(m.params.stride),
      padding: pair(m.params.padding),
      groups: m.params.groups,
      quant: quantizersOf(m),
    };
  }
  if (m instanceof Linear) {
    return { kind: 'linear', weight: m.weight, bias: m.bias, inFeatures: m.inFeatures, outFeatures: m.outFeatures, quant: quantizersOf(m) };
  }
  if (m instanceof BatchNorm) {
    return { kind: 'batchnorm', gamma: m.weight, beta: m.bias, mean: m.runningMean, variance: m.runningVar, eps: m.eps, relu: m.relu };
  }
  if (m instanceof ReLU) return { kind: 'relu', ceiling: null };
  if (m instanceof ClippedReLU) return { kind: 'relu', ceiling: m.ceiling };
  if (m instanceof AvgPool2d || m instanceof MaxPool2d) {
    const kind = m instanceof AvgPool2d ? 'avgpool' : 'maxpool';
    return { kind, kernel: pair(m.params.kernel), stride: pair(m.params.stride), padding: pair(m.params.padding) };
  }
  if (m instanceof GlobalAvgPool) return { kind: 'globalavgpool' };
  if (m instanceof Flatten) return { kind: 'flatten' };
  if (m instanceof ShortcutPad) return { kind: 'shortcutpad', stride: m.stride, padBefore: m.padBefore, padAfter: m.padAfter };
  if (m instanceof Identity) return 'identity';
  return null;
}
