/**
 * Worker thread entry for the data pipeline: `workerData.role` picks image decoding or batch
 * augmentation; each message is one task, answered with a {@link WorkerReply}.
 */

import { parentPort, workerData, type Transferable } from 'node:worker_threads';
import { runDecodeTask, type DecodeTask } from './decode-batch.js';
import { AugmentWorkerState, type AugmentSetup, type AugmentTask } from './augment.js';
import type { WorkerReply, WorkerRole } from './worker-pool.js';

type Handler = (task: never) => { result: unknown; transfer: Transferable[] };

function makeHandler(role: WorkerRole, setup: unknown): Handler {
  if (role === 'decode') {
    return (task: DecodeTask) => {
      const result = runDecodeTask(task);
      return { result, transfer: 'pixels' in result ? [result.pixels] : [] };
    };
  }
  const state = new AugmentWorkerState(setup as AugmentSetup);
  return (task: AugmentTask) => {
    const images = state.run(task).buffer as ArrayBuffer;
    return { result: images, transfer: [images] };
  };
}

const port = parentPort;
if (!port) throw new Error('data/worker.js must run as a worker thread');
const { role, setup } = workerData as { role: WorkerRole; setup: unknown };
const handle = makeHandler(role, setup);
port.on('message', ({ id, task }: { id: number; task: never }) => {
  let reply: WorkerReply;
  let transfer: Transferable[] = [];
  try {
    const done = handle(task);
    reply = { id, ok: true, result: done.result };
    transfer = done.transfer;
  } catch (err) {
    reply = { id, ok: false, error: (err as Error).message };
  }
  port.postMessage(reply, transfer);
});
