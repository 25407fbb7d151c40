/**
 * The clipped ReLU (ir.ts `ceiling`) folded into tables, so that the C runtime and the host int8
 * engine spend nothing on it: a ceiling becomes fewer thresholds or a lower top code of an
 * activation rule, and the residual epilogue's ReLU, ceiling and saturation become one clamp.
 * Browser-safe.
 */
import type { ActivationQuant, CodeRule } from './ir.js';

/**
 * The code rule of `q` with its ceiling applied: rule(min(v, ceiling)) for every v (after the
 * ReLU). Thresholds: min(v, c) > T[k] exactly when v > T[k] and c > T[k], so thresholds >= c never
 * count and are dropped (with their values). Rounding: (x + b) >> f is non-decreasing, so it
 * commutes with min and the ceiling lowers the top code to that of c (not below the bottom code,
 * which min(v, c) < bottom still maps to).
 */
export function ruleWithCeiling(q: ActivationQuant): CodeRule {
  const { rule, ceiling } = q;
  if (ceiling === null) return rule;
  if (rule.kind === 'thresholds') {
    let count = 0;
    while (count < rule.thresholds.length && rule.thresholds[count] < ceiling) count++;
    return { kind: 'thresholds', thresholds: rule.thresholds.slice(0, count), values: rule.values.slice(0, count + 1) };
  }
  const top = rule.fracBits === 0 ? ceiling : Math.floor((ceiling + 2 ** (rule.fracBits - 1) - 1) / 2 ** rule.fracBits);
  return { ...rule, maxCode: Math.max(rule.minCode, Math.min(rule.maxCode, top)) };
}

/**
 * [lo, hi] with min(max(v, lo), hi) equal to the residual epilogue's ReLU, then min(v, ceiling),
 * then saturation to `bits` signed bits, for every v. The max comes first: lo > hi (a ceiling
 * below the ReLU's 0) maps everything to hi, as the three steps do.
 */
export function residualClamp(relu: boolean, ceiling: number | null, bits: number): readonly [number, number] {
  const limit = 2 ** (bits - 1);
  const hi = ceiling === null ? limit - 1 : Math.max(-limit, Math.min(limit - 1, ceiling));
  return [relu ? 0 : -limit, hi];
}
