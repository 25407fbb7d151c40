/**
 * `npm run bench:compare`: tinyquant and PyTorch (Debian's python3-torch) on the same model, batch,
 * loss, optimizer and synthetic data, run alternately in one go so both see the same machine state;
 * prints each run, the medians and the ratio tinyquant / PyTorch for training and inference.
 *
 * Options: --model M --batch B --iters N --rounds R --threads T (both sides; default: every core,
 * because PyTorch's own default here is 1 thread: it counts the machine's 2 vCPUs as one core).
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { PYTHON, TINYQUANT_CLI, TORCH_BENCH, median, runJson } from './common.js';

interface BenchLine {
  readonly mode: string;
  readonly imgPerSec: number;
  readonly msPerStep: number;
  readonly peakRssMB: number;
  readonly backend: string;
  readonly threads: number;
}

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet20' },
    batch: { type: 'string', default: '128' },
    iters: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    threads: { type: 'string', default: String(availableParallelism()) },
    'skip-eval': { type: 'boolean', default: false },
  },
});

function compare(mode: 'train' | 'eval'): { ratio: number; rssRatio: number } {
  const common = ['--model', values.model!, '--batch', values.batch!, '--iters', values.iters!];
  const evalFlag = mode === 'eval' ? ['--eval'] : [];
  const env = { ...process.env, TINYQUANT_THREADS: values.threads };
  const threadArgs = ['--threads', values.threads!];
  const ours: BenchLine[] = [];
  const theirs: BenchLine[] = [];
  for (let r = 0; r < Number(values.rounds); r++) {
    ours.push(runJson<BenchLine>(process.execPath, [TINYQUANT_CLI, 'bench', 'train', ...common, ...evalFlag, '--json'], env));
    theirs.push(runJson<BenchLine>(PYTHON, [TORCH_BENCH, ...common, ...evalFlag, ...threadArgs], env));
    const [a, b] = [ours.at(-1)!, theirs.at(-1)!];
    console.log(
      `${mode} round ${r + 1}: tinyquant ${a.imgPerSec.toFixed(1)} img/s (${a.backend}, ${a.threads} thr, ${a.peakRssMB.toFixed(0)} MB)` +
        ` | PyTorch ${b.imgPerSec.toFixed(1)} img/s (${b.backend}, ${b.threads} thr, ${b.peakRssMB.toFixed(0)} MB)`,
    );
  }
  const [oursRate, theirsRate] = [median(ours.map((o) => o.imgPerSec)), median(theirs.map((t) => t.imgPerSec))];
  const ratio = oursRate / theirsRate;
  const rssRatio = median(ours.map((o) => o.peakRssMB)) / median(theirs.map((t) => t.peakRssMB));
  console.log(
    `${mode}: median tinyquant ${oursRate.toFixed(1)} img/s, PyTorch ${theirsRate.toFixed(1)} img/s, ` +
      `ratio tinyquant/PyTorch = ${ratio.toFixed(3)}; ` +
      `peak RSS ratio = ${rssRatio.toFixed(3)}`,
  );
  return { ratio, rssRatio };
}

const train = compare('train');
const inference = values['skip-eval'] ? null : compare('eval');
console.log(JSON.stringify({ model: values.model, batch: Number(values.batch), train, eval: inference }));
