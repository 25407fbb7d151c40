/**
 * `npm run bench:quant`: training images/s of every quantization method at W4A4 and W2A2 as a
 * ratio to float training on the same engine, all measured in one run (interleaved rounds, each
 * configuration in a fresh process, medians).
 *
 * Options: --model M --batch B --iters N --rounds R --methods a,b,c --bits 4,2
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet20' },
    batch: { type: 'string', default: '128' },
    iters: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    methods: { type: 'string', default: 'apot,ewgs,uniform,pact,lsq' },
    bits: { type: 'string', default: '4,2' },
    'first-last': { type: 'string', default: 'int8' },
  },
});

const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

interface Config {
  readonly label: string;
  readonly args: string[];
}

const configs: Config[] = [{ label: 'float', args: [] }];
for (const bits of values.bits!.split(',')) {
  for (const method of values.methods!.split(',')) {
    configs.push({ label: `${method} W${bits}A${bits}`, args: ['--method', method, '--wbits', bits, '--abits', bits, '--first-last', values['first-last']!] });
  }
}

function measure(c: Config): number {
  const out = execFileSync(
    process.execPath,
    [cli, 'bench', 'train', '--model', values.model!, '--batch', values.batch!, '--iters', values.iters!, '--json', ...c.args],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return (JSON.parse(out.trim().split('\n').at(-1)!) as { imgPerSec: number }).imgPerSec;
}

const samples = new Map<string, number[]>(configs.map((c) => [c.label, []]));
for (let r = 0; r < Number(values.rounds); r++) {
  for (const c of configs) {
    const v = measure(c);
    samples.get(c.label)!.push(v);
    console.log(`round ${r + 1}: ${c.label.padEnd(16)} ${v.toFixed(1)} img/s`);
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const float = median(samples.get('float')!);
console.log(`\n${'configuration'.padEnd(16)} img/s   ratio to float (${float.toFixed(1)} img/s)`);
const summary: Record<string, { imgPerSec: number; ratio: number }> = {};
for (const c of configs) {
  const m = median(samples.get(c.label)!);
  summary[c.label] = { imgPerSec: m, ratio: m / float };
  console.log(`${c.label.padEnd(16)} ${m.toFixed(1).padStart(6)}  ${(m / float).toFixed(3)}`);
}
console.log(JSON.stringify({ model: values.model, batch: Number(values.batch), summary }));
