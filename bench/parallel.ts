/**
 * `npm run bench:parallel`: is it faster, for a grid of runs, to train two runs at once with one
 * thread each, or one run at a time with two threads? Both measured side by side in one run
 * (interleaved rounds, fresh processes): the total training images/s of each arrangement and the
 * ratio parallel/sequential, for float and quantized training. The executor's default
 * (src/cli/run.ts defaultExecution) follows from this.
 *
 * Options: --model M --batch B --iters N --rounds R --configs float,apot:4,ewgs:4
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { TINYQUANT_CLI, lastJsonLine, median } from './common.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet20' },
    batch: { type: 'string', default: '128' },
    iters: { type: 'string', default: '15' },
    rounds: { type: 'string', default: '2' },
    configs: { type: 'string', default: 'float,apot:4,ewgs:4' },
    json: { type: 'boolean' },
  },
});

/** `apot:4` -> the quantization flags of `tinyquant bench train`. */
function configArgs(config: string): string[] {
  if (config === 'float') return [];
  const [method, bits] = config.split(':');
  return ['--method', method, '--wbits', bits, '--abits', bits];
}

/** One `tinyquant bench train` process with `threads` backend threads; resolves to its images/s. */
function bench(config: string, threads: number): Promise<number> {
  const args = [TINYQUANT_CLI, 'bench', 'train', '--model', values.model!, '--batch', values.batch!, '--iters', values.iters!, '--json', ...configArgs(config)];
  const child = spawn(process.execPath, args, { env: { ...process.env, TINYQUANT_THREADS: String(threads) }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) =>
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`bench train ${config} with ${threads} threads exited with ${code}`));
      else resolve(lastJsonLine<{ imgPerSec: number }>(out).imgPerSec);
    }),
  );
}

/** Two runs one after the other, two threads each: the total rate is their mean rate. */
async function sequential(config: string): Promise<number> {
  const a = await bench(config, 2);
  const b = await bench(config, 2);
  return (a + b) / 2;
}

/** Two runs at once, one thread each: the total rate is the sum of their rates. */
async function parallel(config: string): Promise<number> {
  const [a, b] = await Promise.all([bench(config, 1), bench(config, 1)]);
  return a + b;
}

const configs = values.configs!.split(',');
const samples = new Map(configs.map((c) => [c, { sequential: [] as number[], parallel: [] as number[] }]));
for (let round = 1; round <= Number(values.rounds); round++) {
  for (const config of configs) {
    const s = samples.get(config)!;
    s.sequential.push(await sequential(config));
    s.parallel.push(await parallel(config));
    console.log(`round ${round}: ${config.padEnd(8)} sequential 1x2 threads ${s.sequential.at(-1)!.toFixed(1)} img/s, parallel 2x1 thread ${s.parallel.at(-1)!.toFixed(1)} img/s`);
  }
}

console.log(`\n${'config'.padEnd(8)} ${'1 run x 2 threads'.padStart(18)} ${'2 runs x 1 thread'.padStart(18)}  ratio (median of the rounds' ratios)`);
const summary: Record<string, { sequential: number; parallel: number; ratio: number }> = {};
for (const config of configs) {
  const s = samples.get(config)!;
  const ratio = median(s.parallel.map((p, i) => p / s.sequential[i]));
  summary[config] = { sequential: median(s.sequential), parallel: median(s.parallel), ratio };
  console.log(`${config.padEnd(8)} ${summary[config].sequential.toFixed(1).padStart(18)} ${summary[config].parallel.toFixed(1).padStart(18)}  ${ratio.toFixed(3)}`);
}
if (values.json) console.log(JSON.stringify({ model: values.model, batch: Number(values.batch), iters: Number(values.iters), summary }));
