/**
 * 2-D convolution (stride, zero padding, groups, bias) through im2col + the blocked GEMM.
 *
 * Per image and group, with K = (C / groups) * kh * kw and P = OH * OW:
 *   forward          y[O/g, P]  = w[O/g, K] * col[K, P]             (+ bias)
 *   backward data    gcol[K, P] = w^T[K, O/g] * gy[O/g, P], then col2im (sums overlapping taps)
 *   backward weights gw[O/g, K] += gy[O/g, P] * col^T[P, K]         (summed over the batch)
 * All sums accumulate in float64 and are rounded to float32 once. A 1x1 convolution with stride 1
 * and no padding uses the input itself as its column matrix.
 */
import { gemmAccumulate, rowMajor, transposeOf } from './gemm.js';
import type { ConvGeometry } from './validate.js';

let columns: Float32Array = new Float32Array(0);
let columnGrad: Float64Array = new Float64Array(0);
let accumulator: Float64Array = new Float64Array(0);

function grow<T extends Float32Array | Float64Array>(current: T, size: number, make: (n: number) => T): T {
  return current.length >= size ? current : make(size);
}

function isPointwise(g: ConvGeometry): boolean {
  return g.kernelH === 1 && g.kernelW === 1 && g.strideH === 1 && g.strideW === 1 && g.padH === 0 && g.padW === 0;
}

/** Range [first, end) of output positions whose tap `k` lands inside an input of length `size`. */
function validOutputRange(outLen: number, size: number, stride: number, pad: number, k: number): [number, number] {
  // input index = o * stride - pad + k must lie in [0, size)
  const first = Math.max(0, Math.ceil((pad - k) / stride));
  const end = Math.min(outLen, Math.floor((size - 1 + pad - k) / stride) + 1);
  return [first, Math.max(first, end)];
}

/** col[(c * kh + i) * kw + j][oy * OW + ox] = x[c][oy * sh - ph + i][ox * sw - pw + j] (0 outside). */
function im2col(x: Float32Array, xOffset: number, g: ConvGeometry, col: Float32Array): void {
  const { inH, inW, outH, outW, kernelH, kernelW, strideH, strideW, padH, padW } = g;
  const plane = inH * inW;
  let row = 0;
  for (let c = 0; c < g.groupInChannels; c++) {
    const channelBase = xOffset + c * plane;
    for (let i = 0; i < kernelH; i++) {
      const [oyFirst, oyEnd] = validOutputRange(outH, inH, strideH, padH, i);
      for (let j = 0; j < kernelW; j++, row++) {
        const [oxFirst, oxEnd] = validOutputRange(outW, inW, strideW, padW, j);
        const rowBase = row * outH * outW;
        for (let oy = 0; oy < outH; oy++) {
          const dst = rowBase + oy * outW;
          if (oy < oyFirst || oy >= oyEnd) {
            col.fill(0, dst, dst + outW);
            continue;
          }
          const src = channelBase + (oy * strideH - padH + i) * inW - padW + j;
          col.fill(0, dst, dst + oxFirst);
          for (let ox = oxFirst; ox < oxEnd; ox++) col[dst + ox] = x[src + ox * strideW];
          col.fill(0, dst + oxEnd, dst + outW);
        }
      }
    }
  }
}

/** The adjoint of im2col: gx[c][iy][ix] += every column entry that was read from there. */
function col2imAdd(gcol: Float64Array, g: ConvGeometry, gx: Float64Array, gxOffset: number): void {
  const { inH, inW, outH, outW, kernelH, kernelW, strideH, strideW, padH, padW } = g;
  const plane = inH * inW;
  let row = 0;
  for (let c = 0; c < g.groupInChannels; c++) {
    const channelBase = gxOffset + c * plane;
    for (let i = 0; i < kernelH; i++) {
      const [oyFirst, oyEnd] = validOutputRange(outH, inH, strideH, padH, i);
      for (let j = 0; j < kernelW; j++, row++) {
        const [oxFirst, oxEnd] = validOutputRange(outW, inW, strideW, padW, j);
        const rowBase = row * outH * outW;
        for (let oy = oyFirst; oy < oyEnd; oy++) {
          const src = rowBase + oy * outW;
          const dst = channelBase + (oy * strideH - padH + i) * inW - padW + j;
          for (let ox = oxFirst; ox < oxEnd; ox++) gx[dst + ox * strideW] += gcol[src + ox];
        }
      }
    }
  }
}

function patchSize(g: ConvGeometry): number {
  return g.groupInChannels * g.kernelH * g.kernelW;
}

export function conv2dForward(x: Float32Array, w: Float32Array, bias: Float32Array | null, g: ConvGeometry): Float32Array {
  const k = patchSize(g);
  const positions = g.outH * g.outW;
  const inPlane = g.inH * g.inW;
  const outGroup = g.groupOutChannels;
  const y = new Float32Array(g.batch * g.outChannels * positions);
  const pointwise = isPointwise(g);
  if (!pointwise) columns = grow(columns, k * positions, (n) => new Float32Array(n));
  accumulator = grow(accumulator, outGroup * positions, (n) => new Float64Array(n));
  for (let n = 0; n < g.batch; n++) {
    for (let grp = 0; grp < g.groups; grp++) {
      const xOffset = (n * g.inChannels + grp * g.groupInChannels) * inPlane;
      if (!pointwise) im2col(x, xOffset, g, columns);
      const cols = pointwise ? rowMajor(x, xOffset, positions) : rowMajor(columns, 0, positions);
      const acc = accumulator;
      acc.fill(0, 0, outGroup * positions);
      gemmAccumulate(outGroup, positions, k, rowMajor(w, grp * outGroup * k, k), cols, acc, 0, positions);
      const yBase = (n * g.outChannels + grp * outGroup) * positions;
      for (let o = 0; o < outGroup; o++) {
        const b = bias === null ? 0 : bias[grp * outGroup + o];
        const src = o * positions;
        const dst = yBase + o * positions;
        for (let p = 0; p < positions; p++) y[dst + p] = acc[src + p] + b;
      }
    }
  }
  return y;
}

export function conv2dBackwardData(gy: Float32Array, w: Float32Array, g: ConvGeometry): Float32Array {
  const k = patchSize(g);
  const positions = g.outH * g.outW;
  const inPlane = g.inH * g.inW;
  const imageSize = g.inChannels * inPlane;
  const outGroup = g.groupOutChannels;
  const gx = new Float32Array(g.batch * imageSize);
  const pointwise = isPointwise(g);
  if (!pointwise) columnGrad = grow(columnGrad, k * positions, (n) => new Float64Array(n));
  accumulator = grow(accumulator, imageSize, (n) => new Float64Array(n));
  for (let n = 0; n < g.batch; n++) {
    const image = accumulator;
    image.fill(0, 0, imageSize);
    for (let grp = 0; grp < g.groups; grp++) {
      const weights = transposeOf(w, grp * outGroup * k, k);
      const grads = rowMajor(gy, (n * g.outChannels + grp * outGroup) * positions, positions);
      const groupOffset = grp * g.groupInChannels * inPlane;
      if (pointwise) {
        gemmAccumulate(k, positions, outGroup, weights, grads, image, groupOffset, positions);
      } else {
        columnGrad.fill(0, 0, k * positions);
        gemmAccumulate(k, positions, outGroup, weights, grads, columnGrad, 0, positions);
        col2imAdd(columnGrad, g, image, groupOffset);
      }
    }
    const base = n * imageSize;
    for (let i = 0; i < imageSize; i++) gx[base + i] = image[i];
  }
  return gx;
}

export function conv2dBackwardWeights(
  gy: Float32Array,
  x: Float32Array,
  g: ConvGeometry,
  withBias: boolean,
): { gw: Float32Array; gb: Float32Array | null } {
  const k = patchSize(g);
  const positions = g.outH * g.outW;
  const inPlane = g.inH * g.inW;
  const outGroup = g.groupOutChannels;
  const pointwise = isPointwise(g);
  if (!pointwise) columns = grow(columns, k * positions, (n) => new Float32Array(n));
  const gwAcc = new Float64Array(g.outChannels * k);
  for (let n = 0; n < g.batch; n++) {
    for (let grp = 0; grp < g.groups; grp++) {
      const xOffset = (n * g.inChannels + grp * g.groupInChannels) * inPlane;
      if (!pointwise) im2col(x, xOffset, g, columns);
      const colsT = pointwise ? transposeOf(x, xOffset, positions) : transposeOf(columns, 0, positions);
      const grads = rowMajor(gy, (n * g.outChannels + grp * outGroup) * positions, positions);
      gemmAccumulate(outGroup, k, positions, grads, colsT, gwAcc, grp * outGroup * k, k);
    }
  }
  return { gw: Float32Array.from(gwAcc), gb: withBias ? channelSums(gy, g.batch, g.outChannels, positions) : null };
}

/** Sum over N and the spatial positions of an (N, C, P) tensor, per channel. */
export function channelSums(t: Float32Array, batch: number, channels: number, positions: number): Float32Array {
  const sums = new Float64Array(channels);
  for (let n = 0; n < batch; n++) {
    for (let c = 0; c < channels; c++) {
      const base = (n * channels + c) * positions;
      let s = 0;
      for (let p = 0; p < positions; p++) s += t[base + p];
      sums[c] += s;
    }
  }
  return Float32Array.from(sums);
}
