/**
 * What a (quantized) model costs: per layer, parameters, multiply-accumulates, bit-operations
 * (MACs x weight bits x activation bits) and stored weight bytes at the layer's bit-width.
 * Shapes come from one forward pass on a single zero image.
 */
import { Conv2d, Linear } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { Tensor, noGrad, tidy } from '../tensor/tensor.js';
import { isQuantizedLayer } from './qlayers.js';

export interface LayerCost {
  readonly path: string;
  readonly kind: 'conv' | 'linear';
  readonly inputShape: readonly number[];
  readonly outputShape: readonly number[];
  /** Weights only (bias and batch norm are counted in `otherParams` of the totals). */
  readonly weights: number;
  readonly macs: number;
  readonly weightBits: number;
  /** Bits of the layer's input: the quantizer's, 8 for an image, else 32. */
  readonly inputBits: number;
  readonly bops: number;
  readonly weightBytes: number;
}

export interface ModelCost {
  readonly layers: LayerCost[];
  readonly macs: number;
  readonly bops: number;
  readonly weightBytes: number;
  /** Parameters outside conv/linear weights (biases, batch norm, quantizer scalars). */
  readonly otherParams: number;
}

function layerBits(m: Conv2d | Linear): { weightBits: number; inputBits: number | null } {
  if (!isQuantizedLayer(m)) return { weightBits: 32, inputBits: null };
  return { weightBits: m.weightQuantizer?.bits ?? 32, inputBits: m.actQuantizer?.bits ?? null };
}

/** Costs of every conv and linear layer for one input of `inputShape` (N = 1). */
export function modelCost(model: Module, inputShape: readonly number[] = [1, 3, 32, 32]): ModelCost {
  const layers: LayerCost[] = [];
  const targets = [...model.namedModules()].filter((e): e is [string, Conv2d | Linear] => e[1] instanceof Conv2d || e[1] instanceof Linear);
  const firstPath = targets[0]?.[0];
  const originals = targets.map(([path, m]) => {
    const call = m.call;
    m.call = (x: Tensor): Tensor => {
      const y = call.call(m, x);
      const { weightBits, inputBits } = layerBits(m);
      const spatial = y.shape.length === 4 ? y.shape[2] * y.shape[3] : 1;
      const weights = m.weight.size;
      const macs = weights * spatial;
      const bitsIn = inputBits ?? (path === firstPath ? 8 : 32);
      layers.push({
        path,
        kind: m instanceof Conv2d ? 'conv' : 'linear',
        inputShape: [...x.shape],
        outputShape: [...y.shape],
        weights,
        macs,
        weightBits,
        inputBits: bitsIn,
        bops: macs * weightBits * bitsIn,
        weightBytes: Math.ceil((weights * weightBits) / 8),
      });
      return y;
    };
    return [m, call] as const;
  });
  const wasTraining = model.training;
  try {
    model.eval();
    tidy(() => noGrad(() => model.call(Tensor.zeros(inputShape))));
  } finally {
    for (const [m, call] of originals) m.call = call;
    model.train(wasTraining);
  }
  const layerWeights = new Set(targets.map(([, m]) => m.weight));
  const otherParams = model.parameters().filter((p) => !layerWeights.has(p)).reduce((a, p) => a + p.size, 0);
  return {
    layers,
    macs: layers.reduce((a, l) => a + l.macs, 0),
    bops: layers.reduce((a, l) => a + l.bops, 0),
    weightBytes: layers.reduce((a, l) => a + l.weightBytes, 0),
    otherParams,
  };
}
