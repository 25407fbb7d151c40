/**
 * The progress display of a training run: one redrawn line with a bar on a terminal, a line every
 * few seconds otherwise (logs, CI, child processes).
 */

export interface StepProgress {
  readonly epoch: number;
  readonly epochs: number;
  readonly step: number;
  readonly steps: number;
  readonly loss: number;
  readonly accuracy: number;
  readonly imgPerSec: number;
  /** Mean milliseconds per step spent waiting for data. */
  readonly dataMs: number;
  readonly stepMs: number;
  readonly etaSeconds: number;
}

export interface ProgressSink {
  step(p: StepProgress): void;
  /** A line that stays (epoch summary, evaluation, notices). */
  line(text: string): void;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--:--';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${rest}` : `${m}:${rest}`;
}

export function formatStep(p: StepProgress, barWidth = 20): string {
  const done = Math.round((barWidth * p.step) / Math.max(1, p.steps));
  const bar = `[${'#'.repeat(done)}${'.'.repeat(barWidth - done)}]`;
  return (
    `epoch ${p.epoch + 1}/${p.epochs} ${bar} ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} acc ${(100 * p.accuracy).toFixed(2)}% ` +
    `${p.imgPerSec.toFixed(0)} img/s data ${p.dataMs.toFixed(1)}/${p.stepMs.toFixed(0)} ms ETA ${formatDuration(p.etaSeconds)}`
  );
}

/** Write progress to a stream: redraw in place on a TTY, else print at most every `intervalMs`. */
export function streamProgress(stream: NodeJS.WriteStream = process.stderr, intervalMs = 5000, prefix = ''): ProgressSink {
  const tty = stream.isTTY === true;
  let last = 0;
  let dirty = false;
  return {
    step(p) {
      const now = Date.now();
      if (tty) {
        stream.write(`\r\x1b[2K${prefix}${formatStep(p)}`);
        dirty = true;
      } else if (now - last >= intervalMs || p.step === p.steps) {
        stream.write(`${prefix}${formatStep(p)}\n`);
        last = now;
      }
    },
    line(text) {
      stream.write(`${tty && dirty ? '\r\x1b[2K' : ''}${prefix}${text}\n`);
      dirty = false;
    },
  };
}

/** No display (tests, library use). */
export const silentProgress: ProgressSink = { step() {}, line() {} };
