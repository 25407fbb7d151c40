/**
 * A small streaming tar reader (POSIX ustar, GNU long names, pax extended headers), enough to
 * read image-folder archives without unpacking them. `.tar.gz` streams through zlib's gunzip.
 * Entry data is held only for the files a caller wants, and only up to the size it allows, so a
 * small archive (or a gzip bomb) declaring huge entries is refused before its data is buffered.
 */

import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createGunzip } from 'node:zlib';
import { DataFileError } from './errors.js';
import { printable, quoted } from '../util/text.js';

const BLOCK = 512;
/** GNU long names and pax headers are held in memory: this is more than any real one needs. */
const MAX_META_ENTRY_BYTES = 1 << 20;

export type TarEntryType = 'file' | 'directory' | 'other';

export interface TarEntry {
  /** Path inside the archive, without a leading './' or trailing '/'. */
  name: string;
  type: TarEntryType;
  size: number;
  /** File contents (empty for directories and other entry kinds). */
  data: Buffer;
}

export interface TarReadOptions {
  /** Which files to read (default: all); the others are skipped, not buffered, and not returned. */
  wants?: (name: string) => boolean;
  /** A wanted file larger than this is an error (default: no limit but the archive's own length). */
  maxEntryBytes?: number;
  /** Why the limit, for the error: e.g. 'an image file of 4096x4096 pixels at most'. */
  limitReason?: string;
}

/** A tar archive that cannot be read (corrupt, truncated, not gzip or tar, an entry too large). */
export class TarError extends DataFileError {
  override name = 'TarError';
}

/** Stream an archive's entries; gzip is detected from the file's first bytes. */
export async function* readTarFile(path: string, options: TarReadOptions = {}): AsyncGenerator<TarEntry> {
  const source = (await startsWithGzipMagic(path))
    ? createReadStream(path).pipe(createGunzip())
    : createReadStream(path);
  try {
    yield* readTar(source, path, options);
  } catch (err) {
    if (err instanceof TarError) throw err;
    throw new TarError(path, (err as Error).message, { cause: err });
  } finally {
    source.destroy();
  }
}

async function startsWithGzipMagic(path: string): Promise<boolean> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    throw new TarError(path, `cannot open: ${(err as Error).message}`, { cause: err });
  }
  try {
    const head = Buffer.alloc(2);
    const { bytesRead } = await handle.read(head, 0, 2, 0);
    return bytesRead === 2 && head[0] === 0x1f && head[1] === 0x8b;
  } finally {
    await handle.close();
  }
}

/** Parse a tar byte stream; `archive` names it in errors. */
export async function* readTar(chunks: AsyncIterable<Buffer>, archive: string, options: TarReadOptions = {}): AsyncGenerator<TarEntry> {
  const input = new ByteReader(chunks[Symbol.asyncIterator]());
  const fail = (message: string): never => {
    throw new TarError(archive, message);
  };
  let longName: string | undefined;
  let paxPath: string | undefined;
  let paxSize: number | undefined;
  for (;;) {
    const offset = input.position;
    const header = await input.read(BLOCK);
    if (header.length === 0 || isZeroBlock(header)) {
      // End of archive. Read the stream to its end anyway: gunzip checks its CRC and length there.
      await input.drain();
      return;
    }
    if (header.length < BLOCK) fail(`truncated tar header at byte ${offset}`);
    verifyChecksum(header, archive, offset);
    const typeFlag = String.fromCharCode(header[156] || 0x30);
    const size = paxSize ?? parseNumber(header.subarray(124, 136), archive, offset);
    if (typeFlag === 'g' || typeFlag === 'K') {
      await skipData(input, size, archive, offset); // global pax defaults, GNU long link targets: unused
      continue;
    }
    const isMeta = typeFlag === 'L' || typeFlag === 'x';
    const type = entryType(typeFlag);
    const name = isMeta ? '' : normalizeName(paxPath ?? longName ?? headerName(header));
    const wanted = isMeta || (type === 'file' && (options.wants?.(name) ?? true));
    if (!wanted) {
      await skipData(input, size, archive, offset);
      longName = paxPath = paxSize = undefined;
      if (type !== 'file') yield { name, type, size, data: Buffer.alloc(0) };
      continue;
    }
    checkEntrySize(size, isMeta ? metaLimit(typeFlag) : { max: options.maxEntryBytes, what: quoted(name), reason: options.limitReason }, offset, archive);
    const data = await input.read(size);
    if (data.length < size) fail(`truncated: entry at byte ${offset} needs ${size} bytes, archive ends after ${data.length}`);
    await input.skip(paddingAfter(size));
    if (typeFlag === 'L') {
      longName = cString(data);
      continue;
    }
    if (typeFlag === 'x') {
      const pax = parsePax(data);
      paxPath = pax.get('path');
      const sizeText = pax.get('size');
      paxSize = sizeText === undefined ? undefined : Number(sizeText);
      if (paxSize !== undefined && !(Number.isSafeInteger(paxSize) && paxSize >= 0 && /^\d+$/.test(sizeText!))) {
        fail(`pax header at byte ${offset} gives size "${printable(sizeText!)}", not a byte count`);
      }
      continue;
    }
    longName = paxPath = paxSize = undefined;
    yield { name, type, size, data };
  }
}

interface SizeLimit {
  max?: number;
  what: string;
  reason?: string;
}

function metaLimit(typeFlag: string): SizeLimit {
  return { max: MAX_META_ENTRY_BYTES, what: typeFlag === 'L' ? 'a GNU long name' : 'a pax header', reason: 'more than any real one needs' };
}

/** Refuses an entry larger than its limit before any of its data is read. */
function checkEntrySize(size: number, { max, what, reason }: SizeLimit, offset: number, archive: string): void {
  if (max !== undefined && size > max) {
    throw new TarError(archive, `${what} at byte ${offset} is ${size} bytes, more than the ${max} allowed${reason ? ` (${reason})` : ''}`);
  }
}

/** Skips an entry's data and padding, checking that the archive holds it. */
async function skipData(input: ByteReader, size: number, archive: string, offset: number): Promise<void> {
  const padded = size + paddingAfter(size);
  const skipped = await input.skip(padded);
  if (skipped < size) throw new TarError(archive, `truncated: entry at byte ${offset} needs ${size} bytes, archive ends after ${skipped}`);
}

function entryType(typeFlag: string): TarEntryType {
  if (typeFlag === '0' || typeFlag === '7') return 'file';
  if (typeFlag === '5') return 'directory';
  return 'other';
}

function paddingAfter(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return block.length === BLOCK;
}

/** ustar: the name is prefix + '/' + name when the prefix field (bytes 345..500) is used. */
function headerName(header: Buffer): string {
  const name = cString(header.subarray(0, 100));
  const isUstar = header.subarray(257, 262).toString('latin1') === 'ustar';
  const prefix = isUstar ? cString(header.subarray(345, 500)) : '';
  return prefix ? `${prefix}/${name}` : name;
}

function normalizeName(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
}

function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end < 0 ? bytes.length : end).toString('utf8');
}

/** Octal ASCII, or GNU base-256 (high bit of the first byte set) for large values. */
function parseNumber(field: Buffer, archive: string, offset: number): number {
  if (field[0] & 0x80) {
    let value = field[0] & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i];
    if (!Number.isSafeInteger(value)) throw new TarError(archive, `corrupt tar header at byte ${offset}: the size field (base-256) is beyond 2^53 bytes`);
    return value;
  }
  const text = cString(field).trim();
  if (!/^[0-7]*$/.test(text)) throw new TarError(archive, `corrupt tar header at byte ${offset}: size field ${quoted(text)}`);
  return text === '' ? 0 : parseInt(text, 8);
}

/** The checksum is the byte sum of the header with its own 8-byte field counted as spaces. */
function verifyChecksum(header: Buffer, archive: string, offset: number): void {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i];
  const stored = parseInt(cString(header.subarray(148, 156)).trim(), 8);
  if (stored !== sum) {
    throw new TarError(archive, `not a tar archive or corrupt tar header at byte ${offset} (checksum mismatch)`);
  }
}

/** pax records: "<length> <key>=<value>\n", length counting the whole record. */
function parsePax(data: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space < 0) break;
    const length = parseInt(data.subarray(at, space).toString('latin1'), 10);
    if (!(length > 0)) break;
    const record = data.subarray(space + 1, at + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) records.set(record.slice(0, eq), record.slice(eq + 1));
    at += length;
  }
  return records;
}

/** Reads exact byte counts from a chunk stream, copying only when a read spans chunks. */
class ByteReader {
  #chunks: AsyncIterator<Buffer>;
  #current: Buffer = Buffer.alloc(0);
  #offset = 0;
  #done = false;
  position = 0;

  constructor(chunks: AsyncIterator<Buffer>) {
    this.#chunks = chunks;
  }

  /** Up to `n` bytes; fewer only at the end of the stream. Memory grows with the bytes that arrive, not with `n`. */
  async read(n: number): Promise<Buffer> {
    const available = this.#current.length - this.#offset;
    if (available >= n) {
      const out = this.#current.subarray(this.#offset, this.#offset + n);
      this.#offset += n;
      this.position += n;
      return out;
    }
    const parts: Buffer[] = [];
    let filled = 0;
    while (filled < n) {
      if (this.#offset >= this.#current.length && !(await this.#nextChunk())) break;
      const take = Math.min(n - filled, this.#current.length - this.#offset);
      parts.push(this.#current.subarray(this.#offset, this.#offset + take));
      this.#offset += take;
      filled += take;
    }
    this.position += filled;
    return Buffer.concat(parts, filled);
  }

  /** Skips up to `n` bytes; returns how many there were. */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      if (this.#offset >= this.#current.length && !(await this.#nextChunk())) break;
      const take = Math.min(left, this.#current.length - this.#offset);
      this.#offset += take;
      this.position += take;
      left -= take;
    }
    return n - left;
  }

  /** Consume the rest of the stream (its contents are not needed). */
  async drain(): Promise<void> {
    while (await this.#nextChunk());
  }

  async #nextChunk(): Promise<boolean> {
    if (this.#done) return false;
    const next = await this.#chunks.next();
    if (next.done) {
      this.#done = true;
      return false;
    }
    this.#current = next.value;
    this.#offset = 0;
    return true;
  }
}
