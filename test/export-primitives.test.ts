/** The integer primitives of the engine, bit packing and SHA-256, against independent references. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { packBits, packedBytes, unpackBits } from '../src/export/bitpack.js';
import { countBelow, fixedValue, powerOfTwoTerms, roundToCode, roundingMulShift, toFixedMultiplier } from '../src/export/int-ops.js';
import { sha256, toHex } from '../src/export/sha256.js';
import { Rng } from '../src/util/rng.js';

/** floor((a*m + 2^(n-1)) / 2^n) in BigInt: the C int64 definition. */
function reference(a: number, m: number, n: number): bigint {
  const p = BigInt(a) * BigInt(m);
  return n === 0 ? p : (p + (1n << BigInt(n - 1))) >> BigInt(n);
}

describe('roundingMulShift', () => {
  test('equals the 64-bit definition for random operands and every shift', () => {
    const rng = new Rng(11);
    let checked = 0;
    for (let n = 0; n <= 62; n++) {
      for (let k = 0; k < 400; k++) {
        const a = (rng.nextU32() | 0) >> rng.int(31);
        const m = (rng.nextU32() | 0) >> rng.int(31);
        const expected = reference(a, m, n);
        if (expected < -(2n ** 31n) || expected >= 2n ** 31n) continue; // the lowering never asks for these
        assert.equal(BigInt(roundingMulShift(a, m, n)), expected, `a=${a} m=${m} n=${n}`);
        checked++;
      }
    }
    assert.ok(checked > 10000, `only ${checked} cases in range`);
  });

  test('rounds half up, negative values included', () => {
    assert.equal(roundingMulShift(3, 1, 1), 2); // 1.5 -> 2
    assert.equal(roundingMulShift(-3, 1, 1), -1); // -1.5 -> -1
    assert.equal(roundingMulShift(-5, 1, 2), -1); // -1.25 -> -1
    assert.equal(roundingMulShift(-6, 1, 2), -1); // -1.5 -> -1
    assert.equal(roundingMulShift(-7, 1, 2), -2); // -1.75 -> -2
    assert.equal(roundingMulShift(12345, 2 ** 30, 30), 12345); // the identity multiplier
  });

  test('fixed-point multipliers are within 2^-30 relative of the real value', () => {
    const rng = new Rng(3);
    for (let k = 0; k < 2000; k++) {
      const real = (rng.next() < 0.5 ? -1 : 1) * 2 ** (rng.next() * 80 - 50);
      const f = toFixedMultiplier(real, 'test');
      assert.ok(Math.abs(f.mult) < 2 ** 31 && f.shift >= 0 && f.shift <= 62);
      if (Math.abs(real) >= 2 ** -31) assert.ok(Math.abs(fixedValue(f) - real) <= Math.abs(real) * 2 ** -30, `${real}`);
    }
    assert.deepEqual(toFixedMultiplier(0, 'zero'), { mult: 0, shift: 0 });
    assert.deepEqual(toFixedMultiplier(1e-30, 'tiny'), { mult: 0, shift: 0 });
    assert.throws(() => toFixedMultiplier(2 ** 40, 'conv7 channel 3'), /conv7 channel 3: multiplier .* does not fit/);
    assert.throws(() => toFixedMultiplier(NaN, 'bn'), /bn: multiplier NaN is not finite/);
  });
});

describe('activation code rules', () => {
  test('thresholds: count of thresholds strictly below, ties to the lower code', () => {
    const t = Int32Array.of(-5, 0, 7, 100);
    const expected: [number, number][] = [[-100, 0], [-5, 0], [-4, 1], [0, 1], [1, 2], [7, 2], [8, 3], [100, 3], [101, 4], [2 ** 29, 4]];
    for (const [y, code] of expected) assert.equal(countBelow(t, y), code, `y=${y}`);
    assert.equal(countBelow(new Int32Array(0), 5), 0);
  });

  test('round: nearest code in units of 2^-f, ties to the lower code, clamped', () => {
    // f = 2: one code is 4 units; 2 units is a tie.
    const cases: [number, number][] = [[0, 0], [1, 0], [2, 0], [3, 1], [6, 1], [7, 2], [-2, 0], [-3, 0], [1000, 7]];
    for (const [y, code] of cases) assert.equal(roundToCode(y, 2, 0, 7), code, `y=${y}`);
    assert.equal(roundToCode(-3, 2, -127, 127), -1); // -0.75 -> -1
    assert.equal(roundToCode(-6, 2, -127, 127), -2); // -1.5 tie -> -2 (lower)
    assert.equal(roundToCode(5, 0, 0, 3), 3);
  });

  test('powers of two of a weight level (APoT levels are sums of at most two)', () => {
    assert.deepEqual(powerOfTwoTerms(0), []);
    assert.deepEqual(powerOfTwoTerms(-10), [1, 3]);
    assert.deepEqual(powerOfTwoTerms(33), [0, 5]);
    for (const n of [1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48]) assert.ok(powerOfTwoTerms(n).length <= 2, `${n}`);
  });
});

describe('bit packing', () => {
  test('round trip at every width from 1 to 8 bits', () => {
    const rng = new Rng(5);
    for (let bits = 1; bits <= 8; bits++) {
      for (const count of [0, 1, 7, 8, 9, 1001]) {
        const codes = Uint8Array.from({ length: count }, () => rng.int(2 ** bits));
        const packed = packBits(codes, bits);
        assert.equal(packed.length, packedBytes(count, bits));
        assert.deepEqual(unpackBits(packed, count, bits), codes);
      }
    }
  });

  test('documented layout: least significant bit first, codes straddle bytes', () => {
    assert.deepEqual(packBits(Uint8Array.of(0x1, 0xa, 0xf), 4), Uint8Array.of(0xa1, 0x0f));
    // 3 bits: codes 5, 3, 7 -> stream bits 101 110 111 (LSB first) -> bytes 0b11011101, 0b1
    assert.deepEqual(packBits(Uint8Array.of(5, 3, 7), 3), Uint8Array.of(0b11011101, 0b1));
    assert.deepEqual(packBits(Uint8Array.of(1, 0, 1, 1, 0, 0, 0, 0, 1), 1), Uint8Array.of(0b1101, 1));
  });

  test('codes that do not fit and wrong lengths are errors', () => {
    assert.throws(() => packBits(Uint8Array.of(4), 2), /code 4 at index 0 does not fit 2 bits/);
    assert.throws(() => packBits(Uint8Array.of(1), 9), /bits must be 1..8/);
    assert.throws(() => unpackBits(new Uint8Array(3), 7, 4), /7 codes of 4 bits need 4 bytes, got 3/);
  });
});

describe('sha256', () => {
  test('matches node:crypto across block boundaries and for split inputs', () => {
    const rng = new Rng(9);
    for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 70000]) {
      const data = Uint8Array.from({ length: n }, () => rng.int(256));
      const expected = createHash('sha256').update(data).digest('hex');
      assert.equal(toHex(sha256(data)), expected, `${n} bytes`);
      const cut = Math.floor(n / 3);
      assert.equal(toHex(sha256(data.subarray(0, cut), data.subarray(cut))), expected, `${n} bytes in two parts`);
    }
    assert.equal(toHex(sha256(new TextEncoder().encode('abc'))), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });
});
