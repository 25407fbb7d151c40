/**
 * Learning-rate schedules as pure functions of progress, so a resumed run computes exactly the
 * rate an uninterrupted one would. Like the reference implementations, the rate changes per epoch;
 * the optional linear warm-up changes it per step.
 */

export type Schedule =
  | { readonly kind: 'constant' }
  | { readonly kind: 'multistep'; readonly milestones: readonly number[]; readonly gamma: number }
  | { readonly kind: 'cosine'; readonly epochs: number; readonly minFactor?: number };

export interface Warmup {
  /** Epochs of linear warm-up from `startFactor` to 1. */
  readonly epochs: number;
  readonly startFactor?: number;
}

/** Factor applied to each group's base learning rate at (0-based) `epoch`. */
export function scheduleFactor(schedule: Schedule, epoch: number): number {
  switch (schedule.kind) {
    case 'constant':
      return 1;
    case 'multistep':
      return schedule.gamma ** schedule.milestones.filter((m) => epoch >= m).length;
    case 'cosine': {
      // PyTorch CosineAnnealingLR stepped once per epoch: (1 + cos(pi * e / T)) / 2.
      const min = schedule.minFactor ?? 0;
      return min + ((1 - min) * (1 + Math.cos((Math.PI * Math.min(epoch, schedule.epochs)) / schedule.epochs))) / 2;
    }
  }
}

/** Schedule factor with an optional warm-up; `progress` is fractional epochs completed. */
export function lrFactor(schedule: Schedule, warmup: Warmup | undefined, epoch: number, progress: number): number {
  const base = scheduleFactor(schedule, epoch);
  if (!warmup || warmup.epochs <= 0 || progress >= warmup.epochs) return base;
  const start = warmup.startFactor ?? 0.1;
  return base * (start + ((1 - start) * progress) / warmup.epochs);
}

export function validateSchedule(s: Schedule, field = 'schedule'): void {
  if (s.kind === 'multistep') {
    if (!(s.gamma > 0)) throw new Error(`${field}.gamma must be > 0, got ${s.gamma}`);
    if (s.milestones.some((m) => !Number.isInteger(m) || m < 0)) throw new Error(`${field}.milestones must be non-negative integers`);
  } else if (s.kind === 'cosine' && !(s.epochs > 0)) {
    throw new Error(`${field}.epochs must be > 0, got ${s.epochs}`);
  }
}
