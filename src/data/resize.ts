/**
 * Image resizing by area averaging (a box filter over each output pixel's footprint): output pixel
 * j of an axis of n inputs and m outputs is the mean of the input over [j n/m, (j+1) n/m), input
 * pixels counted by the fraction of them the interval covers. Downscaling averages whole blocks
 * without aliasing; upscaling by an integer factor replicates pixels. Separable (rows, then
 * columns) in float, rounded to the nearest byte once at the end: the same bytes on every machine.
 */

/** The input pixels an output pixel covers, with the weight of each (weights sum to 1). */
interface Footprint {
  first: number;
  weights: Float64Array;
}

function footprints(inSize: number, outSize: number): Footprint[] {
  const scale = inSize / outSize;
  return Array.from({ length: outSize }, (_, j) => {
    const start = j * scale;
    const end = (j + 1) * scale;
    const first = Math.floor(start);
    const last = Math.min(inSize - 1, Math.ceil(end) - 1);
    const weights = new Float64Array(last - first + 1);
    for (let i = first; i <= last; i++) weights[i - first] = (Math.min(end, i + 1) - Math.max(start, i)) / scale;
    return { first, weights };
  });
}

/** Resize planar pixels (channels x height x width) to outHeight x outWidth by area averaging. */
export function resizeArea(
  pixels: Uint8Array,
  channels: number,
  height: number,
  width: number,
  outHeight: number,
  outWidth: number,
): Uint8Array {
  const columns = footprints(width, outWidth);
  const rows = footprints(height, outHeight);
  const out = new Uint8Array(channels * outHeight * outWidth);
  const widened = new Float64Array(height * outWidth);
  for (let c = 0; c < channels; c++) {
    const plane = c * height * width;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < outWidth; x++) {
        const { first, weights } = columns[x];
        let sum = 0;
        for (let k = 0; k < weights.length; k++) sum += weights[k] * pixels[plane + y * width + first + k];
        widened[y * outWidth + x] = sum;
      }
    }
    const outPlane = c * outHeight * outWidth;
    for (let y = 0; y < outHeight; y++) {
      const { first, weights } = rows[y];
      for (let x = 0; x < outWidth; x++) {
        let sum = 0;
        for (let k = 0; k < weights.length; k++) sum += weights[k] * widened[(first + k) * outWidth + x];
        out[outPlane + y * outWidth + x] = Math.min(255, Math.round(sum));
      }
    }
  }
  return out;
}
