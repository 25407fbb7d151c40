/**
 * One writer per directory: a `.lock` file holding the owner's pid, created atomically (O_EXCL), so
 * two processes (or two runs in one process) never train into, or run a grid in, the same
 * directory at once. A lock left by a process that no longer runs (killed) is taken over.
 */
import { openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** The directory is being written by another run. */
export class DirectoryLockedError extends Error {
  override name = 'DirectoryLockedError';
}

const LOCK_FILE = '.lock';
/** Directories this process holds, for a second run in the same process. */
const held = new Set<string>();

/** Whether a process with this pid exists (EPERM: it does, as another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tryCreate(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new Error(`cannot create the lock file ${file}: ${(e as Error).message}`, { cause: e });
  }
  try {
    writeSync(fd, `${process.pid}\n`);
  } catch (e) {
    rmSync(file, { force: true });
    throw new Error(`cannot write the lock file ${file}: ${(e as Error).message}`, { cause: e });
  } finally {
    closeSync(fd);
  }
  return true;
}

/** The pid of the live process other than this one holding `dir`'s lock, or null. */
export function lockOwner(dir: string): number | null {
  let text: string;
  try {
    text = readFileSync(join(dir, LOCK_FILE), 'utf8');
  } catch {
    return null;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid) ? pid : null;
}

/**
 * Wait until no other live process holds `dir`'s lock (polling), at most `timeoutMs`: for a writer
 * that is known to be stopping (a worker of a grid invocation that was killed). `onWait` is told the
 * owner's pid once; an aborted `signal` ends the wait early. Returns whether the lock is free.
 */
export async function waitForUnlock(dir: string, opts: { timeoutMs: number; onWait?: (pid: number) => void; signal?: AbortSignal }): Promise<boolean> {
  const deadline = Date.now() + opts.timeoutMs;
  let told = false;
  for (let pid = lockOwner(dir); pid !== null; pid = lockOwner(dir)) {
    if (Date.now() >= deadline || opts.signal?.aborted) return false;
    if (!told) opts.onWait?.(pid);
    told = true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** Lock `dir` (which must exist) for this process; `what` names the directory's use in the error. Returns the unlock. */
export function lockDirectory(dir: string, what: string): () => void {
  const key = resolve(dir);
  const file = join(dir, LOCK_FILE);
  if (held.has(key)) throw new DirectoryLockedError(`${dir} is in use by another ${what} in this process`);
  for (let attempt = 0; !tryCreate(file); attempt++) {
    const pid = lockOwner(dir);
    if (pid !== null) throw new DirectoryLockedError(`${dir} is in use by another ${what} (pid ${pid}); wait for it, or stop it first`);
    // A stale lock (its process is gone, or it is our own from a run that did not unlock): take it over once.
    if (attempt > 0) throw new DirectoryLockedError(`${dir}: cannot take over the stale lock ${file}`);
    rmSync(file, { force: true });
  }
  held.add(key);
  return () => {
    held.delete(key);
    rmSync(file, { force: true });
  };
}
