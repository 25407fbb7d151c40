/**
 * Training configuration: one plain object (from flags, or a JSON/YAML file) checked against a
 * schema; an error names the bad field and the allowed values.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isNode, isScalar, parseDocument, visit } from 'yaml';
import {
  DATASET_NAMES,
  type DatasetName,
  type ImageChannels,
  NORMALIZATION_PRESETS,
  type NormalizationPreset,
  defaultNormalization,
} from '../data/index.js';
import { type ModelName, modelNames } from '../models/index.js';
import type { Schedule } from '../optim/schedule.js';
import { DuplicateKeyError, parseJsonStrict } from '../util/json.js';
import { type FirstLastPolicy, firstLastPolicies } from '../quant/quantize.js';
import { type MethodName, methodNames } from '../quant/quantizer.js';
import { hasControlCharacters, printable } from '../util/text.js';

export interface ParamGroupConfig {
  readonly name: string;
  /** A regular expression on parameter names, or `kind:<weight|bias|norm|quant>`. */
  readonly match: string;
  readonly lr: number;
  readonly weightDecay: number;
}

export interface EwgsConfig {
  /** Fixed backward scaling factor; the start value when `hessian` is on (the reference starts at 0). */
  readonly delta: number;
  /** Re-estimate delta from the Hessian trace every `hessianEvery` epochs (never at epoch 0). */
  readonly hessian: boolean;
  readonly hessianEvery: number;
  readonly hessianBatches: number;
  /** Most Hutchinson samples per estimate (the reference: 50, with an early stop). */
  readonly hessianSamples: number;
  readonly hessianEstimator: 'joint' | 'per-quantizer';
}

/** The deployment of a quantized run (export/plan.ts, export/simulate.ts). */
export interface DeployConfig {
  /**
   * Lower the model at the end and evaluate the integer model on the test images (the final
   * fake-quant evaluation then simulates the deployment too). Checked before training starts: a
   * model the lowering rejects stops the run there, naming the layer.
   */
  readonly evaluate: boolean;
  /**
   * The final phase: N epochs after the `epochs` of quantization-aware training, with the deployment
   * simulated (its plan made at their start) and batch norm frozen (statistics, scale and shift); 0:
   * none. Float runs have no deployment: ignored.
   */
  readonly finalEpochs: number;
  /**
   * The final phase's learning rates, constant, as a factor on the configured ones (`lr`, each
   * group's): with frozen statistics batch norm no longer makes a convolution's output independent
   * of its weights' scale, and steps that are safe with batch statistics can make the weights diverge
   * (EWGS at lr 0.0025 within ten steps).
   */
  readonly finalLr: number;
  readonly residualBits: 8 | 16;
  /** Bits of the image after the normalization lookup table. */
  readonly inputBits: 8 | 16;
  /** Training images the plan's fixed-point scales are calibrated on. */
  readonly calibrationImages: number;
}

export interface TrainConfig {
  readonly model: ModelName;
  readonly dataset: DatasetName;
  /** Where named datasets (cifar10, mnist, ...) are looked for first; not part of the run's identity. */
  readonly dataDir?: string;
  /** The folder or .tar(.gz) archive of this run's own dataset (dataset imagefolder). */
  readonly dataPath?: string;
  /** imagefolder: convert every image to 1 (grey, BT.601 luma) or 3 (RGB) channels; default: the files' own, which must agree. */
  readonly channels?: ImageChannels;
  /** imagefolder: the size every image must have, [height, width]; default: the first image's. */
  readonly imageSize?: readonly [number, number];
  /** imagefolder: resize images of another size to imageSize (area averaging) instead of rejecting them. */
  readonly resize: boolean;
  /** Hold out this fraction of the training images (stratified, seeded by `seed`) as the test set; 0 = the dataset's test split. */
  readonly valSplit: number;
  /** Default: the dataset's (MNIST and Fashion-MNIST statistics; 'none' for 1 channel; else APoT's CIFAR constants). */
  readonly normalization: NormalizationPreset;
  /** Random crop (4-pixel padding) and horizontal flip. */
  readonly augment: boolean;
  readonly method: MethodName | 'float';
  readonly wbits: number;
  readonly abits: number;
  readonly firstLast: FirstLastPolicy;
  readonly perChannel: boolean;
  readonly apotVariant: 'cifar' | 'imagenet';
  readonly ewgs: EwgsConfig;
  readonly deploy: DeployConfig;
  readonly epochs: number;
  readonly batch: number;
  readonly evalBatch: number;
  readonly optimizer: 'sgd' | 'adam' | 'adamw';
  readonly lr: number;
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  /** Groups with their own lr / weight decay, matched in order before the default group. */
  readonly paramGroups: readonly ParamGroupConfig[];
  readonly schedule: Schedule;
  readonly warmupEpochs: number;
  /** Starting weights: a float or quantized checkpoint (ours, safetensors, or a PyTorch .pth). */
  readonly init?: string;
  readonly seed: number;
  readonly labelSmoothing: number;
  /** Train / test on a fixed subset of this many images (quick runs); 0 = all. */
  readonly trainSubset: number;
  readonly testSubset: number;
  readonly workers: number;
  /** Evaluate on the test set every this many epochs (and always after the last one). */
  readonly evalEvery: number;
}

export const DEFAULT_CONFIG: TrainConfig = {
  model: 'resnet20',
  dataset: 'cifar10',
  resize: false,
  valSplit: 0,
  normalization: 'apot',
  augment: true,
  method: 'float',
  wbits: 32,
  abits: 32,
  firstLast: 'int8',
  perChannel: false,
  apotVariant: 'cifar',
  ewgs: { delta: 0, hessian: false, hessianEvery: 10, hessianBatches: 3, hessianSamples: 50, hessianEstimator: 'joint' },
  deploy: { evaluate: true, finalEpochs: 0, finalLr: 0.02, residualBits: 16, inputBits: 8, calibrationImages: 256 },
  epochs: 1,
  batch: 128,
  evalBatch: 500,
  optimizer: 'sgd',
  lr: 0.1,
  momentum: 0.9,
  nesterov: false,
  weightDecay: 1e-4,
  paramGroups: [],
  schedule: { kind: 'cosine', epochs: 1 },
  warmupEpochs: 0,
  seed: 0,
  labelSmoothing: 0,
  trainSubset: 0,
  testSubset: 0,
  workers: 1,
  evalEvery: 1,
};

export class ConfigError extends Error {}

type Raw = Record<string, unknown>;

function fail(source: string, field: string, message: string): never {
  throw new ConfigError(`${source}: ${field} ${message}`);
}

function isObject(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const FIELD_CHECKS: { readonly [K in keyof TrainConfig]-?: (v: unknown, source: string, field: string) => TrainConfig[K] } = {
  model: (v, s, f) => oneOf(v, modelNames, s, f),
  dataset: (v, s, f) => oneOf(v, DATASET_NAMES, s, f),
  dataDir: (v, s, f) => str(v, s, f),
  dataPath: (v, s, f) => str(v, s, f),
  channels: (v, s, f) => (v === 1 || v === 3 ? v : fail(s, f, `must be 1 (grey) or 3 (RGB); got ${JSON.stringify(v)}`)),
  imageSize: (v, s, f) => imageSize(v, s, f),
  resize: (v, s, f) => bool(v, s, f),
  valSplit: (v, s, f) => fraction(v, s, f),
  normalization: (v, s, f) => oneOf(v, NORMALIZATION_PRESETS, s, f),
  augment: (v, s, f) => bool(v, s, f),
  method: (v, s, f) => oneOf(v, ['float', ...methodNames] as const, s, f),
  wbits: (v, s, f) => int(v, s, f, 1, 32),
  abits: (v, s, f) => int(v, s, f, 1, 32),
  firstLast: (v, s, f) => oneOf(v, firstLastPolicies, s, f),
  perChannel: (v, s, f) => bool(v, s, f),
  apotVariant: (v, s, f) => oneOf(v, ['cifar', 'imagenet'] as const, s, f),
  ewgs: (v, s, f) => ewgsConfig(v, s, f),
  deploy: (v, s, f) => deployConfig(v, s, f),
  epochs: (v, s, f) => int(v, s, f, 1),
  batch: (v, s, f) => int(v, s, f, 1),
  evalBatch: (v, s, f) => int(v, s, f, 1),
  optimizer: (v, s, f) => oneOf(v, ['sgd', 'adam', 'adamw'] as const, s, f),
  lr: (v, s, f) => positive(v, s, f),
  momentum: (v, s, f) => numberIn(v, s, f, 0, 1),
  nesterov: (v, s, f) => bool(v, s, f),
  weightDecay: (v, s, f) => numberIn(v, s, f, 0, Infinity),
  paramGroups: (v, s, f) => paramGroups(v, s, f),
  schedule: (v, s, f) => schedule(v, s, f),
  warmupEpochs: (v, s, f) => numberIn(v, s, f, 0, Infinity),
  init: (v, s, f) => str(v, s, f),
  seed: (v, s, f) => int(v, s, f, 0),
  labelSmoothing: (v, s, f) => numberIn(v, s, f, 0, 1),
  trainSubset: (v, s, f) => int(v, s, f, 0),
  testSubset: (v, s, f) => int(v, s, f, 0),
  workers: (v, s, f) => int(v, s, f, 0, 64),
  evalEvery: (v, s, f) => int(v, s, f, 1),
};

export const CONFIG_FIELDS = Object.keys(FIELD_CHECKS) as (keyof TrainConfig)[];

function oneOf<T extends string>(v: unknown, allowed: readonly T[], s: string, f: string): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    fail(s, f, `must be one of ${allowed.join(', ')}; got ${JSON.stringify(v)}`);
  }
  return v as T;
}

function str(v: unknown, s: string, f: string): string {
  if (typeof v !== 'string' || v === '') fail(s, f, `must be a non-empty string; got ${JSON.stringify(v)}`);
  return v;
}

function bool(v: unknown, s: string, f: string): boolean {
  if (typeof v !== 'boolean') fail(s, f, `must be true or false; got ${JSON.stringify(v)}`);
  return v;
}

function numberIn(v: unknown, s: string, f: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
    fail(s, f, `must be a number in [${lo}, ${hi}]; got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A fraction in [0, 1). */
function fraction(v: unknown, s: string, f: string): number {
  if (typeof v !== 'number' || !(v >= 0 && v < 1)) fail(s, f, `must be a fraction in [0, 1); got ${JSON.stringify(v)}`);
  return v;
}

function positive(v: unknown, s: string, f: string): number {
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) fail(s, f, `must be a number > 0; got ${JSON.stringify(v)}`);
  return v;
}

function int(v: unknown, s: string, f: string, lo: number, hi = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    fail(s, f, `must be an integer in [${lo}, ${hi === Number.MAX_SAFE_INTEGER ? '...' : hi}]; got ${JSON.stringify(v)}`);
  }
  return v;
}

function checkKeys(v: Raw, allowed: readonly string[], s: string, f: string): void {
  for (const key of Object.keys(v)) {
    if (!allowed.includes(key)) fail(s, f ? `${f}.${key}` : key, `is not a known field (known: ${allowed.join(', ')})`);
  }
}

function imageSize(v: unknown, s: string, f: string): [number, number] {
  if (!Array.isArray(v) || v.length !== 2) fail(s, f, `must be [height, width]; got ${JSON.stringify(v)}`);
  return [int(v[0], s, `${f}[0] (height)`, 1, 65535), int(v[1], s, `${f}[1] (width)`, 1, 65535)];
}

function ewgsConfig(v: unknown, s: string, f: string): EwgsConfig {
  if (!isObject(v)) fail(s, f, 'must be an object');
  const d = DEFAULT_CONFIG.ewgs;
  checkKeys(v, Object.keys(d), s, f);
  return {
    delta: v.delta === undefined ? d.delta : numberIn(v.delta, s, `${f}.delta`, 0, 1),
    hessian: v.hessian === undefined ? d.hessian : bool(v.hessian, s, `${f}.hessian`),
    hessianEvery: v.hessianEvery === undefined ? d.hessianEvery : int(v.hessianEvery, s, `${f}.hessianEvery`, 1),
    hessianBatches: v.hessianBatches === undefined ? d.hessianBatches : int(v.hessianBatches, s, `${f}.hessianBatches`, 1),
    hessianSamples: v.hessianSamples === undefined ? d.hessianSamples : int(v.hessianSamples, s, `${f}.hessianSamples`, 2),
    hessianEstimator:
      v.hessianEstimator === undefined ? d.hessianEstimator : oneOf(v.hessianEstimator, ['joint', 'per-quantizer'] as const, s, `${f}.hessianEstimator`),
  };
}

function deployConfig(v: unknown, s: string, f: string): DeployConfig {
  if (!isObject(v)) fail(s, f, 'must be an object');
  const d = DEFAULT_CONFIG.deploy;
  checkKeys(v, Object.keys(d), s, f);
  const bits = (x: unknown, field: string): 8 | 16 => (x === 8 || x === 16 ? x : fail(s, `${f}.${field}`, `must be 8 or 16; got ${JSON.stringify(x)}`));
  return {
    evaluate: v.evaluate === undefined ? d.evaluate : bool(v.evaluate, s, `${f}.evaluate`),
    finalEpochs: v.finalEpochs === undefined ? d.finalEpochs : int(v.finalEpochs, s, `${f}.finalEpochs`, 0),
    finalLr: v.finalLr === undefined ? d.finalLr : finalLr(v.finalLr, s, `${f}.finalLr`),
    residualBits: v.residualBits === undefined ? d.residualBits : bits(v.residualBits, 'residualBits'),
    inputBits: v.inputBits === undefined ? d.inputBits : bits(v.inputBits, 'inputBits'),
    calibrationImages: v.calibrationImages === undefined ? d.calibrationImages : int(v.calibrationImages, s, `${f}.calibrationImages`, 1, 100_000),
  };
}

function finalLr(v: unknown, s: string, f: string): number {
  if (typeof v !== 'number' || !(v > 0 && v <= 1)) fail(s, f, `must be a factor in (0, 1]; got ${JSON.stringify(v)}`);
  return v;
}

function paramGroups(v: unknown, s: string, f: string): ParamGroupConfig[] {
  if (!Array.isArray(v)) fail(s, f, 'must be a list of {name, match, lr, weightDecay}');
  return v.map((g, i) => {
    const field = `${f}[${i}]`;
    if (!isObject(g)) fail(s, field, 'must be an object {name, match, lr, weightDecay}');
    checkKeys(g, ['name', 'match', 'lr', 'weightDecay'], s, field);
    const match = str(g.match, s, `${field}.match`);
    if (!match.startsWith('kind:')) {
      try {
        new RegExp(match);
      } catch (e) {
        fail(s, `${field}.match`, `is not a valid regular expression: ${(e as Error).message}`);
      }
    } else {
      oneOf(match.slice(5), ['weight', 'bias', 'norm', 'quant'] as const, s, `${field}.match (kind)`);
    }
    return {
      name: str(g.name, s, `${field}.name`),
      match,
      lr: numberIn(g.lr, s, `${field}.lr`, 0, Infinity),
      weightDecay: numberIn(g.weightDecay, s, `${field}.weightDecay`, 0, Infinity),
    };
  });
}

function schedule(v: unknown, s: string, f: string): Schedule {
  if (!isObject(v)) fail(s, f, 'must be an object with kind constant, multistep or cosine');
  const kind = oneOf(v.kind, ['constant', 'multistep', 'cosine'] as const, s, `${f}.kind`);
  if (kind === 'constant') {
    checkKeys(v, ['kind'], s, f);
    return { kind };
  }
  if (kind === 'multistep') {
    checkKeys(v, ['kind', 'milestones', 'gamma'], s, f);
    if (!Array.isArray(v.milestones)) fail(s, `${f}.milestones`, 'must be a list of epochs');
    return {
      kind,
      milestones: v.milestones.map((m, i) => int(m, s, `${f}.milestones[${i}]`, 0)),
      gamma: v.gamma === undefined ? 0.1 : positive(v.gamma, s, `${f}.gamma`),
    };
  }
  checkKeys(v, ['kind', 'epochs', 'minFactor'], s, f);
  return {
    kind,
    // 0 until resolveConfig fills in the run's epochs (a cosine without its own length).
    epochs: v.epochs === undefined ? 0 : int(v.epochs, s, `${f}.epochs`, 1),
    minFactor: v.minFactor === undefined ? 0 : numberIn(v.minFactor, s, `${f}.minFactor`, 0, 1),
  };
}

/** Check a raw object field by field and fill in defaults. `source` names it in errors. */
export function resolveConfig(raw: unknown, source = 'config', base: TrainConfig = DEFAULT_CONFIG): TrainConfig {
  if (!isObject(raw)) throw new ConfigError(`${source}: must be an object of fields`);
  checkKeys(raw, CONFIG_FIELDS, source, '');
  // A base from an older run lacks the fields added since: they take their defaults.
  const out: Record<string, unknown> = { ...DEFAULT_CONFIG, ...base };
  for (const key of CONFIG_FIELDS) {
    if (raw[key] !== undefined) out[key] = FIELD_CHECKS[key](raw[key], source, key);
  }
  const config = out as unknown as TrainConfig;
  // Over the defaults, the normalization follows the dataset and its channel count.
  if (raw.normalization === undefined && base === DEFAULT_CONFIG) {
    out.normalization = defaultNormalization(config.dataset, config.channels ?? (config.dataset === 'mnist' || config.dataset === 'fashion-mnist' ? 1 : 3));
  }
  // Quantized runs: 4 bits unless given; activations follow the weights unless given.
  if (config.method !== 'float') {
    if (raw.wbits === undefined && config.wbits === 32) out.wbits = 4;
    if (raw.abits === undefined && config.abits === 32) out.abits = out.wbits;
  }
  // A cosine schedule without its own length follows the run's epochs.
  if (config.schedule.kind === 'cosine' && (raw.schedule === undefined || config.schedule.epochs === 0)) {
    out.schedule = { ...config.schedule, epochs: config.epochs };
  }
  checkCombination(out as unknown as TrainConfig, source);
  return out as unknown as TrainConfig;
}

/** Epochs a run of `c` trains: its `epochs`, then a quantized run's final phase. */
export function totalEpochs(c: TrainConfig): number {
  return c.epochs + (c.method === 'float' ? 0 : c.deploy.finalEpochs);
}

function checkCombination(c: TrainConfig, source: string): void {
  if (c.resize && !c.imageSize) fail(source, 'resize', 'needs imageSize [height, width], the size to resize to');
  if (c.method === 'float') return;
  if (c.wbits >= 32 || c.abits >= 32) fail(source, 'wbits/abits', `must be set below 32 for method ${c.method}`);
}

/** The config fields that are paths. */
export const PATH_FIELDS = ['dataDir', 'dataPath', 'init'] as const;

/** Fields that may differ between attempts of one run (where the data is, how it is loaded). */
const INCIDENTAL_FIELDS: readonly string[] = ['dataDir', 'workers'];

/**
 * The fields in which two configs of one run differ, ignoring incidental ones; paths compare as the
 * files they name (relative ones against `dir`, the directory the run was started in), so a config
 * read back from a run directory (paths made absolute) equals the one the run was given.
 */
export function configDifferences(a: TrainConfig, b: TrainConfig, dir = process.cwd()): string[] {
  const [x, y] = [a, b] as unknown as Record<string, unknown>[];
  const same = (k: string): boolean =>
    (PATH_FIELDS as readonly string[]).includes(k) && typeof x[k] === 'string' && typeof y[k] === 'string'
      ? resolve(dir, x[k] as string) === resolve(dir, y[k] as string)
      : JSON.stringify(x[k]) === JSON.stringify(y[k]);
  return [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => !INCIDENTAL_FIELDS.includes(k) && !same(k));
}

/** The config as a run directory's config.json keeps it: paths absolute, so that reading the file back finds the same files. */
export function configForFile(config: TrainConfig): TrainConfig {
  const out: Record<string, unknown> = { ...config };
  for (const k of PATH_FIELDS) if (typeof out[k] === 'string') out[k] = resolve(out[k] as string);
  return out as unknown as TrainConfig;
}

/** Relative paths of a config file's path fields, resolved against the file's directory. */
export function resolveConfigPaths(raw: Raw, fileDir: string, resolvePath = (path: string, dir: string): string => resolve(dir, path)): Raw {
  const out = { ...raw };
  for (const key of PATH_FIELDS) {
    if (typeof out[key] === 'string' && out[key] !== '') out[key] = resolvePath(out[key] as string, fileDir);
  }
  return out;
}

/** Read a JSON or YAML config file (by extension; YAML is a superset of JSON). */
export function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config ${path}: ${(e as Error).message}`);
  }
  const value = path.endsWith('.json') ? parseJsonConfig(text, path) : parseYamlConfig(text, path);
  checkKeyNames(value, path, '');
  return value;
}

function parseJsonConfig(text: string, path: string): unknown {
  try {
    return parseJsonStrict(text);
  } catch (e) {
    throw new ConfigError(`${path}: ${e instanceof DuplicateKeyError ? e.message : `not valid JSON: ${printable((e as Error).message)}`}`);
  }
}

/**
 * Strict YAML: a warning (an unknown tag or directive) is an error too, keys must be plain scalars
 * (the parser would turn a mapping key into its text), repeated keys are refused (the parser's
 * default), and aliases cannot expand beyond the parser's limit.
 */
function parseYamlConfig(text: string, path: string): unknown {
  const fail = (message: string): never => {
    // the parser's messages continue with a quote of the line: the first line says it all
    throw new ConfigError(`${path}: not valid YAML: ${message.split('\n')[0]}`);
  };
  const doc = parseDocument(text);
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) fail(problem.message);
  visit(doc, {
    Pair(_, pair) {
      if (!isScalar(pair.key)) fail(`a key${isNode(pair.key) ? ` at line ${lineOf(text, pair.key.range?.[0])}` : ''} is a list or mapping, not a name`);
    },
  });
  try {
    return doc.toJS();
  } catch (e) {
    return fail((e as Error).message);
  }
}

function lineOf(text: string, offset = 0): number {
  return text.slice(0, offset).split('\n').length;
}

/** Keys with line breaks or control characters are refused: no config field has them, and errors quote keys. */
function checkKeyNames(value: unknown, path: string, at: string, depth = 0): void {
  if (depth > 64) throw new ConfigError(`${path}: ${at || 'the top level'} is nested more than 64 levels deep`);
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkKeyNames(item, path, `${at}[${i}]`, depth + 1));
  } else if (isObject(value)) {
    for (const [key, item] of Object.entries(value)) {
      if (hasControlCharacters(key)) throw new ConfigError(`${path}: key ${JSON.stringify(key)}${at ? ` in ${at}` : ''} holds a line break or control character`);
      checkKeyNames(item, path, at ? `${at}.${key}` : key, depth + 1);
    }
  }
}
