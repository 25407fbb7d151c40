/** A zip archive writer for tests, from the spec (APPNOTE 6.3), independent of the reader under test (src/io/zip.ts). */
import { deflateRawSync } from 'node:zlib';
import { crc32 } from '../src/io/zip.js';

export interface ZipOptions {
  deflate?: boolean;
  zip64?: boolean;
  comment?: string;
}

function u16(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff];
}
function u32(n: number): number[] {
  return [...u16(n & 0xffff), ...u16(n >>> 16)];
}
function u64(n: number): number[] {
  return [...u32(n % 2 ** 32), ...u32(Math.floor(n / 2 ** 32))];
}

export function buildZip(entries: [string, Uint8Array][], options: ZipOptions): Uint8Array {
  const { deflate = false, zip64 = false, comment = '' } = options;
  const out: number[] = [];
  const central: number[] = [];
  const field = (value: number) => (zip64 ? 0xffffffff : value);
  for (const [name, data] of entries) {
    const stored = deflate ? deflateRawSync(data) : data;
    const nameBytes = [...Buffer.from(name)];
    const offset = out.length;
    const zip64Extra = zip64 ? [...u16(1), ...u16(24), ...u64(data.length), ...u64(stored.length), ...u64(offset)] : [];
    const common = [...u16(zip64 ? 45 : 20), ...u16(0), ...u16(deflate ? 8 : 0), ...u32(0), ...u32(crc32(data))];
    const sizes = [...u32(field(stored.length)), ...u32(field(data.length))];
    const lengths = [...u16(nameBytes.length), ...u16(zip64Extra.length)];
    out.push(...u32(0x04034b50), ...common, ...sizes, ...lengths, ...nameBytes, ...zip64Extra);
    for (const b of stored) out.push(b); // a spread of a large entry would overflow the call stack
    central.push(...u32(0x02014b50), ...u16(45), ...common, ...sizes, ...lengths);
    central.push(...u16(0), ...u16(0), ...u16(0), ...u32(0), ...u32(field(offset)), ...nameBytes, ...zip64Extra);
  }
  const directoryOffset = out.length;
  out.push(...central);
  if (zip64) {
    const record = out.length;
    out.push(...u32(0x06064b50), ...u64(44), ...u16(45), ...u16(45), ...u32(0), ...u32(0));
    out.push(...u64(entries.length), ...u64(entries.length), ...u64(central.length), ...u64(directoryOffset));
    out.push(...u32(0x07064b50), ...u32(0), ...u64(record), ...u32(1));
  }
  const count = zip64 ? 0xffff : entries.length;
  const commentBytes = [...Buffer.from(comment)];
  out.push(...u32(0x06054b50), ...u16(0), ...u16(0), ...u16(count), ...u16(count));
  out.push(...u32(field(central.length)), ...u32(field(directoryOffset)), ...u16(commentBytes.length), ...commentBytes);
  return Uint8Array.from(out);
}
