/**
 * Cache-blocked matrix multiply with float64 accumulation: C += A * B.
 *
 * Why float64: JavaScript arithmetic is double precision anyway, so accumulating in doubles costs
 * nothing extra and makes results independent of the blocking (no float32 rounding of partial
 * sums); the caller rounds to float32 once, when it stores the final value.
 *
 * Structure (the classic Goto/BLIS scheme, scaled to what V8 can keep in registers): the K
 * dimension is cut into KC-deep slices and N into NC-wide blocks; a slice of A is packed into
 * MR-row strips and a block of B into NR-column strips (contiguous, in float64, zero-padded at
 * the edges), and a 4x4 register tile of C is computed from one A strip and one B strip. The
 * packed B block (KC * NC doubles, 1 MiB) stays in L2 and one A strip (8 KiB) in L1 while it is
 * swept across the block. Operands are strided views, so transposed operands need no copy.
 */

/** A strided matrix view: element (r, c) is `data[offset + r * rowStride + c * colStride]`. */
export interface StridedMatrix {
  readonly data: Float32Array | Float64Array;
  readonly offset: number;
  readonly rowStride: number;
  readonly colStride: number;
}

/** The row-major matrix with `cols` columns starting at `offset`. */
export function rowMajor(data: Float32Array | Float64Array, offset: number, cols: number): StridedMatrix {
  return { data, offset, rowStride: cols, colStride: 1 };
}

/** The transpose of the row-major matrix with `cols` columns starting at `offset`. */
export function transposeOf(data: Float32Array | Float64Array, offset: number, cols: number): StridedMatrix {
  return { data, offset, rowStride: 1, colStride: cols };
}

const MR = 4;
const NR = 4;
const KC = 256;
const NC = 512;

let packedA: Float64Array = new Float64Array(0);
let packedB: Float64Array = new Float64Array(0);

function scratch(current: Float64Array, size: number): Float64Array {
  return current.length >= size ? current : new Float64Array(size);
}

/**
 * c[cOffset + i * ldc + j] += sum_k a(i, k) * b(k, j) for i < m, j < n (float64 throughout).
 */
export function gemmAccumulate(
  m: number,
  n: number,
  k: number,
  a: StridedMatrix,
  b: StridedMatrix,
  c: Float64Array,
  cOffset: number,
  ldc: number,
): void {
  if (m === 0 || n === 0 || k === 0) return;
  const rowStrips = Math.ceil(m / MR);
  packedA = scratch(packedA, rowStrips * MR * Math.min(k, KC));
  packedB = scratch(packedB, Math.ceil(Math.min(n, NC) / NR) * NR * Math.min(k, KC));
  for (let k0 = 0; k0 < k; k0 += KC) {
    const kc = Math.min(KC, k - k0);
    packRowStrips(a, m, k0, kc, packedA);
    for (let j0 = 0; j0 < n; j0 += NC) {
      const nc = Math.min(NC, n - j0);
      packColumnStrips(b, k0, kc, j0, nc, packedB);
      const colStrips = Math.ceil(nc / NR);
      for (let rs = 0; rs < rowStrips; rs++) {
        const i0 = rs * MR;
        const mr = Math.min(MR, m - i0);
        for (let cs = 0; cs < colStrips; cs++) {
          const jj = cs * NR;
          const nr = Math.min(NR, nc - jj);
          microKernel(kc, packedA, rs * kc * MR, packedB, cs * kc * NR, c, cOffset + i0 * ldc + j0 + jj, ldc, mr, nr);
        }
      }
    }
  }
}

/** dst[strip][kk][r] = a(strip * MR + r, k0 + kk), zero beyond row m. */
function packRowStrips(a: StridedMatrix, m: number, k0: number, kc: number, dst: Float64Array): void {
  const { data, offset, rowStride, colStride } = a;
  for (let i0 = 0, o = 0; i0 < m; i0 += MR) {
    for (let kk = 0; kk < kc; kk++) {
      const base = offset + (k0 + kk) * colStride;
      for (let r = 0; r < MR; r++, o++) dst[o] = i0 + r < m ? data[base + (i0 + r) * rowStride] : 0;
    }
  }
}

/** dst[strip][kk][c] = b(k0 + kk, j0 + strip * NR + c), zero beyond column j0 + nc. */
function packColumnStrips(b: StridedMatrix, k0: number, kc: number, j0: number, nc: number, dst: Float64Array): void {
  const { data, offset, rowStride, colStride } = b;
  for (let js = 0, o = 0; js < nc; js += NR) {
    const width = Math.min(NR, nc - js);
    for (let kk = 0; kk < kc; kk++) {
      const base = offset + (k0 + kk) * rowStride + (j0 + js) * colStride;
      for (let col = 0; col < NR; col++, o++) dst[o] = col < width ? data[base + col * colStride] : 0;
    }
  }
}

const edgeTile = new Float64Array(MR * NR);

/** One MR x NR tile of C += (packed A strip) * (packed B strip); 16 accumulators in registers. */
function microKernel(
  kc: number,
  pa: Float64Array,
  aStart: number,
  pb: Float64Array,
  bStart: number,
  c: Float64Array,
  cStart: number,
  ldc: number,
  mr: number,
  nr: number,
): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let kk = 0, ia = aStart, ib = bStart; kk < kc; kk++, ia += MR, ib += NR) {
    // One A value live at a time: V8 then keeps all 16 accumulators in registers (measured
    // ~1.4x faster than loading four A values up front).
    const b0 = pb[ib], b1 = pb[ib + 1], b2 = pb[ib + 2], b3 = pb[ib + 3];
    let a = pa[ia];
    c00 += a * b0; c01 += a * b1; c02 += a * b2; c03 += a * b3;
    a = pa[ia + 1];
    c10 += a * b0; c11 += a * b1; c12 += a * b2; c13 += a * b3;
    a = pa[ia + 2];
    c20 += a * b0; c21 += a * b1; c22 += a * b2; c23 += a * b3;
    a = pa[ia + 3];
    c30 += a * b0; c31 += a * b1; c32 += a * b2; c33 += a * b3;
  }
  if (mr === MR && nr === NR) {
    let o = cStart;
    c[o] += c00; c[o + 1] += c01; c[o + 2] += c02; c[o + 3] += c03; o += ldc;
    c[o] += c10; c[o + 1] += c11; c[o + 2] += c12; c[o + 3] += c13; o += ldc;
    c[o] += c20; c[o + 1] += c21; c[o + 2] += c22; c[o + 3] += c23; o += ldc;
    c[o] += c30; c[o + 1] += c31; c[o + 2] += c32; c[o + 3] += c33;
    return;
  }
  const t = edgeTile;
  t[0] = c00; t[1] = c01; t[2] = c02; t[3] = c03;
  t[4] = c10; t[5] = c11; t[6] = c12; t[7] = c13;
  t[8] = c20; t[9] = c21; t[10] = c22; t[11] = c23;
  t[12] = c30; t[13] = c31; t[14] = c32; t[15] = c33;
  for (let i = 0; i < mr; i++) {
    for (let j = 0; j < nr; j++) c[cStart + i * ldc + j] += t[i * NR + j];
  }
}
