/**
 * `npm run bench:quant`: training images/s of every quantization method at W4A4 and W2A2 as a
 * ratio to float training on the same engine, all measured in one run: per configuration and round,
 * a float process and a quantized one take training steps in turn (medians over the step pairs).
 *
 * Options: --model M --batch B --iters N (step pairs per process) --rounds R --methods a,b,c --bits 4,2
 *
 * --profile: instead, where the time of a training step goes, per backend op (wall ms and calls per
 * step), for float and every configuration, each in a fresh process. A step is what runs between
 * two consecutive loss evaluations (backward, update, next forward), averaged over the timed
 * iterations. Run it under the CPU lock like the throughput table.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getBackend } from '../src/backend/index.js';
import { type ParsedArgs, parse } from '../src/cli/args.js';
import { BENCH_TRAIN, benchSetup, runBench } from '../src/cli/bench.js';
import { median, runJson } from './common.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet20' },
    batch: { type: 'string', default: '128' },
    iters: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    methods: { type: 'string', default: 'apot,ewgs,uniform,pact,lsq' },
    bits: { type: 'string', default: '4,2' },
    'first-last': { type: 'string', default: 'int8' },
    profile: { type: 'boolean', default: false },
    /** Internal: profile one configuration (a JSON array of `tinyquant bench train` options) here. */
    'profile-child': { type: 'string' },
    /** Internal: serve training steps of one configuration on stdin (see StepServer). */
    'step-server': { type: 'string' },
  },
});

const self = fileURLToPath(import.meta.url);
const WARMUP = 3;

interface Config {
  readonly label: string;
  readonly args: string[];
}

const common = ['--model', values.model!, '--batch', values.batch!, '--iters', values.iters!, '--warmup', String(WARMUP)];
const configs: Config[] = [{ label: 'float', args: [] }];
for (const bits of values.bits!.split(',')) {
  for (const method of values.methods!.split(',')) {
    configs.push({ label: `${method} W${bits}A${bits}`, args: ['--method', method, '--wbits', bits, '--abits', bits, '--first-last', values['first-last']!] });
  }
}

/** A child process's `tinyquant bench train` options (see `common` and Config.args). */
/** `bench train` arguments as that command parses them (its defaults filled in). */
function childArgs(benchArgs: string[]): ParsedArgs {
  return parse(BENCH_TRAIN, benchArgs);
}

interface OpCost {
  readonly op: string;
  readonly ms: number;
  readonly calls: number;
}

/**
 * Train one configuration in this process with every backend method timed; print the per-step
 * costs as one JSON line. Ops on 4-d tensors are split into activation-sized (batch first) and
 * weight-sized ones, whose costs differ in kind.
 */
function profileHere(benchArgs: string[]): void {
  const backend = getBackend() as unknown as Record<string, unknown>;
  const totals = new Map<string, { ms: number; calls: number }>();
  const args = childArgs(benchArgs);
  const iters = Number(args.values.iters);
  // Whole steps: the ops from the first timed loss up to (not including) the last one.
  let losses = 0;
  for (const name of Object.getOwnPropertyNames(Object.getPrototypeOf(backend))) {
    const method = backend[name];
    if (name === 'constructor' || typeof method !== 'function') continue;
    backend[name] = (...a: unknown[]) => {
      if (name === 'softmaxCrossEntropy') losses++;
      if (losses <= WARMUP || losses >= WARMUP + iters) return method.apply(backend, a);
      const start = process.hrtime.bigint();
      const result = method.apply(backend, a);
      const shape = (a[0] as { shape?: readonly number[] } | undefined)?.shape;
      const key = shape?.length === 4 ? `${name} (${shape[0] === Number(args.values.batch) ? 'activation' : 'weight'})` : name;
      const t = totals.get(key) ?? { ms: 0, calls: 0 };
      t.ms += Number(process.hrtime.bigint() - start) / 1e6;
      t.calls++;
      totals.set(key, t);
      return result;
    };
  }
  runBench(args);
  const steps = iters - 1;
  const ops: OpCost[] = [...totals].map(([op, t]) => ({ op, ms: t.ms / steps, calls: t.calls / steps })).sort((a, b) => b.ms - a.ms);
  console.log(JSON.stringify(ops));
}

function profile(): void {
  for (const c of configs) {
    const ops = runJson<OpCost[]>(process.execPath, [self, '--profile-child', JSON.stringify([...common, ...c.args])]);
    const total = ops.reduce((s, o) => s + o.ms, 0);
    console.log(`\n${c.label}: ${total.toFixed(1)} ms per step in backend ops`);
    for (const o of ops.filter((o) => o.ms >= 0.5)) {
      console.log(`  ${o.op.padEnd(36)} ${o.ms.toFixed(1).padStart(7)} ms ${o.calls.toFixed(1).padStart(6)} calls`);
    }
  }
}

/**
 * Serve training steps of one configuration: set up and warm up, print "ready", then for every
 * line read from stdin run one step and print its milliseconds.
 */
async function serveSteps(benchArgs: string[]): Promise<void> {
  const { step } = benchSetup(childArgs(benchArgs));
  for (let i = 0; i < WARMUP; i++) step(i);
  console.log('ready');
  let i = 0;
  for await (const _line of createInterface({ input: process.stdin })) {
    const start = process.hrtime.bigint();
    step(i++);
    console.log(Number(process.hrtime.bigint() - start) / 1e6);
  }
}

/** A step server in a child process (its own memory pool and threads); `step()` resolves to its ms. */
class StepServer {
  readonly #child: ChildProcessByStdio<Writable, Readable, null>;
  readonly #lines: AsyncIterator<string>;

  constructor(benchArgs: string[]) {
    this.#child = spawn(process.execPath, [self, '--step-server', JSON.stringify(benchArgs)], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.#lines = createInterface({ input: this.#child.stdout })[Symbol.asyncIterator]();
  }

  async #next(): Promise<string> {
    const { value, done } = await this.#lines.next();
    if (done) throw new Error('bench:quant: a step server exited early');
    return value;
  }

  async ready(): Promise<void> {
    if ((await this.#next()) !== 'ready') throw new Error('bench:quant: a step server did not start');
  }

  async step(): Promise<number> {
    this.#child.stdin.write('step\n');
    return Number(await this.#next());
  }

  close(): void {
    this.#child.stdin.end();
  }
}

/**
 * One configuration against float: two processes (float and quantized, same synthetic data, seed
 * and optimizer) train in alternating steps, one at a time, the order swapped every pair, so that
 * the shared, noisy machine slows both alike. Returns the per-pair milliseconds.
 */
async function pairs(c: Config): Promise<{ floatMs: number[]; quantizedMs: number[] }> {
  const float = new StepServer(common);
  const quantized = new StepServer([...common, ...c.args]);
  try {
    await float.ready();
    await quantized.ready();
    const out = { floatMs: [] as number[], quantizedMs: [] as number[] };
    for (let i = 0; i < Number(values.iters); i++) {
      if (i % 2 === 0) {
        out.floatMs.push(await float.step());
        out.quantizedMs.push(await quantized.step());
      } else {
        out.quantizedMs.push(await quantized.step());
        out.floatMs.push(await float.step());
      }
    }
    return out;
  } finally {
    float.close();
    quantized.close();
  }
}

/**
 * Every configuration, each round in fresh processes, trained step by step alternating with float
 * (see pairs); a configuration's ratio is the median over all its pairs of float ms / its ms.
 */
async function throughput(): Promise<void> {
  const batch = Number(values.batch);
  const [, ...quantized] = configs;
  const ratios = new Map<string, number[]>(quantized.map((c) => [c.label, []]));
  const ms = new Map<string, { float: number[]; quantized: number[] }>(quantized.map((c) => [c.label, { float: [], quantized: [] }]));
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const c of quantized) {
      const p = await pairs(c);
      const round = p.floatMs.map((f, i) => f / p.quantizedMs[i]);
      ratios.get(c.label)!.push(...round);
      ms.get(c.label)!.float.push(...p.floatMs);
      ms.get(c.label)!.quantized.push(...p.quantizedMs);
      console.log(`round ${r + 1}: ${c.label.padEnd(16)} ratio ${median(round).toFixed(3)} (median of ${round.length} step pairs)`);
    }
  }
  console.log(`\n${'configuration'.padEnd(16)} img/s   float img/s   ratio (median over all step pairs)`);
  const summary: Record<string, { imgPerSec: number; floatImgPerSec: number; ratio: number }> = {};
  for (const c of quantized) {
    const m = ms.get(c.label)!;
    const entry = { imgPerSec: (1000 * batch) / median(m.quantized), floatImgPerSec: (1000 * batch) / median(m.float), ratio: median(ratios.get(c.label)!) };
    summary[c.label] = entry;
    console.log(`${c.label.padEnd(16)} ${entry.imgPerSec.toFixed(1).padStart(6)}  ${entry.floatImgPerSec.toFixed(1).padStart(11)}   ${entry.ratio.toFixed(3)}`);
  }
  console.log(JSON.stringify({ model: values.model, batch, summary }));
}

if (values['profile-child'] !== undefined) profileHere(JSON.parse(values['profile-child']) as string[]);
else if (values['step-server'] !== undefined) await serveSteps(JSON.parse(values['step-server']) as string[]);
else if (values.profile) profile();
else await throughput();
