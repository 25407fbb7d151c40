/**
 * kill -9 fault campaigns over the real CLI, shared by the short fault tests (test/faults.test.ts)
 * and the long `npm run faults` (bench/faults.ts): a tiny CIFAR-10 folder and tiny runs, killed at
 * random moments and inside checkpoint writes (the atomic-write hooks of src/io/atomic.ts), N times in
 * a row, then resumed to the end and compared bit for bit with an uninterrupted run. Every kill is
 * followed by an audit of the run directory: each checkpoint on disk must load, none may go back.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readCheckpoint } from '../src/train/checkpoint.js';
import { Rng } from '../src/util/rng.js';
import { cifar10Folder, cifarRecords } from './fixtures/data/make.js';

export const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** What a campaign counts (see {@link formatTally}). */
export interface FaultTally {
  /** Processes ended by SIGKILL: trainers, grid executors, grid workers. */
  kills: number;
  killsOfTrainers: number;
  killsOfGridParents: number;
  killsOfGridWorkers: number;
  /** Kills inside an atomic write: by the kill hook, or at random leaving the killed process's temp file. */
  killsInWrites: number;
  killsInWritesByHook: number;
  /** Runs taken to their end after kills, and of those, runs whose weights equal the uninterrupted run's. */
  resumes: number;
  bitExact: number;
  /** Checkpoints on disk that did not load after a kill, and checkpoints that disappeared or went back. */
  corrupt: number;
  lost: number;
  /** Temp files and unreferenced tensor files left after the final resume. */
  leftovers: number;
  /** Grid workers still alive 60 s after their executor was killed; the slowest stop seen. */
  orphansLeft: number;
  slowestOrphanStopMs: number;
  /** Problems, one line each (empty when every check passed). */
  problems: string[];
}

export function newTally(): FaultTally {
  return {
    kills: 0,
    killsOfTrainers: 0,
    killsOfGridParents: 0,
    killsOfGridWorkers: 0,
    killsInWrites: 0,
    killsInWritesByHook: 0,
    resumes: 0,
    bitExact: 0,
    corrupt: 0,
    lost: 0,
    leftovers: 0,
    orphansLeft: 0,
    slowestOrphanStopMs: 0,
    problems: [],
  };
}

export function formatTally(t: FaultTally): string {
  return [
    `kills: ${t.kills} (trainers ${t.killsOfTrainers}, grid executors ${t.killsOfGridParents}, grid workers ${t.killsOfGridWorkers})`,
    `kills during writes: ${t.killsInWrites} (${t.killsInWritesByHook} by the write hook, ${t.killsInWrites - t.killsInWritesByHook} at random times)`,
    `bit-exact resumes: ${t.bitExact} of ${t.resumes}`,
    `corrupt checkpoints: ${t.corrupt}, lost checkpoints: ${t.lost}, temp or orphan files left: ${t.leftovers}`,
    `orphan workers left after their executor's kill: ${t.orphansLeft} (slowest stop ${(t.slowestOrphanStopMs / 1000).toFixed(2)} s)`,
    ...(t.problems.length > 0 ? [`problems (${t.problems.length}):`, ...t.problems.map((p) => `  ${p}`)] : []),
  ].join('\n');
}

/** A CIFAR-10 folder of 40 training and 16 test images: 5 steps an epoch at batch 8. */
export function makeFaultData(dir: string): string {
  return cifar10Folder(dir, (i) => cifarRecords(Array.from({ length: 8 }, (_, r) => [(r * 3 + i) % 10]), i * 100), cifarRecords(Array.from({ length: 16 }, (_, r) => [r % 10]), 7));
}

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
  readonly ms: number;
}

/** The CLI in a child process (one backend thread: the same arithmetic in every process). */
export function startCli(args: readonly string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; exit: Promise<Exit> } {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, TINYQUANT_THREADS: '1', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8000)));
  const exit = new Promise<Exit>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stderr, ms: Date.now() - started })));
  return { child, exit };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `condition` every 20 ms, at most `ms` (a bound, not a timing: generous). */
export async function until(condition: () => boolean, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Whether a process runs (a zombie waiting for its parent does not). */
export function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function childrenOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) => readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
  } catch {
    return [];
  }
}

/** Temp files of the atomic writes of process `pid` in `dir`. */
/** The temp files of process `pid`'s atomic writes in `dir`: it is inside a write. */
export function tempFilesOf(dir: string, pid: number): string[] {
  return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.tmp') && f.includes(`.${pid}.`)) : [];
}

/** Progress of each checkpoint of a run directory, as `epoch * 1e6 + step` (-1: none). */
type Progress = Record<'last' | 'best', number>;

/** Every checkpoint of `dir` must load and must not be missing or behind what it was (`before`). */
function audit(dir: string, before: Progress, tally: FaultTally, what: string): Progress {
  const now: Progress = { last: -1, best: -1 };
  for (const kind of ['last', 'best'] as const) {
    const sidecar = join(dir, `${kind}.json`);
    if (existsSync(sidecar)) {
      try {
        const { meta } = readCheckpoint(sidecar);
        now[kind] = meta!.progress.epoch * 1e6 + meta!.progress.step;
      } catch (e) {
        tally.corrupt++;
        tally.problems.push(`${what}: ${sidecar} does not load: ${(e as Error).message}`);
        continue;
      }
    }
    if (now[kind] < before[kind]) {
      tally.lost++;
      tally.problems.push(`${what}: ${kind} checkpoint went from progress ${before[kind]} to ${now[kind]}`);
    }
  }
  return now;
}

/** What an uninterrupted run ends with: the weights' sha256 of both checkpoints, and final.json less timings. */
export interface Outcome {
  readonly last: string;
  readonly best: string;
  readonly final: string;
}

export function outcomeOf(dir: string): Outcome {
  const sha = (kind: string): string => {
    const sidecar = join(dir, `${kind}.json`);
    if (!existsSync(sidecar)) return 'none';
    readCheckpoint(sidecar); // verifies the files against the sidecar's hashes
    return (JSON.parse(readFileSync(sidecar, 'utf8')) as { weights: { sha256: string } }).weights.sha256;
  };
  return { last: sha('last'), best: sha('best'), final: readFileSync(join(dir, 'final.json'), 'utf8') };
}

/** Temp files and tensor files no checkpoint sidecar of the run directory refers to. */
export function leftoversOf(dir: string): string[] {
  const referenced = new Set(['last', 'best'].flatMap((kind) => {
    const sidecar = join(dir, `${kind}.json`);
    if (!existsSync(sidecar)) return [];
    const meta = JSON.parse(readFileSync(sidecar, 'utf8')) as { weights: { file: string }; optimizer: { file: string } | null };
    return [meta.weights.file, meta.optimizer?.file ?? ''];
  }));
  return readdirSync(dir).filter((f) => f.endsWith('.tmp') || (f.endsWith('.safetensors') && !referenced.has(f)));
}

/** The final checks of a run taken to its end: the same outcome as the reference, nothing left over. */
function compareFinished(dir: string, reference: Outcome, tally: FaultTally, what: string): void {
  tally.resumes++;
  let outcome: Outcome;
  try {
    outcome = outcomeOf(dir);
  } catch (e) {
    tally.corrupt++;
    tally.problems.push(`${what}: the finished run does not load: ${(e as Error).message}`);
    return;
  }
  const differs = (['last', 'best', 'final'] as const).filter((k) => outcome[k] !== reference[k]);
  if (differs.length === 0) tally.bitExact++;
  else tally.problems.push(`${what}: ${differs.join(', ')} differ from the uninterrupted run`);
  const leftovers = leftoversOf(dir);
  tally.leftovers += leftovers.length;
  if (leftovers.length > 0) tally.problems.push(`${what}: left over after the end: ${leftovers.join(', ')}`);
}

/**
 * When to kill: uniformly within a window that starts at an uninterrupted run's duration, narrows
 * when a process finishes before its kill (a resumed run has less left to do) and widens after kills.
 */
class KillWindow {
  #ms: number;
  constructor(readonly maxMs: number) {
    this.#ms = maxMs;
  }

  draw(rng: Rng): number {
    return rng.next() * this.#ms;
  }

  finishedFirst(): void {
    this.#ms *= 0.6;
  }

  killed(): void {
    this.#ms = Math.min(this.maxMs, this.#ms * 1.15);
  }
}

/** The kill hook's settings for a kill inside one of the next `writes` atomic writes of a process. */
function hookEnv(rng: Rng, writes: number): NodeJS.ProcessEnv {
  const phase = ['partial', 'written', 'renamed'][rng.int(3)];
  return { TINYQUANT_TEST_KILL_IN_WRITE: `${1 + rng.int(writes)}:${phase}` };
}

/** Pauses inside every write, so that kills at random moments often land in one. */
const WRITE_PAUSE = { TINYQUANT_TEST_WRITE_PAUSE_MS: '12' };

export interface TrainCampaign {
  readonly root: string;
  readonly dataDir: string;
  readonly rng: Rng;
  readonly tally: FaultTally;
  /** Epochs of each run (5 steps each). */
  readonly epochs?: number;
  readonly log?: (line: string) => void;
}

function trainArgs(c: TrainCampaign, out: string): string[] {
  return ['train', '--model', 'resnet8', '--dataset', 'cifar10', '--data-dir', c.dataDir, '--method', 'lsq', '--wbits', '4', '--epochs', String(c.epochs ?? 6),
    '--batch', '8', '--eval-batch', '16', '--lr', '0.02', '--workers', '0', '--out', out, '--resume', '--quiet'];
}

const references = new Map<string, { outcome: Outcome; window: KillWindow }>();

async function trainReference(c: TrainCampaign): Promise<{ outcome: Outcome; window: KillWindow }> {
  const dir = join(c.root, `train-reference-${c.epochs ?? 6}`);
  const known = references.get(dir);
  if (known) return known;
  const done = await startCli(trainArgs(c, dir), WRITE_PAUSE).exit;
  if (done.code !== 0) throw new Error(`the uninterrupted training run failed: ${done.stderr}`);
  const reference = { outcome: outcomeOf(dir), window: new KillWindow(done.ms * 1.3) };
  references.set(dir, reference);
  return reference;
}

/**
 * One training run killed `kills` times in a row (the first `hookKills` of them inside a write by the
 * hook, at `hooks[i]` (N:PHASE, see src/io/atomic.ts) when given, else at a random write; the others
 * at random moments), then resumed to its end; returns the kills made (a process that finished
 * before its kill ends the round early).
 */
export async function trainRound(c: TrainCampaign, name: string, kills: number, hookKills = 0, hooks: readonly string[] = []): Promise<number> {
  const reference = await trainReference(c);
  const dir = join(c.root, name);
  const args = trainArgs(c, dir);
  const epochs = c.epochs ?? 6;
  let progress: Progress = { last: -1, best: -1 };
  let made = 0;
  for (let attempt = 0; attempt < kills; attempt++) {
    const byHook = attempt < hookKills;
    // About 4 writes an epoch (metrics, last: 3 files) and 2 more when the test accuracy improves (best).
    const epochsLeft = epochs - Math.max(0, Math.floor(progress.last / 1e6));
    const hook = hooks[attempt] !== undefined ? { TINYQUANT_TEST_KILL_IN_WRITE: hooks[attempt] } : hookEnv(c.rng, 1 + 4 * epochsLeft);
    const { child, exit } = startCli(args, byHook ? hook : WRITE_PAUSE);
    const timer = byHook ? null : setTimeout(() => child.kill('SIGKILL'), reference.window.draw(c.rng));
    const end = await exit;
    if (timer) clearTimeout(timer);
    if (end.signal !== 'SIGKILL') {
      if (!byHook) reference.window.finishedFirst();
      if (end.code !== 0) c.tally.problems.push(`${name}: a resume failed (code ${end.code}): ${end.stderr.trim().split('\n').at(-1)}`);
      break; // it finished first: the run is at its end
    }
    made++;
    if (!byHook) reference.window.killed();
    c.tally.kills++;
    c.tally.killsOfTrainers++;
    const inWrite = byHook || tempFilesOf(dir, child.pid!).length > 0;
    if (inWrite) c.tally.killsInWrites++;
    if (byHook) c.tally.killsInWritesByHook++;
    progress = audit(dir, progress, c.tally, `${name} after kill ${made}`);
  }
  const last = await startCli(args).exit;
  if (last.code !== 0) {
    c.tally.problems.push(`${name}: the final resume failed (code ${last.code}): ${last.stderr.trim().split('\n').at(-1)}`);
    c.tally.resumes++;
    return made;
  }
  compareFinished(dir, reference.outcome, c.tally, name);
  c.log?.(`${name}: ${made} kills, then resumed to the end`);
  return made;
}

/** A grid of two tiny independent runs (LSQ and uniform W4A4 on resnet8), written to `root`. */
export function writeFaultGrid(root: string, epochs = 6): string {
  const file = join(root, `faults-grid-${epochs}.json`);
  writeFileSync(file, JSON.stringify({
    name: 'faults',
    models: ['resnet8'],
    datasets: ['cifar10'],
    methods: ['lsq', 'uniform'],
    bits: [4],
    seeds: [0],
    recipe: { epochs, batch: 8, evalBatch: 16, lr: 0.02, workers: 0 },
    start: [{ model: 'resnet8', dataset: 'cifar10', scratch: true }],
  }));
  return file;
}

export interface GridCampaign extends TrainCampaign {
  readonly grid: string;
}

function gridArgs(c: GridCampaign, out: string): string[] {
  return ['run', c.grid, '--out', out, '--data-dir', c.dataDir, '--jobs', '2', '--threads', '1', '--no-report'];
}

function runDirs(resultsDir: string): string[] {
  const runs = join(resultsDir, 'runs');
  return existsSync(runs) ? readdirSync(runs).map((d) => join(runs, d)) : [];
}

const gridReferences = new Map<string, { outcomes: Map<string, Outcome>; window: KillWindow }>();

async function gridReference(c: GridCampaign): Promise<{ outcomes: Map<string, Outcome>; window: KillWindow }> {
  const known = gridReferences.get(c.grid);
  if (known) return known;
  const dir = join(c.root, `grid-reference-${gridReferences.size}`);
  const done = await startCli(gridArgs(c, dir), WRITE_PAUSE).exit;
  if (done.code !== 0) throw new Error(`the uninterrupted grid failed: ${done.stderr}`);
  const reference = { outcomes: new Map(runDirs(dir).map((d) => [d.slice(d.lastIndexOf('/') + 1), outcomeOf(d)])), window: new KillWindow(done.ms * 1.1) };
  gridReferences.set(c.grid, reference);
  return reference;
}

/** Wait for the workers of a killed executor to stop by themselves (they save first); counts those that do not. */
async function awaitOrphans(pids: readonly number[], killedAt: number, c: TrainCampaign, name: string): Promise<void> {
  const deadline = killedAt + 60_000;
  while (pids.some(running) && Date.now() < deadline) await sleep(20);
  const left = pids.filter(running);
  c.tally.slowestOrphanStopMs = Math.max(c.tally.slowestOrphanStopMs, Date.now() - killedAt);
  if (left.length > 0) {
    c.tally.orphansLeft += left.length;
    c.tally.problems.push(`${name}: workers ${left.join(', ')} still run 60 s after their executor was killed`);
    for (const pid of left) process.kill(pid, 'SIGKILL');
  }
}

/**
 * One grid killed `kills` times in a row, alternately its executor (whose workers must then save and
 * stop by themselves; half of the time the next invocation starts at once and must wait for them)
 * and one of its workers, at random moments; then run again to the end and compared run by run.
 */
export async function gridRound(c: GridCampaign, name: string, kills: number): Promise<number> {
  const reference = await gridReference(c);
  const dir = join(c.root, name);
  const args = gridArgs(c, dir);
  const progress = new Map<string, Progress>();
  const orphans: Promise<void>[] = [];
  let made = 0;
  for (let attempt = 0; attempt < kills; attempt++) {
    const killParent = (attempt + c.rng.int(2)) % 2 === 0;
    const { child, exit } = startCli(args, WRITE_PAUSE);
    let exited = false;
    void exit.then(() => (exited = true));
    await sleep(reference.window.draw(c.rng));
    let workers = childrenOf(child.pid!);
    for (let wait = 0; !killParent && workers.length === 0 && !exited && wait < 200; wait++) {
      await sleep(10);
      workers = childrenOf(child.pid!);
    }
    if (exited) {
      reference.window.finishedFirst();
      break; // the grid finished first
    }
    reference.window.killed();
    const victim = killParent ? child.pid! : workers[c.rng.int(workers.length)];
    process.kill(victim, 'SIGKILL');
    const killedAt = Date.now();
    made++;
    c.tally.kills++;
    if (killParent) {
      c.tally.killsOfGridParents++;
      orphans.push(awaitOrphans(workers, killedAt, c, name));
      if (c.rng.int(2) === 0) await orphans.at(-1); // else the next invocation meets the stopping workers
    } else {
      c.tally.killsOfGridWorkers++;
      await exit; // the executor goes on with the other run, then ends with the killed one interrupted
    }
    if (killParent) await exit;
    const dirs = killParent ? [dir, ...runDirs(dir)] : runDirs(dir);
    if (dirs.some((d) => tempFilesOf(d, victim).length > 0)) c.tally.killsInWrites++;
    for (const d of runDirs(dir)) progress.set(d, audit(d, progress.get(d) ?? { last: -1, best: -1 }, c.tally, `${name} after kill ${made}`));
  }
  await Promise.all(orphans);
  const last = await startCli(args).exit;
  c.log?.(`${name}: ${made} kills, then run to the end`);
  if (last.code !== 0) {
    c.tally.problems.push(`${name}: the final invocation failed (code ${last.code}): ${last.stderr.trim().split('\n').at(-1)}`);
    c.tally.resumes += reference.outcomes.size;
    return made;
  }
  const index = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as { runs: { id: string; status: string; error?: string }[] };
  for (const r of index.runs.filter((run) => run.status !== 'finished')) c.tally.problems.push(`${name}: ${r.id} ended ${r.status}: ${r.error}`);
  for (const [id, outcome] of reference.outcomes) compareFinished(join(dir, 'runs', id), outcome, c.tally, `${name}/${id}`);
  return made;
}
