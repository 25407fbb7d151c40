/**
 * `tinyquant bench train`: images/s of training (or, with --eval, inference) on synthetic data of
 * CIFAR's shape, as one JSON line. Not a test: compare ratios measured side by side in one run
 * (bench/compare.ts runs it alternately with the same model in PyTorch).
 */
import { getBackend, setBackend } from '../backend/index.js';
import { createModel, isModelName, modelNames, models } from '../models/index.js';
import { Sgd, groupParameters } from '../optim/index.js';
import { noGrad } from '../tensor/tensor.js';
import { trainingForward } from '../graph/index.js';
import { type Batch, evalBatch, trainStep } from '../train/step.js';
import { Rng } from '../util/rng.js';
import { type ParsedArgs, UsageError, flag, num, oneOf, parse, str } from './args.js';
import { calibrate } from '../quant/quantize.js';
import { BENCH_INT_USAGE, benchIntCommand } from '../export/host/bench-int.js';
import { applyQuantization, quantizationChoice, quantizationOptions } from './quant-flags.js';

export interface BenchResult {
  readonly mode: 'train' | 'eval';
  readonly model: string;
  readonly method: string;
  readonly wbits: number;
  readonly abits: number;
  readonly batch: number;
  readonly iters: number;
  readonly imgPerSec: number;
  readonly msPerStep: number;
  readonly peakRssMB: number;
  readonly backend: string;
  readonly threads: number;
}

const BENCH_TRAIN_USAGE = 'usage: tinyquant bench train [--model M] [--batch B] [--iters N] [--warmup N] [--eval] [--json] [--backend js|native] [--method M --wbits W --abits A --first-last P]';

const BENCH_OPTIONS = {
  model: { type: 'string', default: 'resnet20' },
  batch: { type: 'string', default: '128' },
  iters: { type: 'string', default: '20' },
  warmup: { type: 'string', default: '3' },
  classes: { type: 'string', default: '10' },
  eval: { type: 'boolean' },
  json: { type: 'boolean' },
  backend: { type: 'string' },
  seed: { type: 'string', default: '0' },
  help: { type: 'boolean', short: 'h' },
  ...quantizationOptions,
} as const;

/** Random images of one input shape [C, H, W] with random labels. */
function syntheticBatches(count: number, batch: number, input: readonly [number, number, number], classes: number, seed: number): Batch[] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => {
    const images = new Float32Array(batch * input[0] * input[1] * input[2]);
    for (let i = 0; i < images.length; i++) images[i] = rng.normal();
    const labels = Int32Array.from({ length: batch }, () => rng.int(classes));
    return { images, labels, shape: [batch, ...input] as const };
  });
}

/** A model, optimizer and synthetic batches as `bench train` sets them up, and one step of it. */
export interface BenchSetup {
  readonly step: (i: number) => void;
  /** The result of `iters` steps that took `seconds`. */
  readonly result: (iters: number, seconds: number) => BenchResult;
}

export function benchSetup(args: ParsedArgs): BenchSetup {
  const backendName = str(args, 'backend');
  if (backendName !== undefined) setBackend(oneOf(args, 'backend', ['js', 'native'] as const, 'native'));
  const modelName = str(args, 'model') ?? 'resnet20';
  if (!isModelName(modelName)) throw new UsageError(`--model must be one of ${modelNames.join(', ')}`);
  const batch = num(args, 'batch', 128, { integer: true, min: 1 });
  const classes = num(args, 'classes', 10, { integer: true, min: 2 });
  const seed = num(args, 'seed', 0, { integer: true });
  const evalMode = flag(args, 'eval');

  const model = createModel(modelName, { numClasses: classes, seed });
  const quant = quantizationChoice(args);
  const data = syntheticBatches(4, batch, models[modelName].inputShape, classes, seed + 1);
  if (applyQuantization(model, quant)) calibrate(model, data[0].images, data[0].shape);
  const optimizer = new Sgd(groupParameters(model, [], { lr: 0.01, weightDecay: 5e-4 }), { momentum: 0.9 });
  if (evalMode) model.eval();
  const forward = evalMode ? null : trainingForward(model, data[0].shape.slice(1));
  const step = (i: number): void => {
    const b = data[i % data.length];
    if (evalMode) noGrad(() => evalBatch(model, b));
    else trainStep(model, optimizer, b, { forward: forward ?? undefined });
  };
  const result = (iters: number, seconds: number): BenchResult => {
    const backend = getBackend();
    return {
      mode: evalMode ? 'eval' : 'train',
      model: modelName,
      method: quant.method,
      wbits: quant.wbits,
      abits: quant.abits,
      batch,
      iters,
      imgPerSec: (batch * iters) / seconds,
      msPerStep: (seconds * 1000) / iters,
      peakRssMB: process.resourceUsage().maxRSS / 1024,
      backend: backend.name,
      threads: backend.threads,
    };
  };
  return { step, result };
}

export function runBench(args: ParsedArgs): BenchResult {
  const iters = num(args, 'iters', 20, { integer: true, min: 1 });
  const warmup = num(args, 'warmup', 3, { integer: true, min: 0 });
  const { step, result } = benchSetup(args);
  for (let i = 0; i < warmup; i++) step(i);
  const start = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) step(i);
  return result(iters, Number(process.hrtime.bigint() - start) / 1e9);
}

export function benchCommand(argv: string[]): void | Promise<void> {
  const [what, ...rest] = argv;
  if (what === 'int') return benchIntCommand(rest);
  if (what !== 'train') throw new UsageError(`${BENCH_TRAIN_USAGE}\n   or: ${BENCH_INT_USAGE.replace('usage: ', '')}`);
  const args = parse('bench train', rest, BENCH_OPTIONS);
  if (flag(args, 'help')) {
    console.log(BENCH_TRAIN_USAGE);
    return;
  }
  const r = runBench(args);
  if (flag(args, 'json')) {
    console.log(JSON.stringify(r));
  } else {
    console.log(
      `${r.mode} ${r.model} ${r.method} W${r.wbits}A${r.abits} batch ${r.batch}: ${r.imgPerSec.toFixed(1)} img/s, ` +
        `${r.msPerStep.toFixed(1)} ms/step, peak RSS ${r.peakRssMB.toFixed(0)} MB (${r.backend}, ${r.threads} threads)`,
    );
  }
}
