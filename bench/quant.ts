/**
 * `npm run bench:quant`: training images/s of every quantization method at W4A4 and W2A2 as a
 * ratio to float training on the same engine, all measured in one run (each configuration in a fresh
 * process, float run before and after every one, medians over rounds).
 *
 * Options: --model M --batch B --iters N --rounds R --methods a,b,c --bits 4,2
 *
 * --profile: instead, where the time of a training step goes, per backend op (wall ms and calls per
 * step), for float and every configuration, each in a fresh process. A step is what runs between
 * two consecutive loss evaluations (backward, update, next forward), averaged over the timed
 * iterations. Run it under the CPU lock like the throughput table.
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getBackend } from '../src/backend/index.js';
import { runBench } from '../src/cli/bench.js';
import { TINYQUANT_CLI, median, runJson } from './common.js';

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

function measure(c: Config): number {
  return runJson<{ imgPerSec: number }>(process.execPath, [TINYQUANT_CLI, 'bench', 'train', ...common, '--json', ...c.args]).imgPerSec;
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
  const options = Object.fromEntries(
    ['model', 'batch', 'iters', 'warmup', 'method', 'wbits', 'abits', 'first-last'].map((k) => [k, { type: 'string' }] as const),
  );
  const args = parseArgs({ args: benchArgs, options }).values;
  const iters = Number(args.iters);
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
      const key = shape?.length === 4 ? `${name} (${shape[0] === Number(args.batch) ? 'activation' : 'weight'})` : name;
      const t = totals.get(key) ?? { ms: 0, calls: 0 };
      t.ms += Number(process.hrtime.bigint() - start) / 1e6;
      t.calls++;
      totals.set(key, t);
      return result;
    };
  }
  runBench({ values: args, positionals: [] });
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
 * Every round runs float before and after each quantized configuration, and a configuration's
 * ratio in that round is its speed over the mean of the two float runs around it: a slow drift of
 * the (shared, noisy) machine cancels out. Reported: medians over the rounds.
 */
function throughput(): void {
  const [float, ...quantized] = configs;
  const speeds = new Map<string, number[]>(configs.map((c) => [c.label, []]));
  const ratios = new Map<string, number[]>(quantized.map((c) => [c.label, []]));
  const run = (r: number, c: Config): number => {
    const v = measure(c);
    speeds.get(c.label)!.push(v);
    console.log(`round ${r + 1}: ${c.label.padEnd(16)} ${v.toFixed(1)} img/s`);
    return v;
  };
  for (let r = 0; r < Number(values.rounds); r++) {
    let before = run(r, float);
    for (const c of quantized) {
      const v = run(r, c);
      const after = run(r, float);
      ratios.get(c.label)!.push(v / ((before + after) / 2));
      before = after;
    }
  }
  const floatSpeed = median(speeds.get(float.label)!);
  console.log(`\n${'configuration'.padEnd(16)} img/s   ratio to float (median of per-round ratios; float ${floatSpeed.toFixed(1)} img/s)`);
  const summary: Record<string, { imgPerSec: number; ratio: number }> = { float: { imgPerSec: floatSpeed, ratio: 1 } };
  for (const c of quantized) {
    const m = median(speeds.get(c.label)!);
    const ratio = median(ratios.get(c.label)!);
    summary[c.label] = { imgPerSec: m, ratio };
    console.log(`${c.label.padEnd(16)} ${m.toFixed(1).padStart(6)}  ${ratio.toFixed(3)}   (rounds: ${ratios.get(c.label)!.map((x) => x.toFixed(3)).join(', ')})`);
  }
  console.log(JSON.stringify({ model: values.model, batch: Number(values.batch), summary }));
}

if (values['profile-child'] !== undefined) profileHere(JSON.parse(values['profile-child']) as string[]);
else if (values.profile) profile();
else throughput();
