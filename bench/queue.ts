/**
 * `npm run bench:queue`: issue 13's target measured side by side in one run. A small grid (resnet8 on
 * a slice of CIFAR-10, 6 runs of 5-10 s) in interleaved rounds, each in fresh results
 * directories: (a) the local executor, `tinyquant run GRID --jobs 2 --threads 1`; (b) the queue,
 * `tinyquant run GRID --queue URL` followed by two `tinyquant worker --concurrency 1 --threads 1`
 * processes (started and ready before the clock starts), on a redis-server of its own on 127.0.0.1.
 * Measured: each arrangement's wall time (the `run` process's start to its exit), the CPU of the
 * `run` process (the coordinator, in (b)) and of the workers. Checked: every run finished and ran
 * once, with the same weights in every arrangement and round. Medians over the rounds.
 *
 * CPU time comes from bash's `times` after the process exits: it counts the process and the
 * children it waited for (the local executor's run processes), which /proc/PID/stat no longer
 * shows once the process is gone. Every process stays in this one's session: with the kernel's
 * autogroup scheduling a session is one share of the CPU, so workers in sessions of their own
 * would get more of a busy machine than the local executor's runs, and look faster.
 *
 * Options: --rounds R (2) --data-dir DIR (/work/shared/data) --epochs E (3) --train-subset N (1000) --json
 * Exit 3 when redis-server is not installed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { type Outcome, outcomeOf, until } from '../test/fault-harness.js';
import { type RedisServer, freePort, haveRedisServer, startRedis } from '../test/redis-server.js';
import { TINYQUANT_CLI, lastJsonLine, median } from './common.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '2' },
    'data-dir': { type: 'string', default: '/work/shared/data' },
    epochs: { type: 'string', default: '3' },
    'train-subset': { type: 'string', default: '1000' },
    json: { type: 'boolean' },
  },
});

/** A CLI process (under bash, which reports its CPU once it exits). */
interface Proc {
  readonly child: ChildProcess;
  /** The CLI's own process id (bash's child), once bash has said it. */
  readonly cliPid: () => number | undefined;
  readonly stderr: () => string;
  readonly exit: Promise<{ code: number | null; stdout: string; stderr: string; wallS: number; cpuS: number }>;
}

const live = new Set<Proc>();

/**
 * bash runs the CLI, passes SIGTERM and SIGINT on to it, waits for its end; on fd 3 it prints the
 * CLI's process id, then `times` (its own and its children's user and sys time).
 */
const TIMED = 'trap \'kill -TERM $p 2>/dev/null\' TERM INT; "$@" & p=$!; echo $p >&3; wait $p; s=$?; while kill -0 $p 2>/dev/null; do wait $p; s=$?; done; times >&3; exit $s';

function cli(args: readonly string[]): Proc {
  const started = performance.now();
  const child = spawn('bash', ['-c', TIMED, 'timed', process.execPath, TINYQUANT_CLI, ...args], {
    env: { ...process.env, TINYQUANT_THREADS: '1' },
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
  });
  const text = { stdout: '', stderr: '', times: '' };
  child.stdout!.on('data', (d: Buffer) => (text.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (text.stderr += d.toString()));
  (child.stdio[3] as NodeJS.ReadableStream).on('data', (d: Buffer) => (text.times += d.toString()));
  const exit = new Promise<Awaited<Proc['exit']>>((resolve) =>
    child.on('close', (code) => {
      live.delete(proc);
      resolve({ code, stdout: text.stdout, stderr: text.stderr, wallS: (performance.now() - started) / 1000, cpuS: childrenCpu(text.times) });
    }),
  );
  const proc: Proc = { child, cliPid: () => Number(text.times.split('\n')[0]) || undefined, stderr: () => text.stderr, exit };
  live.add(proc);
  return proc;
}

/** SIGTERM to every CLI still running; SIGKILL to those not gone within 15 s (a worker that lost Redis may wait on it). */
async function stopAll(): Promise<void> {
  const procs = [...live];
  for (const p of procs) p.child.kill('SIGTERM');
  const ended = Promise.all(procs.map((p) => p.exit));
  const late = new Promise<'late'>((r) => setTimeout(() => r('late'), 15_000).unref());
  if ((await Promise.race([ended, late])) === 'late') {
    for (const p of live) {
      const pid = p.cliPid();
      try {
        if (pid !== undefined) process.kill(pid, 'SIGKILL');
      } catch {
        // it ended meanwhile
      }
    }
  }
  await ended;
}

/** The last line bash wrote on fd 3, its `times` for its children ("0m1.230s 0m0.120s": user and sys), in seconds. */
function childrenCpu(fd3: string): number {
  const m = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s/.exec(fd3.trim().split('\n').at(-1) ?? '');
  if (!m) return Number.NaN;
  return Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]);
}

function writeGrid(dir: string): string {
  const file = join(dir, 'queue-bench.json');
  writeFileSync(file, JSON.stringify({
    name: 'queue-bench',
    models: ['resnet8'],
    datasets: ['cifar10'],
    methods: ['lsq', 'uniform', 'pact'],
    bits: [4, 2],
    seeds: [0],
    recipe: { epochs: Number(values.epochs), batch: 32, evalBatch: 100, lr: 0.02, workers: 0, trainSubset: Number(values['train-subset']), testSubset: 500 },
    start: [{ model: 'resnet8', dataset: 'cifar10', scratch: true }],
  }));
  return file;
}

interface Sample {
  wallS: number;
  runCpuS: number;
  workersCpuS?: number;
}

/** Every run finished, once (one backend line in its log, one `start` line among `stderrs`); its weights, by run id. */
function checkRuns(what: string, stdout: string, stderrs: readonly string[]): Map<string, Outcome> {
  const out = lastJsonLine<{ resultsDir: string; ran: string[]; runs: { id: string; status: string; dir: string }[] }>(stdout);
  const outcomes = new Map<string, Outcome>();
  for (const run of out.runs) {
    if (run.status !== 'finished') throw new Error(`${what}: run ${run.id} is ${run.status}`);
    if (!out.ran.includes(run.id)) throw new Error(`${what}: run ${run.id} did not run`);
    const attempts = readFileSync(join(out.resultsDir, run.dir, 'train.log'), 'utf8').split('\n').filter((l) => / backend \w+, \d+ thread/.test(l)).length;
    const starts = stderrs.join('\n').split('\n').filter((l) => l.startsWith(`start  ${run.id}`)).length;
    if (attempts !== 1 || starts !== 1) throw new Error(`${what}: run ${run.id} ran ${attempts} time(s) by its log, started ${starts} time(s)`);
    outcomes.set(run.id, outcomeOf(join(out.resultsDir, run.dir)));
  }
  return outcomes;
}

/** The errors of the runs that did not finish (from `run --json`), else the last line on stderr. */
function whyNot(stdout: string, stderr: string): string {
  try {
    const out = lastJsonLine<{ runs: { id: string; status: string; error: string | null }[] }>(stdout);
    return out.runs.filter((r) => r.status !== 'finished').map((r) => `${r.id} ${r.status}: ${r.error}`).join('; ');
  } catch {
    return stderr.trim().split('\n').at(-1) ?? '';
  }
}

async function local(grid: string, out: string, dataDir: string): Promise<{ sample: Sample; outcomes: Map<string, Outcome> }> {
  const r = await cli(['run', grid, '--out', out, '--data-dir', dataDir, '--jobs', '2', '--threads', '1', '--no-report', '--json']).exit;
  if (r.code !== 0) throw new Error(`local executor exited with ${r.code}: ${whyNot(r.stdout, r.stderr)}`);
  return { sample: { wallS: r.wallS, runCpuS: r.cpuS }, outcomes: checkRuns('local executor', r.stdout, [r.stderr]) };
}

async function queued(grid: string, out: string, dataDir: string, url: string): Promise<{ sample: Sample; outcomes: Map<string, Outcome> }> {
  const workers = [0, 1].map(() => cli(['worker', '--queue', url, '--concurrency', '1', '--threads', '1']));
  for (const w of workers) await until(() => w.stderr().includes('waiting for runs'), `worker ${w.child.pid} to be ready`);
  const r = await cli(['run', grid, '--queue', url, '--out', out, '--data-dir', dataDir, '--no-report', '--json']).exit;
  for (const w of workers) w.child.kill('SIGTERM');
  const ends = await Promise.all(workers.map((w) => w.exit));
  if (r.code !== 0) throw new Error(`run --queue exited with ${r.code}: ${whyNot(r.stdout, r.stderr)}`);
  for (const e of ends) if (e.code !== 130) throw new Error(`a worker exited with ${e.code} (130 expected after SIGTERM): ${e.stderr.trim().split('\n').at(-1)}`);
  const outcomes = checkRuns('queue', r.stdout, ends.map((e) => e.stderr));
  return { sample: { wallS: r.wallS, runCpuS: r.cpuS, workersCpuS: ends.reduce((s, e) => s + e.cpuS, 0) }, outcomes };
}

function sameWeights(what: string, got: Map<string, Outcome>, reference: Map<string, Outcome>): void {
  for (const [id, o] of reference) if (!isDeepStrictEqual(got.get(id), o)) throw new Error(`${what}: run ${id} ended with other weights than the first local round's`);
  if (got.size !== reference.size) throw new Error(`${what}: ${got.size} runs, the first local round had ${reference.size}`);
}

const fmt = (x: number | undefined, digits = 1): string => (x === undefined ? '-' : x.toFixed(digits));

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'tq-bench-queue-'));
  let redis: RedisServer | undefined;
  const cleanup = async (): Promise<void> => {
    await stopAll();
    await redis?.stop();
    rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (): void => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    redis = await startRedis(await freePort(), root);
    const url = `redis://127.0.0.1:${redis.port}`;
    const grid = writeGrid(root);
    const dataDir = values['data-dir']!;
    const samples = { local: [] as Sample[], queue: [] as Sample[] };
    let reference: Map<string, Outcome> | undefined;
    for (let round = 1; round <= Number(values.rounds); round++) {
      const a = await local(grid, join(root, `local-${round}`), dataDir);
      reference ??= a.outcomes;
      sameWeights(`local executor, round ${round}`, a.outcomes, reference);
      const b = await queued(grid, join(root, `queue-${round}`), dataDir, url);
      sameWeights(`queue, round ${round}`, b.outcomes, reference);
      samples.local.push(a.sample);
      samples.queue.push(b.sample);
      console.log(`round ${round}: local executor ${fmt(a.sample.wallS)} s wall (CPU ${fmt(a.sample.runCpuS)} s); two workers ${fmt(b.sample.wallS)} s wall (coordinator CPU ${fmt(b.sample.runCpuS, 2)} s, workers ${fmt(b.sample.workersCpuS)} s); ${reference.size} runs, each once, same weights`);
    }
    const med = (xs: Sample[], f: (s: Sample) => number | undefined): number | undefined => (xs.some((s) => f(s) === undefined) ? undefined : median(xs.map((s) => f(s)!)));
    const rows = [['local executor, --jobs 2 --threads 1', samples.local], ['queue, 2 workers x 1 thread', samples.queue]] as const;
    console.log(`\n${'arrangement (medians)'.padEnd(38)} ${'wall s'.padStart(8)} ${'run process CPU s'.padStart(18)} ${'workers CPU s'.padStart(14)}`);
    for (const [name, xs] of rows) console.log(`${name.padEnd(38)} ${fmt(med(xs, (s) => s.wallS)).padStart(8)} ${fmt(med(xs, (s) => s.runCpuS), 2).padStart(18)} ${fmt(med(xs, (s) => s.workersCpuS)).padStart(14)}`);
    const ratio = median(samples.queue.map((q, i) => q.wallS / samples.local[i].wallS));
    const coordinatorCpu = med(samples.queue, (s) => s.runCpuS)!;
    const queueWall = med(samples.queue, (s) => s.wallS)!;
    console.log(`\ntwo workers / local executor: wall x${ratio.toFixed(3)} (median of the rounds' ratios); coordinator CPU ${coordinatorCpu.toFixed(2)} s of ${queueWall.toFixed(1)} s wall`);
    console.log(`CPU: ${cpus()[0].model} (${cpus().length} logical); load average at the end ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
    if (values.json) console.log(JSON.stringify({ rounds: Number(values.rounds), runs: reference?.size, ratio, coordinatorCpuS: coordinatorCpu, queueWallS: queueWall, samples, cpu: cpus()[0].model }));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

if (!haveRedisServer()) {
  console.error('bench:queue: redis-server is not installed (apt-get install redis-server): the queue benchmark needs a real Redis');
  process.exit(3);
}
await main();
