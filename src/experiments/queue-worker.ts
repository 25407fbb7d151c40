/**
 * A queue worker (`tinyquant worker --queue URL`): takes runs of any grid from the BullMQ queue and
 * runs each as the local executor does (forkRun: a worker process in the run's results directory,
 * resuming from its checkpoint), up to `concurrency` at once, sending its progress as job progress.
 *
 * Before taking a job it checks the queue (a Redis BullMQ can use) and the results directories of
 * the grids on it; a job whose directory this machine cannot reach goes back to the queue and the
 * worker stops with the reason. A worker killed mid-run leaves the run's checkpoint (its worker
 * process saves and stops when the IPC channel closes); the job's lock lapses after `stalledAfter`
 * seconds, BullMQ's stalled-job check puts it back, and the next worker resumes it. SIGINT/SIGTERM
 * make the running runs save and stop, and their jobs go back to the queue. A results directory that
 * goes out of reach while a run runs (its storage gone, the directory moved away) stops the run; its
 * job goes back to the queue, and the worker stops with the reason.
 */
import { type Job, WaitingError, Worker } from 'bullmq';
import { type ForkedRun, type WorkerEnd, forkRun, outcomeFields } from './fork.js';
import {
  QUEUE_NAME,
  QueueConnection,
  QueueInputError,
  type RunJob,
  type RunJobProgress,
  type RunJobResult,
  GRIDS_KEY,
  gridField,
  listGrids,
  processName,
  sharedDirProblem,
} from './queue.js';
import type { QueueAddress } from './queue-address.js';

export interface ServeOptions {
  readonly queue: QueueAddress;
  /** Backend threads of each run. */
  readonly threads: number;
  /** Runs at once. */
  readonly concurrency: number;
  /** Seconds a job's lock outlives a worker that stopped answering, before another worker takes the job. */
  readonly stalledAfterSeconds: number;
  readonly log: (line: string) => void;
  /** Stop on SIGINT/SIGTERM (default true). */
  readonly handleSignals?: boolean;
  readonly signal?: AbortSignal;
  /** Environment of the run processes (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
}

export interface ServeSummary {
  /** Runs this worker took to their end (finished, failed or diverged). */
  readonly ran: number;
}

/** Times a job may be taken back (stalled) before BullMQ fails it: each kill of its worker is one. */
const MAX_STALLS = 10;
/** Attempts after which a run whose process keeps being killed from outside (the OOM killer?) is failed. */
const MAX_STARTS = 10;
/** How often a running run's results directory is checked (that it is still there, the grid's, writable). */
const DIR_CHECK_MS = 2000;
/**
 * How long a stopping worker waits for Redis to take a job back, and then to close: a queue that is
 * gone would hold it forever. A job left so keeps its lock until it lapses; then BullMQ's stalled-job
 * check puts it back, as after a kill -9, and its run resumes from the checkpoint it saved.
 */
const STOP_WAIT_MS = 5000;

/** `work`, or 'timed out' after `ms`. */
async function within<T>(work: Promise<T>, ms: number): Promise<T | 'timed out'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'timed out'>((resolve) => (timer = setTimeout(() => resolve('timed out'), ms)));
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Check the queue and the grids on it, then take and run jobs until stopped. */
export async function serveQueue(opts: ServeOptions): Promise<ServeSummary> {
  const conn = await QueueConnection.open(opts.queue, opts.log);
  try {
    for (const grid of await listGrids(conn)) {
      const problem = sharedDirProblem(grid.resultsDir, grid.name);
      if (problem) throw new QueueInputError(`worker: ${problem} (a grid given up on leaves the queue with: redis-cli -n DB hdel ${GRIDS_KEY} ${gridField(grid.name, grid.scale)})`);
    }
    return await new Serving(conn, opts).run();
  } finally {
    conn.close();
  }
}

class Serving {
  readonly #active = new Map<string, ForkedRun>();
  readonly #me = processName();
  #ran = 0;
  #stopping = false;
  #fatal: Error | null = null;
  #stopped: () => void = () => {};

  constructor(
    readonly conn: QueueConnection,
    readonly opts: ServeOptions,
  ) {}

  async run(): Promise<ServeSummary> {
    const { opts } = this;
    const lockDuration = opts.stalledAfterSeconds * 1000;
    const worker = new Worker<RunJob, RunJobResult>(QUEUE_NAME, (job, token) => this.#process(job, token ?? ''), {
      connection: this.conn.client(),
      concurrency: opts.concurrency,
      lockDuration,
      stalledInterval: Math.max(500, lockDuration / 2),
      maxStalledCount: MAX_STALLS,
      autorun: false,
    });
    worker.on('error', (e) => this.conn.report(e));
    const stopped = new Promise<void>((r) => (this.#stopped = r));
    const onSignal = (signal: NodeJS.Signals): void => this.#stop(signal);
    const onAbort = (): void => this.#stop('SIGTERM');
    const signals = opts.handleSignals === false ? [] : (['SIGINT', 'SIGTERM'] as const);
    for (const s of signals) process.on(s, onSignal);
    opts.signal?.addEventListener('abort', onAbort);
    if (opts.signal?.aborted) this.#stop('SIGTERM');
    try {
      void worker.run().catch((e: Error) => this.#fail(e));
      await worker.waitUntilReady();
      opts.log(`worker ${this.#me}: waiting for runs on ${this.conn.address.label} (${opts.concurrency} at a time x ${opts.threads} thread(s))`);
      await stopped;
      if ((await within(worker.close(), STOP_WAIT_MS * 2)) === 'timed out') opts.log(`worker ${this.#me}: the queue did not answer while closing; stopping without it`);
    } finally {
      for (const s of signals) process.off(s, onSignal);
      opts.signal?.removeEventListener('abort', onAbort);
    }
    if (this.#fatal) throw this.#fatal;
    return { ran: this.#ran };
  }

  /** Save and stop the running runs (their jobs go back to the queue), then close. */
  #stop(signal: NodeJS.Signals): void {
    if (!this.#stopping && this.#fatal === null) this.opts.log(`worker ${this.#me}: stopping (the running runs save a checkpoint and go back to the queue)`);
    this.#stopping = true;
    for (const a of this.#active.values()) a.stop(signal, false);
    this.#stopped();
  }

  #fail(e: Error): void {
    this.#fatal ??= e;
    this.#stop('SIGTERM');
  }

  async #process(job: Job<RunJob, RunJobResult>, token: string): Promise<RunJobResult> {
    const { resultsDir, runId, grid } = job.data;
    if (this.#stopping) return this.#requeue(job, token, null);
    const before = sharedDirProblem(resultsDir, grid);
    if (before) return this.#requeue(job, token, `worker: ${before}; its run ${runId} went back to the queue`);
    const started = Date.now();
    const end = await this.#runWatched(job).catch((e: Error) => e);
    // A run that ended (or could not start) while its results directory was out of reach ended for
    // that reason: it resumes from its checkpoint on a worker that reaches the directory again.
    const after = sharedDirProblem(resultsDir, grid);
    if (after) return this.#requeue(job, token, `worker: ${after}; its run ${runId} went back to the queue, to resume from its checkpoint once the directory is back`);
    if (end instanceof Error) throw end;
    const seconds = (Date.now() - started) / 1000;
    const fields = outcomeFields(end, this.#stopping && end.message === null);
    if (fields.status === 'interrupted' && (this.#stopping || job.attemptsStarted < MAX_STARTS)) {
      this.opts.log(`paused ${runId}: checkpoint saved, back to the queue`);
      return this.#requeue(job, token, null);
    }
    const status = fields.status === 'finished' || fields.status === 'diverged' ? fields.status : 'failed';
    const error = fields.status === 'interrupted' ? `its worker process was killed ${job.attemptsStarted} times: ${fields.error}` : fields.error;
    this.#ran++;
    this.opts.log(`${status === 'finished' ? 'done  ' : status.toUpperCase()} ${runId} in ${seconds.toFixed(1)} s${error ? `: ${error}` : ''}`);
    return { status, outcome: fields.outcome, error, log: fields.log, seconds, worker: this.#me };
  }

  /**
   * The job's run in its process, to its end; every DIR_CHECK_MS its results directory is checked,
   * and once it is out of reach the run is asked to save and stop (its process may write on, in a
   * directory moved away, or fail, on storage that is gone).
   */
  async #runWatched(job: Job<RunJob, RunJobResult>): Promise<WorkerEnd> {
    const { resultsDir, runId, grid, request } = job.data;
    const send = (p: RunJobProgress): void => void job.updateProgress(p).catch((e: Error) => this.conn.report(e));
    const forked = forkRun(runId, request, { resultsDir, threads: this.opts.threads, env: this.opts.env }, send);
    this.#active.set(job.id!, forked);
    send({ type: 'start', resuming: forked.resuming, worker: this.#me });
    this.opts.log(`start  ${runId} of ${grid}${forked.resuming ? ' (resuming from its checkpoint)' : ''}`);
    const watch = setInterval(() => {
      const problem = sharedDirProblem(resultsDir, grid);
      if (problem === null) return;
      clearInterval(watch);
      this.opts.log(`stopping ${runId}: ${problem}`);
      forked.stop('SIGTERM', false);
    }, DIR_CHECK_MS);
    try {
      return await forked.done;
    } finally {
      clearInterval(watch);
      this.#active.delete(job.id!);
    }
  }

  /** The job back to the queue (or, when the queue does not answer, left to its lapsing lock); with `fatal`, this worker stops with that line. */
  async #requeue(job: Job<RunJob, RunJobResult>, token: string, fatal: string | null): Promise<never> {
    if ((await within(job.moveToWait(token), STOP_WAIT_MS)) === 'timed out') this.opts.log(`${job.data.runId}: the queue did not take its job back; it returns once its lock lapses`);
    if (fatal) this.#fail(new QueueInputError(fatal));
    throw new WaitingError();
  }
}
