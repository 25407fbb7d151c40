/**
 * The queue executor (`tinyquant run GRID --queue URL`): the grid's runs become BullMQ jobs that
 * `tinyquant worker` processes on any machine take, and this process follows them, records them in
 * the results directory as the local executor does, and shows their progress from the workers'
 * progress events.
 *
 * A run is enqueued once every run it starts from has finished (and its dependents are blocked when
 * one did not), rather than as a BullMQ flow: a flow is a tree, one parent per job, while one float
 * run starts many runs, and a flow's failed child fails or strands its parent where the local
 * executor records the dependents as blocked. Job ids are stable hashes of the runs: a job already
 * on the queue (waiting, or active on a worker) is followed, not added again. Events come through
 * QueueEvents; besides them the jobs' states are read every `pollMs`, and at once after a reconnect,
 * so that a missed event, or a Redis restarted without its data (the job is added again), loses no
 * run. Stopping this process (Ctrl-C) stops following: the workers go on, and the same command
 * follows the grid again.
 */
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { type Job, Queue, QueueEvents } from 'bullmq';
import { type RunBook, withRunBook } from './book.js';
import type { ExecuteSummary, RunObserver } from './executor.js';
import type { Plan, RunSpec } from './grid.js';
import { runDirName } from './grid.js';
import {
  QUEUE_NAME,
  QueueConnection,
  type RunJob,
  type RunJobProgress,
  type RunJobResult,
  claimGrid,
  jobIdOf,
  registerGrid,
  releaseGrid,
  runJob,
} from './queue.js';
import type { QueueAddress } from './queue-address.js';
import { type RunRecord, readOutcome } from './results.js';

export interface QueueExecuteOptions {
  readonly resultsDir: string;
  readonly queue: QueueAddress;
  /** Run failed and diverged runs again (default: keep them as recorded). */
  readonly retryFailed?: boolean;
  readonly observer?: RunObserver;
  /** Stop following on SIGINT/SIGTERM (default true). */
  readonly handleSignals?: boolean;
  readonly signal?: AbortSignal;
  /** How often the jobs' states are read besides the events (default 5000 ms). */
  readonly pollMs?: number;
}

/** Kept on the queue after they end, so that a re-submission finds them (and they can be looked at). */
const KEEP_JOBS = { count: 100_000 };

export async function executeOnQueue(plan: Plan, opts: QueueExecuteOptions): Promise<ExecuteSummary> {
  const observer = opts.observer ?? { event() {} };
  const conn = await QueueConnection.open(opts.queue, (text) => observer.event({ type: 'line', id: null, text }));
  try {
    const execution = { jobs: 0, threads: 0, cores: cpus().length, queue: opts.queue.label };
    return await withRunBook(plan, { resultsDir: opts.resultsDir, retryFailed: opts.retryFailed, execution }, async (book) => {
      await registerGrid(conn, plan, book.resultsDir);
      const release = await claimGrid(conn, plan);
      try {
        const summary = await new Follower(plan, book, conn, { ...opts, observer }).run();
        if (!summary.interrupted) await releaseGrid(conn, plan);
        return summary;
      } finally {
        await release().catch(() => {});
      }
    });
  } finally {
    conn.close();
  }
}

/** One invocation following a plan's jobs until every run has ended (or it is stopped). */
class Follower {
  readonly #queue: Queue<RunJob, RunJobResult>;
  readonly #events: QueueEvents;
  readonly #observer: RunObserver;
  /** Runs on the queue: run id -> job id, and back. */
  readonly #queued = new Map<string, string>();
  readonly #runOfJob = new Map<string, RunSpec>();
  readonly #ran: string[] = [];
  #stopping = false;
  #wake: () => void = () => {};
  /** Job ids whose state is to be read (their event came, or all of them after a reconnect). */
  readonly #toCheck = new Set<string>();

  constructor(
    readonly plan: Plan,
    readonly book: RunBook,
    readonly conn: QueueConnection,
    readonly opts: QueueExecuteOptions & { readonly observer: RunObserver },
  ) {
    this.#observer = opts.observer;
    this.#queue = new Queue(QUEUE_NAME, { connection: conn.client() });
    this.#events = new QueueEvents(QUEUE_NAME, { connection: conn.client() });
    this.#queue.on('error', (e: Error) => conn.report(e));
    this.#events.on('error', (e: Error) => conn.report(e));
    conn.onReconnect(() => this.#checkAll());
  }

  async run(): Promise<ExecuteSummary> {
    const records = this.book.records;
    this.#observer.event({ type: 'plan', runs: records, jobs: 0, threads: 0, scale: this.plan.scale, name: this.plan.grid.name, queue: this.conn.address.label });
    const skipped = records.filter((r) => r.status !== 'pending').map((r) => r.id);
    try {
      if (skipped.length < records.length) await this.#follow();
    } finally {
      await Promise.allSettled([this.#events.close(), this.#queue.close()]);
    }
    this.book.save();
    return { index: this.book.index, interrupted: this.#stopping, ran: this.#ran, skipped };
  }

  async #follow(): Promise<void> {
    this.#listen();
    await this.#events.waitUntilReady();
    const onStop = (): void => {
      if (!this.#stopping) this.#observer.event({ type: 'line', id: null, text: 'stopped following the grid: its runs on the queue go on on the workers; the same command follows them again' });
      this.#stopping = true;
      this.#wake();
    };
    const signals = this.opts.handleSignals === false ? [] : (['SIGINT', 'SIGTERM'] as const);
    for (const s of signals) process.on(s, onStop);
    this.opts.signal?.addEventListener('abort', onStop);
    const poll = setInterval(() => this.#checkAll(), this.opts.pollMs ?? 5000);
    try {
      for (;;) {
        for (const record of this.book.blockDependents()) this.#observer.event({ type: 'end', record });
        for (const run of this.plan.runs) {
          if (this.#stopping) break;
          if (this.book.ready(run) && !this.#queued.has(run.id)) await this.#enqueue(run);
        }
        if (this.#stopping || this.#queued.size === 0) break;
        if (this.#toCheck.size === 0) await new Promise<void>((wake) => (this.#wake = wake));
        await this.#checkMarked();
      }
    } finally {
      clearInterval(poll);
      for (const s of signals) process.off(s, onStop);
      this.opts.signal?.removeEventListener('abort', onStop);
    }
  }

  /** Progress from the events; ends and stalls mark the job for a look at its state. */
  #listen(): void {
    const mine = (jobId: string): RunSpec | undefined => this.#runOfJob.get(jobId);
    this.#events.on('progress', ({ jobId, data }) => {
      const run = mine(jobId);
      if (run && this.#queued.has(run.id)) this.#progress(run, data as RunJobProgress);
    });
    this.#events.on('stalled', ({ jobId }) => {
      const run = mine(jobId);
      if (run) this.#observer.event({ type: 'line', id: run.id, text: 'its worker stopped answering: the job goes back to the queue, and the next worker resumes it from its checkpoint' });
    });
    for (const event of ['completed', 'failed', 'removed'] as const) {
      this.#events.on(event, ({ jobId }: { jobId: string }) => {
        if (mine(jobId)) this.#mark([jobId]);
      });
    }
  }

  #progress(run: RunSpec, p: RunJobProgress): void {
    if (p.type === 'start') {
      this.book.update(run.id, { status: 'running', worker: p.worker, error: undefined, log: undefined });
      this.#observer.event({ type: 'start', id: run.id, resuming: p.resuming });
      this.#observer.event({ type: 'line', id: run.id, text: `on worker ${p.worker}` });
    } else if (p.type === 'step') this.#observer.event({ type: 'step', id: run.id, progress: p.progress });
    else this.#observer.event({ type: 'line', id: run.id, text: p.text });
  }

  #mark(jobIds: Iterable<string>): void {
    for (const id of jobIds) this.#toCheck.add(id);
    this.#wake();
  }

  #checkAll(): void {
    this.#mark(this.#queued.values());
  }

  async #checkMarked(): Promise<void> {
    const ids = [...this.#toCheck];
    this.#toCheck.clear();
    for (const jobId of ids) {
      const run = this.#runOfJob.get(jobId);
      if (run && this.#queued.get(run.id) === jobId) await this.#check(run, jobId).catch((e: Error) => this.conn.report(e));
    }
  }

  /** Add the run's job, or follow the one already on the queue; an ended one of an earlier attempt is replaced. */
  async #enqueue(run: RunSpec): Promise<void> {
    const jobId = jobIdOf(run, this.book.resultsDir);
    this.#runOfJob.set(jobId, run);
    const existing = await this.#queue.getJob(jobId);
    const state = existing ? await existing.getState() : null;
    if (existing && (state === 'completed' || state === 'failed')) await existing.remove();
    else if (existing) {
      this.#observer.event({ type: 'line', id: run.id, text: `already on the queue (${state}): following it` });
      this.#queued.set(run.id, jobId);
      return;
    }
    await this.#add(run, jobId);
  }

  async #add(run: RunSpec, jobId: string): Promise<void> {
    const data = runJob(this.plan, run, this.book.resultsDir, runDirName(run.id));
    await this.#queue.add(run.id, data, { jobId, attempts: 1, removeOnComplete: KEEP_JOBS, removeOnFail: KEEP_JOBS });
    this.#queued.set(run.id, jobId);
  }

  /** Read a job's state: record it when it ended; add it again when the queue lost it. */
  async #check(run: RunSpec, jobId: string): Promise<void> {
    const job = await this.#queue.getJob(jobId);
    if (!job) {
      const outcome = readOutcome(this.book.resultsDir, run.id);
      if (outcome) return this.#settle(run, { status: 'finished', outcome, seconds: this.book.get(run.id).seconds ?? 0, worker: this.book.get(run.id).worker ?? 'unknown' });
      this.#observer.event({ type: 'line', id: run.id, text: 'its job is no longer on the queue (Redis lost it?): adding it again' });
      return this.#add(run, jobId);
    }
    const state = await job.getState();
    if (state === 'completed') this.#settle(run, job.returnvalue);
    else if (state === 'failed') this.#settle(run, failedResult(job));
  }

  #settle(run: RunSpec, result: RunJobResult): void {
    this.#queued.delete(run.id);
    const fields = checkedResult(result, this.book.resultsDir, run);
    const record = this.book.update(run.id, { ...fields, finishedAt: new Date().toISOString() });
    if (record.status === 'finished') this.#ran.push(run.id);
    this.#observer.event({ type: 'end', record });
  }
}

/** A job BullMQ failed (its processor threw, or it stalled past the allowed count): the run failed. */
function failedResult(job: Job<RunJob, RunJobResult>): RunJobResult {
  return { status: 'failed', error: `the queue failed its job: ${job.failedReason}`, seconds: 0, worker: 'unknown' };
}

/** A finished run must have left its final.json here: else its worker wrote to other storage. */
function checkedResult(result: RunJobResult, resultsDir: string, run: RunSpec): Partial<RunRecord> & Pick<RunRecord, 'status'> {
  const { status, outcome, error, log, seconds, worker } = result;
  if (status === 'finished' && !readOutcome(resultsDir, run.id)) {
    const file = join(resolve(resultsDir), runDirName(run.id), 'final.json');
    return { status: 'failed', seconds, worker, error: `worker ${worker} finished it, but ${file} is not here: the results directory must be on storage every machine shares, at the same path` };
  }
  return { status, outcome, error, log, seconds, worker };
}
