/**
 * The fused quantize-dequantize of `QuantSpec` (see backend.ts), forward and backward.
 *
 * The normalized value xn = (x - offset) / scale is computed with float32 rounding after each
 * operation, as a float32 implementation of the same formula would (PyTorch, the native backend),
 * so that which level an element lands on, and whether it is clipped, agrees with them bit for
 * bit; everything after that decision is computed in float64 and stored as float32.
 */
import type { QuantSpec } from '../backend.js';
import { QUANT_SUMS } from '../backend.js';
import { roundHalfEven } from './round.js';

const f32 = Math.fround;

/** Maps a clipped, normalized value to its quantized (normalized) value. */
type Projection = (v: number) => number;

/**
 * Nearest level of a sorted level set, ties to the lower level: binary search for the number of
 * midpoints strictly below v (never a distance to every level).
 */
function levelProjection(levels: Float32Array): Projection {
  const midpoints = new Float64Array(levels.length - 1);
  for (let i = 0; i < midpoints.length; i++) midpoints[i] = (levels[i] + levels[i + 1]) / 2;
  return (v) => {
    let lo = 0;
    let hi = midpoints.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (midpoints[mid] < v) lo = mid + 1;
      else hi = mid;
    }
    return Number.isNaN(v) ? v : levels[lo];
  };
}

function gridProjection(steps: number): Projection {
  return (v) => roundHalfEven(f32(v * steps)) / steps;
}

/** project(xc) per the spec, including the symmetric variant (sign restored, sign(0) = 0). */
function projection(spec: QuantSpec): Projection {
  const base = spec.levels !== null ? levelProjection(spec.levels) : gridProjection(spec.steps);
  if (!spec.symmetric) return base;
  return (v) => (v > 0 ? base(v) : v < 0 ? -base(-v) : v === 0 ? 0 : v);
}

/** xn = (x - offset) / scale with float32 rounding of each operation. */
function normalized(x: number, offset: number, scale: number): number {
  return f32(f32(x - offset) / scale);
}

function clip(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

export function quantizeForward(x: Float32Array, spec: QuantSpec, chunk: number): Float32Array {
  const project = projection(spec);
  const y = new Float32Array(x.length);
  for (let c = 0; c < spec.channels; c++) {
    const scale = spec.scale[c], offset = spec.offset[c];
    const outScale = spec.outScale[c], outOffset = spec.outOffset[c];
    for (let i = c * chunk; i < (c + 1) * chunk; i++) {
      const xn = normalized(x[i], offset, scale);
      y[i] = project(clip(xn, spec.lo, spec.hi)) * outScale + outOffset;
    }
  }
  return y;
}

/** Where an element falls relative to the clipping range, honouring the inclusivity flags. */
function rangeTest(spec: QuantSpec): { below: (xn: number) => boolean; above: (xn: number) => boolean } {
  const { lo, hi } = spec;
  return {
    below: spec.loInclusive ? (xn) => xn < lo : (xn) => xn <= lo,
    above: spec.hiInclusive ? (xn) => xn > hi : (xn) => xn >= hi,
  };
}

export function quantizeBackwardPass(
  x: Float32Array,
  gy: Float32Array,
  spec: QuantSpec,
  chunk: number,
): { gx: Float32Array; sums: Float64Array } {
  const project = projection(spec);
  const { below, above } = rangeTest(spec);
  const { lo, hi, delta, passClipped } = spec;
  const inRangeSums = !spec.onlyClippedSums;
  const gx = new Float32Array(x.length);
  const sums = new Float64Array(QUANT_SUMS * spec.channels);
  for (let c = 0; c < spec.channels; c++) {
    const scale = spec.scale[c], offset = spec.offset[c];
    const inputScale = spec.outScale[c] / scale;
    let sumInside = 0, sumInsideXn = 0, sumInsideError = 0, sumBelow = 0, sumAbove = 0;
    for (let i = c * chunk; i < (c + 1) * chunk; i++) {
      const g = gy[i];
      const xn = normalized(x[i], offset, scale);
      const xc = clip(xn, lo, hi);
      const q = project(xc);
      // EWGS: g' = g (1 + delta sign(g) (xc - q)); delta = 0 is the straight-through estimator.
      const scaled = delta === 0 ? g : g * (1 + delta * Math.sign(g) * (xc - q));
      if (below(xn)) sumBelow += g;
      else if (above(xn)) sumAbove += g;
      else {
        if (inRangeSums) {
          sumInside += scaled;
          sumInsideXn += scaled * xn;
          sumInsideError += scaled * (q - xn);
        }
        gx[i] = scaled * inputScale;
        continue;
      }
      gx[i] = passClipped ? scaled * inputScale : 0;
    }
    sums.set([sumInside, sumInsideXn, sumInsideError, sumBelow, sumAbove], c * QUANT_SUMS);
  }
  return { gx, sums };
}
