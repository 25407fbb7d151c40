/**
 * `tinyquant eval --checkpoint FILE --dataset D [--data-dir DIR] [--json] [--predictions FILE]`:
 * accuracy of a checkpoint on a test set. Our checkpoints carry their architecture and
 * quantization, and a quantized run's the deployment plan its final evaluation used: eval then
 * measures what the run reported, the fake-quantized model with that deployment simulated and the
 * integer model on the same images; for other weight files (safetensors, PyTorch .pth from the reference code) give
 * them as flags (--model, --method, --wbits, --abits, --first-last).
 */
import { writeFileAtomic } from '../io/index.js';
import { readCheckpoint } from '../train/checkpoint.js';
import { DATASET_NAMES } from '../data/load.js';
import { ConfigError, DEFAULT_CONFIG, type TrainConfig, resolveConfig } from '../train/config.js';
import { loadConfigDataset } from '../train/dataset.js';
import { evaluateCheckpoint } from '../train/trainer.js';
import { InputError } from '../util/errors.js';
import { type CommandSpec, type ParsedArgs, UsageError, flag, num, oneOf, parseOrHelp, str, unexpectedArgument } from './args.js';
import { readingInput } from './errors.js';
import { quantizationOptions } from './quant-flags.js';
import { BACKEND_OPTIONS, DATA_OPTIONS, applyBackendFlags, configFromFlags } from './train.js';

export const EVAL: CommandSpec = {
  name: 'eval',
  summary: 'accuracy of a checkpoint on a test set',
  synopsis: '--checkpoint FILE [--dataset D] [--data-dir DIR] [--data-path PATH] [--json] [--predictions FILE] [--allow-non-finite]',
  about: 'Images are read as the run read them unless told otherwise; weights without a tinyquant sidecar need --model and the quantization flags.',
  options: {
    checkpoint: { type: 'string', value: 'FILE', description: 'a tinyquant checkpoint (its .json sidecar or weights), or safetensors / PyTorch .pth weights' },
    dataset: { type: 'string', value: DATASET_NAMES.join('|'), description: 'the dataset (default: the run\'s)' },
    ...DATA_OPTIONS,
    split: { type: 'string', value: 'test|train', default: 'test', description: 'which split (with the run\'s valSplit, its held-out images or the rest)' },
    batch: { type: 'string', value: 'N', default: '500', description: 'images per forward pass' },
    predictions: { type: 'string', value: 'FILE', description: 'write each image\'s predicted class, one a line, in dataset order' },
    json: { type: 'boolean', description: 'print the result as JSON' },
    'allow-non-finite': { type: 'boolean', description: 'evaluate weights holding NaN, infinities or negative batch-norm variances (a diverged run) instead of refusing them' },
    model: { type: 'string', value: 'M', description: 'the architecture of weights without a tinyquant sidecar (or an override)' },
    normalization: { type: 'string', value: 'N', description: 'input normalization (default: the run\'s)' },
    ...quantizationOptions,
    ...BACKEND_OPTIONS,
  },
};

/** Architecture and quantization of the checkpoint: its sidecar's config, with flags overriding. */
function evalConfig(args: ParsedArgs, saved: TrainConfig | null): TrainConfig {
  const flags = configFromFlags(args);
  delete flags.batch;
  try {
    return resolveConfig({ ...(saved ?? {}), ...flags }, saved ? 'checkpoint config (with flags)' : 'flags', saved ?? DEFAULT_CONFIG);
  } catch (e) {
    throw e instanceof ConfigError && !saved ? new UsageError(e.message) : e;
  }
}

export async function evalCommand(argv: string[]): Promise<void> {
  const args = parseOrHelp(EVAL, argv);
  if (!args) return;
  if (args.positionals.length > 0) throw unexpectedArgument(EVAL, args.positionals[0]);
  applyBackendFlags(args);
  const path = str(args, 'checkpoint');
  if (!path) throw new UsageError('eval: --checkpoint FILE is required');
  const split = oneOf(args, 'split', ['test', 'train'] as const);
  const batch = num(args, 'batch', { integer: true, min: 1 });
  const checkpoint = readingInput(() => readCheckpoint(path));
  const architecture = checkpoint.meta?.architecture;
  if (architecture) throw new InputError(`${path}: trained from a ${architecture} instance in code, not a registry model; evaluate it with evaluate() on that model`);
  const config = evalConfig(args, checkpoint.meta?.config ?? null);
  // Reading the data and fitting the weights to the model are reading input (a bug in the forward pass stays a runtime error).
  const dataset = await readingInput(() => loadConfigDataset(config, split));
  const r = await readingInput(() => evaluateCheckpoint(config, checkpoint, dataset, batch, { allowNonFinite: flag(args, 'allow-non-finite') }));
  const predictionsFile = str(args, 'predictions');
  if (predictionsFile) writeFileAtomic(predictionsFile, Array.from(r.predictions).join('\n') + '\n');
  const summary = { top1: r.top1, top5: r.top5, n: r.n, loss: r.loss, checkpoint: path, dataset: config.dataset, split, device: r.device };
  if (flag(args, 'json')) {
    console.log(JSON.stringify(summary));
    return;
  }
  console.log(`${path}: top-1 ${r.top1.toFixed(2)}%, top-5 ${r.top5.toFixed(2)}%, loss ${r.loss.toFixed(4)} on ${r.n} ${config.dataset} ${split} images`);
  if (r.device) {
    console.log(`  with its recorded deployment plan simulated; on device (integer model): top-1 ${r.device.top1.toFixed(2)}%, same top-1 on ${r.device.sameTop1.toFixed(2)}% of the images`);
  }
}

