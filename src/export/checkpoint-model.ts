/**
 * From a training checkpoint to what the exporters need: the trained fake-quantized model with its
 * config, calibration images from the training split, and the lowered integer model.
 */
import { resolveNormalization } from '../data/augment.js';
import type { ImageDataset } from '../data/dataset.js';
import type { Module } from '../nn/module.js';
import { inputShapeOf, readCheckpoint } from '../train/checkpoint.js';
import { type TrainConfig, resolveConfig } from '../train/config.js';
import { calibrate } from '../quant/quantize.js';
import { loadConfigDataset } from '../train/dataset.js';
import { buildModel } from '../train/trainer.js';
import { type CalibrationImages, normalizeImages, pickImages } from './calibrate.js';
import type { IntegerModel } from './ir.js';
import { type LowerOptions, LoweringError, lowerGraph, lowerModel } from './lower.js';
import { type DeploymentPlan, planDeployment, readDeploymentPlan } from './plan.js';
import { trace } from '../graph/index.js';

/** The checkpoint or the calibration data cannot be read (the message says which and why). */
export class ExportInputError extends Error {
  override name = 'ExportInputError';
}

function asInput<T>(read: () => T): T {
  try {
    return read();
  } catch (e) {
    throw new ExportInputError((e as Error).message, { cause: e });
  }
}

export interface TrainedModel {
  readonly model: Module;
  readonly config: TrainConfig;
  /** The first/last-layer policy in effect ('reference' resolved). */
  readonly firstLast: string;
  /** The weights file the state came from. */
  readonly source: string;
  /** [channels, height, width] of one input image. */
  readonly inputShape: readonly [number, number, number];
  /** The deployment plan the checkpoint was trained under or evaluated with, if it records one. */
  readonly plan: DeploymentPlan | null;
  /** Class names, when the checkpoint records them. */
  readonly classes: readonly string[] | null;
}

/**
 * The quantized model of a tinyquant checkpoint (run directory, sidecar or weights file with
 * `overrides` naming the config), weights loaded, in eval mode. A float (unquantized) checkpoint
 * is an error: there is nothing to deploy as integers.
 */
export function loadTrainedModel(path: string, overrides: Record<string, unknown> = {}): TrainedModel {
  const checkpoint = asInput(() => readCheckpoint(path));
  const saved = checkpoint.meta?.config;
  if (!saved && overrides.model === undefined) {
    throw new LoweringError(`${path}: no training config (not a tinyquant run directory or sidecar); name the model and its quantization (--model, --method, --wbits, --abits, --first-last)`);
  }
  const config = resolveConfig({ ...(saved ?? {}), ...overrides }, saved ? `${path} config` : 'flags', saved ?? undefined);
  if (config.method === 'float') {
    throw new LoweringError(`${path}: the checkpoint has no quantizers (method float); export needs a quantization-aware trained model (tinyquant train --method apot|ewgs|uniform|pact|lsq)`);
  }
  const architecture = checkpoint.meta?.architecture;
  if (architecture) {
    throw new LoweringError(`${path}: trained from a ${architecture} instance in code, not a registry model; lower it with lowerModel() on that model, or export it from code`);
  }
  const inputShape = inputShapeOf(checkpoint, config);
  if (!inputShape) throw new LoweringError(`${path}: the checkpoint does not record its image shape (saved by an older tinyquant) and dataset ${config.dataset} does not imply one; train it again to export it`);
  const { model, quantization } = buildModel(config, { classes: new Array(numClasses(checkpoint.state)).fill(''), channels: inputShape[0] });
  model.loadStateDict(checkpoint.state, { source: checkpoint.source });
  model.eval();
  const recorded = checkpoint.meta?.deploymentPlan;
  const plan = recorded === undefined ? null : readDeploymentPlan(recorded, path);
  return { model, config, firstLast: quantization?.firstLast ?? config.firstLast, source: checkpoint.source, inputShape, plan, classes: checkpoint.meta?.classes ?? null };
}

/** The number of classes of a checkpoint's classifier. */
export function numClasses(state: ReturnType<typeof readCheckpoint>['state']): number {
  const bias = state.get('linear.bias') ?? state.get('linear.weight');
  if (!bias) throw new LoweringError('the checkpoint has no classifier (linear.weight)');
  return bias.shape[0];
}

export interface LowerCheckpointOptions {
  readonly dataDir?: string;
  /** Calibration images from the training split (default 256). */
  readonly calibrationImages?: number;
  readonly residualBits?: 8 | 16;
  readonly inputBits?: 8 | 16;
  /** Calibrate a new plan even when the checkpoint records one. */
  readonly replan?: boolean;
  readonly warn?: (message: string) => void;
}

/** A lowered trained model and the plan it was lowered with. */
export interface LoweredTrainedModel {
  readonly ir: IntegerModel;
  readonly plan: DeploymentPlan;
}

/** The bit options that contradict a recorded plan (see lowerTrainedModel). */
function checkAgainstPlan(t: TrainedModel, plan: DeploymentPlan, opts: LowerCheckpointOptions): void {
  for (const [flag, given, planned] of [['--residual-bits', opts.residualBits, plan.residualBits], ['--input-bits', opts.inputBits, plan.input.bits]] as const) {
    if (given !== undefined && given !== planned) {
      throw new LoweringError(`${t.source}: ${flag} ${given} contradicts the run's deployment plan (${planned} bits); pass --replan to calibrate a new plan (the integer model then differs from the one the run evaluated)`);
    }
  }
}

/**
 * Lower a trained model with its deployment plan: the one its checkpoint records (what its final
 * phase trained under, what its final evaluation measured), else one calibrated on images of its
 * training split (also read for the class names of checkpoints that do not record them). Bit
 * options that contradict a recorded plan are an error unless `replan`.
 */
export async function lowerTrainedModel(t: TrainedModel, opts: LowerCheckpointOptions = {}): Promise<LoweredTrainedModel> {
  const recorded = opts.replan ? null : t.plan;
  if (recorded) checkAgainstPlan(t, recorded, opts);
  const train = recorded && t.classes ? null : await loadConfigDataset(t.config, 'train', { dataDir: opts.dataDir }).catch((e: Error) => {
    throw new ExportInputError(`calibration images: ${e.message}`, { cause: e });
  });
  const normalization = resolveNormalization(t.config.normalization, t.inputShape[0]);
  const graph = trace(t.model, t.inputShape);
  const plan = recorded ?? planDeployment(graph, { normalization, calibration: pickImages(train!, opts.calibrationImages ?? 256), residualBits: opts.residualBits, inputBits: opts.inputBits });
  const classes = t.classes ?? train!.classes;
  const ir = lowerGraph(graph, {
    normalization,
    plan,
    meta: { model: t.config.model, method: t.config.method, wbits: t.config.wbits, abits: t.config.abits, firstLast: t.firstLast, classes },
    warn: opts.warn,
  });
  return { ir, plan };
}

/**
 * Lower a quantized model that was not trained (benchmarks of size and speed, which do not depend
 * on training): its quantizers are initialized on the calibration images, then the fixed-point
 * scales are calibrated on the same images.
 */
export function lowerUntrainedModel(model: Module, opts: LowerOptions & { readonly calibration: CalibrationImages }): IntegerModel {
  const { images, count, channels, height, width } = opts.calibration;
  calibrate(model, normalizeImages(images, count, channels, opts.normalization), [count, channels, height, width]);
  model.eval();
  return lowerModel(model, opts);
}
