/**
 * Requantization and uniform activation rounding as one rounding, for the generated C's hottest
 * epilogues (activation convs and quantize ops). The integer engine computes, for a value a of
 * channel c (int-ops.ts, engine.ts `quantizeValue`):
 *
 *   v = floor((a * m + 2^(n-1)) / 2^n) + b;  v = max(v, zeroPoint) (ReLU);  v = min(v, ceiling)
 *   code = clamp(floor((v + 2^(f-1) - 1) / 2^f), minCode, maxCode)
 *
 * Floors of divisions by powers of two nest (floor(floor(x / 2^n) / 2^f) = floor(x / 2^(n+f))) and
 * the integer b and the rounding term move inside the first floor, so before the clamps
 *
 *   code = floor((a * m + c * 2^(n-1)) / 2^(n+f)),  c = 2 * (b + 2^(f-1) - 1) + 1,
 *
 * and rounding is monotone, so the ReLU and the ceiling become bounds on the code: clamp(code,
 * max(minCode, R(zeroPoint)), maxCode') with R the rounding and maxCode' the ceiling folded in
 * (ruleWithCeiling). In C that is one 64-bit multiply-accumulate of two products (SMULL, SMLAL on a
 * Cortex-M) and a shift of its high word by n + f - 32: exact, without the 64-bit rounding shift
 * and the separate bias, floor and rounding steps. It is taken where every channel has
 * 1 <= n <= 31 (2^(n-1) an int32), 32 <= n + f <= 63 (the code from the high word), f <= 30 (where
 * the engine's int32 rounding sum is exact: |v| < 2^30) and c fits int32; other requantizations keep
 * the two roundings.
 */
import { ruleWithCeiling } from '../clip.js';
import type { ActivationQuant, Requant } from '../ir.js';

export interface OneRounding {
  /** c per requantization entry: what the C's bias table holds. */
  readonly bias: Int32Array;
  readonly fracBits: number;
  /** The code's bounds, ReLU and ceiling included. */
  readonly minCode: number;
  readonly maxCode: number;
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/** The one-rounding form of a requantization followed by a uniform activation rule, or null where it does not apply. */
export function oneRounding(r: Requant, q: ActivationQuant): OneRounding | null {
  const rule = ruleWithCeiling(q);
  if (rule.kind !== 'round') return null;
  const f = rule.fracBits;
  if (f > 30) return null;
  const bias = new Int32Array(r.bias.length);
  for (let i = 0; i < r.bias.length; i++) {
    const n = r.shift[i];
    if (n < 1 || n > 31 || n + f < 32 || n + f > 63) return null;
    const c = 2 * (r.bias[i] + 2 ** (f - 1) - 1) + 1;
    if (c < INT32_MIN || c > INT32_MAX) return null;
    bias[i] = c;
  }
  const floorCode = Math.floor((q.zeroPoint + 2 ** (f - 1) - 1) / 2 ** f);
  return { bias, fracBits: f, minCode: q.relu ? Math.max(rule.minCode, floorCode) : rule.minCode, maxCode: rule.maxCode };
}

/** The bias table 2 * b + 1 of a requantization whose bias can join its rounding (every shift in 1..31), or null. */
export function foldedBias(r: Requant): Int32Array | null {
  const out = new Int32Array(r.bias.length);
  for (let i = 0; i < r.bias.length; i++) {
    const c = 2 * r.bias[i] + 1;
    if (r.shift[i] < 1 || r.shift[i] > 31 || c < INT32_MIN || c > INT32_MAX) return null;
    out[i] = c;
  }
  return out;
}

/**
 * (m, n) without their common powers of two: floor((a * 2m + 2^n) / 2^(n+1)) = floor((a * m + 2^(n-1)) / 2^n)
 * for n >= 1, and floor((2 * a * m + 1) / 2) = a * m for n = 0, so the rounding multiply-shift keeps its value.
 */
export function reducedMultiplier(mult: number, shift: number): { readonly mult: number; readonly shift: number } {
  let [m, n] = [mult, shift];
  while (n > 0 && m !== 0 && m % 2 === 0) [m, n] = [m / 2, n - 1];
  return { mult: m, shift: n };
}
