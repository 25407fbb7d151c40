/**
 * Average pooling (PyTorch's defaults: count_include_pad = true, ceil_mode = false, so every window
 * is divided by kh * kw), max pooling (PyTorch's semantics, see `forEachWindowWinner`), global
 * average pooling, and the ResNet option-A shortcut.
 */
import type { PoolGeometry } from './validate.js';

/** The part of one pooling window that lies inside the input plane: rows [yFirst, yEnd), columns [xFirst, xEnd). */
interface WindowSpan {
  readonly yFirst: number;
  readonly yEnd: number;
  readonly xFirst: number;
  readonly xEnd: number;
}

/**
 * Visits every pooling window: visit(outIndex, inBase, span), with outIndex into the (N, C, OH, OW)
 * array and inBase the start of the window's (H, W) plane in the (N, C, H, W) array.
 */
function forEachWindow(g: PoolGeometry, visit: (outIndex: number, inBase: number, span: WindowSpan) => void): void {
  const planes = g.batch * g.channels;
  for (let plane = 0; plane < planes; plane++) {
    const inBase = plane * g.inH * g.inW;
    const outBase = plane * g.outH * g.outW;
    for (let oy = 0; oy < g.outH; oy++) {
      const y0 = oy * g.strideH - g.padH;
      const yFirst = Math.max(0, y0);
      const yEnd = Math.min(g.inH, y0 + g.kernelH);
      for (let ox = 0; ox < g.outW; ox++) {
        const x0 = ox * g.strideW - g.padW;
        visit(outBase + oy * g.outW + ox, inBase, { yFirst, yEnd, xFirst: Math.max(0, x0), xEnd: Math.min(g.inW, x0 + g.kernelW) });
      }
    }
  }
}

/**
 * Visits every (output, input) pair of the pooling windows that lies inside the input:
 * visit(outIndex, inIndex), with indices into the (N, C, OH, OW) and (N, C, H, W) arrays.
 */
function forEachWindowTap(g: PoolGeometry, visit: (outIndex: number, inIndex: number) => void): void {
  forEachWindow(g, (outIndex, inBase, s) => {
    for (let iy = s.yFirst; iy < s.yEnd; iy++) {
      for (let ix = s.xFirst; ix < s.xEnd; ix++) visit(outIndex, inBase + iy * g.inW + ix);
    }
  });
}

/**
 * Visits every window with the input index that max pooling picks in it: the first maximum in
 * window order (rows, then columns), a NaN over any number (the last NaN), as PyTorch's kernel
 * does. Only positions inside the input compete, so padding never wins.
 */
function forEachWindowWinner(x: Float32Array, g: PoolGeometry, visit: (outIndex: number, inIndex: number) => void): void {
  forEachWindow(g, (outIndex, inBase, s) => {
    let winner = inBase + s.yFirst * g.inW + s.xFirst;
    let best = x[winner];
    for (let iy = s.yFirst; iy < s.yEnd; iy++) {
      for (let ix = s.xFirst; ix < s.xEnd; ix++) {
        const i = inBase + iy * g.inW + ix;
        if (x[i] > best || Number.isNaN(x[i])) {
          best = x[i];
          winner = i;
        }
      }
    }
    visit(outIndex, winner);
  });
}

export function avgPool2dForward(x: Float32Array, g: PoolGeometry): Float32Array {
  const sums = new Float64Array(g.batch * g.channels * g.outH * g.outW);
  forEachWindowTap(g, (o, i) => {
    sums[o] += x[i];
  });
  const divisor = g.kernelH * g.kernelW;
  return Float32Array.from(sums, (s) => s / divisor);
}

export function avgPool2dBackward(gy: Float32Array, g: PoolGeometry): Float32Array {
  const gx = new Float64Array(g.batch * g.channels * g.inH * g.inW);
  const divisor = g.kernelH * g.kernelW;
  forEachWindowTap(g, (o, i) => {
    gx[i] += gy[o] / divisor;
  });
  return Float32Array.from(gx);
}

export function maxPool2dForward(x: Float32Array, g: PoolGeometry): Float32Array {
  const y = new Float32Array(g.batch * g.channels * g.outH * g.outW);
  forEachWindowWinner(x, g, (o, i) => {
    y[o] = x[i];
  });
  return y;
}

export function maxPool2dBackward(gy: Float32Array, x: Float32Array, g: PoolGeometry): Float32Array {
  const gx = new Float64Array(x.length);
  forEachWindowWinner(x, g, (o, i) => {
    gx[i] += gy[o];
  });
  return Float32Array.from(gx);
}

/** (N, C, H, W) -> (N, C) means over each H x W plane. */
export function globalAvgPoolForward(x: Float32Array, planes: number, planeSize: number): Float32Array {
  const y = new Float32Array(planes);
  for (let p = 0; p < planes; p++) {
    let s = 0;
    for (let i = p * planeSize; i < (p + 1) * planeSize; i++) s += x[i];
    y[p] = s / planeSize;
  }
  return y;
}

export function globalAvgPoolBackward(gy: Float32Array, planes: number, planeSize: number): Float32Array {
  const gx = new Float32Array(planes * planeSize);
  for (let p = 0; p < planes; p++) gx.fill(gy[p] / planeSize, p * planeSize, (p + 1) * planeSize);
  return gx;
}

export interface ShortcutGeometry {
  readonly batch: number;
  readonly inChannels: number;
  readonly inH: number;
  readonly inW: number;
  readonly outChannels: number;
  readonly outH: number;
  readonly outW: number;
  readonly stride: number;
  readonly padBefore: number;
}

/**
 * Calls copy(inIndex, outIndex) for every input pixel the shortcut keeps (every stride-th row and
 * column from 0) with its place in the channel-padded output.
 */
function forEachKeptPixel(g: ShortcutGeometry, copy: (inIndex: number, outIndex: number) => void): void {
  for (let n = 0; n < g.batch; n++) {
    for (let c = 0; c < g.inChannels; c++) {
      const inPlane = (n * g.inChannels + c) * g.inH * g.inW;
      const outPlane = (n * g.outChannels + g.padBefore + c) * g.outH * g.outW;
      for (let oy = 0; oy < g.outH; oy++) {
        for (let ox = 0; ox < g.outW; ox++) {
          copy(inPlane + oy * g.stride * g.inW + ox * g.stride, outPlane + oy * g.outW + ox);
        }
      }
    }
  }
}

export function shortcutPadForward(x: Float32Array, g: ShortcutGeometry): Float32Array {
  const y = new Float32Array(g.batch * g.outChannels * g.outH * g.outW);
  forEachKeptPixel(g, (i, o) => {
    y[o] = x[i];
  });
  return y;
}

export function shortcutPadBackward(gy: Float32Array, g: ShortcutGeometry): Float32Array {
  const gx = new Float32Array(g.batch * g.inChannels * g.inH * g.inW);
  forEachKeptPixel(g, (i, o) => {
    gx[i] = gy[o];
  });
  return gx;
}
