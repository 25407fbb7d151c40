/**
 * The live view of a grid: on a terminal, a block redrawn in place with one line per running run
 * and a summary (done, failed, queued, elapsed, estimated time left), with finished runs and notices
 * printed above it; elsewhere (logs, CI), the events as lines and the block every `intervalMs`.
 */
import { type StepProgress, formatDuration, formatStep } from '../train/progress.js';
import type { RunEvent, RunObserver } from './executor.js';
import type { RunRecord } from './results.js';

interface RunningRun {
  readonly started: number;
  readonly resuming: boolean;
  progress: StepProgress | null;
}

export interface GridDisplay extends RunObserver {
  /** Stop redrawing (leaves the last state on screen). */
  close(): void;
}

export interface DisplayOptions {
  /** Seconds between status blocks when not on a terminal (default 15). */
  readonly intervalMs?: number;
  /** Print each run's own progress lines (data loading, epoch summaries); default true. */
  readonly runLines?: boolean;
}

export function gridDisplay(stream: NodeJS.WriteStream = process.stderr, options: DisplayOptions = {}): GridDisplay {
  const tty = stream.isTTY === true;
  const interval = options.intervalMs ?? (tty ? 250 : 15000);
  const start = Date.now();
  const running = new Map<string, RunningRun>();
  const records = new Map<string, RunRecord>();
  let header = '';
  let jobs = 1;
  let drawnLines = 0;
  let timer: NodeJS.Timeout | null = null;

  const clearBlock = (): void => {
    if (tty && drawnLines > 0) stream.write(`\x1b[${drawnLines}A\x1b[J`);
    drawnLines = 0;
  };
  const drawBlock = (): void => {
    const lines = statusBlock();
    if (tty) {
      const width = Math.max(40, (stream.columns ?? 120) - 1);
      stream.write(lines.map((l) => `${l.slice(0, width)}\n`).join(''));
      drawnLines = lines.length;
    } else {
      stream.write(lines.map((l) => `${l}\n`).join(''));
    }
  };
  const print = (text: string): void => {
    clearBlock();
    stream.write(`${text}\n`);
    if (tty) drawBlock();
  };
  const statusBlock = (): string[] => {
    const all = [...records.values()];
    const count = (...s: RunRecord['status'][]): number => all.filter((r) => s.includes(r.status)).length;
    const eta = estimateRemaining(all, running, jobs);
    const summary =
      `${header}: ${count('finished')}/${all.length} done, ${count('failed', 'diverged')} failed, ${count('blocked')} blocked, ` +
      `${running.size} running, ${count('pending', 'interrupted')} queued; elapsed ${formatDuration((Date.now() - start) / 1000)}` +
      (eta === null ? '' : `, about ${formatDuration(eta)} left`);
    const width = Math.max(0, ...[...running.keys()].map((id) => id.length));
    const lines = [...running].map(([id, r]) => `  ${id.padEnd(width)}  ${r.progress ? formatStep(r.progress, 12) : r.resuming ? 'resuming...' : 'starting...'}`);
    return [summary, ...lines];
  };

  const schedule = (): void => {
    if (timer) return;
    timer = setInterval(() => {
      clearBlock();
      drawBlock();
    }, interval);
    timer.unref();
  };

  return {
    event(e: RunEvent) {
      switch (e.type) {
        case 'plan': {
          jobs = e.jobs;
          header = `${e.name}${e.scale === 'full' ? '' : ` (${e.scale.toUpperCase()} scale)`}`;
          for (const r of e.runs) records.set(r.id, r);
          const done = e.runs.filter((r) => r.status !== 'pending').length;
          const how = e.queue ? `on the workers of ${e.queue}` : `${e.jobs} at a time x ${e.threads} thread(s)`;
          print(`${header}: ${e.runs.length} runs, ${done} already done or recorded as failed; ${how}`);
          schedule();
          break;
        }
        case 'start':
          running.set(e.id, { started: Date.now(), resuming: e.resuming, progress: null });
          records.set(e.id, { ...records.get(e.id)!, status: 'running' });
          print(`start  ${e.id}${e.resuming ? ' (resuming from its checkpoint)' : ''}`);
          break;
        case 'step': {
          const r = running.get(e.id);
          if (r) r.progress = e.progress;
          break;
        }
        case 'line':
          if (options.runLines !== false || e.id === null) print(e.id === null ? e.text : `  ${e.id}: ${e.text}`);
          break;
        case 'end':
          running.delete(e.record.id);
          records.set(e.record.id, e.record);
          print(endLine(e.record));
          break;
        case 'stopping':
          print(e.force ? 'stopping now (killing the runs; they resume from their last saved checkpoint)' : 'stopping: the runs save a checkpoint and stop (Ctrl-C again to kill them)');
          break;
      }
    },
    close() {
      if (timer) clearInterval(timer);
      timer = null;
      clearBlock();
      if (header !== '') drawBlock(); // nothing to sum up when the grid never started (an error before its plan)
    },
  };
}

function endLine(r: RunRecord): string {
  const time = r.seconds === undefined ? '' : ` in ${formatDuration(r.seconds)}`;
  switch (r.status) {
    case 'finished': {
      const o = r.outcome!;
      const best = o.bestTop1 === undefined ? '' : `, best ${o.bestTop1.toFixed(2)}% (epoch ${(o.bestEpoch ?? 0) + 1})`;
      return `done   ${r.id}: top-1 ${o.top1.toFixed(2)}%${best}${time}`;
    }
    case 'interrupted':
      return `paused ${r.id}: checkpoint saved; run the same command again to resume`;
    default:
      return `${r.status.toUpperCase()} ${r.id}${time}: ${r.error ?? ''}`;
  }
}

/**
 * Seconds left: the running runs' own estimates, plus the queued runs at the mean duration of the
 * runs finished so far (or of the running ones' projected totals), spread over the jobs.
 */
function estimateRemaining(records: RunRecord[], running: Map<string, RunningRun>, jobs: number): number | null {
  const now = Date.now();
  const runningLeft = [...running.values()].map((r) => (r.progress ? r.progress.etaSeconds : null));
  const finished = records.filter((r) => r.status === 'finished' && r.seconds !== undefined && r.kind === 'train').map((r) => r.seconds!);
  const projected = [...running.values()].filter((r) => r.progress).map((r) => (now - r.started) / 1000 + r.progress!.etaSeconds);
  const typical = mean(finished.length > 0 ? finished : projected);
  const queued = records.filter((r) => r.status === 'pending' || r.status === 'interrupted').length;
  if (runningLeft.some((x) => x === null) || (queued > 0 && typical === null)) return null;
  const total = runningLeft.reduce<number>((a, x) => a + (x ?? 0), 0) + queued * (typical ?? 0);
  // Queue workers (jobs 0): as many at once as are running now.
  return total / Math.max(1, Math.min(jobs || running.size, running.size + queued));
}

function mean(xs: number[]): number | null {
  return xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length;
}
