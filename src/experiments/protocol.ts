/** Messages between the executor and its worker processes (Node IPC): machine-readable progress. */
import type { TrainConfig } from '../train/config.js';
import type { StepProgress } from '../train/progress.js';
import type { RunKind } from './grid.js';
import type { RunOutcome } from './results.js';

export interface WorkerRequest {
  readonly kind: RunKind;
  readonly config: TrainConfig;
  /** The run directory, relative to the worker's working directory (the results directory). */
  readonly outDir: string;
}

export type WorkerMessage =
  | { readonly type: 'step'; readonly progress: StepProgress }
  | { readonly type: 'line'; readonly text: string }
  | { readonly type: 'done'; readonly outcome: RunOutcome }
  | { readonly type: 'failed'; readonly diverged: boolean; readonly message: string }
  | { readonly type: 'interrupted' };

/** Exit codes of a worker (the message says more). */
export const WORKER_EXIT = { finished: 0, failed: 1, diverged: 3, interrupted: 130 } as const;

/**
 * A file whose appearance in the run directory asks the run to save and stop (the executor writes it
 * and also signals). Signals alone are not enough: while batches keep arriving from the loader's
 * worker threads, the event loop can go without turning for a whole epoch, so a signal handler may
 * not run until then; the worker checks for the file at every step.
 */
export const STOP_FILE = 'STOP';
