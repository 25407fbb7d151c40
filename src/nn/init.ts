/** Weight initializers. All draw from a seeded Rng so a model is a pure function of its seed. */
import type { Shape } from '../backend/backend.js';
import { numel } from '../backend/backend.js';
import type { Rng } from '../util/rng.js';

/** How a layer's weights are drawn, given fan-in (inputs per output) and fan-out. */
export type Initializer = (shape: Shape, fanIn: number, fanOut: number, rng: Rng) => Float32Array;

function normal(shape: Shape, std: number, rng: Rng): Float32Array {
  const out = new Float32Array(numel(shape));
  for (let i = 0; i < out.length; i++) out[i] = rng.normal() * std;
  return out;
}

function uniform(shape: Shape, bound: number, rng: Rng): Float32Array {
  const out = new Float32Array(numel(shape));
  for (let i = 0; i < out.length; i++) out[i] = (2 * rng.next() - 1) * bound;
  return out;
}

/** He et al.: N(0, 2 / fan_in) (PyTorch kaiming_normal_ default, used by EWGS and akamaster). */
export const kaimingNormalFanIn: Initializer = (shape, fanIn, _fanOut, rng) => normal(shape, Math.sqrt(2 / fanIn), rng);

/** N(0, 2 / (k*k*C_out)): the original ResNet code, and APoT's CIFAR models. */
export const kaimingNormalFanOut: Initializer = (shape, _fanIn, fanOut, rng) => normal(shape, Math.sqrt(2 / fanOut), rng);

/** PyTorch's default for Linear and Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform, a = sqrt(5)). */
export const pytorchDefault: Initializer = (shape, fanIn, _fanOut, rng) => uniform(shape, 1 / Math.sqrt(fanIn), rng);

export const initializers = {
  'kaiming-normal-fan-in': kaimingNormalFanIn,
  'kaiming-normal-fan-out': kaimingNormalFanOut,
  'pytorch-default': pytorchDefault,
} as const satisfies Record<string, Initializer>;

export type InitName = keyof typeof initializers;
