/** Bounds-checked binary reading and the error type of the tensor file readers. */
import * as fs from 'node:fs';

/** A tensor file could not be read: `file` names it, the message says what is wrong and where. */
export class TensorFileError extends Error {
  constructor(
    readonly file: string,
    detail: string,
    options?: ErrorOptions,
  ) {
    super(`${file}: ${detail}`, options);
    this.name = 'TensorFileError';
  }
}

/**
 * Runs a parser, turning any error it throws into a TensorFileError naming `file` (parsers throw
 * plain Errors; the name of the file is added once, here).
 */
export function withFileContext<T>(file: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof TensorFileError) throw error;
    throw new TensorFileError(file, (error as Error).message ?? String(error), { cause: error });
  }
}

/** The contents of a file; a failure to read it is a TensorFileError naming it. */
export function readFileBytes(file: string): Uint8Array {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    throw new TensorFileError(file, `cannot read: ${(error as Error).message}`, { cause: error });
  }
}

/** Little-endian reads that fail with a clear message instead of reading past the end. */
export class ByteReader {
  readonly view: DataView;
  pos: number;

  constructor(
    readonly bytes: Uint8Array,
    pos = 0,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = pos;
  }

  get remaining(): number {
    return this.bytes.byteLength - this.pos;
  }

  /** Advances over `n` bytes and returns where they start. */
  private claim(n: number, what: string): number {
    if (!Number.isSafeInteger(n) || n < 0 || n > this.remaining) {
      throw new Error(
        `truncated or corrupt: ${what} needs ${n} bytes at offset ${this.pos}, only ${Math.max(this.remaining, 0)} left`,
      );
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u8(what = 'a byte'): number {
    return this.bytes[this.claim(1, what)];
  }

  u16(what = 'a 16-bit integer'): number {
    return this.view.getUint16(this.claim(2, what), true);
  }

  u32(what = 'a 32-bit integer'): number {
    return this.view.getUint32(this.claim(4, what), true);
  }

  i32(what = 'a 32-bit integer'): number {
    return this.view.getInt32(this.claim(4, what), true);
  }

  /** An unsigned 64-bit integer that must fit in a JavaScript number. */
  u64(what = 'a 64-bit integer'): number {
    const value = this.view.getBigUint64(this.claim(8, what), true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${what} is too large: ${value}`);
    return Number(value);
  }

  i64(what = 'a 64-bit integer'): bigint {
    return this.view.getBigInt64(this.claim(8, what), true);
  }

  f64BigEndian(what = 'a float'): number {
    return this.view.getFloat64(this.claim(8, what), false);
  }

  /** The next `n` bytes (a view into the underlying buffer). */
  take(n: number, what = 'data'): Uint8Array {
    const at = this.claim(n, what);
    return this.bytes.subarray(at, at + n);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeUtf8(bytes: Uint8Array, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new Error(`${what} is not valid UTF-8`);
  }
}
