/**
 * Decode JPEG/PNG bytes into planar (CHW) uint8 pixels. The decoders are jpeg-js and pngjs; the
 * headers are read here first, so that a file declaring a huge image is refused before anything is
 * allocated and a JPEG of another colour model (CMYK, YCCK) is refused instead of being converted.
 */

import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { inflateSync } from 'node:zlib';
import { printable } from '../util/text.js';

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

/** The longest side decoded: a PNG decoder's cost grows with its rows, not just its pixels. */
export const MAX_IMAGE_SIDE = 4096;
/** The largest image decoded (4096 x 4096): a decoded image takes up to 4 bytes a pixel while it is converted. */
export const MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE;
/** The largest image file read from an archive (an uncompressed 4096 x 4096 RGBA PNG is 64 MiB). */
export const MAX_IMAGE_FILE_BYTES = 64 * 2 ** 20;

/** An image that cannot be decoded: corrupt, truncated, too large, or of an unsupported kind. */
export class ImageDecodeError extends Error {
  override name = 'ImageDecodeError';
}

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
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return decodeWith('JPEG', () => decodeJpeg(bytes, channels));
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
    return decodeWith('PNG', () => decodePng(bytes, channels));
  }
  throw new ImageDecodeError(`not a JPEG or PNG file (${bytes.length} bytes, starts with ${hexStart(bytes)})`);
}

/** Runs a decoder; whatever the library throws on a damaged file becomes an ImageDecodeError. */
function decodeWith(format: string, decode: () => DecodedImage): DecodedImage {
  try {
    return decode();
  } catch (err) {
    if (err instanceof ImageDecodeError) throw err;
    throw new ImageDecodeError(`corrupt or unsupported ${format}: ${printable((err as Error).message)}`, { cause: err });
  }
}

function checkDimensions(format: string, width: number, height: number): void {
  if (width < 1 || height < 1) throw new ImageDecodeError(`${format} declares ${width}x${height} pixels`);
  if (width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE) {
    throw new ImageDecodeError(`${format} declares ${width}x${height} pixels, more than the ${MAX_IMAGE_SIDE}x${MAX_IMAGE_SIDE} decoded at most`);
  }
}

function hexStart(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ') || 'nothing';
}

/** Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic): 0xC0-0xCF but DHT, JPG and DAC. */
const JPEG_FRAME_MARKERS = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

interface JpegFrame {
  width: number;
  height: number;
  components: number;
}

/** The frame header, found by walking the marker segments before the first scan. */
function jpegFrame(bytes: Uint8Array): JpegFrame {
  const u16 = (at: number): number => (bytes[at] << 8) | bytes[at + 1];
  for (let at = 2; at + 4 <= bytes.length; ) {
    if (bytes[at] !== 0xff) throw new ImageDecodeError(`corrupt JPEG: no marker at byte ${at}`);
    const marker = bytes[at + 1];
    if (marker === 0xff) {
      at++; // fill byte
      continue;
    }
    if (marker === 0xda || marker === 0xd9) break; // a scan or the end before any frame header
    if (JPEG_FRAME_MARKERS.has(marker)) {
      if (at + 10 > bytes.length) break;
      return { height: u16(at + 5), width: u16(at + 7), components: bytes[at + 9] };
    }
    at += 2 + ((marker >= 0xd0 && marker <= 0xd8) || marker === 0x01 ? 0 : u16(at + 2)); // RSTn, SOI and TEM stand alone
  }
  throw new ImageDecodeError('corrupt JPEG: no frame header before the image data');
}

function decodeJpeg(bytes: Uint8Array, channels: ImageChannels | undefined): DecodedImage {
  const frame = jpegFrame(bytes);
  if (frame.components !== 1 && frame.components !== 3) {
    const model = frame.components === 4 ? ' (CMYK or YCCK)' : '';
    throw new ImageDecodeError(`JPEG with ${frame.components} colour components${model}: only greyscale and RGB JPEGs are supported; convert it to RGB`);
  }
  checkDimensions('JPEG', frame.width, frame.height);
  // jpeg-js always gives 3 bytes a pixel (grey replicated) without alpha
  const { width, height, data } = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxResolutionInMP: MAX_IMAGE_PIXELS / 1e6 });
  if (width !== frame.width || height !== frame.height) throw new ImageDecodeError(`corrupt JPEG: decoded ${width}x${height}, the header says ${frame.width}x${frame.height}`);
  const colour = frame.components === 3;
  const planes = channels ?? (colour ? 3 : 1);
  return { width, height, channels: planes, colour, pixels: toPlanar(data, width, height, 3, planes) };
}

/** PNG colour types with colour samples: RGB (2), palette (3), RGBA (6); 0 and 4 are grey. */
const PNG_COLOUR_TYPES = [2, 3, 6];
/** Byte offset of the colour type in a PNG: 8-byte signature, IHDR length, type, width, height, bit depth. */
const PNG_COLOUR_TYPE_OFFSET = 25;

/** Samples a pixel by PNG colour type: grey, RGB, palette index, grey + alpha, RGBA. */
const PNG_SAMPLES: Readonly<Record<number, number>> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
/** Adam7 passes: first column and row, column and row steps. */
const ADAM7 = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]] as const;

/** The IHDR chunk comes first: its width and height, big-endian, at bytes 16 and 20, then depth, colour type, interlace. */
function checkPngHeader(bytes: Uint8Array): void {
  if (bytes.length < 33 || String.fromCharCode(...bytes.subarray(12, 16)) !== 'IHDR') throw new ImageDecodeError('corrupt PNG: no IHDR chunk first');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const [width, height] = [view.getUint32(16), view.getUint32(20)];
  checkDimensions('PNG', width, height);
  const samples = PNG_SAMPLES[bytes[PNG_COLOUR_TYPE_OFFSET]];
  if (samples === undefined) throw new ImageDecodeError(`corrupt PNG: colour type ${bytes[PNG_COLOUR_TYPE_OFFSET]}`);
  checkPngData(bytes, pngDataBytes(width, height, samples * bytes[24], bytes[28] === 1));
}

/** Bytes of a PNG's filtered image data: each row of each pass (one, or Adam7's seven) and its filter byte. */
function pngDataBytes(width: number, height: number, bitsPerPixel: number, interlaced: boolean): number {
  const passes = interlaced ? ADAM7 : [[0, 0, 1, 1] as const];
  let total = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const [w, h] = [Math.ceil(Math.max(0, width - x0) / dx), Math.ceil(Math.max(0, height - y0) / dy)];
    if (w > 0) total += h * (1 + Math.ceil((w * bitsPerPixel) / 8));
  }
  return total;
}

/**
 * The image data (IDAT chunks) must inflate to at least what the header declares: pngjs fills the
 * missing rows with zeros and reports no error (a truncated or damaged file decoded as an image).
 * Inflated only up to that size.
 */
function checkPngData(bytes: Uint8Array, needed: number): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const parts: Uint8Array[] = [];
  for (let at = 8; at + 8 <= bytes.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (type === 'IDAT') parts.push(bytes.subarray(at + 8, Math.min(bytes.length, at + 8 + length)));
    if (type === 'IEND') break;
    at += 12 + length;
  }
  let inflated: number;
  try {
    inflated = inflateSync(Buffer.concat(parts), { maxOutputLength: needed }).length;
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') return; // more than needed: decoders ignore the rest
    throw new ImageDecodeError(`corrupt or truncated PNG: the image data does not inflate to the ${needed} bytes its header needs (${printable((err as Error).message)})`);
  }
  if (inflated < needed) throw new ImageDecodeError(`corrupt or truncated PNG: the image data inflates to ${inflated} bytes, its header needs ${needed}`);
}

function decodePng(bytes: Uint8Array, channels: ImageChannels | undefined): DecodedImage {
  checkPngHeader(bytes);
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
