/**
 * Rounding shared by every quantizer: round half to even, like `torch.round` and NumPy.
 * JavaScript's `Math.round` rounds half up (0.5 -> 1, 2.5 -> 3, -1.5 -> -1), which moves values
 * that sit exactly on a tie to the wrong level.
 */

/**
 * Nearest integer, ties to the even one: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -1.5 -> -2. The sign of a
 * zero result follows the input (-0.4 -> -0), as in PyTorch. NaN and infinities pass through.
 */
export function roundHalfEven(x: number): number {
  const magnitude = Math.abs(x);
  let r = Math.floor(magnitude);
  // Exact in double precision: magnitude and its floor share the exponent range.
  const fraction = magnitude - r;
  if (fraction > 0.5 || (fraction === 0.5 && r % 2 === 1)) r += 1;
  return x < 0 ? -r : r;
}
