/**
 * `tinyquant train`: a training run from flags and/or a JSON/YAML config file (flags override the
 * file). Writes checkpoints and metrics to --out; --resume continues an interrupted run.
 */
import { dirname } from 'node:path';
import { createBackend, getBackend, setBackend } from '../backend/index.js';
import { DATASET_NAMES } from '../data/load.js';
import { NORMALIZATION_PRESETS } from '../data/augment.js';
import { modelNames } from '../models/index.js';
import { type TrainConfig, ConfigError, readConfigFile, resolveConfig, resolveConfigPaths } from '../train/config.js';
import { streamProgress } from '../train/progress.js';
import { loadTrainingData, train } from '../train/trainer.js';
import { type CommandSpec, type Options, type ParsedArgs, UsageError, decimalNumber, flag, parseOrHelp, str, unexpectedArgument } from './args.js';
import { readingInput } from './errors.js';
import { quantizationOptions } from './quant-flags.js';

/** The flags naming where a dataset is and how its images are read (train, eval, export). */
export const DATA_OPTIONS: Options = {
  'data-dir': { type: 'string', value: 'DIR', description: 'where named datasets are looked for (default: TINYQUANT_DATA, ../shared/data, the download cache)' },
  'data-path': { type: 'string', value: 'PATH', description: '(imagefolder) the folder or .tar(.gz) archive: <class>/<image> or train|test/<class>/<image>' },
  channels: { type: 'string', value: '1|3', description: '(imagefolder) convert the images to grey or RGB' },
  'image-size': { type: 'string', value: 'HxW', description: '(imagefolder) the images\' size (height x width): checked, or with --resize made so' },
  resize: { type: 'boolean', description: '(imagefolder) scale images of another size to --image-size (area averaging)' },
  'val-split': { type: 'string', value: 'F', description: 'hold out this fraction of the training images (stratified, seeded) as the test set' },
};

/** --backend and --threads (applyBackendFlags). */
export const BACKEND_OPTIONS: Options = {
  backend: { type: 'string', value: 'js|native', description: 'the compute backend (default: native when it loads, else js; TINYQUANT_BACKEND)' },
  threads: { type: 'string', value: 'T', description: 'backend threads (default: TINYQUANT_THREADS, else all cores)' },
};

export const TRAIN: CommandSpec = {
  name: 'train',
  summary: 'train a model (float or quantization-aware)',
  synopsis: '[--config FILE] [--out DIR] [--resume] [options]',
  about: 'Flags override the fields of the config file (defaults: the config\'s, else tinyquant\'s).',
  options: {
    config: { type: 'string', value: 'FILE', description: 'a YAML or JSON file of config fields' },
    out: { type: 'string', value: 'DIR', description: 'the run directory (default runs/MODEL-METHOD[-wWaA]-sSEED)' },
    resume: { type: 'boolean', description: 'continue the interrupted run in --out' },
    quiet: { type: 'boolean', description: 'no progress display' },
    model: { type: 'string', value: modelNames.join('|'), description: 'the architecture' },
    dataset: { type: 'string', value: DATASET_NAMES.join('|'), description: 'the dataset' },
    ...DATA_OPTIONS,
    normalization: { type: 'string', value: NORMALIZATION_PRESETS.join('|'), description: 'input normalization (default: follows the data)' },
    'no-augment': { type: 'boolean', description: 'train without random crops and flips' },
    ...quantizationOptions,
    epochs: { type: 'string', value: 'N', description: 'training epochs' },
    batch: { type: 'string', value: 'B', description: 'training batch size' },
    'eval-batch': { type: 'string', value: 'B', description: 'evaluation batch size' },
    optimizer: { type: 'string', value: 'sgd|adam|adamw', description: 'the optimizer' },
    lr: { type: 'string', value: 'LR', description: 'learning rate' },
    momentum: { type: 'string', value: 'M', description: 'SGD momentum' },
    'weight-decay': { type: 'string', value: 'WD', description: 'weight decay' },
    schedule: { type: 'string', value: 'cosine|constant|multistep:E1,E2[:GAMMA]', description: 'learning-rate schedule' },
    'warmup-epochs': { type: 'string', value: 'N', description: 'linear learning-rate warm-up epochs' },
    init: { type: 'string', value: 'CHECKPOINT', description: 'starting weights (tinyquant checkpoint, safetensors or PyTorch .pth)' },
    seed: { type: 'string', value: 'S', description: 'seed of the weights, data order and augmentation' },
    'train-subset': { type: 'string', value: 'N', description: 'train on a fixed subset of N images (0: all)' },
    'test-subset': { type: 'string', value: 'N', description: 'test on a fixed subset of N images (0: all)' },
    workers: { type: 'string', value: 'N', description: 'data-loader worker threads' },
    'final-epochs': { type: 'string', value: 'N', description: 'N epochs after --epochs with the deployment simulated and batch norm frozen (deploy.finalEpochs)' },
    'no-deploy': { type: 'boolean', description: 'do not lower and evaluate the integer model at the end (deploy.evaluate false)' },
    ...BACKEND_OPTIONS,
  },
};

/** The deploy block of a config file with the deploy flags over it. */
function deployFromFlags(args: ParsedArgs, fromFile: unknown): Record<string, unknown> | undefined {
  const epochs = str(args, 'final-epochs');
  if (epochs === undefined && !flag(args, 'no-deploy')) return undefined;
  const deploy: Record<string, unknown> = { ...(typeof fromFile === 'object' && fromFile !== null ? fromFile : {}) };
  if (epochs !== undefined) deploy.finalEpochs = decimalNumber(epochs) ?? epochs;
  if (flag(args, 'no-deploy')) deploy.evaluate = false;
  return deploy;
}

const NUMERIC: Record<string, keyof TrainConfig> = {
  epochs: 'epochs',
  batch: 'batch',
  'eval-batch': 'evalBatch',
  lr: 'lr',
  momentum: 'momentum',
  'weight-decay': 'weightDecay',
  'warmup-epochs': 'warmupEpochs',
  seed: 'seed',
  'train-subset': 'trainSubset',
  'test-subset': 'testSubset',
  workers: 'workers',
  'val-split': 'valSplit',
  channels: 'channels',
  wbits: 'wbits',
  abits: 'abits',
};

const STRINGS: Record<string, keyof TrainConfig> = {
  model: 'model',
  dataset: 'dataset',
  'data-dir': 'dataDir',
  'data-path': 'dataPath',
  normalization: 'normalization',
  optimizer: 'optimizer',
  init: 'init',
  method: 'method',
  'first-last': 'firstLast',
};

function parseSchedule(text: string): unknown {
  if (text === 'cosine' || text === 'constant') return { kind: text };
  const m = /^multistep:([\d,]+)(?::([\d.eE-]+))?$/.exec(text);
  if (!m) throw new UsageError(`--schedule must be cosine, constant or multistep:E1,E2[:GAMMA]; got "${text}"`);
  return { kind: 'multistep', milestones: m[1].split(',').map(Number), gamma: m[2] === undefined ? 0.1 : Number(m[2]) };
}

/** `HxW` (height x width) -> [height, width]. */
function parseImageSize(text: string): [number, number] {
  const m = /^(\d+)x(\d+)$/i.exec(text);
  if (!m) throw new UsageError(`--image-size must be HxW (height x width, e.g. 32x32); got "${text}"`);
  return [Number(m[1]), Number(m[2])];
}

/** Config fields given as flags (numbers parsed; the schema checks them). */
export function configFromFlags(args: ParsedArgs): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  for (const [flagName, field] of Object.entries(NUMERIC)) {
    const v = str(args, flagName);
    // Text that is not a decimal number stays text, so the config check names the field and the value.
    if (v !== undefined) raw[field] = decimalNumber(v) ?? v;
  }
  for (const [flagName, field] of Object.entries(STRINGS)) {
    const v = str(args, flagName);
    if (v !== undefined) raw[field] = v;
  }
  const schedule = str(args, 'schedule');
  if (schedule !== undefined) raw.schedule = parseSchedule(schedule);
  const size = str(args, 'image-size');
  if (size !== undefined) raw.imageSize = parseImageSize(size);
  if (flag(args, 'resize')) raw.resize = true;
  if (flag(args, 'no-augment')) raw.augment = false;
  if (flag(args, 'per-channel')) raw.perChannel = true;
  return raw;
}

/** Select the backend from --backend / --threads before anything allocates tensors. */
export function applyBackendFlags(args: ParsedArgs): void {
  const name = str(args, 'backend');
  const threadsText = str(args, 'threads');
  if (name === undefined && threadsText === undefined) return;
  const threads = threadsText === undefined ? 0 : Number(threadsText);
  if (!Number.isInteger(threads) || threads < 0) throw new UsageError(`--threads must be a positive integer, got "${threadsText}"`);
  if (name !== undefined && name !== 'js' && name !== 'native') throw new UsageError(`--backend must be js or native, got "${name}"`);
  setBackend(createBackend(name ?? (process.env.TINYQUANT_BACKEND === 'js' ? 'js' : 'native'), threads));
}

/** The run's config: the file's fields (checked as input) with the flags over them (checked as usage when there is no file). */
/** The run's config: the config file's fields (if any) with the flags over them. */
export function trainConfig(args: ParsedArgs): TrainConfig {
  const file = str(args, 'config');
  if (file === undefined) {
    try {
      const deploy = deployFromFlags(args, undefined);
      return resolveConfig({ ...configFromFlags(args), ...(deploy && { deploy }) }, 'flags');
    } catch (e) {
      throw e instanceof ConfigError ? new UsageError(e.message) : e;
    }
  }
  return readingInput(() => {
    const read = readConfigFile(file);
    if (typeof read !== 'object' || read === null || Array.isArray(read)) throw new ConfigError(`${file}: must hold an object of config fields`);
    const fromFile = resolveConfigPaths(read as Record<string, unknown>, dirname(file));
    const deploy = deployFromFlags(args, fromFile.deploy);
    return resolveConfig({ ...fromFile, ...configFromFlags(args), ...(deploy && { deploy }) }, `${file} (with flags)`);
  });
}

export async function trainCommand(argv: string[]): Promise<void> {
  const args = parseOrHelp(TRAIN, argv);
  if (!args) return;
  if (args.positionals.length > 0) throw unexpectedArgument(TRAIN, args.positionals[0]);
  applyBackendFlags(args);
  const config = trainConfig(args);
  const outDir = str(args, 'out') ?? `runs/${config.model}-${config.method}${config.method === 'float' ? '' : `-w${config.wbits}a${config.abits}`}-s${config.seed}`;
  const progress = flag(args, 'quiet') ? undefined : streamProgress(process.stderr);
  // The data before the run: what is wrong with it is an input error (exit 3), not a failed run.
  const data = await readingInput(() => loadTrainingData(config, (m) => progress?.line(m)));
  const result = await train({ config, outDir, resume: flag(args, 'resume'), progress, data });
  if (result.status === 'interrupted') {
    process.exitCode = 130;
    return;
  }
  const { top1, top5 } = result.final ?? {};
  console.log(JSON.stringify({ out: outDir, top1, top5, bestTop1: result.bestTop1, bestEpoch: result.bestEpoch + 1, device: result.device, backend: getBackend().name }));
}
