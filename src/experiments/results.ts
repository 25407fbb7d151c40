/**
 * The results directory of a grid: `results.json` (the index: what the grid is, every run's status,
 * outcome and error) and `runs/<id>/` (each run's config.json, metrics.jsonl, checkpoints,
 * final.json and train.log, as the trainer and the worker write them).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readJsonFile, writeJsonAtomic } from '../io/index.js';
import type { DeviceEvaluation } from '../export/deployed.js';
import type { TrainConfig } from '../train/config.js';
import type { RunFingerprint } from '../train/trainer.js';
import { TINYQUANT_VERSION } from '../package.js';
import { type FairnessRules, type GridMethod, type Plan, type RunKind, type Scale, runDirName } from './grid.js';

export const RESULTS_FORMAT = 'tinyquant-results';
export const RESULTS_VERSION = 1;
export const INDEX_FILE = 'results.json';

/**
 * pending: not started or to be resumed; running; finished; failed (error, crash); diverged
 * (non-finite loss: its last good checkpoint is kept); interrupted (stopped by a signal, resumable);
 * blocked (a run it starts from did not finish).
 */
export type RunStatus = 'pending' | 'running' | 'finished' | 'failed' | 'diverged' | 'interrupted' | 'blocked';

/** Ended without a result: failed, diverged or blocked (interrupted runs resume instead). */
export function didNotFinish(status: RunStatus): boolean {
  return status === 'failed' || status === 'diverged' || status === 'blocked';
}

/** Final evaluation of a run (final.json): test accuracy after the last epoch, and the best epoch's. */
export interface RunOutcome {
  readonly top1: number;
  readonly top5: number;
  readonly loss: number;
  readonly n: number;
  /** Best test top-1 over the epochs and its 0-based epoch (training runs). */
  readonly bestTop1?: number;
  readonly bestEpoch?: number;
  readonly fingerprint?: RunFingerprint;
  /** Quantized runs: the integer model on the same test images (top-1 above is the fake-quantized model with its deployment simulated). */
  readonly device?: DeviceEvaluation | null;
  /** Evaluation runs: the checkpoint they evaluated (its file's sha256). */
  readonly checkpoint?: { readonly path: string; readonly sha256: string };
  /** The backend that ran it (absent in results of older versions). */
  readonly backend?: string;
}

export interface RunRecord {
  readonly id: string;
  readonly kind: RunKind;
  readonly method: GridMethod;
  readonly wbits: number;
  readonly abits: number;
  readonly model: string;
  readonly dataset: string;
  readonly seed: number;
  readonly dependsOn: readonly string[];
  readonly startsFrom: string;
  /** Relative to the results directory. */
  readonly dir: string;
  readonly status: RunStatus;
  readonly error?: string;
  /** The last lines the run printed (failed runs). */
  readonly log?: string;
  readonly outcome?: RunOutcome;
  /** Wall-clock seconds of the last attempt. */
  readonly seconds?: number;
  /** The queue worker that ran the last attempt (`host pid`), for grids run on a queue. */
  readonly worker?: string;
  readonly finishedAt?: string;
}

export interface ResultsIndex {
  readonly format: typeof RESULTS_FORMAT;
  readonly version: number;
  readonly tinyquant: string;
  readonly grid: {
    readonly name: string;
    readonly title: string;
    readonly description: string;
    readonly source: string;
    readonly scale: Scale;
    /** What the scale is (shown with every result of a scale other than full). */
    readonly scaleNote: string;
    readonly fairness: FairnessRules;
  };
  readonly execution: Execution;
  readonly created: string;
  readonly updated: string;
  readonly runs: readonly RunRecord[];
}

/** How the runs were run: here, `jobs` at a time, or (`queue`) by the workers of a queue. */
export interface Execution {
  readonly jobs: number;
  readonly threads: number;
  readonly cores: number;
  /** The queue's address (no password) when the runs went to queue workers. */
  readonly queue?: string;
}

/** The execution in words, for reports. */
export function executionText(e: Execution): string {
  return e.queue ? `run by the workers of the queue ${e.queue}` : `${e.jobs} at a time x ${e.threads} thread(s) on ${e.cores} cores`;
}

export class ResultsError extends Error {}

/** The index of a results directory, or null when there is none yet. */
export function readResultsIndex(dir: string): ResultsIndex | null {
  const file = join(dir, INDEX_FILE);
  if (!existsSync(file)) return null;
  const raw = readJsonFile(file) as Partial<ResultsIndex> | null;
  if (!raw || raw.format !== RESULTS_FORMAT) throw new ResultsError(`${file}: not a tinyquant results index (no "format": "${RESULTS_FORMAT}")`);
  if (raw.version !== RESULTS_VERSION) {
    throw new ResultsError(
      `${file}: results format version ${raw.version} (written by tinyquant ${raw.tinyquant ?? 'unknown'}); this tinyquant ${TINYQUANT_VERSION} ` +
        `reads version ${RESULTS_VERSION}. Use a new results directory, or the tinyquant version that wrote it.`,
    );
  }
  if (!raw.grid || !Array.isArray(raw.runs)) throw new ResultsError(`${file}: incomplete results index (grid or runs missing)`);
  return raw as ResultsIndex;
}

export function writeResultsIndex(dir: string, index: ResultsIndex): void {
  writeJsonAtomic(join(dir, INDEX_FILE), { ...index, updated: new Date().toISOString() });
}

export function newIndex(plan: Plan, execution: Execution, runs: RunRecord[], previous: ResultsIndex | null): ResultsIndex {
  const now = new Date().toISOString();
  return {
    format: RESULTS_FORMAT,
    version: RESULTS_VERSION,
    tinyquant: TINYQUANT_VERSION,
    grid: {
      name: plan.grid.name,
      title: plan.grid.title,
      description: plan.grid.description,
      source: plan.grid.source,
      scale: plan.scale,
      scaleNote: plan.grid.scales[plan.scale]?.note ?? '',
      fairness: plan.grid.fairness,
    },
    execution,
    created: previous?.created ?? now,
    updated: now,
    runs,
  };
}

/** A run's final evaluation (final.json), or null when it has not finished. */
export function readOutcome(resultsDir: string, id: string): RunOutcome | null {
  const file = join(resultsDir, runDirName(id), 'final.json');
  return existsSync(file) ? (readJsonFile(file) as RunOutcome) : null;
}

/** The config a run was started with (written by the trainer), or null. */
export function readRunConfig(resultsDir: string, id: string): TrainConfig | null {
  const file = join(resultsDir, runDirName(id), 'config.json');
  return existsSync(file) ? (readJsonFile(file) as TrainConfig) : null;
}

