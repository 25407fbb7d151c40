/**
 * The fidelity harness (issue 16): tinyquant against the APoT and EWGS authors' own code on the same
 * checkpoints and the same CIFAR-10 test images, image by image. Not a test: it needs their
 * repositories, fetched outside this one (nothing of their code or checkpoints is copied here):
 *
 *   git clone https://github.com/yhhhli/APoT_Quantization ../ref/APoT_Quantization
 *   git clone https://github.com/cvlab-yonsei/EWGS ../ref/EWGS
 *   node dist/bench/fidelity/fidelity.js agreement --apot ../ref/APoT_Quantization --ewgs ../ref/EWGS \
 *     [--images 10000] [--only apot-w2a2,ewgs-float] [--layers 4] [--data-dir DIR] [--work DIR]
 *
 * (or TINYQUANT_APOT_REF / TINYQUANT_EWGS_REF). APoT: the official ResNet-20 checkpoints in its
 * checkout (CIFAR10/result/res20_{32,4,3,2}bit/model_best.pth.tar). EWGS publishes none for CIFAR:
 * its own modules train one here (bench/fidelity/reference.py train: the float ResNet-20 by
 * train_fp.py's loop, then W4A4 and W2A2 started as train_quant.py starts them), saved as its code
 * saves, into --work. Each checkpoint runs in the reference (Debian's PyTorch, one thread) and in
 * tinyquant (its importer and quantizers, the `eval --model resnet20-apot --normalization apot
 * --first-last apot8` configuration); the output is per-image top-1 agreement, both accuracies and
 * the largest logit difference, and with --layers K, for the first K images on which they differ,
 * the first layer whose output differs beyond float noise.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { resolveNormalization } from '../../src/data/augment.js';
import { createEvalLoader } from '../../src/data/loader.js';
import { normalizeImages } from '../../src/export/calibrate.js';
import { type ImageDataset, fixedSubset } from '../../src/data/dataset.js';
import { loadDataset } from '../../src/data/load.js';
import { runGraph, trace } from '../../src/graph/index.js';
import type { Module } from '../../src/nn/module.js';
import { Tensor, noGrad, tidy } from '../../src/tensor/tensor.js';
import { readCheckpoint } from '../../src/train/checkpoint.js';
import { resolveConfig, type TrainConfig } from '../../src/train/config.js';
import { buildModel } from '../../src/train/trainer.js';
import { PYTHON } from '../common.js';

const REFERENCE_PY = fileURLToPath(new URL('../../../bench/fidelity/reference.py', import.meta.url));
const CLASSES = 10;

/** One checkpoint evaluated on both sides. */
interface Case {
  readonly name: string;
  readonly method: 'apot' | 'ewgs';
  /** 32: the float model. */
  readonly bits: number;
  readonly checkpoint: string;
  readonly config: TrainConfig;
}

export interface Agreement {
  readonly name: string;
  readonly images: number;
  readonly referenceTop1: number;
  readonly tinyquantTop1: number;
  readonly agreement: number;
  readonly disagreeing: number[];
  readonly maxLogitDiff: number;
}

class HarnessError extends Error {}

function fail(message: string): never {
  throw new HarnessError(message);
}

function requireFiles(dir: string, repo: string, files: readonly string[]): void {
  if (!existsSync(dir)) fail(`expected a checkout of github.com/${repo} at ${dir} (flag or environment variable), found nothing there`);
  const missing = files.find((f) => !existsSync(join(dir, f)));
  if (missing) fail(`expected a checkout of github.com/${repo} at ${dir}: ${join(dir, missing)} is missing`);
}

function tinyquantConfig(method: 'apot' | 'ewgs', bits: number): TrainConfig {
  const model = method === 'apot' ? 'resnet20-apot' : 'resnet20-ewgs';
  const quant = bits === 32 ? { method: 'float' } : { method, wbits: bits, abits: bits };
  return resolveConfig({ model, dataset: 'cifar10', normalization: method, firstLast: method === 'apot' ? 'apot8' : 'float', ...quant }, 'fidelity harness');
}

/** The images file reference.py reads: count, labels, planar pixels. */
function writeImages(path: string, data: ImageDataset, count: number): void {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(count);
  const pixels = data.images.subarray(0, count * 3 * 32 * 32);
  writeFileSync(path, Buffer.concat([header, Buffer.from(Uint8Array.from(data.labels.subarray(0, count))), Buffer.from(pixels)]));
}

function runReference(args: readonly string[]): void {
  try {
    execFileSync(PYTHON, [REFERENCE_PY, ...args], { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
  } catch (e) {
    const err = e as { stderr?: string; status?: number };
    const lines = (err.stderr ?? '').trim().split('\n');
    const refused = lines.find((l) => l.startsWith('reference.py: '));
    fail(refused ?? `${PYTHON} ${REFERENCE_PY} ${args.join(' ')} failed (exit ${err.status}): ${lines.at(-1)}`);
  }
}

/** The first `count` images of `data`, as a dataset of their own. */
function head(data: ImageDataset, count: number): ImageDataset {
  return { ...data, count, images: data.images.subarray(0, count * 3 * 32 * 32), labels: data.labels.subarray(0, count) };
}

function loadTinyquant(c: Case): Module {
  const { model } = buildModel(c.config, { classes: Array.from({ length: CLASSES }, (_, i) => String(i)), channels: 3 });
  const checkpoint = readCheckpoint(c.checkpoint);
  model.loadStateDict(checkpoint.state, { source: checkpoint.source });
  model.eval();
  return model;
}

async function tinyquantLogits(model: Module, c: Case, data: ImageDataset): Promise<Float32Array> {
  const out = new Float32Array(data.count * CLASSES);
  const loader = createEvalLoader(data, { batchSize: 100, normalization: c.config.normalization, workers: 0 });
  try {
    for await (const b of loader.epoch(0)) {
      const logits = tidy(() => noGrad(() => model.call(Tensor.fromArray(b.images, [b.size, 3, 32, 32])).toArray()));
      b.indices.forEach((index, i) => out.set(logits.subarray(i * CLASSES, (i + 1) * CLASSES), index * CLASSES));
    }
  } finally {
    await loader.close();
  }
  return out;
}

function argmax(v: Float32Array, i: number): number {
  let best = 0;
  for (let k = 1; k < CLASSES; k++) if (v[i * CLASSES + k] > v[i * CLASSES + best]) best = k;
  return best;
}

export function compare(name: string, reference: Float32Array, ours: Float32Array, labels: Int32Array): Agreement {
  const n = labels.length;
  let [refCorrect, ourCorrect, same, maxLogitDiff] = [0, 0, 0, 0];
  const disagreeing: number[] = [];
  for (let i = 0; i < n; i++) {
    const [r, o] = [argmax(reference, i), argmax(ours, i)];
    refCorrect += r === labels[i] ? 1 : 0;
    ourCorrect += o === labels[i] ? 1 : 0;
    if (r === o) same++;
    else disagreeing.push(i);
  }
  for (let k = 0; k < n * CLASSES; k++) maxLogitDiff = Math.max(maxLogitDiff, Math.abs(reference[k] - ours[k]));
  return { name, images: n, referenceTop1: (100 * refCorrect) / n, tinyquantTop1: (100 * ourCorrect) / n, agreement: (100 * same) / n, disagreeing, maxLogitDiff };
}

/** Reference module names onto tinyquant's graph node names. */
function graphName(refName: string): string {
  return refName.replace(/\.downsample(?=\.|$)/, '.shortcut').replace(/^fc$/, 'linear');
}

/** A layer whose output differs by more than this (relative to its largest value) differs for real, not by summation order. */
const LAYER_TOLERANCE = 1e-4;

/**
 * Layer by layer on the given images: every reference module output against the tinyquant graph
 * node of the same name (a batch norm with its ReLU fused is compared after the reference's ReLU).
 * Per image, the first layer that differs beyond float noise, with its largest difference.
 */
function compareLayers(model: Module, c: Case, data: ImageDataset, indices: readonly number[], layersFile: string): string[] {
  const ref = JSON.parse(readFileSync(layersFile, 'utf8')) as Record<string, { shape: number[]; values: number[] }>;
  const size = 3 * 32 * 32;
  const pixels = new Uint8Array(indices.length * size);
  indices.forEach((index, k) => pixels.set(data.images.subarray(index * size, (index + 1) * size), k * size));
  const input = normalizeImages(pixels, indices.length, 3, resolveNormalization(c.config.normalization, 3));
  const ours = new Map<string, { values: Float32Array; relu: boolean }>();
  tidy(() =>
    noGrad(() =>
      runGraph(trace(model, [3, 32, 32]), Tensor.fromArray(input, [indices.length, 3, 32, 32]), {
        observe: (node, value) => ours.set(node.name, { values: value.toArray(), relu: node.op.kind === 'batchnorm' && node.op.relu }),
      }),
    ),
  );
  return indices.map((index, k) => {
    for (const [name, r] of Object.entries(ref)) {
      const o = ours.get(graphName(name));
      const per = r.values.length / indices.length;
      if (!o || o.values.length !== r.values.length) continue;
      let [maxDiff, scale, at] = [0, 1e-12, 0];
      for (let i = k * per; i < (k + 1) * per; i++) {
        const rv = o.relu ? Math.max(r.values[i], 0) : r.values[i];
        if (Math.abs(rv - o.values[i]) > maxDiff) [maxDiff, at] = [Math.abs(rv - o.values[i]), i - k * per];
        scale = Math.max(scale, Math.abs(rv));
      }
      if (maxDiff / scale > LAYER_TOLERANCE) return `  image ${index}: first differs at ${name} (element ${at}: reference ${r.values[k * per + at]}, tinyquant ${o.values[k * per + at]}; relative ${(maxDiff / scale).toExponential(2)})`;
    }
    return `  image ${index}: every layer within ${LAYER_TOLERANCE} (relative)`;
  });
}

/** EWGS checkpoints made by the EWGS code itself (cached in the work directory by their recipe). */
function ewgsCheckpoints(ref: string, work: string, train: ImageDataset, o: { trainImages: number; floatSteps: number; quantSteps: number; seed: number }): Map<number, string> {
  // tinyquant's fixed training subset (trainSubset), so a fine-tune comparison can use the same images.
  const imagesFile = join(work, `train-subset-${o.trainImages}.u8`);
  if (!existsSync(imagesFile)) writeImages(imagesFile, fixedSubset(train, o.trainImages), o.trainImages);
  const common = ['--method', 'ewgs', '--ref', ref, '--images', imagesFile, '--seed', String(o.seed)];
  const files = new Map<number, string>();
  const float = join(work, `ewgs-float-subset${o.trainImages}-${o.floatSteps}s-seed${o.seed}.pth`);
  if (!existsSync(float)) {
    console.log(`training the EWGS float ResNet-20 with the EWGS code (${o.floatSteps} steps) -> ${float}`);
    runReference(['train', ...common, '--bits', '32', '--steps', String(o.floatSteps), '--out', float]);
  }
  files.set(32, float);
  for (const bits of [4, 2]) {
    const file = float.replace('.pth', `-w${bits}a${bits}-${o.quantSteps}s.pth`);
    if (!existsSync(file)) {
      console.log(`training EWGS W${bits}A${bits} with the EWGS code (${o.quantSteps} steps) -> ${file}`);
      runReference(['train', ...common, '--bits', String(bits), '--init', float, '--steps', String(o.quantSteps), '--out', file]);
    }
    files.set(bits, file);
  }
  return files;
}

function apotCases(ref: string): Case[] {
  const result = (bits: number): string => `CIFAR10/result/res20_${bits}bit/model_best.pth.tar`;
  requireFiles(ref, 'yhhhli/APoT_Quantization', ['CIFAR10/models/quant_layer.py', 'CIFAR10/models/resnet.py', ...[32, 4, 3, 2].map(result)]);
  return [32, 4, 3, 2].map((bits) => ({
    name: bits === 32 ? 'apot-float' : `apot-w${bits}a${bits}`,
    method: 'apot' as const,
    bits,
    checkpoint: join(ref, result(bits)),
    config: tinyquantConfig('apot', bits),
  }));
}

function ewgsCases(ref: string, files: Map<number, string>): Case[] {
  return [...files].map(([bits, checkpoint]) => ({
    name: bits === 32 ? 'ewgs-float' : `ewgs-w${bits}a${bits}`,
    method: 'ewgs' as const,
    bits,
    checkpoint,
    config: tinyquantConfig('ewgs', bits),
  }));
}

export function formatAgreement(a: Agreement): string {
  const shown = a.disagreeing.slice(0, 8).join(', ') + (a.disagreeing.length > 8 ? ', ...' : '');
  return `${a.name.padEnd(11)} ${String(a.images).padStart(5)} images  reference top-1 ${a.referenceTop1.toFixed(2)} %  tinyquant top-1 ${a.tinyquantTop1.toFixed(2)} %  agreement ${a.agreement.toFixed(2)} % (${a.disagreeing.length} differ${a.disagreeing.length ? `: ${shown}` : ''})  max |logit diff| ${a.maxLogitDiff.toExponential(2)}`;
}

async function agreement(values: Record<string, string | boolean | undefined>): Promise<void> {
  const images = Number(values.images ?? 10000);
  const work = resolve(String(values.work ?? join(tmpdir(), 'tinyquant-fidelity')));
  mkdirSync(work, { recursive: true });
  const apotRef = (values.apot as string | undefined) ?? process.env.TINYQUANT_APOT_REF;
  const ewgsRef = (values.ewgs as string | undefined) ?? process.env.TINYQUANT_EWGS_REF;
  if (!apotRef && !ewgsRef) fail('give --apot DIR and/or --ewgs DIR (or TINYQUANT_APOT_REF / TINYQUANT_EWGS_REF): checkouts of github.com/yhhhli/APoT_Quantization and github.com/cvlab-yonsei/EWGS');
  const dataDir = values['data-dir'] as string | undefined;
  const test = await loadDataset({ name: 'cifar10', split: 'test', dataDir });
  if (images < 1 || images > test.count) fail(`--images must be 1..${test.count}, got ${values.images}`);
  const sample = head(test, images);
  const imagesFile = join(work, `test-${images}.u8`);
  writeImages(imagesFile, test, images);
  const cases: Case[] = [];
  if (apotRef) cases.push(...apotCases(resolve(apotRef)));
  if (ewgsRef) {
    const ref = resolve(ewgsRef);
    requireFiles(ref, 'cvlab-yonsei/EWGS', ['CIFAR10/custom_models.py', 'CIFAR10/custom_modules.py', 'CIFAR10/utils.py']);
    const train = await loadDataset({ name: 'cifar10', split: 'train', dataDir });
    const o = { trainImages: Number(values['train-images'] ?? 10240), floatSteps: Number(values['float-steps'] ?? 400), quantSteps: Number(values['quant-steps'] ?? 40), seed: Number(values.seed ?? 0) };
    cases.push(...ewgsCases(ref, ewgsCheckpoints(ref, work, train, o)));
  }
  const only = values.only ? String(values.only).split(',') : null;
  const layers = Number(values.layers ?? 0);
  const results: Agreement[] = [];
  for (const c of cases.filter((x) => !only || only.includes(x.name))) {
    const logitsFile = join(work, `${c.name}-${images}.logits`);
    const layersFile = join(work, `${c.name}-layers.json`);
    const ref = c.method === 'apot' ? resolve(apotRef!) : resolve(ewgsRef!);
    runReference(['eval', '--method', c.method, '--ref', ref, '--checkpoint', c.checkpoint, '--bits', String(c.bits), '--images', imagesFile, '--out', logitsFile]);
    const reference = new Float32Array(readFileSync(logitsFile).buffer.slice(0));
    const model = loadTinyquant(c);
    const a = compare(c.name, reference, await tinyquantLogits(model, c, sample), sample.labels);
    results.push(a);
    console.log(formatAgreement(a));
    const shown = a.disagreeing.slice(0, layers);
    if (shown.length) {
      runReference(['eval', '--method', c.method, '--ref', ref, '--checkpoint', c.checkpoint, '--bits', String(c.bits), '--images', imagesFile, '--layers', layersFile, '--layers-of', shown.join(',')]);
      for (const line of compareLayers(model, c, test, shown, layersFile)) console.log(line);
    }
  }
  if (values.json) writeFileSync(String(values.json), JSON.stringify(results, null, 2) + '\n');
}

async function main(): Promise<void> {
  process.env.TINYQUANT_THREADS ??= '1';
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      apot: { type: 'string' },
      ewgs: { type: 'string' },
      images: { type: 'string' },
      only: { type: 'string' },
      layers: { type: 'string' },
      'data-dir': { type: 'string' },
      work: { type: 'string' },
      json: { type: 'string' },
      'train-images': { type: 'string' },
      'float-steps': { type: 'string' },
      'quant-steps': { type: 'string' },
      seed: { type: 'string' },
    },
  });
  if (positionals[0] !== 'agreement') fail(`usage: fidelity.js agreement --apot DIR --ewgs DIR [--images N] [--only NAMES] [--layers K] (got ${positionals[0] ?? 'no command'})`);
  await agreement(values);
}

main().catch((e: unknown) => {
  console.error(e instanceof HarnessError ? `fidelity: ${e.message}` : e);
  process.exit(e instanceof HarnessError ? 3 : 1);
});
