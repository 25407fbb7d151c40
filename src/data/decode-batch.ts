/**
 * Decoding many small image files, inline or spread over worker threads. Files are grouped into
 * tasks whose bytes travel to a worker in one transferred buffer; results come back the same way.
 */

import { printable } from '../util/text.js';
import { DataFileError } from './errors.js';
import { type DecodedImage, decodeImage, type ImageChannels } from './image-decode.js';
import { WorkerPool } from './worker-pool.js';

export interface EncodedFile {
  /** Name used in errors (path inside the archive or folder). */
  name: string;
  data: Uint8Array;
}

export interface DecodedFile {
  name: string;
  width: number;
  height: number;
  channels: ImageChannels;
  /** Whether the file itself is colour (see {@link DecodedImage}). */
  colour: boolean;
  pixels: Uint8Array;
}

/** What a worker receives: files packed end to end. */
export interface DecodeTask {
  bytes: ArrayBuffer;
  /** File i spans bytes [ends[i-1], ends[i]). */
  ends: Uint32Array;
  /** Planes per decoded image; undefined keeps each file's own colour model. */
  channels?: ImageChannels;
}

/** What a worker returns: decoded planes end to end, or the first file that failed. */
export type DecodeTaskResult =
  | { pixels: ArrayBuffer; widths: Uint32Array; heights: Uint32Array; channels: Uint8Array; colour: Uint8Array }
  | { failedIndex: number; message: string };

/** Decode one task (runs in a worker or inline). */
export function runDecodeTask(task: DecodeTask): DecodeTaskResult {
  const source = new Uint8Array(task.bytes);
  const decoded = [];
  let start = 0;
  for (let i = 0; i < task.ends.length; i++) {
    try {
      decoded.push(decodeImage(source.subarray(start, task.ends[i]), task.channels));
    } catch (err) {
      return { failedIndex: i, message: (err as Error).message };
    }
    start = task.ends[i];
  }
  const total = decoded.reduce((n, d) => n + d.pixels.length, 0);
  const pixels = new Uint8Array(total);
  let at = 0;
  for (const d of decoded) {
    pixels.set(d.pixels, at);
    at += d.pixels.length;
  }
  return {
    pixels: pixels.buffer,
    widths: Uint32Array.from(decoded, (d) => d.width),
    heights: Uint32Array.from(decoded, (d) => d.height),
    channels: Uint8Array.from(decoded, (d) => d.channels),
    colour: Uint8Array.from(decoded, (d) => (d.colour ? 1 : 0)),
  };
}

const FILES_PER_TASK = 512;

/**
 * Accepts files as they are read (e.g. while an archive streams in) and decodes them in groups,
 * on `workers` threads or inline when `workers` is 0. `finish()` returns all files in `add` order.
 */
export class DecodeQueue {
  #channels: ImageChannels | undefined;
  #pool?: WorkerPool;
  #group: EncodedFile[] = [];
  #results: Promise<DecodedFile[]>[] = [];
  #where: string;

  /** `where` prefixes error messages (the archive or folder). */
  constructor(where: string, channels: ImageChannels | undefined, workers: number) {
    this.#where = where;
    this.#channels = channels;
    if (workers > 0) this.#pool = new WorkerPool('decode', workers, null);
  }

  add(file: EncodedFile): void {
    this.#group.push(file);
    if (this.#group.length >= FILES_PER_TASK) this.#dispatch();
  }

  async finish(): Promise<DecodedFile[]> {
    this.#dispatch();
    try {
      const groups = await Promise.all(this.#results);
      return groups.flat();
    } finally {
      await this.#pool?.close();
    }
  }

  /** Stop the workers, dropping unfinished work (after an error elsewhere). */
  async abort(): Promise<void> {
    await this.#pool?.close();
  }

  #dispatch(): void {
    if (this.#group.length === 0) return;
    const files = this.#group;
    this.#group = [];
    const task = packFiles(files, this.#channels);
    const pending = this.#pool
      ? this.#pool.run<DecodeTaskResult>(task, [task.bytes])
      : Promise.resolve(runDecodeTask(task));
    const unpacked = pending.then((result) => unpackResult(files, result, this.#where));
    unpacked.catch(() => undefined); // observed in finish(); avoid an unhandled rejection meanwhile
    this.#results.push(unpacked);
  }
}

function packFiles(files: EncodedFile[], channels: ImageChannels | undefined): DecodeTask {
  const ends = new Uint32Array(files.length);
  let total = 0;
  files.forEach((f, i) => (ends[i] = total += f.data.length));
  const bytes = new Uint8Array(total);
  files.forEach((f, i) => bytes.set(f.data, i === 0 ? 0 : ends[i - 1]));
  return { bytes: bytes.buffer, ends, channels };
}

function unpackResult(files: EncodedFile[], result: DecodeTaskResult, where: string): DecodedFile[] {
  if ('failedIndex' in result) {
    throw new DataFileError(`${where}: ${printable(files[result.failedIndex].name)}`, `cannot decode image: ${result.message}`);
  }
  const pixels = new Uint8Array(result.pixels);
  let at = 0;
  return files.map((f, i) => {
    const width = result.widths[i];
    const height = result.heights[i];
    const channels = result.channels[i] as DecodedImage['channels'];
    const length = channels * width * height;
    const decoded = { name: f.name, width, height, channels, colour: result.colour[i] === 1, pixels: pixels.subarray(at, at + length) };
    at += length;
    return decoded;
  });
}
