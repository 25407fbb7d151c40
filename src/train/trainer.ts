/**
 * A training run: dataset -> loader -> model (quantized as configured, from its starting weights)
 * -> loss -> optimizer -> checkpoint, with evaluation, metrics, the EWGS Hessian schedule, and
 * resumption that reproduces an uninterrupted run exactly.
 *
 * Everything random derives from the config's seed: model initialization, data order and
 * augmentation (per epoch and position), the calibration batch and the Hessian batches. The run
 * directory holds config.json, metrics.jsonl, last/best checkpoints and final.json.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CIFAR_AUGMENT, DataLoader, type ImageDataset, checkSplitsAgree, createEvalLoader, fixedSubset } from '../data/index.js';
import { removeStaleTempFiles, writeFileAtomic, writeJsonAtomic } from '../io/atomic.js';
import { makeDirectory, removeCreatedDirectories } from '../io/directory.js';
import { lockDirectory } from '../io/lock.js';
import { createModel } from '../models/index.js';
import type { Shape } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import { GraphError, trace, trainingForward } from '../graph/index.js';
import { resolveNormalization } from '../data/augment.js';
import { pickImages } from '../export/calibrate.js';
import { type DeviceEvaluation, checkDeployable, evaluateOnDevice, lowerForEvaluation } from '../export/deployed.js';
import type { IntegerModel } from '../export/ir.js';
import { type DeploymentPlan, planDeployment, readDeploymentPlan } from '../export/plan.js';
import { LoweringError } from '../export/requant.js';
import { deploymentRewrite, simulatedForward } from '../export/simulate.js';
import { BatchNorm } from '../nn/layers.js';
import { type Module, type Parameter, StateDictError } from '../nn/module.js';
import { Adam, type Optimizer, type ParamGroupSpec, Sgd, groupParameters, lrFactor } from '../optim/index.js';
import { EwgsQuantizer } from '../quant/ewgs.js';
import { estimateEwgsDelta } from '../quant/hessian.js';
import { type QuantizationSummary, allQuantizers, calibrate, quantize, quantizedLayers, roundFirstLastApot8 } from '../quant/quantize.js';
import { type CheckpointMeta, type LoadedCheckpoint, type TrainingProgress, readCheckpoint, removeUnreferencedCheckpointFiles, saveCheckpoint } from './checkpoint.js';
import { DEFAULT_CONFIG, type TrainConfig, configDifferences, configForFile, resolveConfig, totalEpochs } from './config.js';
import { loadConfigDataset } from './dataset.js';
import { type EvalSummary, evaluate } from './evaluate.js';
import { type ProgressSink, silentProgress } from './progress.js';
import { trainStep } from './step.js';
import type { Tensor } from '../tensor/tensor.js';
import { StopRequested, stopPoint } from '../util/stop.js';

/** Distinct stream ids for the loader passes that are not training epochs. */
const CALIBRATION_PASS = 1_000_000;
const HESSIAN_PASS = 2_000_000;

/** A training split and the split it is evaluated on. */
export interface TrainingData {
  readonly train: ImageDataset;
  readonly test: ImageDataset;
}

export interface TrainOptions {
  readonly config: TrainConfig;
  readonly outDir: string;
  /**
   * A model to train in place of the registry's `config.model`: quantized in place by the config's
   * method as {@link buildModel} quantizes named models, its weights replaced by `config.init` when
   * given. Checkpoints record its class name as the architecture; resuming needs an instance of the
   * same class, constructed the same way, passed again.
   */
  readonly model?: Module;
  /** Datasets in place of the config's (`dataset`, `dataPath` and the image and split fields are then not read). */
  readonly data?: TrainingData;
  /** Continue from outDir/last.json when it exists. */
  readonly resume?: boolean;
  readonly progress?: ProgressSink;
  /** Save and stop on SIGINT/SIGTERM (default true). */
  readonly handleSignals?: boolean;
  /** Aborting asks the run to save and stop, as SIGINT does (within one training step). */
  readonly signal?: AbortSignal;
  /** Stop (with a checkpoint) after this many steps in this process: for tests of resumption. */
  readonly stopAfterSteps?: number;
}

export interface EpochMetrics {
  readonly epoch: number;
  readonly lr: number;
  readonly trainLoss: number;
  readonly trainTop1: number;
  readonly testLoss: number | null;
  readonly testTop1: number | null;
  readonly testTop5: number | null;
  readonly imgPerSec: number;
  readonly stepMs: number;
  readonly dataMs: number;
  readonly seconds: number;
  /** Quantizer parameters (alphas, bounds, deltas) at the end of the epoch, by name. */
  readonly quantizers?: Record<string, number[]>;
}

/** Hashes that make a comparison's fairness checkable: equal hashes, equal inputs. */
export interface RunFingerprint {
  /** Float weights and batch-norm statistics the run started from (before quantizer calibration). */
  readonly startWeights: string;
  /** Data order and augmentation of every epoch. */
  readonly dataOrder: string;
  readonly config: string;
}

export interface TrainResult {
  readonly status: 'finished' | 'interrupted';
  /** The final evaluation; of a quantized run, with its deployment simulated (DeployConfig.evaluate). */
  readonly final: EvalSummary | null;
  /** The integer model's accuracy on the same images and its agreement with `final`, or null (float runs, deploy.evaluate off). */
  readonly device: DeviceEvaluation | null;
  readonly bestTop1: number;
  readonly bestEpoch: number;
  readonly epochs: EpochMetrics[];
  readonly fingerprint: RunFingerprint;
  readonly quantization: QuantizationSummary | null;
}

/** The run stopped because the loss or a quantizer became non-finite. */
export class DivergedError extends Error {}

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function paramGroupSpecs(config: TrainConfig): ParamGroupSpec[] {
  return config.paramGroups.map((g) => {
    const kind = g.match.startsWith('kind:') ? g.match.slice(5) : null;
    const re = kind ? null : new RegExp(g.match);
    return {
      name: g.name,
      match: (name: string, p: Parameter) => (kind ? p.kind === kind : re!.test(name)),
      lr: g.lr,
      weightDecay: g.weightDecay,
    };
  });
}

export function createOptimizer(model: Module, config: TrainConfig): Optimizer {
  const groups = groupParameters(model, paramGroupSpecs(config), { lr: config.lr, weightDecay: config.weightDecay });
  if (config.optimizer === 'sgd') return new Sgd(groups, { momentum: config.momentum, nesterov: config.nesterov });
  return new Adam(groups, { decoupled: config.optimizer === 'adamw' });
}

/** The model of a config, quantized as configured (weights not yet loaded). */
export function buildModel(config: TrainConfig, dataset: Pick<ImageDataset, 'classes' | 'channels'>): { model: Module; quantization: QuantizationSummary | null } {
  const model = createModel(config.model, { numClasses: dataset.classes.length, inChannels: dataset.channels, seed: config.seed });
  return quantizeAsConfigured(model, config);
}

/**
 * Quantize `model` in place by the config's method and bit-widths. Float: nothing, except that
 * firstLast 'apot8' rounds the first and last layers' weights as APoT's float model does.
 */
export function quantizeAsConfigured(model: Module, config: TrainConfig): { model: Module; quantization: QuantizationSummary | null } {
  if (config.method === 'float') {
    if (config.firstLast === 'apot8') roundFirstLastApot8(model);
    return { model, quantization: null };
  }
  const quantization = quantize(model, {
    method: config.method,
    wbits: config.wbits,
    abits: config.abits,
    firstLast: config.firstLast,
    perChannel: config.perChannel,
    apot: { variant: config.apotVariant },
    ewgs: { delta: config.ewgs.delta },
  });
  return { model, quantization };
}

/**
 * Accuracy of checkpoint weights on `data` (every image, in order), in the model `config` describes:
 * what `tinyquant eval` prints and what a grid measures for its float start.
 */
export async function evaluateCheckpoint(
  config: TrainConfig,
  checkpoint: LoadedCheckpoint,
  data: ImageDataset,
  batchSize: number,
  options: EvaluateCheckpointOptions = {},
): Promise<CheckpointEvaluation> {
  const { signal, allowNonFinite } = options;
  const { model, quantization } = buildModel(config, data);
  model.loadStateDict(checkpoint.state, { source: checkpoint.source, allowNonFinite });
  const recorded = config.method === 'float' ? undefined : checkpoint.meta?.deploymentPlan;
  const plan = recorded === undefined ? null : readDeploymentPlan(recorded, checkpoint.source);
  const loader = createEvalLoader(data, { batchSize, normalization: config.normalization, workers: config.workers });
  try {
    if (!plan) return { ...(await evaluate(model, loader, { signal })), device: null };
    // The checkpoint's run evaluated its deployment: the same simulated model, and the integer one.
    const d = deploymentFor(config, data, quantization);
    const ir = lowerForEvaluation(trace(model, [...d.imageShape]), plan, d.normalization, d.meta);
    const summary = await evaluate(model, loader, { forward: simulatedForward(model, d.imageShape, plan, ir), signal });
    return { ...summary, device: await evaluateOnDevice(ir, data, summary.predictions) };
  } finally {
    await loader.close();
  }
}

export interface EvaluateCheckpointOptions {
  /** Stops the evaluation after the batch in progress. */
  readonly signal?: AbortSignal;
  /** Load weights holding NaN, infinities or negative batch-norm variances instead of refusing them (see LoadOptions). */
  readonly allowNonFinite?: boolean;
}

/** A checkpoint's accuracy; with its recorded deployment plan, also its integer model's (else null). */
export interface CheckpointEvaluation extends EvalSummary {
  readonly device: DeviceEvaluation | null;
}

/** Fingerprint of the float part of the starting point: everything but quantizer state. */
function startWeightsHash(model: Module): string {
  const quantNames = new Set(quantizedLayers(model).flatMap(([path, l]) => [
    ...[l.weightQuantizer, l.actQuantizer].flatMap((q) => [...(q?.parameters ?? []), ...(q?.buffers ?? [])].map(([n]) => `${path}.${n}`)),
    ...(l.outputScale ? [`${path}.output_scale`] : []),
  ]));
  const h = createHash('sha256');
  for (const [key, t] of model.stateEntries()) {
    if (quantNames.has(key)) continue;
    h.update(key);
    h.update(new Uint8Array(t.toArray().buffer));
  }
  return h.digest('hex');
}

/**
 * Load starting weights: a float checkpoint or a quantized one of the same architecture (progressive
 * initialization from a higher bit-width). Returns the quantized layers whose quantizer state the
 * file did not provide: those still need calibration.
 */
function loadStartingWeights(model: Module, path: string): Set<string> {
  const { state, source } = readCheckpoint(path);
  const report = model.loadStateDict(state, { strict: false, source });
  const quantLayers = quantizedLayers(model);
  const layerOf = (key: string): string | undefined => quantLayers.find(([p]) => key.startsWith(`${p}.`))?.[0];
  const quantKeys = new Set(
    quantLayers.flatMap(([p, l]) => [
      ...[l.weightQuantizer, l.actQuantizer].flatMap((q) => [...(q?.parameters ?? []), ...(q?.buffers ?? [])].map(([n]) => `${p}.${n}`)),
      ...(l.outputScale ? [`${p}.output_scale`] : []),
    ]),
  );
  const missingWeights = report.missing.filter((k) => !quantKeys.has(k));
  if (missingWeights.length > 0) throw new StateDictError(`${source}: starting weights lack ${missingWeights.join(', ')}`);
  // Quantizer state of another method or bit-width configuration is ignored, other extras are errors.
  const foreign = report.unexpected.filter((k) => !/(alpha|_step|[ul][WA]|output_scale|bkwd_scaling_factor[WA])$/.test(k));
  if (foreign.length > 0) throw new StateDictError(`${source}: entries the model does not have: ${foreign.join(', ')}`);
  return new Set(report.missing.map(layerOf).filter((p): p is string => p !== undefined));
}

function quantizerSnapshot(model: Module): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [path, layer] of quantizedLayers(model)) {
    for (const q of [layer.weightQuantizer, layer.actQuantizer]) {
      for (const [name, p] of q?.parameters ?? []) out[`${path}.${name}`] = Array.from(p.toArray());
      if (q instanceof EwgsQuantizer) out[`${path}.delta${q.role === 'weight' ? 'W' : 'A'}`] = [q.delta];
    }
    if (layer.outputScale) out[`${path}.output_scale`] = Array.from(layer.outputScale.toArray());
  }
  return out;
}

interface RunState {
  progress: TrainingProgress;
  epochs: EpochMetrics[];
  /** The progress `last` was saved at by this process or the run it resumes (null: none yet). */
  savedProgress: TrainingProgress | null;
  stepsThisProcess: number;
  /**
   * Traced on the first batch's image shape; training steps run through the graph's fusions (and, in
   * the final phase, with the deployment of `plan` simulated).
   */
  forward: { readonly run: (x: Tensor) => Tensor; readonly plan: DeploymentPlan | null } | null;
  /** The deployment plan of the final phase, made at its start (and kept in every checkpoint after). */
  plan: DeploymentPlan | null;
}

function readMetrics(file: string, beforeEpoch: number): EpochMetrics[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l) as EpochMetrics;
      } catch (e) {
        throw new Error(`${file}: line ${i + 1} is not valid JSON (${(e as Error).message})`, { cause: e });
      }
    })
    .filter((m) => m.epoch < beforeEpoch);
}

function writeMetrics(file: string, epochs: EpochMetrics[]): void {
  writeFileAtomic(file, epochs.map((m) => JSON.stringify(m)).join('\n') + '\n');
}

export async function train(opts: TrainOptions): Promise<TrainResult> {
  const { config, outDir } = opts;
  const progressSink = opts.progress ?? silentProgress;
  // The directory and its lock first (an unusable --out fails at once, a second writer is refused),
  // then the data: unreadable or inconsistent images stop the run before it writes anything else.
  const created = makeDirectory(outDir, 'run directory');
  let unlock: (() => void) | null = null;
  try {
    unlock = lockDirectory(outDir, 'training run');
    const resumed = readResumed(opts);
    const log = (m: string): void => progressSink.line(m);
    const data = opts.data ?? (await loadTrainingData(config, log));
    checkSplitsAgree(data.train, data.test);
    removeStaleTempFiles(outDir);
    removeUnreferencedCheckpointFiles(outDir);
    // Signals are ours from here on (before, while only data loads, they end the process as usual).
    const stop = stopRequests(opts);
    try {
      return await trainInDirectory(opts, data, resumed, stop.signal, progressSink);
    } finally {
      stop.dispose();
    }
  } finally {
    unlock?.();
    removeCreatedDirectories(created);
  }
}

/** outDir/last.json when resuming from it, checked against the run's config and model. */
function readResumed(opts: TrainOptions): LoadedCheckpoint | null {
  const { config, outDir } = opts;
  const lastSidecar = join(outDir, 'last.json');
  if (opts.resume !== true || !existsSync(lastSidecar)) return null;
  const architecture = opts.model?.constructor.name;
  const resumed = readCheckpoint(lastSidecar);
  if (resumed.meta) {
    // Both through the config check: fields added since the run started take their defaults, and a
    // config read back from a file (run/config.json) compares equal to the one the run was given.
    const diff = configDifferences(resolveConfig({ ...DEFAULT_CONFIG, ...resumed.meta.config }, lastSidecar), resolveConfig({ ...config }, 'the config'));
    if (diff.length > 0) throw new Error(`${lastSidecar}: cannot resume with a different config (fields ${diff.join(', ')} differ)`);
    if (resumed.meta.architecture !== architecture) {
      throw new Error(
        `${lastSidecar}: the run trained ${resumed.meta.architecture ? `a ${resumed.meta.architecture} instance` : `model ${config.model}`}; ` +
          `resuming needs the same model again (given: ${architecture ? `a ${architecture} instance` : `model ${config.model}`})`,
      );
    }
  }
  return resumed;
}

/**
 * One stop signal for the run: SIGINT/SIGTERM while it runs (unless handleSignals is false) and the
 * caller's signal. `dispose` removes the signal listeners.
 */
function stopRequests(opts: TrainOptions): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const abort = (): void => controller.abort();
  const signals = opts.handleSignals === false ? [] : (['SIGINT', 'SIGTERM'] as const);
  for (const s of signals) process.on(s, abort);
  if (opts.signal?.aborted) abort();
  opts.signal?.addEventListener('abort', abort);
  return {
    signal: controller.signal,
    dispose: () => {
      for (const s of signals) process.off(s, abort);
      opts.signal?.removeEventListener('abort', abort);
    },
  };
}

/** Both splits of a config's dataset, as `train` loads them when not given `data`. */
export async function loadTrainingData(config: TrainConfig, log: (m: string) => void): Promise<TrainingData> {
  const [train, test] = await Promise.all((['train', 'test'] as const).map((split) => loadConfigDataset(config, split, { log })));
  return { train, test };
}

/** The run proper, in its locked directory. */
async function trainInDirectory(opts: TrainOptions, data: TrainingData, resumed: LoadedCheckpoint | null, stop: AbortSignal, progressSink: ProgressSink): Promise<TrainResult> {
  const { config, outDir } = opts;
  const lastSidecar = join(outDir, 'last.json');
  writeJsonAtomic(join(outDir, 'config.json'), configForFile(config));
  const trainData = fixedSubset(data.train, config.trainSubset);
  const testData = fixedSubset(data.test, config.testSubset);
  const trainLoader = new DataLoader(trainData, {
    batchSize: config.batch,
    seed: config.seed,
    augment: config.augment ? CIFAR_AUGMENT : null,
    normalization: config.normalization,
    workers: config.workers,
  });
  const testLoader = createEvalLoader(testData, { batchSize: config.evalBatch, normalization: config.normalization, workers: config.workers });
  try {
    const { model, quantization } = opts.model ? quantizeAsConfigured(opts.model, config) : buildModel(config, trainData);
    const optimizer = createOptimizer(model, config);
    let startHash: string;
    const state: RunState = {
      progress: { epoch: 0, step: 0, partial: { lossSum: 0, correct: 0, count: 0 }, bestTop1: -Infinity, bestEpoch: -1, hessianEpoch: -1 },
      epochs: [],
      savedProgress: null,
      stepsThisProcess: 0,
      forward: null,
      plan: null,
    };
    if (resumed) {
      model.loadStateDict(resumed.state, { source: resumed.source });
      if (resumed.optimizer) optimizer.loadState(resumed.optimizer, `${lastSidecar} optimizer state`);
      state.progress = checkedProgress((resumed.meta as CheckpointMeta).progress, totalEpochs(config), trainLoader.stepsPerEpoch, lastSidecar);
      state.savedProgress = state.progress;
      state.epochs = readMetrics(join(outDir, 'metrics.jsonl'), state.progress.epoch);
      startHash = String((resumed.meta as CheckpointMeta).metrics.startWeights);
      const recorded = (resumed.meta as CheckpointMeta).deploymentPlan;
      state.plan = recorded === undefined ? null : readDeploymentPlan(recorded, lastSidecar);
      progressSink.line(`resuming ${outDir} at epoch ${state.progress.epoch + 1}, step ${state.progress.step}`);
    } else {
      const uncalibrated = config.init ? loadStartingWeights(model, config.init) : new Set(quantizedLayers(model).map(([p]) => p));
      startHash = startWeightsHash(model);
      // A float model's 8-bit first/last rounding (apot8) has nothing to calibrate.
      if (uncalibrated.size > 0 && config.method !== 'float') {
        const first = await firstBatch(trainLoader, CALIBRATION_PASS);
        calibrate(model, first.images, first.shape, uncalibrated);
      }
    }
    const deployment = deploymentOf(config, trainData, quantization);
    if (deployment) checkModelDeployable(model, deployment, trainData);
    const fingerprint: RunFingerprint = {
      startWeights: startHash,
      dataOrder: sha256(Array.from({ length: totalEpochs(config) }, (_, e) => trainLoader.orderHash(e)).join(',') + JSON.stringify({ augment: config.augment, seed: config.seed })),
      config: sha256(JSON.stringify(config)),
    };
    const interrupted = (): TrainResult => ({
      status: 'interrupted',
      final: null,
      device: null,
      bestTop1: state.progress.bestTop1,
      bestEpoch: state.progress.bestEpoch,
      epochs: state.epochs,
      fingerprint,
      quantization,
    });
    const ctx: EpochContext = { config, outDir, model, optimizer, trainLoader, testLoader, state, progressSink, fingerprint, opts, stop, deployment, lastEpochTest: null };
    const status = await runEpochs(ctx);
    if (status === 'interrupted') return interrupted();
    let final: EvalSummary;
    let device: DeviceEvaluation | null;
    try {
      ({ final, device } = await finalEvaluation(ctx, testData));
    } catch (e) {
      // The last checkpoint holds the finished epochs: a resume only evaluates.
      if (e instanceof StopRequested) return interrupted();
      throw e;
    }
    writeJsonAtomic(join(outDir, 'final.json'), {
      top1: final.top1,
      top5: final.top5,
      loss: final.loss,
      n: final.n,
      device,
      bestTop1: state.progress.bestTop1,
      bestEpoch: state.progress.bestEpoch,
      epochs: totalEpochs(config),
      fingerprint,
      quantization,
      backend: getBackend().name,
    });
    return { status: 'finished', final, device, bestTop1: state.progress.bestTop1, bestEpoch: state.progress.bestEpoch, epochs: state.epochs, fingerprint, quantization };
  } finally {
    await Promise.all([trainLoader.close(), testLoader.close()]);
  }
}

async function firstBatch(loader: DataLoader, pass: number): Promise<{ images: Float32Array; labels: Int32Array; shape: [number, number, number, number] }> {
  const batches = await takeBatches(loader, pass, 1);
  return batches[0];
}

async function takeBatches(loader: DataLoader, pass: number, count: number) {
  const out: { images: Float32Array; labels: Int32Array; shape: [number, number, number, number] }[] = [];
  for await (const b of loader.epoch(pass)) {
    out.push({ images: b.images, labels: b.labels, shape: [b.size, b.channels, b.height, b.width] });
    if (out.length >= count) break;
  }
  return out;
}

interface EpochContext {
  readonly config: TrainConfig;
  readonly outDir: string;
  readonly model: Module;
  readonly optimizer: Optimizer;
  readonly trainLoader: DataLoader;
  readonly testLoader: DataLoader;
  readonly state: RunState;
  readonly progressSink: ProgressSink;
  readonly fingerprint: RunFingerprint;
  readonly opts: TrainOptions;
  readonly stop: AbortSignal;
  /** How the run is deployed, or null (float, or deploy.evaluate off without a final phase). */
  readonly deployment: Deployment | null;
  /** The last epoch's test evaluation in this process and the plan it simulated (null: none). */
  lastEpochTest: { readonly plan: DeploymentPlan | null; readonly summary: EvalSummary } | null;
}

/** What the trainer needs to plan, simulate and evaluate a run's deployment. */
interface Deployment {
  readonly imageShape: readonly [number, number, number];
  readonly normalization: ReturnType<typeof resolveNormalization>;
  readonly meta: Parameters<typeof lowerForEvaluation>[3];
}

/** The deployment of a quantized model of `config` on images like `data`'s. */
function deploymentFor(config: TrainConfig, data: ImageDataset, quantization: QuantizationSummary | null): Deployment {
  return {
    imageShape: [data.channels, data.height, data.width],
    normalization: resolveNormalization(config.normalization, data.channels),
    meta: { model: config.model, method: config.method, wbits: config.wbits, abits: config.abits, firstLast: quantization?.firstLast ?? config.firstLast, classes: data.classes },
  };
}

/** A run's deployment, or null: float runs, and runs that neither evaluate one nor train under one. */
function deploymentOf(config: TrainConfig, data: ImageDataset, quantization: QuantizationSummary | null): Deployment | null {
  return config.method === 'float' || (!config.deploy.evaluate && config.deploy.finalEpochs === 0) ? null : deploymentFor(config, data, quantization);
}

/** Refuse, before training, a model whose deployment cannot be planned or lowered, naming the layer. */
function checkModelDeployable(model: Module, d: Deployment, data: ImageDataset): void {
  try {
    checkDeployable(model, d.imageShape, { normalization: d.normalization, calibration: pickImages(data, 32) }, d.meta);
  } catch (e) {
    if (!(e instanceof LoweringError || e instanceof GraphError)) throw e;
    throw new LoweringError(`cannot deploy this model: ${e.message} (set deploy.evaluate false and deploy.finalEpochs 0 to train it without a deployment)`, { cause: e });
  }
}

/** The run's deployment plan, calibrated now on training images picked by its seed. */
function makePlan(ctx: EpochContext, d: Deployment): DeploymentPlan {
  const { residualBits, inputBits, calibrationImages } = ctx.config.deploy;
  const calibration = pickImages(ctx.trainLoader.dataset, calibrationImages, ctx.config.seed);
  return planDeployment(trace(ctx.model, [...d.imageShape]), { normalization: d.normalization, calibration, residualBits, inputBits });
}

/** The plan epoch `epoch` trains under: the run's, made when the final phase starts; null before it. */
function epochPlan(ctx: EpochContext, epoch: number): DeploymentPlan | null {
  if (!ctx.deployment || epoch < ctx.config.epochs) return null;
  return (ctx.state.plan ??= makePlan(ctx, ctx.deployment));
}

/** The model's forward under `plan` for evaluation: the deployment simulated (with `ir`, else lowered now), or the model's own. */
function evaluationForward(ctx: EpochContext, plan: DeploymentPlan | null, ir?: IntegerModel): ((x: Tensor) => Tensor) | undefined {
  const d = ctx.deployment;
  if (!d || !plan) return undefined;
  return simulatedForward(ctx.model, d.imageShape, plan, ir ?? lowerForEvaluation(trace(ctx.model, [...d.imageShape]), plan, d.normalization, d.meta));
}

/**
 * The last epoch's test evaluation when it is the one the final evaluation would make: the model
 * has not changed since, and it ran the same forward (the deployment of the same `plan`, or none).
 */
function lastEpochTestWith(ctx: EpochContext, plan: DeploymentPlan | null): EvalSummary | null {
  return ctx.lastEpochTest && ctx.lastEpochTest.plan === plan ? ctx.lastEpochTest.summary : null;
}

/**
 * The final evaluation: of a deployed run, the fake-quantized model with its deployment simulated
 * (the plan of its final phase, or one made now and recorded in the last checkpoint) and the
 * integer model on the same images.
 */
async function finalEvaluation(ctx: EpochContext, testData: ImageDataset): Promise<{ final: EvalSummary; device: DeviceEvaluation | null }> {
  const d = ctx.deployment;
  if (!d || !ctx.config.deploy.evaluate) {
    return { final: lastEpochTestWith(ctx, ctx.state.plan) ?? (await evaluate(ctx.model, ctx.testLoader, { forward: evaluationForward(ctx, ctx.state.plan), signal: ctx.stop })), device: null };
  }
  if (!ctx.state.plan) {
    ctx.state.plan = makePlan(ctx, d);
    saveLast(ctx);
  }
  const plan = ctx.state.plan;
  const start = performance.now();
  const ir = lowerForEvaluation(trace(ctx.model, [...d.imageShape]), plan, d.normalization, d.meta);
  const lowered = performance.now();
  const reused = lastEpochTestWith(ctx, plan);
  const final = reused ?? (await evaluate(ctx.model, ctx.testLoader, { forward: evaluationForward(ctx, plan, ir), signal: ctx.stop }));
  const evaluated = performance.now();
  const device = await evaluateOnDevice(ir, testData, final.predictions);
  const seconds = (t: number): string => (t / 1000).toFixed(1);
  ctx.progressSink.line(
    `on device (integer model, ${device.engine}): top-1 ${device.top1.toFixed(2)}% against fake-quant ${final.top1.toFixed(2)}%, ` +
      `same top-1 on ${device.sameTop1.toFixed(2)}% of ${device.images} images ` +
      `(lowering ${seconds(lowered - start)} s, simulated evaluation ${reused ? "the last epoch's" : `${seconds(evaluated - lowered)} s`}, integer model ${seconds(performance.now() - evaluated)} s)`,
  );
  return { final, device };
}

/**
 * The final phase's batch norms: normalizing with their running statistics, scale and shift fixed,
 * as the deployment folds them into the requantization. A learnt shift parks a channel's folded
 * offset on an activation threshold (the straight-through gradient of its most common input, a
 * window of zero codes, keeps crossing it), where float and integer rounding pick different codes
 * for the whole channel on every image. `frozen` false gives scale and shift their gradients back.
 */
function freezeBatchNorms(model: Module, frozen: boolean): void {
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof BatchNorm)) continue;
    if (frozen) m.training = false;
    m.weight.requiresGrad = m.bias.requiresGrad = !frozen;
  }
}

function checkQuantizersFinite(model: Module): void {
  for (const [layer, q] of allQuantizers(model)) {
    for (const [name, p] of q.parameters) {
      const g = p.grad?.toArray();
      if (g && g.some((v) => !Number.isFinite(v))) throw new DivergedError(`${layer}: ${q.method} gradient of ${name} is not finite`);
    }
  }
}

/**
 * The epochs from where the run stands. A stop request (signal, `opts.signal`, `stopAfterSteps`) is
 * seen after the step it arrives in, or inside an evaluation or Hessian estimation; the run then
 * saves `last` at its progress (a resume repeats nothing and skips nothing) and returns 'interrupted'.
 */
async function runEpochs(ctx: EpochContext): Promise<'finished' | 'interrupted'> {
  const { config, state } = ctx;
  try {
    for (let epoch = state.progress.epoch; epoch < totalEpochs(config); epoch++) {
      if (state.progress.epoch !== epoch) state.progress = { ...state.progress, epoch, step: 0, partial: { lossSum: 0, correct: 0, count: 0 } };
      await stopPoint(ctx.stop);
      await maybeEstimateDelta(ctx, epoch);
      await trainEpoch(ctx, epoch);
    }
    return 'finished';
  } catch (e) {
    if (!(e instanceof StopRequested)) throw e;
    if (state.savedProgress !== state.progress) saveLast(ctx);
    const { epoch, step } = state.progress;
    ctx.progressSink.line(`stopped at epoch ${epoch + 1}, step ${step}; checkpoint saved in ${ctx.outDir} (continue with --resume)`);
    return 'interrupted';
  }
}

function saveLast(ctx: EpochContext): void {
  saveCheckpoint(ctx.outDir, 'last', ctx.model, ctx.optimizer, { ...runInfo(ctx), progress: ctx.state.progress, metrics: metricsFor(ctx) });
  ctx.state.savedProgress = ctx.state.progress;
}

/** One epoch's steps from state.progress.step, its evaluation, metrics and checkpoints. */
async function trainEpoch(ctx: EpochContext, epoch: number): Promise<void> {
  const { config, model, optimizer, trainLoader, state, progressSink } = ctx;
  const plan = epochPlan(ctx, epoch);
  if (state.forward?.plan !== plan) state.forward = null;
  const steps = trainLoader.stepsPerEpoch;
  const epochStart = performance.now();
  let [dataMs, stepMsTotal, images] = [0, 0, 0];
  const startStep = state.progress.step;
  let { lossSum, correct, count } = state.progress.partial;
  for await (const batch of trainLoader.epoch(epoch, startStep)) {
    const lr = plan ? config.deploy.finalLr : lrFactor(config.schedule, config.warmupEpochs > 0 ? { epochs: config.warmupEpochs } : undefined, epoch, epoch + batch.index / steps);
    optimizer.setLrFactor(lr);
    const t0 = performance.now();
    let r;
    try {
      state.forward ??= { run: trainingForwardOf(model, [batch.channels, batch.height, batch.width], progressSink, plan), plan };
      if (plan) freezeBatchNorms(model, true);
      r = trainStep(model, optimizer, { images: batch.images, labels: batch.labels, shape: [batch.size, batch.channels, batch.height, batch.width] }, {
        forward: state.forward.run,
        labelSmoothing: config.labelSmoothing,
        beforeUpdate: () => checkQuantizersFinite(model),
      });
    } catch (e) {
      const msg = (e as Error).message;
      if (e instanceof DivergedError || /non-finite|NaN|is Infinity|diverged/.test(msg)) {
        throw new DivergedError(`training diverged at epoch ${epoch + 1}, step ${batch.index}: ${msg}; the last good checkpoint is kept in ${ctx.outDir}`);
      }
      throw e;
    }
    const stepMs = performance.now() - t0;
    stepMsTotal += stepMs;
    dataMs += batch.waitMs;
    images += batch.size;
    lossSum += r.loss * r.count;
    correct += r.correct;
    count += r.count;
    const done = batch.index + 1 - startStep;
    const elapsed = (performance.now() - epochStart) / 1000;
    const perStep = elapsed / done;
    const remaining = steps - batch.index - 1 + (totalEpochs(config) - epoch - 1) * steps;
    progressSink.step({
      epoch,
      epochs: totalEpochs(config),
      step: batch.index + 1,
      steps,
      loss: lossSum / count,
      accuracy: correct / count,
      imgPerSec: images / elapsed,
      dataMs: dataMs / done,
      stepMs: stepMsTotal / done,
      etaSeconds: remaining * perStep,
    });
    state.progress = { ...state.progress, step: batch.index + 1, partial: { lossSum, correct, count } };
    state.stepsThisProcess++;
    if (ctx.opts.stopAfterSteps !== undefined && state.stepsThisProcess >= ctx.opts.stopAfterSteps) throw new StopRequested(`stop after ${ctx.opts.stopAfterSteps} steps`);
    await stopPoint(ctx.stop);
  }
  if (plan) freezeBatchNorms(model, false);
  const seconds = (performance.now() - epochStart) / 1000;
  const evalNow = (epoch + 1) % config.evalEvery === 0 || epoch + 1 === totalEpochs(config);
  const test = evalNow ? await evaluate(model, ctx.testLoader, { forward: evaluationForward(ctx, plan), signal: ctx.stop }) : null;
  if (test && epoch + 1 === totalEpochs(config)) ctx.lastEpochTest = { plan, summary: test };
  const metrics: EpochMetrics = {
    epoch,
    lr: optimizer.groups[0].lr,
    trainLoss: lossSum / count,
    trainTop1: (100 * correct) / count,
    testLoss: test?.loss ?? null,
    testTop1: test?.top1 ?? null,
    testTop5: test?.top5 ?? null,
    imgPerSec: images / Math.max(1e-9, stepMsTotal / 1000 + dataMs / 1000),
    stepMs: stepMsTotal / Math.max(1, steps - startStep),
    dataMs: dataMs / Math.max(1, steps - startStep),
    seconds,
    ...(quantizedLayers(model).length > 0 ? { quantizers: quantizerSnapshot(model) } : {}),
  };
  state.epochs.push(metrics);
  writeMetrics(join(ctx.outDir, 'metrics.jsonl'), state.epochs);
  const improved = test !== null && test.top1 > state.progress.bestTop1;
  state.progress = {
    ...state.progress,
    epoch: epoch + 1,
    step: 0,
    partial: { lossSum: 0, correct: 0, count: 0 },
    bestTop1: improved ? test.top1 : state.progress.bestTop1,
    bestEpoch: improved ? epoch : state.progress.bestEpoch,
  };
  progressSink.line(
    `epoch ${epoch + 1}/${totalEpochs(config)}${plan ? ' (final phase)' : ''}: train loss ${metrics.trainLoss.toFixed(4)} acc ${metrics.trainTop1.toFixed(2)}%` +
      (test ? `, test loss ${test.loss.toFixed(4)} top-1 ${test.top1.toFixed(2)}% top-5 ${test.top5.toFixed(2)}%` : '') +
      `, ${(images / seconds).toFixed(0)} img/s, data ${metrics.dataMs.toFixed(1)} ms/step of ${metrics.stepMs.toFixed(0)} ms`,
  );
  if (improved) saveCheckpoint(ctx.outDir, 'best', model, null, { ...runInfo(ctx), progress: state.progress, metrics: { ...metricsFor(ctx), test } });
  saveLast(ctx);
}

/**
 * The fused training forward of the model's graph, or its own forward (without the fusions) for a
 * model the graph cannot trace (a layer of the user's own without sub-modules), said once.
 */
function trainingForwardOf(model: Module, sampleShape: Shape, progress: ProgressSink, plan: DeploymentPlan | null): (x: Tensor) => Tensor {
  try {
    return trainingForward(model, sampleShape, plan ? (graph) => deploymentRewrite(graph, plan, 'training') : undefined);
  } catch (e) {
    if (!(e instanceof GraphError) || plan) throw e;
    progress.line(`training without the graph's fusions: ${e.message}`);
    return (x) => model.call(x);
  }
}

/** A resumed run's progress, refused when it lies outside the run (a sidecar edited or from another run). */
function checkedProgress(p: TrainingProgress, epochs: number, stepsPerEpoch: number, sidecar: string): TrainingProgress {
  const inside = Number.isInteger(p.epoch) && Number.isInteger(p.step) && p.epoch >= 0 && p.step >= 0 && p.step <= stepsPerEpoch;
  if (!inside || p.epoch > epochs || (p.epoch === epochs && p.step > 0)) {
    throw new Error(`${sidecar}: progress (epoch ${p.epoch}, step ${p.step}) lies outside the run's ${epochs} epochs of ${stepsPerEpoch} steps`);
  }
  return p;
}

/** What every checkpoint of the run records about it: config, the model instance's class, the image shape, classes, the plan. */
function runInfo(ctx: EpochContext): Pick<CheckpointMeta, 'config' | 'architecture' | 'inputShape' | 'classes' | 'deploymentPlan'> {
  const { channels, height, width, classes } = ctx.trainLoader.dataset;
  return {
    config: ctx.config,
    architecture: ctx.opts.model?.constructor.name,
    inputShape: [channels, height, width],
    classes,
    ...(ctx.state.plan && { deploymentPlan: ctx.state.plan }),
  };
}

function metricsFor(ctx: EpochContext): Record<string, unknown> {
  return { startWeights: ctx.fingerprint.startWeights, last: ctx.state.epochs.at(-1) ?? null };
}

/** EWGS: re-estimate delta at the start of epochs hessianEvery, 2*hessianEvery, ... (never epoch 0). */
async function maybeEstimateDelta(ctx: EpochContext, epoch: number): Promise<void> {
  const { config, state } = ctx;
  const e = config.ewgs;
  if (config.method !== 'ewgs' || !e.hessian || epoch === 0 || epoch % e.hessianEvery !== 0 || state.progress.hessianEpoch >= epoch) return;
  const batches = await takeBatches(ctx.trainLoader, HESSIAN_PASS + epoch, e.hessianBatches);
  const estimates = await estimateEwgsDelta(ctx.model, batches, {
    estimator: e.hessianEstimator,
    maxSamples: e.hessianSamples,
    seed: config.seed * 7919 + epoch,
    signal: ctx.stop,
  });
  state.progress = { ...state.progress, hessianEpoch: epoch };
  const deltas = estimates.map((d) => d.delta);
  ctx.progressSink.line(
    `ewgs: delta from the Hessian trace for ${deltas.length} quantizers: mean ${(deltas.reduce((a, b) => a + b, 0) / deltas.length).toExponential(3)}, ` +
      `max ${Math.max(...deltas).toExponential(3)}`,
  );
}
