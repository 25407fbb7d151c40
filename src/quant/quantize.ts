/**
 * Turn a float model into a quantized one in place: every convolution (and linear layer) is
 * replaced by its quantized version, keeping the float weights so QAT starts from a pretrained
 * model. The first convolution and the last linear layer follow a separate policy.
 */
import { Conv2d, Linear } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { noGrad, Tensor, tidy } from '../tensor/tensor.js';
import { ApotActivationQuantizer, ApotWeightQuantizer, type ApotVariant } from './apot.js';
import { EwgsQuantizer } from './ewgs.js';
import { Int8WeightQuantizer } from './int8.js';
import { LsqQuantizer } from './lsq.js';
import { PactQuantizer } from './pact.js';
import { QConv2d, QLinear, type QuantizedLayer, type QuantizerPair, isQuantizedLayer } from './qlayers.js';
import { type MethodName, type TensorQuantizer, methodNames } from './quantizer.js';
import { UniformQuantizer } from './uniform.js';

/**
 * First conv and last linear layer:
 * - 'float': not quantized (the EWGS reference);
 * - 'apot8': APoT's reference wrapper, 8-bit weights by the signed maximum, float inputs;
 * - 'int8': symmetric 8-bit weights and an 8-bit (LSQ) input to the last layer: what a device runs;
 * - 'same': the method at the run's bit-widths (the first layer's input, the image, stays as is);
 * - 'reference': what the method's reference implementation did (APoT: apot8, LSQ: int8, others float).
 */
export type FirstLastPolicy = 'float' | 'apot8' | 'int8' | 'same' | 'reference';
export const firstLastPolicies: readonly FirstLastPolicy[] = ['float', 'apot8', 'int8', 'same', 'reference'];

export interface QuantizeOptions {
  readonly method: MethodName;
  readonly wbits: number;
  readonly abits: number;
  readonly firstLast?: FirstLastPolicy;
  /** Per-output-channel weight quantization parameters (default per tensor). */
  readonly perChannel?: boolean;
  readonly apot?: {
    readonly variant?: ApotVariant;
    readonly calibratedGradient?: boolean;
    readonly alphaGradScale?: number;
    readonly initWeightAlpha?: number;
    readonly initActAlpha?: number;
  };
  /** EWGS fixed backward scaling factor (the Hessian schedule can update it during training). */
  readonly ewgs?: { readonly delta?: number };
  readonly pact?: { readonly initAlpha?: number };
}

export interface QuantizationSummary {
  readonly method: MethodName;
  readonly wbits: number;
  readonly abits: number;
  readonly firstLast: Exclude<FirstLastPolicy, 'reference'>;
  /** Paths of the layers that were replaced, in network order. */
  readonly layers: string[];
}

function referencePolicy(method: MethodName): Exclude<FirstLastPolicy, 'reference'> {
  if (method === 'apot') return 'apot8';
  if (method === 'lsq') return 'int8';
  return 'float';
}

/** The weight and activation quantizers of one method for a layer. */
function methodQuantizers(o: QuantizeOptions, channels: number): QuantizerPair {
  const perChannel = o.perChannel ?? false;
  switch (o.method) {
    case 'apot':
      return {
        weight: new ApotWeightQuantizer({
          bits: o.wbits,
          variant: o.apot?.variant,
          perChannel,
          channels,
          calibratedGradient: o.apot?.calibratedGradient,
          alphaGradScale: o.apot?.alphaGradScale,
          initAlpha: o.apot?.initWeightAlpha,
        }),
        activation: new ApotActivationQuantizer({
          bits: o.abits,
          variant: o.apot?.variant,
          alphaGradScale: o.apot?.alphaGradScale,
          initAlpha: o.apot?.initActAlpha,
        }),
      };
    case 'ewgs':
      return {
        weight: new EwgsQuantizer({ role: 'weight', bits: o.wbits, delta: o.ewgs?.delta, perChannel, channels }),
        activation: new EwgsQuantizer({ role: 'activation', bits: o.abits, delta: o.ewgs?.delta }),
        outputScale: true,
      };
    case 'uniform':
      return { weight: new UniformQuantizer('weight', o.wbits), activation: new UniformQuantizer('activation', o.abits) };
    case 'pact':
      return { weight: new UniformQuantizer('weight', o.wbits), activation: new PactQuantizer(o.abits, o.pact?.initAlpha) };
    case 'lsq':
      return {
        weight: new LsqQuantizer({ role: 'weight', bits: o.wbits, perChannel, channels }),
        activation: new LsqQuantizer({ role: 'activation', bits: o.abits }),
      };
  }
}

/** APoT's 8-bit first/last layers: weights rounded by their signed maximum, float input. */
function apot8Edge(): QuantizerPair {
  return { weight: new Int8WeightQuantizer('apot'), activation: null };
}

function edgeQuantizers(policy: Exclude<FirstLastPolicy, 'reference'>, o: QuantizeOptions, first: boolean, channels: number): QuantizerPair | null {
  switch (policy) {
    case 'float':
      return null;
    case 'apot8':
      return apot8Edge();
    case 'int8':
      return { weight: new Int8WeightQuantizer('symmetric'), activation: first ? null : new LsqQuantizer({ role: 'activation', bits: 8 }) };
    case 'same': {
      const q = methodQuantizers(o, channels);
      return first ? { ...q, activation: null } : q;
    }
  }
}

function replaceAt(root: Module, path: string, replacement: Module): void {
  const dot = path.lastIndexOf('.');
  const parentPath = dot < 0 ? '' : path.slice(0, dot);
  const parent = [...root.namedModules()].find(([p]) => p === parentPath)?.[1];
  if (!parent) throw new Error(`quantize: no module at "${parentPath}"`);
  parent.replaceModule(path.slice(dot + 1), replacement);
}

function validateOptions(o: QuantizeOptions): void {
  if (!methodNames.includes(o.method)) throw new Error(`quantize: unknown method "${o.method}"; choose one of ${methodNames.join(', ')}`);
  if (o.firstLast && !firstLastPolicies.includes(o.firstLast)) {
    throw new Error(`quantize: unknown first/last-layer policy "${o.firstLast}"; choose one of ${firstLastPolicies.join(', ')}`);
  }
}

/** Quantize a float model in place; returns what was done. */
export function quantize(model: Module, o: QuantizeOptions): QuantizationSummary {
  validateOptions(o);
  const policy = !o.firstLast || o.firstLast === 'reference' ? referencePolicy(o.method) : o.firstLast;
  const layers = replaceLayers(model, (layer) =>
    layer.edge ? edgeQuantizers(policy, o, layer.first, layer.channels) : layer.conv ? methodQuantizers(o, layer.channels) : null,
  );
  return { method: o.method, wbits: o.wbits, abits: o.abits, firstLast: policy, layers };
}

/**
 * The float model of APoT's reference code: its first conv and last linear layer are its 8-bit
 * wrappers even at 32 bits (first_conv / last_fc in every resnet20_cifar), the rest stays float.
 * Returns the paths of the two layers.
 */
export function roundFirstLastApot8(model: Module): string[] {
  return replaceLayers(model, (layer) => (layer.edge ? apot8Edge() : null));
}

/** A conv or linear layer as the choice of its quantizers sees it. */
interface Candidate {
  readonly conv: boolean;
  readonly channels: number;
  /** The first conv or the last linear layer. */
  readonly edge: boolean;
  readonly first: boolean;
}

/** Replace each conv and linear layer the choice gives quantizers for; the replaced paths in network order. */
function replaceLayers(model: Module, choose: (layer: Candidate) => QuantizerPair | null): string[] {
  const modules = [...model.namedModules()];
  if (modules.some(([, m]) => isQuantizedLayer(m))) throw new Error('quantize: the model is already quantized');
  const candidates = modules.filter((e): e is [string, Conv2d | Linear] => e[1] instanceof Conv2d || e[1] instanceof Linear);
  const firstConv = candidates.find(([, m]) => m instanceof Conv2d)?.[0];
  const lastLinear = candidates.filter(([, m]) => m instanceof Linear).at(-1)?.[0];
  const layers: string[] = [];
  for (const [path, m] of candidates) {
    const conv = m instanceof Conv2d;
    const q = choose({ conv, channels: conv ? m.outChannels : m.outFeatures, edge: path === firstConv || path === lastLinear, first: path === firstConv });
    if (!q) continue;
    replaceAt(model, path, conv ? new QConv2d(m, q) : new QLinear(m, q));
    layers.push(path);
  }
  return layers;
}

/** The quantized layers of a model, in network order. */
export function quantizedLayers(model: Module): [string, QuantizedLayer][] {
  return [...model.namedModules()].filter((e): e is [string, QuantizedLayer] => isQuantizedLayer(e[1]));
}

export function allQuantizers(model: Module): [string, TensorQuantizer][] {
  return quantizedLayers(model).flatMap(([path, l]) =>
    [l.weightQuantizer, l.actQuantizer].filter((q): q is TensorQuantizer => q !== null).map((q) => [path, q] as [string, TensorQuantizer]),
  );
}

/** Whether initializing the quantizers needs a batch of data (EWGS, LSQ activations). */
export function needsCalibration(model: Module): boolean {
  return quantizedLayers(model).some(([, l]) => l.outputScale !== null || l.actQuantizer?.needsCalibration === true);
}

/**
 * Initialize quantizer parameters from the float weights and one batch: a forward pass in training
 * mode (batch norm statistics update once, as in the EWGS reference) during which each quantized
 * layer (all, or those named in `layers`) calibrates from its weights and the input it receives.
 * Run it after the float weights are loaded, and not for quantizers restored from a checkpoint.
 */
export function calibrate(model: Module, images: Float32Array, shape: readonly number[], layers?: ReadonlySet<string>): void {
  const wasTraining = model.training;
  model.train();
  for (const [path, layer] of quantizedLayers(model)) layer.calibrating = !layers || layers.has(path);
  tidy(() => noGrad(() => model.call(Tensor.fromArray(images, shape))));
  model.train(wasTraining);
}
