/** Decode JPEG/PNG bytes into planar (CHW) uint8 pixels. */

import jpeg from 'jpeg-js';
import pngjs from 'pngjs';

const { PNG } = pngjs;

export interface DecodedImage {
  width: number;
  height: number;
  /** Planes in `pixels`: the requested count, else the file's own (1 grey, 3 colour). */
  channels: ImageChannels;
  /** Whether the file itself is colour (JPEG with 3 components; PNG of a colour or palette type). */
  colour: boolean;
  /** channels * height * width bytes, planar. */
  pixels: Uint8Array;
}

export type ImageChannels = 1 | 3;

const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png'];

/** Whether a file name looks like an image this module decodes (hidden files excluded). */
export function isImageFileName(name: string): boolean {
  const base = name.slice(name.lastIndexOf('/') + 1).toLowerCase();
  return !base.startsWith('.') && IMAGE_EXTENSIONS.some((ext) => base.endsWith(ext));
}

/**
 * Decode by content (JPEG or PNG magic bytes, not the file name). With `channels` 3, colour images
 * become 3 planes (R, G, B) and grey ones are replicated; with `channels` 1, colour is reduced to
 * luma (ITU-R BT.601 weights); without `channels`, each file keeps its own colour model. Alpha is
 * dropped.
 */
export function decodeImage(bytes: Uint8Array, channels?: ImageChannels): DecodedImage {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return decodeJpeg(bytes, channels);
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
    return decodePng(bytes, channels);
  }
  throw new Error(`not a JPEG or PNG file (${bytes.length} bytes, starts with ${hexStart(bytes)})`);
}

function hexStart(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ') || 'nothing';
}

function decodeJpeg(bytes: Uint8Array, channels: ImageChannels | undefined): DecodedImage {
  const { width, height, data } = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxResolutionInMP: 64 });
  const stride = data.length / (width * height);
  if (stride !== 1 && stride !== 3) throw new Error(`unsupported JPEG with ${stride} components per pixel`);
  const colour = stride === 3;
  const planes = channels ?? (colour ? 3 : 1);
  return { width, height, channels: planes, colour, pixels: toPlanar(data, width, height, stride, planes) };
}

/** PNG colour types with colour samples: RGB (2), palette (3), RGBA (6); 0 and 4 are grey. */
const PNG_COLOUR_TYPES = [2, 3, 6];
/** Byte offset of the colour type in a PNG: 8-byte signature, IHDR length, type, width, height, bit depth. */
const PNG_COLOUR_TYPE_OFFSET = 25;

function decodePng(bytes: Uint8Array, channels: ImageChannels | undefined): DecodedImage {
  // pngjs expands every colour type and bit depth to 8-bit RGBA.
  const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
  const colour = PNG_COLOUR_TYPES.includes(bytes[PNG_COLOUR_TYPE_OFFSET]);
  const planes = channels ?? (colour ? 3 : 1);
  return { width: png.width, height: png.height, channels: planes, colour, pixels: toPlanar(png.data, png.width, png.height, 4, planes) };
}

/** Interleaved pixels (stride 1: grey, 3: RGB, 4: RGBA) to planar with `channels` planes. */
function toPlanar(
  data: Uint8Array,
  width: number,
  height: number,
  stride: number,
  channels: ImageChannels,
): Uint8Array {
  const plane = width * height;
  const out = new Uint8Array(plane * channels);
  if (stride === 1) {
    for (let c = 0; c < channels; c++) out.set(data.subarray(0, plane), c * plane);
    return out;
  }
  if (channels === 3) {
    for (let p = 0, i = 0; p < plane; p++, i += stride) {
      out[p] = data[i];
      out[plane + p] = data[i + 1];
      out[2 * plane + p] = data[i + 2];
    }
    return out;
  }
  for (let p = 0, i = 0; p < plane; p++, i += stride) {
    out[p] = Math.round(0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]);
  }
  return out;
}
