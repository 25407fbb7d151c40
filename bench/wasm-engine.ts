/**
 * Images per second of the integer engine's two backends, TypeScript and WebAssembly, side by side,
 * one thread, in Node and in Chromium (playwright-core driving Debian's /usr/bin/chromium, the
 * `tinyquant/engine` entry bundled by esbuild into the page); and whether their logits agree:
 *
 *   npm run bench:wasm -- [MODEL.tqm | RUN_DIR...] [--images N] [--ts-images N] [--rounds R]
 *        [--no-browser] [--chromium PATH] [--out FILE.json]
 *
 * A MODEL is a .tqm file or a run directory (or its best.json / last.json), lowered with its
 * recorded deployment plan; none: ResNet-20 W4A4 APoT from the float weights in models/, untrained
 * (speed does not depend on training). Images: deterministic noise (the kernels' work does not
 * depend on pixel values). Each figure is images per second of the running thread's CPU time
 * (Node: the process's, the engine being its one busy thread; Chromium: the renderer main thread's
 * ThreadTime from the DevTools protocol), the median of R rounds of N images after a warm-up round
 * (so both JITs have tiered up), with the best round and the wall-clock median: on a shared machine
 * the wall clock also counts the time other processes hold the core. `logits` compares the wasm
 * engine's logits with the TypeScript engine's: on every image in Node, and in Chromium against
 * Node's.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import type * as Engine from '../src/engine.js';
import { loadTrainedModel, lowerTrainedModel, lowerUntrainedModel } from '../src/export/checkpoint-model.js';
import { IntegerEngine, type InferenceEngine } from '../src/export/engine.js';
import { type IntegerModel, inputShape } from '../src/export/ir.js';
import { encodeTqm } from '../src/export/tqm.js';
import { readTqm } from '../src/export/tqm-file.js';
import { WasmIntegerEngine } from '../src/export/wasm/engine.js';
import { createModel } from '../src/models/index.js';
import { packageRoot } from '../src/package.js';
import { quantize } from '../src/quant/quantize.js';
import { readWeights } from '../src/train/checkpoint.js';
import { Rng } from '../src/util/rng.js';
import { median } from './common.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    images: { type: 'string', default: '500' },
    'ts-images': { type: 'string', default: '40' },
    rounds: { type: 'string', default: '5' },
    'no-browser': { type: 'boolean', default: false },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    out: { type: 'string' },
  },
});

const IMAGES = Number(values.images);
const TS_IMAGES = Math.min(Number(values['ts-images']), IMAGES);
const ROUNDS = Number(values.rounds);

/** Images per second of thread CPU time (median and best round) and of wall-clock time (median). */
interface Rates {
  readonly cpu: number;
  readonly cpuBest: number;
  readonly wall: number;
}

/** Rounds of (images, wall seconds, CPU seconds). */
function summarize(rounds: readonly { count: number; wall: number; cpu: number }[]): Rates {
  const cpu = rounds.map((r) => r.count / r.cpu);
  return { cpu: median(cpu), cpuBest: Math.max(...cpu), wall: median(rounds.map((r) => r.count / r.wall)) };
}

interface Side {
  readonly ts: Rates;
  readonly wasm: Rates;
  /** Wasm logits equal to the TypeScript engine's (in Chromium: to Node's) on every compared image. */
  readonly logitsEqual: boolean;
}

/** The untrained ResNet-20 W4A4 APoT, calibrated on noise. */
function defaultModel(): IntegerModel {
  const net = createModel('resnet20');
  net.loadStateDict(readWeights(join(packageRoot(), 'models', 'resnet20-cifar10-float.safetensors')));
  quantize(net, { method: 'apot', wbits: 4, abits: 4, firstLast: 'int8' });
  const calibration = { images: noiseImages(32 * 32 * 3, 64, 3), count: 64, channels: 3, height: 32, width: 32 };
  const classes = Array.from({ length: 10 }, (_, i) => `class${i}`);
  const normalization = { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] };
  return lowerUntrainedModel(net, { normalization, calibration, meta: { model: 'resnet20', method: 'apot', wbits: 4, abits: 4, firstLast: 'int8', classes } });
}

async function loadModel(path: string): Promise<IntegerModel> {
  if (path.endsWith('.tqm')) return readTqm(path);
  return (await lowerTrainedModel(loadTrainedModel(path))).ir;
}

function noiseImages(size: number, count: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: size * count }, () => rng.int(256));
}

/** `rounds` timed batches of `count` images, after one warm-up batch. Node's CPU time is the process's (the engine is its one busy thread). */
function rates(engine: InferenceEngine, images: Uint8Array, count: number, rounds: number): Rates {
  const batch = images.subarray(0, count * engine.imageSize);
  engine.inferBatch(batch, count);
  const r = [];
  for (let i = 0; i < rounds; i++) {
    const [t0, c0] = [performance.now(), process.cpuUsage()];
    engine.inferBatch(batch, count);
    const c = process.cpuUsage(c0);
    r.push({ count, wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 });
  }
  return summarize(r);
}

async function nodeSide(model: IntegerModel, images: Uint8Array): Promise<Side & { readonly logits: Int32Array; readonly tsLogits: Int32Array }> {
  const ts = new IntegerEngine(model);
  const wasm = await WasmIntegerEngine.create(model);
  const logits = wasm.inferBatch(images, IMAGES);
  const tsLogits = ts.inferBatch(images, IMAGES);
  const logitsEqual = logits.every((v, i) => v === tsLogits[i]);
  return { ts: rates(ts, images, TS_IMAGES, ROUNDS), wasm: rates(wasm, images, IMAGES, ROUNDS), logitsEqual, logits, tsLogits };
}

interface PageInput {
  readonly tqm: string;
  readonly images: string;
}

/** Runs in the page (the bundled `tinyquant/engine` is the global `tq`): both engines for the model, kept for the rounds. */
async function pageSetup(input: PageInput): Promise<string[]> {
  const g = globalThis as unknown as { tq: typeof Engine; bench: { engines: Record<string, Engine.InferenceEngine>; images: Uint8Array } };
  const decode = (s: string): Uint8Array => Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0));
  const model = g.tq.decodeTqm(decode(input.tqm));
  const engines = { ts: await g.tq.createEngine(model, { backend: 'ts' }), wasm: await g.tq.createEngine(model) };
  g.bench = { engines, images: decode(input.images) };
  return [engines.ts.backend, engines.wasm.backend];
}

/** One round in the page: wall milliseconds of `count` images, or (logits) the logits. */
function pageRound({ engine, count, logits }: { engine: string; count: number; logits: boolean }): number | number[] {
  const { engines, images } = (globalThis as unknown as { bench: { engines: Record<string, Engine.InferenceEngine>; images: Uint8Array } }).bench;
  const e = engines[engine];
  const batch = images.subarray(0, count * e.imageSize);
  if (logits) return Array.from(e.inferBatch(batch, count));
  const t0 = performance.now();
  e.inferBatch(batch, count);
  return performance.now() - t0;
}

async function bundleEngine(): Promise<string> {
  const esbuild = await import('esbuild');
  const out = await esbuild.build({ entryPoints: [join(packageRoot(), 'dist', 'src', 'engine.js')], bundle: true, format: 'iife', globalName: 'tq', platform: 'browser', write: false, logLevel: 'silent' });
  return out.outputFiles[0].text;
}

async function chromiumSide(models: readonly { model: IntegerModel; images: Uint8Array; logits: Int32Array }[]): Promise<{ version: string; sides: Side[] }> {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: values.chromium, args: ['--no-sandbox', '--disable-gpu'] });
  try {
    const bundle = await bundleEngine();
    const sides: Side[] = [];
    for (const { model, images, logits } of models) {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.setContent('<!doctype html><title>tinyquant engine bench</title>');
      await page.addScriptTag({ content: bundle });
      // The renderer main thread's CPU time, from the DevTools protocol's Performance.getMetrics.
      const cdp = await page.context().newCDPSession(page);
      await cdp.send('Performance.enable');
      const threadTime = async (): Promise<number> => (await cdp.send('Performance.getMetrics')).metrics.find((m) => m.name === 'ThreadTime')?.value ?? NaN;
      const backends = await page.evaluate(pageSetup, { tqm: Buffer.from(encodeTqm(model)).toString('base64'), images: Buffer.from(images).toString('base64') });
      if (backends.join() !== 'ts,wasm') throw new Error(`chromium: backends ${backends.join(', ')}, expected ts and wasm`);
      const time = async (engine: string, count: number): Promise<Rates> => {
        await page.evaluate(pageRound, { engine, count, logits: false });
        const r = [];
        for (let i = 0; i < ROUNDS; i++) {
          const c0 = await threadTime();
          const ms = (await page.evaluate(pageRound, { engine, count, logits: false })) as number;
          r.push({ count, wall: ms / 1000, cpu: (await threadTime()) - c0 });
        }
        return summarize(r);
      };
      const [ts, wasm] = [await time('ts', TS_IMAGES), await time('wasm', IMAGES)];
      const out = (await page.evaluate(pageRound, { engine: 'wasm', count: IMAGES, logits: true })) as number[];
      if (errors.length > 0) throw new Error(`chromium: ${errors.join('; ')}`);
      sides.push({ ts, wasm, logitsEqual: out.length === logits.length && out.every((v, i) => v === logits[i]) });
      await page.close();
    }
    return { version: browser.version(), sides };
  } finally {
    await browser.close();
  }
}

/** /proc/cpuinfo's model name with the family and model numbers (a VM's name can be as short as "AMD EPYC"). */
function cpuModel(): string {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const field = (name: string): string | undefined => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1];
    return `${field('model name') ?? 'unknown CPU'} (family ${field('cpu family')}, model ${field('model')})`;
  } catch {
    return 'unknown CPU';
  }
}

const fmt = (r: Rates): string => `${r.cpu.toFixed(1)} (${r.cpuBest.toFixed(1)}; wall ${r.wall.toFixed(1)})`;

async function main(): Promise<void> {
  const sources = positionals.length > 0 ? positionals : [null];
  const models: { label: string; model: IntegerModel; images: Uint8Array }[] = [];
  for (const source of sources) {
    const model = source ? await loadModel(source) : defaultModel();
    const m = model.meta;
    const label = `${source ? basename(source) : 'untrained'}: ${m.model} ${m.method} W${m.wbits}A${m.abits}`;
    models.push({ label, model, images: noiseImages(inputShape(model).reduce((a, b) => a * b, 1), IMAGES, 7) });
  }
  const node: Awaited<ReturnType<typeof nodeSide>>[] = [];
  for (const m of models) node.push(await nodeSide(m.model, m.images));
  const browser = values['no-browser'] ? null : await chromiumSide(models.map((m, i) => ({ ...m, logits: node[i].tsLogits })));
  console.log(`CPU: ${cpuModel()}; one thread; node ${process.version}${browser ? `, Chromium ${browser.version}` : ''}`);
  console.log(`images per second of thread CPU time, median of ${ROUNDS} rounds (best; wall-clock median): TypeScript ${TS_IMAGES} images per round, wasm ${IMAGES}; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  const rows = models.map((m, i) => {
    const b = browser?.sides[i];
    const cells = [m.label, fmt(node[i].ts), fmt(node[i].wasm), `${(node[i].wasm.cpu / node[i].ts.cpu).toFixed(1)}x`, node[i].logitsEqual ? 'equal' : 'DIFFER'];
    if (b) cells.push(fmt(b.ts), fmt(b.wasm), `${(b.wasm.cpu / b.ts.cpu).toFixed(1)}x`, b.logitsEqual ? 'equal' : 'DIFFER');
    console.log(cells.join(' | '));
    return { model: m.label, node: { ts: node[i].ts, wasm: node[i].wasm, logitsEqual: node[i].logitsEqual }, chromium: b ?? null };
  });
  console.log(`columns: model | node ts | node wasm | speedup | logits wasm = ts${browser ? ' | chromium ts | chromium wasm | speedup | logits chromium wasm = node ts' : ''}`);
  if (values.out) writeFileSync(values.out, `${JSON.stringify({ cpu: cpuModel(), node: process.version, chromium: browser?.version ?? null, rounds: ROUNDS, images: IMAGES, tsImages: TS_IMAGES, rows }, null, 2)}\n`);
  if (rows.some((r) => !r.node.logitsEqual || (r.chromium && !r.chromium.logitsEqual))) process.exitCode = 1;
}

await main();
