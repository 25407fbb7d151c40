/**
 * `tinyquant train`: a training run from flags and/or a JSON/YAML config file (flags override the
 * file). Writes checkpoints and metrics to --out; --resume continues an interrupted run.
 */
import { dirname } from 'node:path';
import { setBackend } from '../backend/index.js';
import { createBackend } from '../backend/index.js';
import { type TrainConfig, ConfigError, readConfigFile, resolveConfig, resolveConfigPaths } from '../train/config.js';
import { streamProgress } from '../train/progress.js';
import { DivergedError, train } from '../train/trainer.js';
import { type ParsedArgs, UsageError, decimalNumber, flag, parse, str } from './args.js';
import { quantizationOptions } from './quant-flags.js';

export const TRAIN_USAGE = `usage: tinyquant train [--config FILE] [--out DIR] [--resume] [options]

options (each overrides the config file):
  --model M  --dataset D  --data-dir DIR  --normalization apot|ewgs|...
  --data-path PATH  (imagefolder) the folder or .tar(.gz) archive, <class>/<image> or train|test/<class>/<image>
  --channels 1|3  --image-size HxW  --resize  (imagefolder) convert colour, check or resize images (area averaging)
  --val-split F  hold out this fraction of the training images (stratified, seeded) as the test set
  --method float|apot|ewgs|uniform|pact|lsq  --wbits W  --abits A  --first-last float|apot8|int8|same|reference
  --epochs N  --batch B  --optimizer sgd|adam|adamw  --lr LR  --momentum M  --weight-decay WD
  --schedule cosine|constant|multistep:E1,E2[:GAMMA]  --warmup-epochs N
  --init CHECKPOINT  --seed S  --train-subset N  --test-subset N  --workers N
  --backend js|native  --threads T`;

/** The flags naming a dataset and how its images are read (train, eval, export). */
export const DATA_OPTIONS = {
  'data-dir': { type: 'string' },
  'data-path': { type: 'string' },
  channels: { type: 'string' },
  'image-size': { type: 'string' },
  resize: { type: 'boolean' },
  'val-split': { type: 'string' },
} as const;

const TRAIN_OPTIONS = {
  config: { type: 'string' },
  out: { type: 'string' },
  resume: { type: 'boolean' },
  model: { type: 'string' },
  dataset: { type: 'string' },
  ...DATA_OPTIONS,
  normalization: { type: 'string' },
  epochs: { type: 'string' },
  batch: { type: 'string' },
  'eval-batch': { type: 'string' },
  optimizer: { type: 'string' },
  lr: { type: 'string' },
  momentum: { type: 'string' },
  'weight-decay': { type: 'string' },
  schedule: { type: 'string' },
  'warmup-epochs': { type: 'string' },
  init: { type: 'string' },
  seed: { type: 'string' },
  'train-subset': { type: 'string' },
  'test-subset': { type: 'string' },
  workers: { type: 'string' },
  'no-augment': { type: 'boolean' },
  backend: { type: 'string' },
  threads: { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  ...quantizationOptions,
} as const;

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

export async function trainCommand(argv: string[]): Promise<void> {
  const args = parse('train', argv, TRAIN_OPTIONS);
  if (flag(args, 'help')) {
    console.log(TRAIN_USAGE);
    return;
  }
  if (args.positionals.length > 0) throw new UsageError(`train: unexpected argument "${args.positionals[0]}"\n${TRAIN_USAGE}`);
  applyBackendFlags(args);
  const file = str(args, 'config');
  const read = file ? readConfigFile(file) : {};
  if (typeof read !== 'object' || read === null || Array.isArray(read)) throw new UsageError(`${file}: must hold an object of config fields`);
  const fromFile = file ? resolveConfigPaths(read as Record<string, unknown>, dirname(file)) : read;
  let config: TrainConfig;
  try {
    config = resolveConfig({ ...fromFile, ...configFromFlags(args) }, file ? `${file} (with flags)` : 'flags');
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message);
    throw e;
  }
  const outDir = str(args, 'out') ?? `runs/${config.model}-${config.method}${config.method === 'float' ? '' : `-w${config.wbits}a${config.abits}`}-s${config.seed}`;
  const progress = flag(args, 'quiet') ? undefined : streamProgress(process.stderr);
  try {
    const result = await train({ config, outDir, resume: flag(args, 'resume'), progress });
    if (result.status === 'interrupted') {
      process.exitCode = 130;
      return;
    }
    console.log(
      JSON.stringify({ out: outDir, top1: result.final?.top1, top5: result.final?.top5, bestTop1: result.bestTop1, bestEpoch: result.bestEpoch + 1, device: result.device }),
    );
  } catch (e) {
    if (e instanceof DivergedError) throw new UsageError(e.message);
    throw e;
  }
}
