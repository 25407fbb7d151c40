/**
 * `tinyquant bench train`: images/s of training (or, with --eval, inference) on synthetic data of
 * CIFAR's shape, as one JSON line. Not a test: compare ratios measured side by side in one run
 * (bench/compare.ts runs it alternately with the same model in PyTorch).
 */
import { getBackend, setBackend } from '../backend/index.js';
import { createModel, modelNames, models } from '../models/index.js';
import { Sgd, groupParameters } from '../optim/index.js';
import { noGrad } from '../tensor/tensor.js';
import { trainingForward } from '../graph/index.js';
import { type Batch, evalBatch, trainStep } from '../train/step.js';
import { Rng } from '../util/rng.js';
import { type CommandSpec, type ParsedArgs, flag, num, oneOf, parseOrHelp, str, unexpectedArgument } from './args.js';
import { calibrate } from '../quant/quantize.js';
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

export const BENCH_TRAIN: CommandSpec = {
  name: 'bench train',
  summary: 'measure training (or --eval inference) speed on synthetic data',
  synopsis: '[--model M] [--batch B] [--iters N] [--warmup N] [--eval] [--json] [--backend js|native] [--method M --wbits W --abits A --first-last P]',
  about: 'Images/s on random images of the model\'s input shape, as one line (--json: one JSON object). Quantized: --wbits defaults to 4.',
  options: {
    model: { type: 'string', value: modelNames.join('|'), default: 'resnet20', description: 'the architecture' },
    batch: { type: 'string', value: 'B', default: '128', description: 'batch size' },
    iters: { type: 'string', value: 'N', default: '20', description: 'timed steps' },
    warmup: { type: 'string', value: 'N', default: '3', description: 'untimed steps first' },
    classes: { type: 'string', value: 'N', default: '10', description: 'classifier outputs' },
    seed: { type: 'string', value: 'S', default: '0', description: 'seed of the weights and images' },
    eval: { type: 'boolean', description: 'time inference instead of training steps' },
    json: { type: 'boolean', description: 'print the result as JSON' },
    backend: { type: 'string', value: 'js|native', description: 'the compute backend (default: native when it loads, else js)' },
    ...quantizationOptions,
  },
};

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
  if (str(args, 'backend') !== undefined) setBackend(oneOf(args, 'backend', ['js', 'native'] as const));
  const modelName = oneOf(args, 'model', modelNames);
  const batch = num(args, 'batch', { integer: true, min: 1 });
  const classes = num(args, 'classes', { integer: true, min: 2 });
  const seed = num(args, 'seed', { integer: true });
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
  const iters = num(args, 'iters', { integer: true, min: 1 });
  const warmup = num(args, 'warmup', { integer: true, min: 0 });
  const { step, result } = benchSetup(args);
  for (let i = 0; i < warmup; i++) step(i);
  const start = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) step(i);
  return result(iters, Number(process.hrtime.bigint() - start) / 1e9);
}

export function benchTrainCommand(argv: string[]): void {
  const args = parseOrHelp(BENCH_TRAIN, argv);
  if (!args) return;
  if (args.positionals.length > 0) throw unexpectedArgument(BENCH_TRAIN, args.positionals[0]);
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
