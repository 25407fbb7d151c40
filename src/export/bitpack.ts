/**
 * Little-endian bit packing of small unsigned codes: code i occupies stream bits
 * [i * bits, (i + 1) * bits), least significant bit first, and stream bit j is bit (j mod 8) of
 * byte floor(j / 8). So at 4 bits byte 0 holds code 0 in its low nibble and code 1 in its high
 * nibble; at 3 bits code 2 straddles bytes 0 and 1. Unused high bits of the last byte are zero.
 * C: `(bytes[j >> 3] >> (j & 7)) & 1` for stream bit j. Browser-safe.
 */

export function packedBytes(count: number, bits: number): number {
  return Math.ceil((count * bits) / 8);
}

export function packBits(codes: Uint8Array, bits: number): Uint8Array {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) throw new Error(`bit packing: bits must be 1..8, got ${bits}`);
  const out = new Uint8Array(packedBytes(codes.length, bits));
  let bit = 0;
  for (let i = 0; i < codes.length; i++, bit += bits) {
    const v = codes[i];
    if (v >>> bits !== 0) throw new Error(`bit packing: code ${v} at index ${i} does not fit ${bits} bits`);
    const byte = bit >>> 3;
    const shift = bit & 7;
    out[byte] |= v << shift;
    if (shift + bits > 8) out[byte + 1] |= v >>> (8 - shift);
  }
  return out;
}

export function unpackBits(packed: Uint8Array, count: number, bits: number): Uint8Array {
  if (!Number.isInteger(bits) || bits < 1 || bits > 8) throw new Error(`bit packing: bits must be 1..8, got ${bits}`);
  if (packed.length !== packedBytes(count, bits)) throw new Error(`bit packing: ${count} codes of ${bits} bits need ${packedBytes(count, bits)} bytes, got ${packed.length}`);
  const out = new Uint8Array(count);
  const mask = (1 << bits) - 1;
  let bit = 0;
  for (let i = 0; i < count; i++, bit += bits) {
    const byte = bit >>> 3;
    const shift = bit & 7;
    let v = packed[byte] >>> shift;
    if (shift + bits > 8) v |= packed[byte + 1] << (8 - shift);
    out[i] = v & mask;
  }
  return out;
}
