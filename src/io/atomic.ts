/**
 * Atomic file replacement: the data goes to a temp file in the target's directory, is flushed to
 * disk, and is renamed over the target; the directory is then flushed so that the rename itself
 * survives a crash. Readers, and a process killed at any moment, see either the previous file
 * or the complete new one, never a mix.
 *
 * A temp file outlives only a process that is killed mid-write; the next write of the same target
 * (or {@link removeStaleTempFiles} over its directory) removes such leftovers of processes that no
 * longer run.
 *
 * Fault-test hooks (environment, read once; never set them otherwise):
 * TINYQUANT_TEST_KILL_IN_WRITE=N[:PHASE] kills this process with SIGKILL inside its N-th atomic
 * write, PHASE `partial` (half of the data in the temp file; the default), `written` (the temp file
 * complete and flushed, not renamed) or `renamed` (renamed, the directory not yet flushed);
 * TINYQUANT_TEST_WRITE_PAUSE_MS=M pauses every write for M ms with half of its data in the temp file,
 * so that kills at random moments land inside writes often.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';

const TEMP_SUFFIX = '.tmp';

type FaultPhase = 'partial' | 'written' | 'renamed';

/** The test hooks of the module comment, from the environment. */
function faultHooks(env: NodeJS.ProcessEnv): { killAt: number; killPhase: FaultPhase; pauseMs: number } {
  const [at, phase = 'partial'] = (env.TINYQUANT_TEST_KILL_IN_WRITE ?? '').split(':');
  const killAt = at === '' ? 0 : Number(at);
  if (!Number.isInteger(killAt) || killAt < 0 || !['partial', 'written', 'renamed'].includes(phase)) {
    throw new Error(`TINYQUANT_TEST_KILL_IN_WRITE must be N[:partial|written|renamed], got "${env.TINYQUANT_TEST_KILL_IN_WRITE}"`);
  }
  const pauseMs = Number(env.TINYQUANT_TEST_WRITE_PAUSE_MS ?? 0);
  if (!(pauseMs >= 0)) throw new Error(`TINYQUANT_TEST_WRITE_PAUSE_MS must be a number of milliseconds, got "${env.TINYQUANT_TEST_WRITE_PAUSE_MS}"`);
  return { killAt, killPhase: phase as FaultPhase, pauseMs };
}

const hooks = faultHooks(process.env);
let writesStarted = 0;

function faultPoint(write: number, phase: FaultPhase): void {
  if (phase === 'partial' && hooks.pauseMs > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, hooks.pauseMs);
  if (write === hooks.killAt && phase === hooks.killPhase) process.kill(process.pid, 'SIGKILL');
}

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

/**
 * Removes the temp files in `dir` left by processes that were killed while writing (those of one
 * target's name when given); returns how many it removed.
 */
export function removeStaleTempFiles(dir: string, targetName?: string): number {
  let removed = 0;
  for (const entry of fs.readdirSync(dir)) {
    const m = /^\.(.+)\.(\d+)\.[0-9a-f]+\.tmp$/.exec(entry);
    if (!m || (targetName !== undefined && m[1] !== targetName)) continue;
    const pid = Number(m[2]);
    if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && !isProcessAlive(pid)) {
      fs.rmSync(path.join(dir, entry), { force: true });
      removed++;
    }
  }
  return removed;
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
  const write = ++writesStarted;
  let fd: number | null = null;
  try {
    removeStaleTempFiles(path.dirname(target), path.basename(target));
    fd = fs.openSync(temp, 'wx', 0o644);
    const half = bytes.byteLength >> 1;
    writeAllSync(fd, bytes.subarray(0, half));
    faultPoint(write, 'partial');
    writeAllSync(fd, bytes.subarray(half));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    faultPoint(write, 'written');
    fs.renameSync(temp, target);
    faultPoint(write, 'renamed');
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
