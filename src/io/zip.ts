/**
 * A read-only zip archive reader, enough for PyTorch checkpoints: it reads the central directory
 * (with zip64 records and extra fields), and entries that are stored or deflated, checking their
 * CRC-32. Multi-disk archives and encryption are refused.
 */
import { inflateRawSync } from 'node:zlib';
import { ByteReader, decodeUtf8 } from './bytes.js';
import { quoted } from '../util/text.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflated. */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  localHeaderOffset: number;
}

const SIGNATURE = {
  localHeader: 0x04034b50,
  centralHeader: 0x02014b50,
  endOfCentralDirectory: 0x06054b50,
  zip64End: 0x06064b50,
  zip64Locator: 0x07064b50,
};
const EOCD_SIZE = 22;
const ZIP64_LOCATOR_SIZE = 20;
const MAX_COMMENT = 0xffff;
const ZIP64_EXTRA_ID = 0x0001;
const NEEDS_ZIP64 = 0xffffffff;
const METHOD_STORED = 0;
const METHOD_DEFLATED = 8;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Starts with the zip local-file or empty-archive signature. */
export function looksLikeZip(bytes: Uint8Array): boolean {
  if (bytes.byteLength < 4) return false;
  const signature = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  return signature === SIGNATURE.localHeader || signature === SIGNATURE.endOfCentralDirectory;
}

/** The record is the last thing in the file but for its comment, whose length it holds. */
function findEndOfCentralDirectory(bytes: Uint8Array): number {
  const reader = new ByteReader(bytes);
  const lowest = Math.max(0, bytes.byteLength - EOCD_SIZE - MAX_COMMENT);
  for (let at = bytes.byteLength - EOCD_SIZE; at >= lowest; at--) {
    reader.pos = at;
    if (reader.u32() !== SIGNATURE.endOfCentralDirectory) continue;
    reader.pos = at + EOCD_SIZE - 2;
    if (reader.u16() === bytes.byteLength - at - EOCD_SIZE) return at; // else a signature inside the comment
  }
  throw new Error('not a valid zip archive: no end-of-central-directory record (truncated?)');
}

interface CentralDirectory {
  count: number;
  offset: number;
}

function readCentralDirectoryLocation(bytes: Uint8Array): CentralDirectory {
  const eocd = findEndOfCentralDirectory(bytes);
  const reader = new ByteReader(bytes, eocd + 4);
  const disk = reader.u16();
  const directoryDisk = reader.u16();
  reader.u16(); // entries on this disk
  let count = reader.u16();
  reader.u32(); // directory size
  let offset = reader.u32();
  if (disk !== 0 || directoryDisk !== 0) throw new Error('multi-disk zip archives are not supported');
  const locator = eocd - ZIP64_LOCATOR_SIZE;
  if (locator >= 0 && new ByteReader(bytes, locator).u32() === SIGNATURE.zip64Locator) {
    const zip64 = new ByteReader(bytes, new ByteReader(bytes, locator + 8).u64('the zip64 record offset'));
    if (zip64.u32() !== SIGNATURE.zip64End) throw new Error('zip64 end-of-central-directory record is missing');
    zip64.pos += 8 + 2 + 2 + 4 + 4 + 8; // record size, versions, disk numbers, entries on this disk
    count = zip64.u64('the zip64 entry count');
    zip64.u64(); // directory size
    offset = zip64.u64('the zip64 directory offset');
  }
  return { count, offset };
}

/** Replaces 32-bit fields that overflowed (0xffffffff) with their zip64 extra-field values. */
function applyZip64Extra(entry: ZipEntry, extra: Uint8Array): void {
  const reader = new ByteReader(extra);
  while (reader.remaining >= 4) {
    const id = reader.u16();
    const field = new ByteReader(reader.take(reader.u16(), 'a zip extra field'));
    if (id !== ZIP64_EXTRA_ID) continue;
    if (entry.size === NEEDS_ZIP64) entry.size = field.u64('the zip64 size');
    if (entry.compressedSize === NEEDS_ZIP64) entry.compressedSize = field.u64('the zip64 compressed size');
    if (entry.localHeaderOffset === NEEDS_ZIP64) entry.localHeaderOffset = field.u64('the zip64 header offset');
  }
}

function readCentralEntry(reader: ByteReader): ZipEntry {
  if (reader.u32() !== SIGNATURE.centralHeader) {
    throw new Error(`corrupt zip central directory at offset ${reader.pos - 4}`);
  }
  reader.pos += 4; // versions
  const flags = reader.u16();
  const method = reader.u16();
  reader.pos += 4; // time, date
  const crc = reader.u32();
  const compressedSize = reader.u32();
  const size = reader.u32();
  const nameLength = reader.u16();
  const extraLength = reader.u16();
  const commentLength = reader.u16();
  reader.pos += 8; // disk, attributes
  const localHeaderOffset = reader.u32();
  const name = decodeUtf8(reader.take(nameLength, 'a zip entry name'), 'a zip entry name');
  const entry: ZipEntry = { name, method, compressedSize, size, crc32: crc, localHeaderOffset };
  applyZip64Extra(entry, reader.take(extraLength, 'a zip extra field'));
  reader.take(commentLength, 'a zip comment');
  if (flags & 1) throw new Error(`zip entry ${quoted(name)} is encrypted`);
  if (method !== METHOD_STORED && method !== METHOD_DEFLATED) {
    throw new Error(`zip entry ${quoted(name)} uses compression method ${method} (only stored and deflated are supported)`);
  }
  return entry;
}

/**
 * Deflated entries may inflate to this many times the archive's length in all, plus INFLATE_SLACK:
 * tensor data compresses a little, a decompression bomb a thousandfold. Checked against the sizes
 * the directory declares, before inflating (and inflating stops at the declared size).
 */
const MAX_INFLATE_RATIO = 100;
const INFLATE_SLACK = 16 * 2 ** 20;

export class ZipArchive {
  readonly entries = new Map<string, ZipEntry>();
  #inflated = 0;

  constructor(private readonly bytes: Uint8Array) {
    const { count, offset } = readCentralDirectoryLocation(bytes);
    const reader = new ByteReader(bytes, offset);
    for (let i = 0; i < count; i++) {
      const entry = readCentralEntry(reader);
      if (this.entries.has(entry.name)) throw new Error(`zip entry ${quoted(entry.name)} appears twice`);
      this.entries.set(entry.name, entry);
    }
  }

  /** The uncompressed contents of an entry, CRC-checked. */
  read(name: string): Uint8Array {
    const entry = this.entries.get(name);
    if (!entry) throw new Error(`zip entry ${quoted(name)} is missing`);
    const header = new ByteReader(this.bytes, entry.localHeaderOffset);
    if (header.u32() !== SIGNATURE.localHeader) throw new Error(`zip entry ${quoted(name)}: corrupt local header`);
    header.pos += 22; // versions, flags, method, time, date, crc, sizes: the central directory has them
    const nameLength = header.u16();
    const extraLength = header.u16();
    header.pos += nameLength + extraLength;
    const stored = header.take(entry.compressedSize, `zip entry ${quoted(name)}`);
    if (entry.method === METHOD_DEFLATED) this.#claimInflated(entry);
    const data = entry.method === METHOD_STORED ? stored : inflate(stored, entry);
    if (data.byteLength !== entry.size) {
      throw new Error(`zip entry ${quoted(name)} has ${data.byteLength} bytes, the directory says ${entry.size}`);
    }
    if (crc32(data) !== entry.crc32) throw new Error(`zip entry ${quoted(name)} is corrupt (CRC mismatch)`);
    return data;
  }

  #claimInflated(entry: ZipEntry): void {
    this.#inflated += entry.size;
    const limit = MAX_INFLATE_RATIO * this.bytes.byteLength + INFLATE_SLACK;
    if (this.#inflated > limit) {
      throw new Error(
        `zip entry ${quoted(entry.name)} inflates to ${entry.size} bytes: the archive's entries would take ${this.#inflated} bytes, ` +
          `more than the ${limit} allowed for its ${this.bytes.byteLength} bytes (a decompression bomb?)`,
      );
    }
  }
}

function inflate(compressed: Uint8Array, entry: ZipEntry): Uint8Array {
  try {
    // the limit stops a corrupt or hostile entry from inflating beyond its declared size
    return inflateRawSync(compressed, { maxOutputLength: Math.max(entry.size, 1) });
  } catch (error) {
    throw new Error(`zip entry ${quoted(entry.name)} cannot be inflated: ${(error as Error).message}`);
  }
}
