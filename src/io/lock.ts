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
  try {
    const fd = openSync(file, 'wx');
    writeSync(fd, `${process.pid}\n`);
    closeSync(fd);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

/** Lock `dir` (which must exist) for this process; `what` names the directory's use in the error. Returns the unlock. */
export function lockDirectory(dir: string, what: string): () => void {
  const key = resolve(dir);
  const file = join(dir, LOCK_FILE);
  if (held.has(key)) throw new DirectoryLockedError(`${dir} is in use by another ${what} in this process`);
  for (let attempt = 0; !tryCreate(file); attempt++) {
    const pid = Number(readFileSync(file, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
      throw new DirectoryLockedError(`${dir} is in use by another ${what} (pid ${pid}); wait for it, or stop it first`);
    }
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
