/**
 * Checkpoints: the model's state dict (weights, quantizer parameters, batch-norm statistics) as
 * safetensors, the optimizer state as a second safetensors file, and a JSON sidecar (config,
 * progress, metrics, versions, the files' sha256) that is written last.
 *
 * Each save writes new, uniquely named tensor files and then replaces the sidecar atomically: the
 * sidecar is the commit point, so a kill at any moment leaves the previous checkpoint readable.
 * Superseded tensor files are removed only after the new sidecar is in place; a save that fails (a
 * full disk) removes the tensor files it wrote and leaves the previous checkpoint as it was.
 */
import type { DeploymentPlan } from '../export/plan.js';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { getBackend } from '../backend/index.js';
import { type TensorMap, loadStateDict, makeTensor, readJsonFile, serializeSafetensors, toFloat32, writeFileAtomic, writeJsonAtomic } from '../io/index.js';
import type { Module, StateDict } from '../nn/module.js';
import type { Optimizer, OptimizerState } from '../optim/optimizer.js';
import type { TrainConfig } from './config.js';
import { TINYQUANT_VERSION } from '../package.js';

export const CHECKPOINT_FORMAT = 'tinyquant-checkpoint';
export const CHECKPOINT_VERSION = 1;

export type CheckpointKind = 'last' | 'best';

/** Where training stands: `epoch` is the current epoch (0-based), `step` the next step in it. */
export interface TrainingProgress {
  readonly epoch: number;
  readonly step: number;
  /** Running sums of the partial epoch, so a resumed epoch reports the same metrics. */
  readonly partial: { readonly lossSum: number; readonly correct: number; readonly count: number };
  readonly bestTop1: number;
  readonly bestEpoch: number;
  /** Last epoch whose EWGS delta was estimated (-1: none). */
  readonly hessianEpoch: number;
}

export interface CheckpointMeta {
  readonly format: typeof CHECKPOINT_FORMAT;
  readonly version: number;
  readonly kind: CheckpointKind;
  readonly weights: { readonly file: string; readonly sha256: string };
  readonly optimizer: { readonly file: string; readonly sha256: string; readonly step: number } | null;
  readonly config: TrainConfig;
  /** The class name of a model instance the run was given in place of `config.model`. */
  readonly architecture?: string;
  /** [channels, height, width] of the images the model was trained on (absent in older checkpoints). */
  readonly inputShape?: readonly [number, number, number];
  /** The deployment plan the weights were trained under (a run's final phase) or evaluated with (its end). */
  readonly deploymentPlan?: DeploymentPlan;
  /** Class names of the training split (absent in older checkpoints). */
  readonly classes?: readonly string[];
  readonly progress: TrainingProgress;
  readonly metrics: Record<string, unknown>;
  readonly versions: { readonly tinyquant: string; readonly node: string; readonly backend: string };
  readonly savedAt: string;
}

export interface LoadedCheckpoint {
  readonly state: StateDict;
  /** Null for plain weight files (safetensors without sidecar, PyTorch checkpoints). */
  readonly meta: CheckpointMeta | null;
  readonly optimizer: OptimizerState | null;
  /** The file the weights came from. */
  readonly source: string;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function toTensorMap(state: StateDict): TensorMap {
  const map: TensorMap = new Map();
  for (const [key, t] of state) map.set(key, makeTensor('F32', [...t.shape], t.data));
  return map;
}

function fromTensorMap(map: TensorMap): StateDict {
  const state: StateDict = new Map();
  for (const [key, t] of map) state.set(key, { shape: [...t.shape], data: toFloat32(t) });
  return state;
}

function writeTensors(dir: string, file: string, state: StateDict, metadata: Record<string, string>): { file: string; sha256: string } {
  const bytes = serializeSafetensors(toTensorMap(state), metadata);
  writeFileAtomic(join(dir, file), bytes);
  return { file, sha256: sha256(bytes) };
}

type CheckpointInfo = Pick<CheckpointMeta, 'config' | 'architecture' | 'inputShape' | 'deploymentPlan' | 'classes' | 'progress' | 'metrics'>;

/** Save `last` or `best`; returns the sidecar path. */
export function saveCheckpoint(dir: string, kind: CheckpointKind, model: Module, optimizer: Optimizer | null, info: CheckpointInfo): string {
  const tag = `e${String(info.progress.epoch).padStart(4, '0')}-s${String(info.progress.step).padStart(6, '0')}`;
  const written: string[] = [];
  const sidecar = join(dir, `${kind}.json`);
  try {
    const weights = writeTensors(dir, `${kind}-${tag}.safetensors`, model.stateDict(), { format: CHECKPOINT_FORMAT, kind });
    written.push(weights.file);
    let optim: CheckpointMeta['optimizer'] = null;
    if (optimizer) {
      const state = optimizer.state();
      optim = { ...writeTensors(dir, `${kind}-${tag}.optimizer.safetensors`, state.tensors, { step: String(state.step) }), step: state.step };
      written.push(optim.file);
    }
    writeJsonAtomic(sidecar, checkpointMeta(kind, weights, optim, info));
  } catch (e) {
    const previous = readJsonOrNull(sidecar) as Partial<CheckpointMeta> | null;
    const kept = [previous?.weights?.file, previous?.optimizer?.file];
    for (const file of written) if (!kept.includes(file)) rmSync(join(dir, file), { force: true });
    throw new Error(`saving the ${kind} checkpoint in ${dir} failed (${(e as Error).message}); ${previous ? `the previous one (${sidecar}) is kept` : 'no earlier one exists'}`, { cause: e });
  }
  removeSuperseded(dir, kind, written);
  return sidecar;
}

function readJsonOrNull(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

function checkpointMeta(kind: CheckpointKind, weights: CheckpointMeta['weights'], optim: CheckpointMeta['optimizer'], info: CheckpointInfo): CheckpointMeta {
  return {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    kind,
    weights,
    optimizer: optim,
    config: info.config,
    ...(info.architecture !== undefined && { architecture: info.architecture }),
    ...(info.inputShape !== undefined && { inputShape: info.inputShape }),
    ...(info.deploymentPlan !== undefined && { deploymentPlan: info.deploymentPlan }),
    ...(info.classes !== undefined && { classes: info.classes }),
    progress: info.progress,
    metrics: info.metrics,
    versions: { tinyquant: TINYQUANT_VERSION, node: process.version, backend: getBackend().name },
    savedAt: new Date().toISOString(),
  };
}

/**
 * Removes the tensor files of `dir` that no sidecar refers to: those of a save that was killed before
 * its sidecar, or after it but before the superseded files went. A sidecar that cannot be read keeps
 * every file of its kind.
 */
export function removeUnreferencedCheckpointFiles(dir: string): void {
  for (const kind of ['last', 'best'] as const) {
    const sidecar = join(dir, `${kind}.json`);
    if (!existsSync(sidecar)) {
      removeSuperseded(dir, kind, []);
      continue;
    }
    const meta = readJsonOrNull(sidecar) as Partial<CheckpointMeta> | null;
    if (meta?.weights?.file) removeSuperseded(dir, kind, [meta.weights.file, meta.optimizer?.file ?? '']);
  }
}

function removeSuperseded(dir: string, kind: CheckpointKind, keep: readonly string[]): void {
  for (const name of readdirSync(dir)) {
    if (name.startsWith(`${kind}-e`) && name.endsWith('.safetensors') && !keep.includes(name)) rmSync(join(dir, name), { force: true });
  }
}

function readVerified(file: string, expected: string, sidecar: string): Uint8Array {
  if (!existsSync(file)) throw new Error(`${sidecar}: the checkpoint file ${basename(file)} it refers to is missing`);
  const bytes = readFileSync(file);
  if (sha256(bytes) !== expected) throw new Error(`${file}: contents do not match the sha256 recorded in ${sidecar} (corrupt or modified)`);
  return bytes;
}

function checkMeta(raw: unknown, sidecar: string): CheckpointMeta {
  const meta = raw as Partial<CheckpointMeta> | null;
  if (!meta || meta.format !== CHECKPOINT_FORMAT) throw new Error(`${sidecar}: not a tinyquant checkpoint sidecar (format field missing)`);
  if (meta.version !== CHECKPOINT_VERSION) {
    throw new Error(`${sidecar}: checkpoint format version ${meta.version} is not supported by this tinyquant (expects ${CHECKPOINT_VERSION})`);
  }
  if (!meta.weights?.file || !meta.config || !meta.progress) throw new Error(`${sidecar}: incomplete checkpoint sidecar`);
  if (meta.classes !== undefined && !(Array.isArray(meta.classes) && meta.classes.every((c) => typeof c === 'string'))) {
    throw new Error(`${sidecar}: classes must be a list of class names`);
  }
  return meta as CheckpointMeta;
}

/** Resolve a run directory, a sidecar, or a weights file to what should be read. */
function resolvePath(path: string): { sidecar: string | null; weights: string } {
  if (existsSync(path) && statSync(path).isDirectory()) {
    const sidecar = join(path, 'last.json');
    if (!existsSync(sidecar)) throw new Error(`${path}: no checkpoint (last.json) in this directory`);
    return { sidecar, weights: '' };
  }
  if (!existsSync(path)) throw new Error(`checkpoint ${path} does not exist`);
  if (path.endsWith('.json')) return { sidecar: path, weights: '' };
  return { sidecar: null, weights: path };
}

/**
 * [channels, height, width] of the images a checkpoint's model was trained on: as its sidecar
 * records it, or, for checkpoints saved before sidecars did, the shape of the named dataset (the
 * channels from the first convolution). Null when neither tells.
 */
export function inputShapeOf(checkpoint: LoadedCheckpoint, config: TrainConfig): readonly [number, number, number] | null {
  if (checkpoint.meta?.inputShape) return checkpoint.meta.inputShape;
  const side = config.dataset === 'mnist' || config.dataset === 'fashion-mnist' ? 28 : config.dataset === 'cifar10' || config.dataset === 'cifar100' ? 32 : null;
  const conv = checkpoint.state.get('conv1.weight');
  return side !== null && conv ? [conv.shape[1], side, side] : null;
}

/** Read a checkpoint: a run directory, one of our sidecars, or any weights file (safetensors, .pth). */
export function readCheckpoint(path: string): LoadedCheckpoint {
  const { sidecar, weights } = resolvePath(path);
  if (!sidecar) return { state: readWeights(weights), meta: null, optimizer: null, source: weights };
  const meta = checkMeta(readJsonFile(sidecar), sidecar);
  const dir = dirname(sidecar);
  const weightsFile = join(dir, meta.weights.file);
  readVerified(weightsFile, meta.weights.sha256, sidecar);
  let optimizer: OptimizerState | null = null;
  if (meta.optimizer) {
    const file = join(dir, meta.optimizer.file);
    readVerified(file, meta.optimizer.sha256, sidecar);
    optimizer = { step: meta.optimizer.step, tensors: fromTensorMap(loadStateDict(file)) };
  }
  return { state: readWeights(weightsFile), meta, optimizer, source: weightsFile };
}

/** Entries tinyquant does not keep: PyTorch's batch counters, EWGS's per-layer `init` flags (integer tensors). */
const DROPPED_KEYS = /(^|\.)(init|num_batches_tracked)$/;
const FLOAT_DTYPES: ReadonlySet<string> = new Set(['F64', 'F32', 'F16', 'BF16']);

/**
 * Reference implementations name a few things differently: APoT's classifier is `fc` and its
 * projection shortcut `downsample`; EWGS keeps an `init` flag buffer per quantized layer.
 */
export function mapReferenceKeys(state: StateDict): StateDict {
  const out: StateDict = new Map();
  for (const [key, value] of state) {
    if (DROPPED_KEYS.test(key)) continue;
    const mapped = key.replace(/^fc\./, 'linear.').replace(/\.downsample\./, '.shortcut.');
    out.set(mapped, value);
  }
  return out;
}

/** Weights from any supported file (safetensors, PyTorch zip or legacy), keys mapped to ours. */
export function readWeights(file: string): StateDict {
  const tensors = loadStateDict(file);
  for (const [key, t] of tensors) {
    if (!FLOAT_DTYPES.has(t.dtype) && !DROPPED_KEYS.test(key)) {
      throw new Error(`${file}: tensor "${key}" is ${t.dtype}; weights and buffers must be floating point (F32, F16, BF16 or F64)`);
    }
  }
  return mapReferenceKeys(fromTensorMap(tensors));
}
