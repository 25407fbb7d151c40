/**
 * `tinyquant bench int --model FILE.tqm`: images/s of the host int8 path and of the TypeScript
 * integer engine on the same model, and (with a test set) how well they agree. bench/host-int.ts
 * adds PyTorch float inference of the same network side by side.
 */
import { DATASET_NAMES, type DatasetName, loadDataset } from '../../data/load.js';
import { type CommandSpec, type ParsedArgs, UsageError, flag, num, oneOf, parseOrHelp, str, unexpectedArgument } from '../../cli/args.js';
import { readingInput } from '../../cli/errors.js';
import { IntegerEngine } from '../engine.js';
import type { IntegerModel, ModelMeta } from '../ir.js';
import { readTqm } from '../tqm-file.js';
import { Rng } from '../../util/rng.js';
import { HostIntegerEngine } from './engine.js';
import { type EngineAgreement, compareEngines, imagesPerSecond } from './measure.js';

export interface HostBenchOptions {
  readonly batch: number;
  /** 0: TINYQUANT_THREADS, else all cores. */
  readonly threads: number;
  /** Images timed on the host path. */
  readonly images: number;
  /** Images timed on the TypeScript engine (it is slow). */
  readonly engineImages: number;
  /** Labelled test images on which the two engines are compared (0: none). */
  readonly agreement: number;
  readonly dataset: DatasetName;
  readonly dataDir?: string;
  /** dataset imagefolder: its folder or archive. */
  readonly dataPath?: string;
}

/** The model's architecture, method and bit widths (its meta) and the measurements. */
export interface HostBenchResult extends Pick<ModelMeta, 'model' | 'method' | 'wbits' | 'abits'> {
  readonly batch: number;
  readonly threads: number;
  readonly hostImgPerSec: number;
  readonly engineImgPerSec: number;
  /** oneDNN implementation -> number of convolutions that use it. */
  readonly convolutions: Record<string, number>;
  readonly agreement: EngineAgreement | null;
  /** Where the timed images came from. */
  readonly images: string;
}

/** `count` images of `size` bytes: the test set's first ones when it is available, else seeded random pixels. */
async function benchImages(size: number, count: number, o: HostBenchOptions): Promise<{ images: Uint8Array; labels: Int32Array | null; source: string }> {
  try {
    const test = await loadDataset({ name: o.dataset, split: 'test', dataDir: o.dataDir, path: o.dataPath });
    if (test.channels * test.height * test.width === size) {
      const n = Math.min(count, test.count);
      const images = new Uint8Array(count * size);
      for (let i = 0; i < count; i += n) images.set(test.images.subarray(0, Math.min(n, count - i) * size), i * size);
      return { images, labels: test.labels.subarray(0, Math.min(count, test.count)), source: `${o.dataset} test` };
    }
  } catch {
    // No test set here: time random images instead (speed does not depend on the pixels).
  }
  const rng = new Rng(7);
  return { images: Uint8Array.from({ length: count * size }, () => rng.int(256)), labels: null, source: 'random' };
}

function implementations(engine: HostIntegerEngine): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const line of engine.describe()) {
    for (const impl of line.slice(line.indexOf(':') + 1).trim().split(' ').filter((part) => part.includes(':'))) counts[impl] = (counts[impl] ?? 0) + 1;
  }
  return counts;
}

/** Host int8 and TypeScript engine speed on one model, plus their agreement on test images. */
export async function runHostBench(model: IntegerModel, o: HostBenchOptions): Promise<HostBenchResult> {
  const host = new HostIntegerEngine(model, { batch: o.batch, threads: o.threads });
  const size = host.imageSize;
  const count = Math.max(o.images, o.agreement);
  const { images, labels, source } = await benchImages(size, count, o);
  const hostImgPerSec = imagesPerSecond((x, n) => host.inferBatch(x, n), images.subarray(0, o.images * size), o.images, o.batch);
  const ts = new IntegerEngine(model); // the TypeScript kernels on purpose: the figure is theirs (formatHostBench)
  const engineImgPerSec = imagesPerSecond((x, n) => ts.inferBatch(x, n), images.subarray(0, o.engineImages * size), o.engineImages, 2);
  const agreement =
    o.agreement > 0 && labels ? compareEngines(model, images.subarray(0, o.agreement * size), o.agreement, labels.subarray(0, o.agreement), { batch: o.batch, threads: o.threads }) : null;
  const m = model.meta;
  return {
    model: m.model,
    method: m.method,
    wbits: m.wbits,
    abits: m.abits,
    batch: o.batch,
    threads: host.threads,
    hostImgPerSec,
    engineImgPerSec,
    convolutions: implementations(host),
    agreement,
    images: source,
  };
}

export function formatHostBench(r: HostBenchResult): string {
  const lines = [
    `${r.model} ${r.method} W${r.wbits}A${r.abits}, batch ${r.batch}, ${r.threads} threads, ${r.images} images`,
    `  host int8 (oneDNN): ${r.hostImgPerSec.toFixed(1)} img/s   [${Object.entries(r.convolutions).map(([k, v]) => `${v}x ${k}`).join(', ')}]`,
    `  TypeScript engine:  ${r.engineImgPerSec.toFixed(1)} img/s   (host / TS = ${(r.hostImgPerSec / r.engineImgPerSec).toFixed(1)}x)`,
  ];
  const a = r.agreement;
  if (a) {
    lines.push(
      `  agreement on ${a.images} test images: identical logits ${a.identicalImages}/${a.images}, same top-1 ${a.sameTop1.toFixed(2)}%, ` +
        `top-1 host ${a.hostTop1?.toFixed(2)}% / TS ${a.engineTop1?.toFixed(2)}%`,
    );
  }
  return lines.join('\n');
}

export const BENCH_INT: CommandSpec = {
  name: 'bench int',
  summary: 'host int8 (oneDNN) speed and agreement of an exported .tqm against the TypeScript engine',
  synopsis: '--model FILE.tqm [options]',
  about: 'Times the test set\'s first images when it is found (else random pixels) and compares the two engines on labelled ones.',
  options: {
    model: { type: 'string', value: 'FILE.tqm', description: 'the exported model' },
    batch: { type: 'string', value: 'B', default: '128', description: 'batch size of the host path' },
    threads: { type: 'string', value: 'T', default: '0', description: 'host threads (0: TINYQUANT_THREADS, else all cores)' },
    images: { type: 'string', value: 'N', default: '1024', description: 'images timed on the host path' },
    'engine-images': { type: 'string', value: 'N', default: '32', description: 'images timed on the TypeScript engine (it is slow)' },
    agreement: { type: 'string', value: 'N', default: '200', description: 'labelled test images on which the engines are compared (0: none)' },
    dataset: { type: 'string', value: DATASET_NAMES.join('|'), default: 'cifar10', description: 'where the images come from' },
    'data-dir': { type: 'string', value: 'DIR', description: 'where the dataset is' },
    'data-path': { type: 'string', value: 'PATH', description: '(imagefolder) its folder or archive' },
    json: { type: 'boolean', description: 'print the result as JSON' },
  },
};

function hostBenchOptions(args: ParsedArgs): HostBenchOptions {
  return {
    batch: num(args, 'batch', { integer: true, min: 1 }),
    threads: num(args, 'threads', { integer: true, min: 0 }),
    images: num(args, 'images', { integer: true, min: 1 }),
    engineImages: num(args, 'engine-images', { integer: true, min: 1 }),
    agreement: num(args, 'agreement', { integer: true, min: 0 }),
    dataset: oneOf(args, 'dataset', DATASET_NAMES),
    dataDir: str(args, 'data-dir'),
    dataPath: str(args, 'data-path'),
  };
}

export async function benchIntCommand(argv: string[]): Promise<void> {
  const args = parseOrHelp(BENCH_INT, argv);
  if (!args) return;
  if (args.positionals.length > 0) throw unexpectedArgument(BENCH_INT, args.positionals[0]);
  const file = str(args, 'model');
  if (!file) throw new UsageError('bench int: --model FILE.tqm is required');
  const options = hostBenchOptions(args);
  const r = await runHostBench(readingInput(() => readTqm(file)), options);
  console.log(flag(args, 'json') ? JSON.stringify(r) : formatHostBench(r));
}
