/**
 * The generated C's one-rounding epilogues (src/export/c/one-rounding.ts) against the integer
 * engine: the code floor((a * m + c * 2^(n-1)) / 2^(n+f)) with the generator's c and bounds equals
 * engine's requantize-then-round (quantizeValue) for every value tried, the rounding boundaries of
 * every code included; the folded bias and the reduced shortcut multipliers keep the engine's
 * values; requantizations the form cannot express are left to the two roundings; and the generated
 * C of a uniform model uses the form (so the bit-exact C tests of export-c.test.ts run it), a
 * non-uniform one does not.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { generateC } from '../src/export/c/generate.js';
import { foldedBias, oneRounding, reducedMultiplier } from '../src/export/c/one-rounding.js';
import { quantizeValue } from '../src/export/engine.js';
import { roundingMulShift } from '../src/export/int-ops.js';
import type { ActivationQuant, Requant } from '../src/export/ir.js';
import { Rng } from '../src/util/rng.js';
import { lowerTiny, tinyQuantizedModel } from './export-fixtures.js';

const floorDiv = (x: bigint, d: bigint): bigint => (x >= 0n ? x / d : -((-x + d - 1n) / d));

/** tq_code of the C runtime, in exact integers. */
function cCode(a: number, m: number, n: number, c: number, f: number, lo: number, hi: number): number {
  const code = Number(floorDiv(BigInt(a) * BigInt(m) + BigInt(c) * 2n ** BigInt(n - 1), 2n ** BigInt(n + f)));
  return Math.min(Math.max(code, lo), hi);
}

/** Values of a around every code boundary of channel i (where v crosses (k + 1/2) codes), plus random ones. */
function valuesToTry(rng: Rng, r: Requant, i: number, f: number, span: number): number[] {
  const m = r.mult[i];
  const out: number[] = [];
  for (let k = -3; k <= span + 3; k++) {
    // v = a * m / 2^n + b = k * 2^f + 2^(f-1) at the boundary.
    const a = Math.round(((k * 2 ** f + 2 ** (f - 1) - r.bias[i]) * 2 ** r.shift[i]) / m);
    for (let d = -2; d <= 2; d++) out.push(a + d);
  }
  for (let j = 0; j < 200; j++) out.push(Math.round((rng.next() - 0.5) * 2 * 2 ** 20));
  return out;
}

function randomCase(rng: Rng): { r: Requant; q: ActivationQuant } {
  const channels = 3;
  const f = 1 + rng.int(24);
  const shift = Uint8Array.from({ length: channels }, () => Math.max(1, 32 - f + rng.int(Math.min(31, 63 - f) - (32 - f) + 1)));
  const mult = Int32Array.from({ length: channels }, () => (rng.next() < 0.5 ? 1 : -1) * (2 ** 30 + rng.int(2 ** 30)));
  const bias = Int32Array.from({ length: channels }, () => rng.int(2 ** (f + 4)) - 2 ** (f + 3));
  const relu = rng.next() < 0.7;
  const maxCode = [1, 3, 7, 15, 255][rng.int(5)];
  const minCode = relu ? 0 : -maxCode - 1;
  const zeroPoint = relu ? rng.int(3 * 2 ** f) - 2 ** f : 0;
  const ceiling = rng.next() < 0.3 ? rng.int((maxCode + 2) * 2 ** f) : null;
  return { r: { mult, shift, bias }, q: { relu, zeroPoint, ceiling, rule: { kind: 'round', fracBits: f, minCode, maxCode } } };
}

describe('one rounding (src/export/c/one-rounding.ts)', () => {
  test('the code from one rounding equals the engine requantize-then-round, at every code boundary and elsewhere', () => {
    const rng = new Rng(7);
    let checked = 0;
    for (let t = 0; t < 200; t++) {
      const { r, q } = randomCase(rng);
      const one = oneRounding(r, q);
      assert.ok(one, `case ${t}: shifts ${[...r.shift]}, f ${q.rule.kind === 'round' ? q.rule.fracBits : '-'} should take the form`);
      for (let i = 0; i < r.mult.length; i++) {
        for (const a of valuesToTry(rng, r, i, one.fracBits, q.rule.kind === 'round' ? q.rule.maxCode - q.rule.minCode : 0)) {
          if (Math.abs(a) >= 2 ** 31) continue;
          const v = roundingMulShift(a, r.mult[i], r.shift[i]) + r.bias[i];
          if (Math.abs(v) >= 2 ** 30) continue; // outside what the lowering admits
          const expected = quantizeValue(q, r, i, a);
          assert.equal(cCode(a, r.mult[i], r.shift[i], one.bias[i], one.fracBits, one.minCode, one.maxCode), expected, `case ${t} channel ${i} a ${a}`);
          checked++;
        }
      }
    }
    assert.ok(checked > 100_000, `${checked} values checked`);
  });

  test('requantizations outside the form keep the two roundings', () => {
    const q: ActivationQuant = { relu: true, zeroPoint: 0, ceiling: null, rule: { kind: 'round', fracBits: 20, minCode: 0, maxCode: 15 } };
    const r = (shift: number, bias = 0): Requant => ({ mult: Int32Array.of(2 ** 30), shift: Uint8Array.of(shift), bias: Int32Array.of(bias) });
    assert.ok(oneRounding(r(16), q));
    assert.equal(oneRounding(r(0), q), null, 'shift 0: no rounding term to join');
    assert.equal(oneRounding(r(32), q), null, '2^(n-1) is not an int32');
    assert.equal(oneRounding(r(11), q), null, 'n + f < 32: the code is not in the high word');
    assert.equal(oneRounding(r(16, 2 ** 30), q), null, 'c does not fit int32');
    assert.equal(oneRounding(r(16), { ...q, rule: { kind: 'thresholds', thresholds: Int32Array.of(5), values: Int32Array.of(0, 1) } }), null);
    assert.equal(oneRounding(r(31), { ...q, rule: { kind: 'round', fracBits: 31, minCode: 0, maxCode: 1 } }), null, 'f > 30');
  });

  test('the folded bias and the reduced multipliers keep every value', () => {
    const rng = new Rng(3);
    for (let t = 0; t < 300; t++) {
      const n = 1 + rng.int(31);
      const m = (rng.next() < 0.5 ? 1 : -1) * ((1 + rng.int(2 ** 20)) * 2 ** rng.int(10));
      const b = rng.int(2 ** 24) - 2 ** 23;
      const [c] = foldedBias({ mult: Int32Array.of(m), shift: Uint8Array.of(n), bias: Int32Array.of(b) }) ?? [];
      assert.equal(c, 2 * b + 1);
      const reduced = reducedMultiplier(m, n);
      for (let j = 0; j < 50; j++) {
        const a = Math.round((rng.next() - 0.5) * 2 ** 16);
        const expected = roundingMulShift(a, m, n);
        assert.equal(Number(floorDiv(BigInt(a) * BigInt(m) + BigInt(c) * 2n ** BigInt(n - 1), 2n ** BigInt(n))), expected + b, `a ${a} m ${m} n ${n}`);
        assert.equal(roundingMulShift(a, reduced.mult, reduced.shift), expected, `reduced a ${a} m ${m} n ${n}`);
      }
    }
    assert.deepEqual(reducedMultiplier(2 ** 30, 30), { mult: 1, shift: 0 }, 'a shortcut of scale 1 is a plain add');
    assert.equal(foldedBias({ mult: Int32Array.of(1), shift: Uint8Array.of(0), bias: Int32Array.of(0) }), null);
  });

  test('the C of a uniform model takes the form in its activation convs and quantize ops; APoT grids keep thresholds, with the bias folded', () => {
    const uniform = generateC(lowerTiny(tinyQuantizedModel({ method: 'uniform', wbits: 3 }), { method: 'uniform', wbits: 3 }), { headerName: 'model.h' }).source;
    assert.match(uniform, /\.epilogue = TQ_CODES/);
    assert.doesNotMatch(uniform, /\.epilogue = TQ_ACTIVATION/);
    assert.match(uniform, /\.one_rounding = 1/);
    const apot = generateC(lowerTiny(tinyQuantizedModel({ method: 'apot', wbits: 4 }), { method: 'apot', wbits: 4 }), { headerName: 'model.h' }).source;
    assert.doesNotMatch(apot, /\.epilogue = TQ_CODES/);
    assert.match(apot, /\.epilogue = TQ_ACTIVATION/);
    assert.match(apot, /\.folded = 1/);
  });
});
