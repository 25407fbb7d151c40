/**
 * Batch normalization over dimension 1 of (N, C) or (N, C, H, W), PyTorch semantics: training
 * normalizes with the batch mean and the biased batch variance and moves the running estimates
 * toward the batch mean and the *unbiased* batch variance, with running = (1 - m) running + m batch.
 * Statistics are computed in float64 (two passes: mean, then centred squares).
 */
import type { BatchNormGeometry } from './validate.js';

export interface BatchStats {
  readonly mean: Float64Array;
  /** Biased (population) variance of the batch. */
  readonly variance: Float64Array;
}

export function batchStats(x: Float32Array, g: BatchNormGeometry): BatchStats {
  const { batch, channels, spatial } = g;
  const mean = new Float64Array(channels);
  const variance = new Float64Array(channels);
  const count = batch * spatial;
  for (let c = 0; c < channels; c++) {
    let sum = 0;
    for (let n = 0; n < batch; n++) {
      const base = (n * channels + c) * spatial;
      for (let i = 0; i < spatial; i++) sum += x[base + i];
    }
    const m = sum / count;
    let squares = 0;
    for (let n = 0; n < batch; n++) {
      const base = (n * channels + c) * spatial;
      for (let i = 0; i < spatial; i++) {
        const d = x[base + i] - m;
        squares += d * d;
      }
    }
    mean[c] = m;
    variance[c] = squares / count;
  }
  return { mean, variance };
}

/** running = (1 - momentum) running + momentum batch, with the unbiased variance. */
export function updateRunning(
  stats: BatchStats,
  count: number,
  momentum: number,
  runningMean: Float32Array,
  runningVar: Float32Array,
): void {
  const unbias = count / (count - 1);
  for (let c = 0; c < runningMean.length; c++) {
    runningMean[c] = (1 - momentum) * runningMean[c] + momentum * stats.mean[c];
    runningVar[c] = (1 - momentum) * runningVar[c] + momentum * stats.variance[c] * unbias;
  }
}

/** y = scale[c] * x + shift[c], then ReLU when asked. */
export function applyChannelAffine(
  x: Float32Array,
  g: BatchNormGeometry,
  scale: Float64Array,
  shift: Float64Array,
  relu: boolean,
): Float32Array {
  const { batch, channels, spatial } = g;
  const y = new Float32Array(x.length);
  for (let n = 0; n < batch; n++) {
    for (let c = 0; c < channels; c++) {
      const base = (n * channels + c) * spatial;
      const a = scale[c];
      const b = shift[c];
      for (let i = base; i < base + spatial; i++) {
        const v = a * x[i] + b;
        y[i] = relu && v < 0 ? 0 : v; // NaN stays NaN, as in PyTorch
      }
    }
  }
  return y;
}

/**
 * Normalization as a per-channel affine map: scale = gamma / sqrt(var + eps),
 * shift = beta - mean * scale.
 */
export function normalizationAffine(
  mean: ArrayLike<number>,
  invStd: ArrayLike<number>,
  gamma: Float32Array,
  beta: Float32Array,
): { scale: Float64Array; shift: Float64Array } {
  const scale = new Float64Array(gamma.length);
  const shift = new Float64Array(gamma.length);
  for (let c = 0; c < gamma.length; c++) {
    scale[c] = gamma[c] * invStd[c];
    shift[c] = beta[c] - mean[c] * scale[c];
  }
  return { scale, shift };
}

export function inverseStd(variance: ArrayLike<number>, eps: number): Float64Array {
  const inv = new Float64Array(variance.length);
  for (let c = 0; c < inv.length; c++) inv[c] = 1 / Math.sqrt(variance[c] + eps);
  return inv;
}

/**
 * With xhat = (x - mean) * invStd and g the incoming gradient (masked by y > 0 with a fused
 * ReLU): gBeta = sum g, gGamma = sum g * xhat,
 * gx = gamma * invStd * (g - gBeta / count - xhat * gGamma / count).
 */
export function batchNormBackward(
  gy: Float32Array,
  x: Float32Array,
  y: Float32Array | null,
  gamma: Float32Array,
  mean: Float64Array,
  invStd: Float64Array,
  g: BatchNormGeometry,
): { gx: Float32Array; gGamma: Float32Array; gBeta: Float32Array } {
  const { batch, channels, spatial } = g;
  const count = batch * spatial;
  const gBeta = new Float64Array(channels);
  const gGamma = new Float64Array(channels);
  const masked = (i: number): number => (y !== null && !(y[i] > 0) ? 0 : gy[i]);
  for (let n = 0; n < batch; n++) {
    for (let c = 0; c < channels; c++) {
      const base = (n * channels + c) * spatial;
      const m = mean[c];
      let sumG = 0;
      let sumGX = 0;
      for (let i = base; i < base + spatial; i++) {
        const gi = masked(i);
        sumG += gi;
        sumGX += gi * (x[i] - m);
      }
      gBeta[c] += sumG;
      gGamma[c] += sumGX * invStd[c];
    }
  }
  const gx = new Float32Array(x.length);
  for (let n = 0; n < batch; n++) {
    for (let c = 0; c < channels; c++) {
      const base = (n * channels + c) * spatial;
      const k = gamma[c] * invStd[c];
      const meanG = gBeta[c] / count;
      const meanGX = gGamma[c] / count;
      for (let i = base; i < base + spatial; i++) {
        const xhat = (x[i] - mean[c]) * invStd[c];
        gx[i] = k * (masked(i) - meanG - xhat * meanGX);
      }
    }
  }
  return { gx, gGamma: Float32Array.from(gGamma), gBeta: Float32Array.from(gBeta) };
}
