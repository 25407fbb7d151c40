/**
 * What a worker process does for one run: train it (resuming when it has a checkpoint), or, for the
 * float baseline of a checkpoint start, evaluate that checkpoint on the test images the runs use.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { getBackend } from '../backend/index.js';
import { fixedSubset } from '../data/index.js';
import { writeJsonAtomic } from '../io/index.js';
import { makeDirectory } from '../io/directory.js';
import { waitForUnlock } from '../io/lock.js';
import { readCheckpoint } from '../train/checkpoint.js';
import { type TrainConfig, configForFile } from '../train/config.js';
import { loadConfigDataset } from '../train/dataset.js';
import type { ProgressSink, StepProgress } from '../train/progress.js';
import { DivergedError, evaluateCheckpoint, train } from '../train/trainer.js';
import { StopRequested } from '../util/stop.js';
import { STOP_FILE, type WorkerMessage, type WorkerRequest } from './protocol.js';
import type { RunOutcome } from './results.js';

/** Step messages at most this often (and always for an epoch's first and last step). */
const STEP_INTERVAL_MS = 1000;
/**
 * How long a run waits for a trainer still holding its directory (a worker of a killed invocation
 * saves and stops within a step of noticing) before it is refused.
 */
export const LOCK_WAIT_MS = 120_000;

/**
 * A progress sink that forwards to `emit`, keeps the lines in the run's train.log, and at every step
 * turns a stop file into `requestStop()`.
 */
export function workerProgress(emit: (m: WorkerMessage) => void, runDir: string, requestStop: () => void): ProgressSink {
  const logFile = join(runDir, 'train.log');
  const stopFile = join(runDir, STOP_FILE);
  let last = 0;
  let stopping = false;
  return {
    step(p: StepProgress) {
      if (!stopping && existsSync(stopFile)) {
        stopping = true;
        requestStop();
      }
      const now = Date.now();
      if (now - last >= STEP_INTERVAL_MS || p.step === 1 || p.step === p.steps) {
        last = now;
        emit({ type: 'step', progress: p });
      }
    },
    line(text: string) {
      appendFileSync(logFile, `${new Date().toISOString()} ${text}\n`);
      emit({ type: 'line', text });
    },
  };
}

/**
 * Run one request to its end; every outcome is reported through `emit` (nothing is thrown). Aborting
 * `signal` makes a training run save and stop (a stop file in the run directory does too).
 */
export async function runTask(request: WorkerRequest, emit: (m: WorkerMessage) => void, signal?: AbortSignal): Promise<WorkerMessage> {
  makeDirectory(request.outDir, 'run directory');
  const stop = new AbortController();
  const requestStop = (): void => stop.abort();
  if (signal?.aborted) requestStop();
  signal?.addEventListener('abort', requestStop);
  const progress = workerProgress(emit, request.outDir, requestStop);
  let result: WorkerMessage;
  try {
    const backend = getBackend();
    progress.line(`backend ${backend.name}, ${backend.threads} thread(s)`);
    await waitForUnlock(request.outDir, {
      timeoutMs: LOCK_WAIT_MS,
      signal: stop.signal,
      onWait: (pid) => progress.line(`waiting for pid ${pid} to stop: it still trains in ${request.outDir} (a worker of an earlier, killed invocation?)`),
    });
    if (stop.signal.aborted) throw new StopRequested('stop requested');
    if (request.kind === 'evaluate') {
      result = { type: 'done', outcome: await evaluateStart(request.config, request.outDir, progress, stop.signal) };
    } else {
      const r = await train({ config: request.config, outDir: request.outDir, resume: true, progress, signal: stop.signal, handleSignals: false });
      result =
        r.status === 'interrupted' || r.final === null
          ? { type: 'interrupted' }
          : { type: 'done', outcome: { ...outcomeOf(r.final), bestTop1: r.bestTop1, bestEpoch: r.bestEpoch, fingerprint: r.fingerprint, device: r.device } };
    }
  } catch (e) {
    const err = e as Error;
    if (e instanceof StopRequested) result = { type: 'interrupted' };
    else {
      // The stack goes to the run's log only; the executor shows and records the message.
      appendToLog(request.outDir, `error: ${err.stack ?? err.message}`);
      result = { type: 'failed', diverged: e instanceof DivergedError, message: err.message };
    }
  } finally {
    signal?.removeEventListener('abort', requestStop);
  }
  emit(result);
  return result;
}

/** A line for the run's log where the run directory can still be written (a failure's cause may be that it cannot). */
function appendToLog(runDir: string, text: string): void {
  try {
    appendFileSync(join(runDir, 'train.log'), `${new Date().toISOString()} ${text}\n`);
  } catch {
    // The failure's message still reaches the executor.
  }
}

function outcomeOf(r: { top1: number; top5: number; loss: number; n: number }): RunOutcome {
  return { top1: r.top1, top5: r.top5, loss: r.loss, n: r.n, backend: getBackend().name };
}

/** Test accuracy of the float checkpoint `config.init`, on the test images a run of `config` uses. */
export async function evaluateStart(config: TrainConfig, outDir: string, progress: ProgressSink, signal?: AbortSignal): Promise<RunOutcome> {
  if (!config.init) throw new Error('evaluating a start point needs a checkpoint (init)');
  makeDirectory(outDir, 'run directory');
  const test = fixedSubset(await loadConfigDataset(config, 'test', { log: (m) => progress.line(m) }), config.testSubset);
  const checkpoint = readCheckpoint(config.init);
  progress.line(`evaluating ${config.init} on ${test.count} ${config.dataset} test images`);
  const r = await evaluateCheckpoint({ ...config, method: 'float' }, checkpoint, test, config.evalBatch, { signal });
  const outcome: RunOutcome = outcomeOf(r);
  writeJsonAtomic(join(outDir, 'config.json'), configForFile(config));
  writeJsonAtomic(join(outDir, 'final.json'), { ...outcome, checkpoint: { path: config.init, sha256: fileSha256(checkpoint.source) } });
  progress.line(`float start: top-1 ${r.top1.toFixed(2)}%, top-5 ${r.top5.toFixed(2)}% on ${r.n} images`);
  return outcome;
}

function fileSha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}
