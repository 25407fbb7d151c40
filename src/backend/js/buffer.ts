/**
 * Buffers of the pure-TypeScript backend: a Float32Array in logical row-major layout plus its shape.
 * Every allocation is counted in a ledger shared with the backend that made it, so `liveBytes`
 * reports allocations minus frees and leak tests can see a buffer that was never freed.
 */
import type { BatchNormSaved, Buf, Shape } from '../backend.js';
import { numel, shapeStr } from '../backend.js';
import { fail } from './validate.js';

/** Bytes currently held by one backend's buffers and saved batch-norm states. */
export class Ledger {
  bytes = 0;
}

export class JsBuf implements Buf {
  readonly backend = 'js' as const;
  readonly shape: Shape;
  #data: Float32Array | null;
  readonly #ledger: Ledger;

  /** Takes ownership of `data` (callers pass a fresh array). */
  constructor(data: Float32Array, shape: Shape, ledger: Ledger) {
    if (data.length !== numel(shape)) {
      throw new Error(`JsBuf: ${data.length} values do not fill shape ${shapeStr(shape)}`);
    }
    this.#data = data;
    this.shape = Object.freeze([...shape]);
    this.#ledger = ledger;
    ledger.bytes += data.byteLength;
  }

  /** The stored values (not a copy); `op` and `what` name the use in the error for a freed buffer. */
  values(op: string, what: string): Float32Array {
    if (this.#data === null) fail(op, `${what} ${shapeStr(this.shape)} was already freed`);
    return this.#data;
  }

  /** Drops the values and their bytes from the ledger; a second release throws. */
  release(op: string): void {
    const data = this.values(op, 'buffer');
    this.#ledger.bytes -= data.byteLength;
    this.#data = null;
  }
}

/** What a training-mode batch norm hands to its backward: batch mean and 1 / sqrt(var + eps). */
export class JsBatchNormSaved implements BatchNormSaved {
  readonly backend = 'js' as const;
  #state: { mean: Float64Array; invStd: Float64Array } | null;
  readonly #ledger: Ledger;

  constructor(mean: Float64Array, invStd: Float64Array, ledger: Ledger) {
    this.#state = { mean, invStd };
    this.#ledger = ledger;
    ledger.bytes += mean.byteLength + invStd.byteLength;
  }

  get(op: string): { mean: Float64Array; invStd: Float64Array } {
    if (this.#state === null) fail(op, 'saved batch-norm state was already freed');
    return this.#state;
  }

  release(op: string): void {
    const { mean, invStd } = this.get(op);
    this.#ledger.bytes -= mean.byteLength + invStd.byteLength;
    this.#state = null;
  }
}

/** The values of a js buffer, with a clear error for a foreign or freed one. */
export function valuesOf(op: string, what: string, x: Buf): Float32Array {
  if (!(x instanceof JsBuf)) {
    fail(op, `${what} is not a js backend buffer (backend ${(x as Partial<Buf> | null)?.backend ?? String(x)})`);
  }
  return x.values(op, what);
}

export function savedOf(op: string, s: BatchNormSaved): JsBatchNormSaved {
  if (!(s instanceof JsBatchNormSaved)) fail(op, `saved state is not from the js backend (backend ${s?.backend})`);
  return s;
}
