/**
 * The one way a grid's run is run, by the local executor and by a queue worker alike: in a worker
 * process (worker.js) forked in the results directory, followed to its exit with its progress
 * forwarded, and its end turned into the fields of the run's record (finished, failed, diverged,
 * interrupted).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeDirectory } from '../io/directory.js';
import { STOP_FILE, type WorkerMessage, type WorkerRequest } from './protocol.js';
import type { RunRecord } from './results.js';

const WORKER = fileURLToPath(new URL('./worker.js', import.meta.url));
/** Characters of a failed run's output kept in the index. */
const LOG_TAIL = 4000;

export interface WorkerEnd {
  /** The worker's final message (done / failed / interrupted), or null when it died without one. */
  readonly message: Extract<WorkerMessage, { type: 'done' | 'failed' | 'interrupted' }> | null;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly output: string;
}

/** What a run process sends while it runs. */
export type RunProgress = Extract<WorkerMessage, { type: 'step' | 'line' }>;

export interface ForkedRun {
  readonly child: ChildProcess;
  /** Whether the run directory held a checkpoint to resume from. */
  readonly resuming: boolean;
  readonly done: Promise<WorkerEnd>;
  /** Ask the run to save and stop (a stop file and `signal`), or with `force` kill it. */
  stop(signal: NodeJS.Signals, force: boolean): void;
}

export interface ForkOptions {
  /** The results directory: the worker's working directory (the request's paths are relative to it). */
  readonly resultsDir: string;
  /** Backend threads of the run. */
  readonly threads: number;
  /** Environment of the worker (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
}

/** Start `request` in a worker process; `progress` gets its step and line messages. */
export function forkRun(id: string, request: WorkerRequest, opts: ForkOptions, progress: (m: RunProgress) => void): ForkedRun {
  const dir = join(opts.resultsDir, request.outDir);
  const resuming = existsSync(join(dir, 'last.json'));
  makeDirectory(dir, 'run directory');
  // A stop file left by an earlier stop would end this attempt at its first step.
  rmSync(join(dir, STOP_FILE), { force: true });
  const child = fork(WORKER, [], {
    cwd: opts.resultsDir,
    env: { ...(opts.env ?? process.env), TINYQUANT_THREADS: String(opts.threads) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const done = superviseWorker(child, id, progress);
  child.send(request);
  return {
    child,
    resuming,
    done,
    stop(signal, force) {
      if (!force) writeStopFile(dir, signal);
      child.kill(force ? 'SIGKILL' : signal);
    },
  };
}

/** Ask the run in `dir` to stop at its next step; where the directory is out of reach (storage gone), the signal alone asks. */
function writeStopFile(dir: string, signal: NodeJS.Signals): void {
  try {
    writeFileSync(join(dir, STOP_FILE), `${signal}\n`);
  } catch {
    // The run's process sees the signal when its event loop next turns (at its next step, or at the epoch's end).
  }
}

/** Follow a worker to its exit, forwarding progress; collects the tail of its output. */
function superviseWorker(child: ChildProcess, id: string, progress: (m: RunProgress) => void): Promise<WorkerEnd> {
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
    child.on('error', (e) => keep(`${id}: cannot start the worker: ${e.message}\n`));
    child.on('close', (code, signal) => resolveEnd({ message: final, code, signal, output }));
  });
}

/** Signals that end a worker from outside (kill, the OOM killer, a terminal): its run resumes next time. */
const EXTERNAL_SIGNALS: ReadonlySet<string> = new Set(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP']);

/** The record fields of a run's end; `interrupted`: the run was asked to stop (or ended while it was). */
export function outcomeFields(end: WorkerEnd, interrupted: boolean): Partial<RunRecord> & Pick<RunRecord, 'status'> {
  const m = end.message;
  if (m?.type === 'done') return { status: 'finished', outcome: m.outcome };
  if (interrupted || m?.type === 'interrupted') return { status: 'interrupted' };
  if (m === null && end.signal !== null && EXTERNAL_SIGNALS.has(end.signal)) {
    return { status: 'interrupted', error: `the worker was killed by ${end.signal}; running the grid again resumes the run from its last checkpoint`, log: end.output };
  }
  if (m?.type === 'failed') return { status: m.diverged ? 'diverged' : 'failed', error: m.message, log: end.output };
  const how = end.signal ? `was killed by ${end.signal}` : `exited with code ${end.code}`;
  return { status: 'failed', error: `the worker ${how} without a result`, log: end.output };
}
