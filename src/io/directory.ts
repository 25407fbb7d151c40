/**
 * Output directories created with a clear error. Node's own `mkdirSync(dir, { recursive: true })`
 * never returns for a path under /proc (procfs answers ENOENT for a new child of a directory that
 * exists, and Node's walk retries the parent forever), so missing components are created here one at
 * a time, top down, each with a plain mkdir.
 */
import { mkdirSync, rmdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * Create `dir` and its missing parents; `what` names its use in errors ("run directory"). Returns the
 * directories it created, the top one first (empty when `dir` existed).
 */
export function makeDirectory(dir: string, what: string): string[] {
  const missing: string[] = [];
  for (let at = resolve(dir); ; at = dirname(at)) {
    let isDirectory: boolean;
    try {
      isDirectory = statSync(at).isDirectory();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(at) === at) throw new Error(`cannot create the ${what} ${dir}: ${(e as Error).message}`);
      missing.unshift(at);
      continue;
    }
    if (!isDirectory) throw new Error(`cannot create the ${what} ${dir}: ${at} is not a directory`);
    break;
  }
  const created: string[] = [];
  for (const at of missing) {
    try {
      mkdirSync(at);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST' && statSync(at).isDirectory()) continue; // made meanwhile by another process
      throw new Error(`cannot create the ${what} ${dir}: ${(e as Error).message}`);
    }
    created.push(at);
  }
  return created;
}

/** Remove directories {@link makeDirectory} created, deepest first, as long as they are empty. */
export function removeCreatedDirectories(created: readonly string[]): void {
  for (const at of [...created].reverse()) {
    try {
      rmdirSync(at);
    } catch {
      return; // not empty (or gone): keep it and its parents
    }
  }
}
