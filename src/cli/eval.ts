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
import { DEFAULT_CONFIG, type TrainConfig, resolveConfig } from '../train/config.js';
import { loadConfigDataset } from '../train/dataset.js';
import { evaluateCheckpoint } from '../train/trainer.js';
import { type ParsedArgs, UsageError, flag, num, parse, str } from './args.js';
import { quantizationOptions } from './quant-flags.js';
import { DATA_OPTIONS, applyBackendFlags, configFromFlags } from './train.js';

export const EVAL_USAGE = `usage: tinyquant eval --checkpoint FILE [--dataset D] [--data-dir DIR] [--data-path PATH] [--json] [--predictions FILE]

  --checkpoint FILE    a tinyquant checkpoint (its .json sidecar or weights), or safetensors / PyTorch .pth weights
  --split test|train   which split (default test; with the run's valSplit, its held-out images or the rest)
  --data-path PATH     an image folder or archive (dataset imagefolder), if not the one the run trained on
  --channels 1|3 --image-size HxW --resize --val-split F
                       how the images are read (default: as the run read them)
  --batch N            images per forward pass (default 500)
  --predictions FILE   write each image's predicted class, one a line, in dataset order
  --model M --normalization N --method M --wbits W --abits A --first-last P
                       the architecture and quantization of weights without a tinyquant sidecar (or overrides)
  --backend js|native --threads T`;

const EVAL_OPTIONS = {
  checkpoint: { type: 'string' },
  dataset: { type: 'string' },
  ...DATA_OPTIONS,
  split: { type: 'string', default: 'test' },
  batch: { type: 'string', default: '500' },
  model: { type: 'string' },
  normalization: { type: 'string' },
  predictions: { type: 'string' },
  json: { type: 'boolean' },
  backend: { type: 'string' },
  threads: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  ...quantizationOptions,
} as const;

/** Architecture and quantization of the checkpoint: its sidecar's config, with flags overriding. */
function evalConfig(args: ParsedArgs, saved: TrainConfig | null): TrainConfig {
  const flags = configFromFlags(args);
  delete flags.batch;
  try {
    return resolveConfig({ ...(saved ?? {}), ...flags }, saved ? 'checkpoint config (with flags)' : 'flags', saved ?? DEFAULT_CONFIG);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export async function evalCommand(argv: string[]): Promise<void> {
  const args = parse('eval', argv, EVAL_OPTIONS);
  if (flag(args, 'help')) {
    console.log(EVAL_USAGE);
    return;
  }
  applyBackendFlags(args);
  const path = str(args, 'checkpoint');
  if (!path) throw new UsageError('eval: --checkpoint FILE is required');
  const checkpoint = readCheckpoint(path);
  const architecture = checkpoint.meta?.architecture;
  if (architecture) throw new UsageError(`${path}: trained from a ${architecture} instance in code, not a registry model; evaluate it with evaluate() on that model`);
  const config = evalConfig(args, checkpoint.meta?.config ?? null);
  const split = str(args, 'split') === 'train' ? 'train' : 'test';
  const dataset = await loadConfigDataset(config, split);
  const r = await evaluateCheckpoint(config, checkpoint, dataset, num(args, 'batch', 500, { integer: true, min: 1 }));
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

