/**
 * Entry of a worker process forked by the executor: receives one WorkerRequest over IPC, runs it,
 * and reports progress and the outcome as WorkerMessages. The backend's threads come from
 * TINYQUANT_THREADS, set by the executor. SIGINT/SIGTERM, and the executor's end (the IPC channel
 * closes when it is killed), make a training run save and stop at its next step: an orphaned worker
 * never trains on beside the executor's next invocation.
 */
import { WORKER_EXIT, type WorkerMessage, type WorkerRequest } from './protocol.js';
import { runTask } from './tasks.js';

function send(message: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send || !process.connected) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

if (!process.send) {
  console.error('tinyquant: this module is a worker of `tinyquant run`, not a command');
  process.exit(2);
}

const stop = new AbortController();
const requestStop = (): void => stop.abort();
for (const s of ['SIGINT', 'SIGTERM', 'disconnect'] as const) process.on(s, requestStop);
// Output goes to pipes the executor reads: once it is gone, a write must not end the worker.
for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});

process.once('message', (request: WorkerRequest) => {
  void (async () => {
    // IPC keeps messages in order: once the last one is handed over, all are.
    let lastSent = Promise.resolve();
    const result = await runTask(request, (m) => (lastSent = send(m)), stop.signal);
    await lastSent;
    const code = result.type === 'done' ? WORKER_EXIT.finished : result.type === 'interrupted' ? WORKER_EXIT.interrupted : result.type === 'failed' && result.diverged ? WORKER_EXIT.diverged : WORKER_EXIT.failed;
    if (process.connected) process.disconnect();
    process.exit(code);
  })();
});
