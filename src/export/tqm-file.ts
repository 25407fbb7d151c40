/** tqm files on disk (Node): written atomically, read with errors that name the file. */
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../io/atomic.js';
import type { IntegerModel } from './ir.js';
import { TqmError, decodeTqm, encodeTqm } from './tqm.js';

/**
 * Encode (which validates the model) and write: temp file in the same directory, then rename. A
 * failure leaves no file behind and the previous one, if any, untouched. Returns the bytes written.
 */
export function writeTqm(path: string, model: IntegerModel): number {
  const bytes = encodeTqm(model);
  writeFileAtomic(path, bytes);
  return bytes.length;
}

export function readTqm(path: string): IntegerModel {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new TqmError(`${path}: cannot read: ${(e as Error).message}`);
  }
  try {
    return decodeTqm(bytes);
  } catch (e) {
    throw new TqmError(`${path}: ${(e as Error).message}`, { cause: e });
  }
}
