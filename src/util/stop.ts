/**
 * Stop requests inside long loops (training steps, evaluation batches, Hessian samples): an
 * AbortSignal checked between two units of work, after letting the event loop turn. Without that
 * turn a SIGINT/SIGTERM handler, an IPC disconnect or any other event never runs while every awaited
 * batch is already there (prefetched, or made on the calling thread), so a stop waited for the end
 * of the epoch.
 */

/** Thrown at a stop point once the signal is aborted; the caller saves what it must and stops. */
export class StopRequested extends Error {
  override name = 'StopRequested';
}

/** Let pending events (signals, IPC) run, then throw {@link StopRequested} if `signal` is aborted. No signal: nothing. */
export async function stopPoint(signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return;
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (signal.aborted) throw new StopRequested('stop requested');
}
