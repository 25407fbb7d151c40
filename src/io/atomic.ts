/**
 * Atomic file replacement: the data goes to a temp file in the target's directory, is flushed to
 * disk, and is renamed over the target; the directory is then flushed so that the rename itself
 * survives a crash. Readers, and a process killed at any moment, see either the previous file
 * or the complete new one, never a mix.
 *
 * A temp file outlives only a process that is killed mid-write; the next write of the same target
 * removes such leftovers of processes that no longer run.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

const TEMP_SUFFIX = '.tmp';

/** `.<name>.<pid>.<random>.tmp`, next to the target. */
function tempPathFor(target: string): string {
  const name = `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`;
  return path.join(path.dirname(target), name);
}

function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/** Removes temp files for `target` left by processes that were killed while writing it. */
function removeStaleTempFiles(target: string): void {
  const dir = path.dirname(target);
  const prefix = `.${path.basename(target)}.`;
  for (const entry of fs.readdirSync(dir)) {
    if (!entry.startsWith(prefix) || !entry.endsWith(TEMP_SUFFIX)) continue;
    const pid = Number(entry.slice(prefix.length).split('.')[0]);
    if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && !isProcessAlive(pid)) {
      fs.rmSync(path.join(dir, entry), { force: true });
    }
  }
}

function writeAllSync(fd: number, data: Uint8Array): void {
  let written = 0;
  while (written < data.byteLength) {
    written += fs.writeSync(fd, data, written, data.byteLength - written);
  }
}

/** Flushes a directory entry table; some platforms (Windows) cannot open directories, which is fine. */
function fsyncDirectory(dir: string): void {
  let fd: number;
  try {
    fd = fs.openSync(dir, 'r');
  } catch {
    return;
  }
  try {
    fs.fsyncSync(fd);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM') throw error;
  } finally {
    fs.closeSync(fd);
  }
}

/** Replaces `target` with `data` atomically (see the module comment). Strings are written as UTF-8. */
export function writeFileAtomic(target: string, data: Uint8Array | string): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const temp = tempPathFor(target);
  let fd: number | null = null;
  try {
    removeStaleTempFiles(target);
    fd = fs.openSync(temp, 'wx', 0o644);
    writeAllSync(fd, bytes);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(temp, target);
  } catch (error) {
    if (fd !== null) fs.closeSync(fd);
    fs.rmSync(temp, { force: true });
    throw new Error(`cannot write ${target}: ${(error as Error).message}`, { cause: error });
  }
  fsyncDirectory(path.dirname(target));
}

/** Writes `value` as indented JSON (plus a final newline), atomically. */
export function writeJsonAtomic(target: string, value: unknown): void {
  writeFileAtomic(target, `${JSON.stringify(value, null, 2)}\n`);
}

/** Parses a JSON file; errors name the file. The caller validates the shape of the result. */
export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${file} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
}
