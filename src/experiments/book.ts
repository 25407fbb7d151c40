/**
 * The records of one invocation over a plan, shared by the local and the queue executors: the
 * results directory opened (locked, checked to hold this grid, each run's state reconciled with its
 * directory and the previous index), the records kept and the index rewritten at every change, runs
 * whose start did not finish marked blocked.
 */
import { resolve } from 'node:path';
import { makeDirectory } from '../io/directory.js';
import { lockDirectory } from '../io/lock.js';
import { configDifferences } from '../train/config.js';
import type { Plan, RunSpec } from './grid.js';
import { runDirName } from './grid.js';
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
    if (outcome) return { ...base, status: 'finished' as const, outcome, seconds: before?.seconds, worker: before?.worker };
    if (before && (before.status === 'failed' || before.status === 'diverged') && !retryFailed) {
      return { ...base, status: before.status, error: before.error, log: before.log, seconds: before.seconds, worker: before.worker };
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

export class RunBook {
  readonly #records: Map<string, RunRecord>;
  #index: ResultsIndex;

  constructor(
    readonly plan: Plan,
    readonly resultsDir: string,
    execution: ResultsIndex['execution'],
    records: RunRecord[],
    previous: ResultsIndex | null,
  ) {
    this.#records = new Map(records.map((r) => [r.id, r]));
    this.#index = newIndex(plan, execution, records, previous);
  }

  get index(): ResultsIndex {
    return this.#index;
  }

  get records(): RunRecord[] {
    return this.plan.runs.map((r) => this.#records.get(r.id)!);
  }

  get(id: string): RunRecord {
    return this.#records.get(id)!;
  }

  /** Change a run's record (the fields given) and save the index. */
  update(id: string, fields: Partial<RunRecord>): RunRecord {
    const record = { ...this.get(id), ...fields };
    this.#records.set(id, record);
    this.save();
    return record;
  }

  save(): void {
    this.#index = { ...this.#index, runs: this.records };
    writeResultsIndex(this.resultsDir, this.#index);
  }

  /** Pending, and every run it starts from finished. */
  ready(run: RunSpec): boolean {
    return this.get(run.id).status === 'pending' && run.dependsOn.every((d) => this.#records.get(d)?.status === 'finished');
  }

  /** Mark pending runs whose start did not (and will not) finish as blocked; returns them. */
  blockDependents(): RunRecord[] {
    const blocked: RunRecord[] = [];
    for (const run of this.plan.runs) {
      // Dependencies come first in the plan, so one pass sees blocked chains through.
      const r = this.get(run.id);
      const bad = run.dependsOn.find((d) => didNotFinish(this.get(d).status));
      if (r.status !== 'pending' || !bad) continue;
      const record: RunRecord = { ...r, status: 'blocked', error: `it starts from ${bad}, which ${this.get(bad).status === 'blocked' ? 'was blocked' : 'did not finish'}` };
      this.#records.set(run.id, record);
      blocked.push(record);
    }
    if (blocked.length > 0) this.save();
    return blocked;
  }
}

/**
 * Open (make, lock) the results directory of `plan` and read what it holds; `work` runs with the
 * book, and the directory is unlocked after it.
 */
export async function withRunBook<T>(
  plan: Plan,
  opts: { readonly resultsDir: string; readonly retryFailed?: boolean; readonly execution: ResultsIndex['execution'] },
  work: (book: RunBook) => Promise<T>,
): Promise<T> {
  const resultsDir = resolve(opts.resultsDir);
  makeDirectory(resultsDir, 'results directory');
  const unlock = lockDirectory(resultsDir, 'tinyquant run');
  try {
    const previous = readResultsIndex(resultsDir);
    checkSameGrid(previous, plan, resultsDir);
    const records = reconcile(plan, resultsDir, previous, opts.retryFailed === true);
    const book = new RunBook(plan, resultsDir, opts.execution, records, previous);
    book.save();
    return await work(book);
  } finally {
    unlock();
  }
}
