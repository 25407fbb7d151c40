/**
 * The local executor: runs a plan's runs in worker processes, several at once (jobs x threads per
 * run <= cores), each after the runs it starts from. Finished runs are skipped, interrupted ones
 * resume from their checkpoint, a failed or diverged run is recorded with its error and the others
 * go on (its dependents are marked blocked). SIGINT/SIGTERM (or `signal`) stop the workers, which
 * save a checkpoint first; the index (results.json) is rewritten at every change.
 */
import { cpus } from 'node:os';
import { resolve } from 'node:path';
import { loadDataset } from '../data/index.js';
import { configDatasetOptions } from '../train/dataset.js';
import type { StepProgress } from '../train/progress.js';
import { type RunBook, withRunBook } from './book.js';
import { type ForkedRun, type WorkerEnd, forkRun, outcomeFields } from './fork.js';
import type { Plan, RunSpec } from './grid.js';
import { runDirName } from './grid.js';
import type { ResultsIndex, RunRecord } from './results.js';

export type RunEvent =
  | { readonly type: 'plan'; readonly runs: readonly RunRecord[]; readonly jobs: number; readonly threads: number; readonly scale: Plan['scale']; readonly name: string; readonly queue?: string }
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

/** A dataset the plan needs cannot be loaded (the message says where it was looked for). */
export class DataPreparationError extends Error {}

/** Load (and so decode into the cache, once) every dataset split the plan uses, before any worker does. */
export async function prepareData(plan: Plan, log: (text: string) => void): Promise<void> {
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

export async function executePlan(plan: Plan, opts: ExecuteOptions): Promise<ExecuteSummary> {
  const execution = { jobs: opts.jobs, threads: opts.threads, cores: cpus().length };
  return withRunBook(plan, { resultsDir: opts.resultsDir, retryFailed: opts.retryFailed, execution }, (book) => new Execution(plan, { ...opts, resultsDir: resolve(opts.resultsDir) }, book).run());
}

/** One invocation over a plan: the records, the running workers and the stop request. */
class Execution {
  readonly #active = new Map<string, ForkedRun & { readonly finished: Promise<void> }>();
  readonly #ran: string[] = [];
  readonly #observer: RunObserver;
  #stopping = false;

  constructor(
    readonly plan: Plan,
    readonly opts: ExecuteOptions,
    readonly book: RunBook,
  ) {
    this.#observer = opts.observer ?? { event() {} };
  }

  async run(): Promise<ExecuteSummary> {
    const { plan, opts, book } = this;
    const records = book.records;
    this.#observer.event({ type: 'plan', runs: records, jobs: opts.jobs, threads: opts.threads, scale: plan.scale, name: plan.grid.name });
    const skipped = records.filter((r) => r.status !== 'pending').map((r) => r.id);
    if (skipped.length < records.length) {
      await prepareData(plan, (text) => this.#observer.event({ type: 'line', id: null, text }));
      await this.#schedule();
    }
    return { index: book.index, interrupted: this.#stopping, ran: this.#ran, skipped };
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
        for (const record of this.book.blockDependents()) this.#observer.event({ type: 'end', record });
        if (!this.#stopping) {
          for (const run of this.plan.runs) {
            if (this.#active.size >= this.opts.jobs) break;
            if (this.book.ready(run)) this.#launch(run);
          }
        }
        if (this.#active.size === 0) break;
        await Promise.race([...this.#active.values()].map((a) => a.finished));
      }
    } finally {
      for (const s of signals) process.off(s, onSignal);
      this.opts.signal?.removeEventListener('abort', onAbort);
    }
    this.book.save();
  }

  /** Ask every worker to save and stop (a stop file and a signal), or with `force` kill them. */
  #stop(signal: NodeJS.Signals, force: boolean): void {
    if (force || !this.#stopping) this.#observer.event({ type: 'stopping', force });
    this.#stopping = true;
    for (const a of this.#active.values()) a.stop(signal, force);
  }

  #launch(run: RunSpec): void {
    const started = Date.now();
    const request = { kind: run.kind, config: run.config, outDir: runDirName(run.id) };
    const forked = forkRun(run.id, request, { resultsDir: this.opts.resultsDir, threads: this.opts.threads, env: this.opts.env }, (m) => {
      if (m.type === 'step') this.#observer.event({ type: 'step', id: run.id, progress: m.progress });
      else if (m.type === 'line') this.#observer.event({ type: 'line', id: run.id, text: m.text });
    });
    this.book.update(run.id, { status: 'running', error: undefined, log: undefined });
    this.#observer.event({ type: 'start', id: run.id, resuming: forked.resuming });
    const finished = forked.done.then((end) => this.#finish(run, end, (Date.now() - started) / 1000));
    this.#active.set(run.id, { ...forked, finished });
  }

  #finish(run: RunSpec, end: WorkerEnd, seconds: number): void {
    const interrupted = this.#stopping && end.message === null;
    const record = this.book.update(run.id, { ...outcomeFields(end, interrupted), seconds, finishedAt: new Date().toISOString() });
    this.#active.delete(run.id);
    if (record.status === 'finished') this.#ran.push(run.id);
    this.#observer.event({ type: 'end', record });
  }
}
