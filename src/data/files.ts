/** File helpers for the data readers: gzip-transparent reads and atomic writes. */

import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { DataFileError } from './errors.js';

/** True when the bytes start with the gzip magic number. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** The most a gzipped data file may inflate to, and what that size is (for the error). */
export interface InflateLimit {
  maxBytes: number;
  /** E.g. 'a CIFAR-10 batch file': the error says the file inflates beyond what one holds. */
  what: string;
}

/**
 * Read a file whole, gunzipping it when it is gzip-compressed (whatever its name). With `limit`,
 * inflating stops (an error) past `limit.maxBytes`, so a small gzip bomb never takes the memory.
 */
export function readMaybeGzip(path: string, limit?: InflateLimit): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (err) {
    throw new DataFileError(path, `cannot read: ${(err as Error).message}`, { cause: err });
  }
  if (!isGzip(raw)) return raw;
  try {
    return gunzipSync(raw, limit ? { maxOutputLength: Math.max(limit.maxBytes, 1) } : {});
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' && limit) {
      throw new DataFileError(path, `inflates to more than ${limit.maxBytes} bytes, the most ${limit.what} holds (a decompression bomb, or not this dataset)`);
    }
    throw new DataFileError(path, `cannot gunzip (${(err as Error).message}); the file is corrupt or truncated`, { cause: err });
  }
}

/** Non-empty, trimmed lines of a text file or buffer (label name lists). */
export function textLines(text: string | Buffer): string[] {
  return text
    .toString('utf8')
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
}

/** The first existing path among `name` and `name.gz` in `dir`, or undefined. */
export function findPlainOrGz(dir: string, name: string): string | undefined {
  for (const candidate of [join(dir, name), join(dir, `${name}.gz`)]) {
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** A temporary file name next to `path`, so the final rename stays on one file system. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/**
 * Write `chunks` to `path` atomically: into a temp file in the same directory, fsync, then rename,
 * so readers never see a partial file. The temp file is removed when anything fails.
 */
export function writeFileAtomic(path: string, chunks: Uint8Array[]): void {
  const temp = tempPathFor(path);
  const fd = openSync(temp, 'w');
  try {
    for (const chunk of chunks) writeAll(fd, chunk);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(temp, path);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    rmSync(temp, { force: true });
    throw err;
  }
}

function writeAll(fd: number, chunk: Uint8Array): void {
  let written = 0;
  while (written < chunk.length) written += writeSync(fd, chunk, written, chunk.length - written);
}
