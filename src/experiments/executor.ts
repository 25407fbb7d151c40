/**
 * The local executor: runs a plan's runs in worker processes, several at once (jobs x threads per
 * run <= cores), each after the runs it starts from. Finished runs are skipped, interrupted ones
 * resume from their checkpoint, a failed or diverged run is recorded with its error and the others
 * go on (its dependents are marked blocked). SIGINT/SIGTERM (or `signal`) stop the workers, which
 * save a checkpoint first; the index (results.json) is rewritten at every change.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadDataset } from '../data/index.js';
import { makeDirectory } from '../io/directory.js';
import { lockDirectory } from '../io/lock.js';
import { configDifferences } from '../train/config.js';
import { configDatasetOptions } from '../train/dataset.js';
import type { StepProgress } from '../train/progress.js';
import type { Plan, RunSpec } from './grid.js';
import { runDirName } from './grid.js';
import { STOP_FILE, type WorkerMessage, type WorkerRequest } from './protocol.js';
import {
  type ResultsIndex,
  ResultsError,
  type RunRecord,
  didNotFinish,
  newIndex,
  readOutcome,
  readResultsIndex,
  readRunConfig,
  writeResultsIndex,
} from './results.js';

export type RunEvent =
  | { readonly type: 'plan'; readonly runs: readonly RunRecord[]; readonly jobs: number; readonly threads: number; readonly scale: Plan['scale']; readonly name: string }
  | { readonly type: 'start'; readonly id: string; readonly resuming: boolean }
  | { readonly type: 'step'; readonly id: string; readonly progress: StepProgress }
  | { readonly type: 'line'; readonly id: string | null; readonly text: string }
  | { readonly type: 'end'; readonly record: RunRecord }
  | { readonly type: 'stopping'; readonly force: boolean };

export interface RunObserver {
  event(e: RunEvent): void;
}

export interface ExecuteOptions {
  readonly resultsDir: string;
  /** Runs at once. */
  readonly jobs: number;
  /** Backend threads of each run. */
  readonly threads: number;
  /** Run failed and diverged runs again (default: keep them as recorded). */
  readonly retryFailed?: boolean;
  readonly observer?: RunObserver;
  /** Stop the workers on SIGINT/SIGTERM (default true). */
  readonly handleSignals?: boolean;
  /** Aborting stops the workers as a signal would. */
  readonly signal?: AbortSignal;
  /** Environment of the workers (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
}

export interface ExecuteSummary {
  readonly index: ResultsIndex;
  readonly interrupted: boolean;
  /** Runs this invocation finished (not those found finished). */
  readonly ran: readonly string[];
  readonly skipped: readonly string[];
}

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));
/** Characters of a failed run's output kept in the index. */
const LOG_TAIL = 4000;

function recordOf(run: RunSpec): RunRecord {
  const { id, kind, method, wbits, abits, model, dataset, seed, dependsOn, startsFrom } = run;
  return { id, kind, method, wbits, abits, model, dataset, seed, dependsOn, startsFrom, dir: runDirName(id), status: 'pending' };
}

/**
 * Each run's state from its directory and the previous index: finished (final.json), failed or
 * diverged (kept unless retrying), else pending. A run started with another config is an error.
 */
function reconcile(plan: Plan, resultsDir: string, previous: ResultsIndex | null, retryFailed: boolean): RunRecord[] {
  const changed: string[] = [];
  const records = plan.runs.map((run) => {
    const base = recordOf(run);
    const saved = readRunConfig(resultsDir, run.id);
    if (saved) {
      // Workers run in the results directory: relative paths of a grid are relative to it.
      const diff = configDifferences(saved, run.config, resultsDir);
      if (diff.length > 0) changed.push(`${run.id} (${diff.join(', ')})`);
    }
    const before = previous?.runs.find((r) => r.id === run.id);
    const outcome = readOutcome(resultsDir, run.id);
    if (outcome) return { ...base, status: 'finished' as const, outcome, seconds: before?.seconds };
    if (before && (before.status === 'failed' || before.status === 'diverged') && !retryFailed) {
      return { ...base, status: before.status, error: before.error, log: before.log, seconds: before.seconds };
    }
    return base;
  });
  if (changed.length > 0) {
    throw new ResultsError(
      `${resultsDir}: ${changed.length} run(s) were started with a different config: ${changed.join('; ')}. ` +
        'Use another results directory (--out), or delete those run directories to start them again.',
    );
  }
  return records;
}

function checkSameGrid(previous: ResultsIndex | null, plan: Plan, resultsDir: string): void {
  if (!previous) return;
  const { name, scale } = previous.grid;
  if (name !== plan.grid.name || scale !== plan.scale) {
    throw new ResultsError(`${resultsDir} holds results of ${name} (${scale} scale), not ${plan.grid.name} (${plan.scale} scale); use another results directory (--out)`);
  }
}

/** A dataset the plan needs cannot be loaded (the message says where it was looked for). */
export class DataPreparationError extends Error {}

/** Load (and so decode into the cache, once) every dataset split the plan uses, before any worker does. */
async function prepareData(plan: Plan, log: (text: string) => void): Promise<void> {
  const seen = new Set<string>();
  for (const run of plan.runs) {
    for (const split of run.kind === 'train' ? (['train', 'test'] as const) : (['test'] as const)) {
      const options = configDatasetOptions(run.config, split, { log });
      const key = JSON.stringify({ ...options, log: undefined });
      if (seen.has(key)) continue;
      seen.add(key);
      const ds = await loadDataset(options).catch((e: Error) => {
        throw new DataPreparationError(e.message);
      });
      log(`data: ${run.config.dataset} ${split}: ${ds.count} images (${ds.source})`);
    }
  }
}

interface Active {
  readonly child: ChildProcess;
  readonly done: Promise<void>;
}

export async function executePlan(plan: Plan, opts: ExecuteOptions): Promise<ExecuteSummary> {
  const resultsDir = resolve(opts.resultsDir);
  makeDirectory(resultsDir, 'results directory');
  const unlock = lockDirectory(resultsDir, 'tinyquant run');
  try {
    const previous = readResultsIndex(resultsDir);
    checkSameGrid(previous, plan, resultsDir);
    const records = reconcile(plan, resultsDir, previous, opts.retryFailed === true);
    const execution = new Execution(plan, { ...opts, resultsDir }, records, previous);
    return await execution.run();
  } finally {
    unlock();
  }
}

/** One invocation over a plan: the records, the index, the running workers and the stop request. */
class Execution {
  readonly #records: Map<string, RunRecord>;
  readonly #active = new Map<string, Active>();
  readonly #ran: string[] = [];
  readonly #observer: RunObserver;
  #index: ResultsIndex;
  #stopping = false;

  constructor(
    readonly plan: Plan,
    readonly opts: ExecuteOptions,
    records: RunRecord[],
    previous: ResultsIndex | null,
  ) {
    this.#records = new Map(records.map((r) => [r.id, r]));
    this.#observer = opts.observer ?? { event() {} };
    this.#index = newIndex(plan, { jobs: opts.jobs, threads: opts.threads, cores: cpus().length }, records, previous);
  }

  #save(): void {
    this.#index = { ...this.#index, runs: this.plan.runs.map((r) => this.#records.get(r.id)!) };
    writeResultsIndex(this.opts.resultsDir, this.#index);
  }

  async run(): Promise<ExecuteSummary> {
    const { plan, opts } = this;
    this.#save();
    const records = [...this.#records.values()];
    this.#observer.event({ type: 'plan', runs: records, jobs: opts.jobs, threads: opts.threads, scale: plan.scale, name: plan.grid.name });
    const skipped = records.filter((r) => r.status !== 'pending').map((r) => r.id);
    if (skipped.length < records.length) {
      await prepareData(plan, (text) => this.#observer.event({ type: 'line', id: null, text }));
      await this.#schedule();
    }
    return { index: this.#index, interrupted: this.#stopping, ran: this.#ran, skipped };
  }

  /** Start ready runs up to `jobs` at a time until none is running and none can start. */
  async #schedule(): Promise<void> {
    const onSignal = (signal: NodeJS.Signals): void => this.#stop(signal, this.#stopping);
    const onAbort = (): void => this.#stop('SIGINT', false);
    const signals = this.opts.handleSignals === false ? [] : (['SIGINT', 'SIGTERM'] as const);
    for (const s of signals) process.on(s, onSignal);
    this.opts.signal?.addEventListener('abort', onAbort);
    try {
      for (;;) {
        const blocked = blockDependents(this.plan, this.#records);
        if (blocked.length > 0) this.#save();
        for (const record of blocked) this.#observer.event({ type: 'end', record });
        if (!this.#stopping) {
          for (const run of this.plan.runs) {
            if (this.#active.size >= this.opts.jobs) break;
            if (this.#ready(run)) this.#launch(run);
          }
        }
        if (this.#active.size === 0) break;
        await Promise.race([...this.#active.values()].map((a) => a.done));
      }
    } finally {
      for (const s of signals) process.off(s, onSignal);
      this.opts.signal?.removeEventListener('abort', onAbort);
    }
    this.#save();
  }

  #ready(run: RunSpec): boolean {
    return this.#records.get(run.id)!.status === 'pending' && run.dependsOn.every((d) => this.#records.get(d)?.status === 'finished');
  }

  /** Ask every worker to save and stop (a stop file and a signal), or with `force` kill them. */
  #stop(signal: NodeJS.Signals, force: boolean): void {
    if (force || !this.#stopping) this.#observer.event({ type: 'stopping', force });
    this.#stopping = true;
    for (const [id, a] of this.#active) {
      if (!force) writeFileSync(join(this.opts.resultsDir, runDirName(id), STOP_FILE), `${signal}\n`);
      a.child.kill(force ? 'SIGKILL' : signal);
    }
  }

  #launch(run: RunSpec): void {
    const dir = join(this.opts.resultsDir, runDirName(run.id));
    const resuming = existsSync(join(dir, 'last.json'));
    makeDirectory(dir, 'run directory');
    rmSync(join(dir, STOP_FILE), { force: true });
    this.#records.set(run.id, { ...this.#records.get(run.id)!, status: 'running', error: undefined, log: undefined });
    this.#save();
    this.#observer.event({ type: 'start', id: run.id, resuming });
    const started = Date.now();
    const child = fork(WORKER, [], {
      cwd: this.opts.resultsDir,
      env: { ...(this.opts.env ?? process.env), TINYQUANT_THREADS: String(this.opts.threads) },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const done = superviseWorker(child, run, (m) => {
      if (m.type === 'step') this.#observer.event({ type: 'step', id: run.id, progress: m.progress });
      else if (m.type === 'line') this.#observer.event({ type: 'line', id: run.id, text: m.text });
    }).then((end) => this.#finish(run, end, (Date.now() - started) / 1000));
    this.#active.set(run.id, { child, done });
    child.send({ kind: run.kind, config: run.config, outDir: runDirName(run.id) } satisfies WorkerRequest);
  }

  #finish(run: RunSpec, end: WorkerEnd, seconds: number): void {
    const interrupted = end.message?.type === 'interrupted' || (this.#stopping && end.message === null);
    const record: RunRecord = { ...this.#records.get(run.id)!, ...outcomeFields(end, interrupted), seconds, finishedAt: new Date().toISOString() };
    this.#records.set(run.id, record);
    this.#active.delete(run.id);
    if (record.status === 'finished') this.#ran.push(run.id);
    this.#save();
    this.#observer.event({ type: 'end', record });
  }
}

/** Mark pending runs whose start did not (and will not) finish as blocked; returns them. */
function blockDependents(plan: Plan, records: Map<string, RunRecord>): RunRecord[] {
  const blocked: RunRecord[] = [];
  for (const run of plan.runs) {
    // Dependencies come first in the plan, so one pass sees blocked chains through.
    const r = records.get(run.id)!;
    const bad = run.dependsOn.find((d) => didNotFinish(records.get(d)!.status));
    if (r.status !== 'pending' || !bad) continue;
    const record: RunRecord = { ...r, status: 'blocked', error: `it starts from ${bad}, which ${records.get(bad)!.status === 'blocked' ? 'was blocked' : 'did not finish'}` };
    records.set(run.id, record);
    blocked.push(record);
  }
  return blocked;
}

interface WorkerEnd {
  /** The worker's final message (done / failed / interrupted), or null when it died without one. */
  readonly message: Extract<WorkerMessage, { type: 'done' | 'failed' | 'interrupted' }> | null;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
}

/** Follow a worker to its exit, forwarding progress; collects the tail of its output. */
function superviseWorker(child: ChildProcess, run: RunSpec, progress: (m: WorkerMessage) => void): Promise<WorkerEnd> {
  let output = '';
  const keep = (chunk: Buffer | string): void => {
    output = (output + chunk.toString()).slice(-LOG_TAIL);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let final: WorkerEnd['message'] = null;
  child.on('message', (m: WorkerMessage) => {
    if (m.type === 'done' || m.type === 'failed' || m.type === 'interrupted') final = m;
    else {
      if (m.type === 'line') keep(`${m.text}\n`);
      progress(m);
    }
  });
  return new Promise((resolveEnd) => {
    child.on('error', (e) => keep(`${run.id}: cannot start the worker: ${e.message}\n`));
    child.on('close', (code, signal) => resolveEnd({ message: final, code, signal, output }));
  });
}

/** Signals that end a worker from outside (kill, the OOM killer, a terminal): its run resumes next time. */
const EXTERNAL_SIGNALS: ReadonlySet<string> = new Set(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP']);

function outcomeFields(end: WorkerEnd, interrupted: boolean): Partial<RunRecord> & Pick<RunRecord, 'status'> {
  const m = end.message;
  if (m?.type === 'done') return { status: 'finished', outcome: m.outcome };
  if (interrupted) return { status: 'interrupted' };
  if (m === null && end.signal !== null && EXTERNAL_SIGNALS.has(end.signal)) {
    return { status: 'interrupted', error: `the worker was killed by ${end.signal}; running the grid again resumes the run from its last checkpoint`, log: end.output };
  }
  if (m?.type === 'failed') return { status: m.diverged ? 'diverged' : 'failed', error: m.message, log: end.output };
  const how = end.signal ? `was killed by ${end.signal}` : `exited with code ${end.code}`;
  return { status: 'failed', error: `the worker ${how} without a result`, log: end.output };
}
