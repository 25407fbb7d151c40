/**
 * The integer primitives of the lowered model (src/export/ir.ts) with their exact semantics. The
 * engine (src/export/engine.ts) is built from these and nothing else; a C implementation must
 * compute the same functions (the C99 equivalent is given for each).
 *
 * No floating point: JavaScript numbers are IEEE doubles, but every value these functions create
 * is an integer of magnitude below 2^53, so each +, -, * is exact and `Math.floor(v / 2^k)` is
 * exactly an arithmetic right shift. The one product that needs 64 bits (the requantization
 * multiply) is split into 16-bit limbs so that no intermediate reaches 2^53. Browser-safe: no
 * Node APIs.
 */

export const INT32_MIN = -0x80000000;
export const INT32_MAX = 0x7fffffff;

/** 2^k for k = 0..62, exact. */
const POW2 = Float64Array.from({ length: 63 }, (_, k) => 2 ** k);

/**
 * Rounding multiply-shift: floor((a * m + 2^(n-1)) / 2^n) for n >= 1 (round half up), a * m for
 * n = 0. `a` and `m` are int32, 0 <= n <= 62, and the result must fit in int32 (the lowering checks
 * this from the worst-case bound of `a`).
 *
 * C99: `(int32_t)(((int64_t)a * m + (n ? (int64_t)1 << (n - 1) : 0)) >> n)`, with `>>` an arithmetic
 * shift of a signed 64-bit value (what every C compiler for Cortex-M and x86 does).
 */
export function roundingMulShift(a: number, m: number, n: number): number {
  const product = a * m;
  // Below 2^52 the product and the rounding sum are exact as they are (the common case, kept small enough to inline).
  if (n !== 0 && n <= 51 && product < 2 ** 52 && product > -(2 ** 52)) return Math.floor((product + POW2[n - 1]) / POW2[n]);
  return wideMulShift(a, m, n);
}

/** roundingMulShift where a * m may not be exact in a double (or n = 0). */
function wideMulShift(a: number, m: number, n: number): number {
  if (n === 0) return a * m;
  // a*m = (a*mh)*2^16 + a*ml with mh = floor(m / 2^16) (signed) and 0 <= ml < 2^16.
  const mh = m >> 16;
  const ml = m & 0xffff;
  const low = a * ml; // |low| < 2^47
  const lowHigh = Math.floor(low / 65536);
  const z = a * mh + lowHigh; // a*m = z*2^16 + (low - lowHigh*2^16), |z| < 2^47
  if (n >= 17) {
    // The rounding term 2^(n-1) is a multiple of 2^16; the low 16 bits cannot carry into the result.
    return Math.floor((z + POW2[n - 17]) / POW2[n - 16]);
  }
  const lowBits = low - lowHigh * 65536; // 0 .. 2^16 - 1
  return z * POW2[16 - n] + Math.floor((lowBits + POW2[n - 1]) / POW2[n]);
}

/** A real multiplier as int32 mantissa and right shift: real ~= mult * 2^-shift. */
export interface FixedMultiplier {
  readonly mult: number;
  readonly shift: number;
}

/**
 * The fixed-point form of a real multiplier with a 31-bit mantissa (|mult| in [2^30, 2^31)), or
 * fewer bits where the shift would leave [0, 62]. Multipliers too small for a shift of 62 become 0.
 */
export function toFixedMultiplier(real: number, what: string): FixedMultiplier {
  if (!Number.isFinite(real)) throw new Error(`${what}: multiplier ${real} is not finite`);
  if (real === 0) return { mult: 0, shift: 0 };
  let shift = 30 - Math.floor(Math.log2(Math.abs(real)));
  let mult = Math.round(real * 2 ** shift);
  if (Math.abs(mult) >= 2 ** 31) {
    shift -= 1;
    mult = Math.round(real * 2 ** shift);
  }
  if (shift > 62) {
    shift = 62;
    mult = Math.round(real * 2 ** 62);
    if (mult === 0) return { mult: 0, shift: 0 };
  }
  if (shift < 0) {
    if (Math.abs(real) >= 2 ** 31) throw new Error(`${what}: multiplier ${real} does not fit in int32`);
    shift = 0;
    mult = Math.round(real);
  }
  return { mult, shift };
}

/** The real value of a fixed multiplier. */
export function fixedValue(f: FixedMultiplier): number {
  return f.mult / 2 ** f.shift;
}

/** min(max(v, lo), hi). */
export function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/**
 * Number of entries of the ascending `thresholds` that are strictly below y (binary search): the
 * code of y under "nearest level, ties to the lower level". C: the usual lower-bound loop.
 */
export function countBelow(thresholds: Int32Array, y: number): number {
  let lo = 0;
  let hi = thresholds.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (y > thresholds[mid]) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Uniform rounding of y (in units of 2^-fracBits codes) to a code, ties to the lower code:
 * clamp((y + 2^(f-1) - 1) >> f, minCode, maxCode) for f >= 1, clamp(y, ...) for f = 0.
 * |y| < 2^30 (checked by the lowering), so the sum cannot overflow int32.
 */
export function roundToCode(y: number, fracBits: number, minCode: number, maxCode: number): number {
  const k = fracBits === 0 ? y : (y + (1 << (fracBits - 1)) - 1) >> fracBits;
  return clamp(k, minCode, maxCode);
}

/** Powers of two whose signed sum is v: the set bits of |v|, as shift amounts ascending. */
export function powerOfTwoTerms(v: number): number[] {
  const terms: number[] = [];
  for (let rest = Math.abs(v), p = 0; rest > 0; rest >>>= 1, p++) if (rest & 1) terms.push(p);
  return terms;
}

/** Index of the first largest of `length` values from `start` (the class a row of logits picks). */
export function argmax(values: ArrayLike<number>, start = 0, length = values.length - start): number {
  let best = 0;
  for (let i = 1; i < length; i++) if (values[start + i] > values[start + best]) best = i;
  return best;
}

/** `argmax` of each row of `classes` values: the predicted class of every image of a batch of logits. */
export function argmaxRows(values: ArrayLike<number>, classes: number): Int32Array {
  return Int32Array.from({ length: values.length / classes }, (_, row) => argmax(values, row * classes, classes));
}
