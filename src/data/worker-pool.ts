/**
 * A small pool of worker threads running this folder's `worker.js` for one role (image decoding or
 * batch augmentation). Tasks go to the least busy worker; a failure inside a worker rejects that
 * task's promise with the worker's message, a crashed worker rejects everything pending on it.
 * Idle workers are unref'd, so a pool that is never closed does not keep the process alive.
 */

import { Worker, type Transferable } from 'node:worker_threads';

export type WorkerRole = 'decode' | 'augment';

/** Worker -> main message. */
export type WorkerReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

interface Pending {
  resolve: (value: unknown) => void;
  reject: (reason: Error) => void;
}

interface PoolWorker {
  worker: Worker;
  pending: Map<number, Pending>;
  failure?: Error;
}

/** The worker script, next to this module both in src/ (as .ts) and in dist/ (as .js). */
const WORKER_URL = new URL('./worker.js', import.meta.url);

export class WorkerPool {
  readonly size: number;
  #workers: PoolWorker[];
  #nextId = 0;
  #closed = false;

  constructor(role: WorkerRole, size: number, setup: unknown) {
    if (!Number.isInteger(size) || size < 1) throw new Error(`worker pool: size must be a positive integer, got ${size}`);
    this.size = size;
    this.#workers = Array.from({ length: size }, (_, i) => this.#spawn(role, i, setup));
  }

  #spawn(role: WorkerRole, index: number, setup: unknown): PoolWorker {
    const worker = new Worker(WORKER_URL, { workerData: { role, setup }, name: `tinyquant-${role}-${index}` });
    const entry: PoolWorker = { worker, pending: new Map() };
    worker.unref();
    worker.on('message', (reply: WorkerReply) => this.#settle(entry, reply));
    worker.on('error', (err) => this.#fail(entry, new Error(`${role} worker ${index} crashed: ${err.message}`)));
    worker.on('exit', (code) => {
      if (!this.#closed) this.#fail(entry, new Error(`${role} worker ${index} exited unexpectedly (code ${code})`));
    });
    return entry;
  }

  /** Run one task; `transfer` lists buffers moved (not copied) to the worker. */
  run<Result>(task: unknown, transfer: Transferable[] = []): Promise<Result> {
    if (this.#closed) return Promise.reject(new Error('worker pool is closed'));
    const target = this.#leastBusy();
    if (target.failure) return Promise.reject(target.failure);
    const id = this.#nextId++;
    return new Promise<Result>((resolve, reject) => {
      target.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      if (target.pending.size === 1) target.worker.ref();
      target.worker.postMessage({ id, task }, transfer);
    });
  }

  #leastBusy(): PoolWorker {
    const healthy = this.#workers.filter((w) => !w.failure);
    const candidates = healthy.length > 0 ? healthy : this.#workers;
    return candidates.reduce((best, w) => (w.pending.size < best.pending.size ? w : best));
  }

  #settle(entry: PoolWorker, reply: WorkerReply): void {
    const pending = entry.pending.get(reply.id);
    if (!pending) return;
    entry.pending.delete(reply.id);
    if (entry.pending.size === 0) entry.worker.unref();
    if (reply.ok) pending.resolve(reply.result);
    else pending.reject(new Error(reply.error));
  }

  #fail(entry: PoolWorker, error: Error): void {
    entry.failure ??= error;
    for (const pending of entry.pending.values()) pending.reject(error);
    entry.pending.clear();
    entry.worker.unref();
  }

  /** Stop all workers; pending tasks are rejected. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closing = new Error('worker pool closed before the task finished');
    for (const entry of this.#workers) this.#fail(entry, closing);
    await Promise.all(this.#workers.map((w) => w.worker.terminate()));
  }
}
