/**
 * Tensors and reverse-mode autograd on a tape.
 *
 * A Tensor is a logical shape plus a backend buffer. Every op that runs with gradients enabled and
 * has at least one input that requires a gradient appends a node to the tape; `backward` walks the
 * tape in reverse. Memory is released deterministically: tensors created inside `tidy` are freed
 * when it returns (except the ones it returns), and the tape nodes recorded inside it go with them.
 * Parameters and optimizer state live outside any scope and are never freed implicitly.
 */
import { type Backend, type Buf, type Shape, numel, shapeStr } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';

/** One recorded op: how to turn the gradient of its output into gradients of its inputs. */
export interface TapeNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  readonly output: Tensor;
  /**
   * One entry per input: its gradient, or null when it needs none. Owns nothing of gOut.
   * `pending(input)` is the gradient accumulated so far for an input produced by a recorded op
   * (undefined for leaves and inputs with none yet); an op may add its gradient into it in place
   * and return that very buffer, which saves the separate accumulation pass.
   */
  backward(gOut: Buf, pending: (input: Tensor) => Buf | undefined): (Buf | null)[];
  /** Free what the op saved for backward (not its input or output tensors). */
  release?(): void;
}

let gradEnabled = true;
const tape: TapeNode[] = [];
const scopes: Set<Tensor>[] = [];

export class Tensor {
  readonly shape: Shape;
  /** Gradient accumulated by `backward` (leaves that require a gradient only). */
  grad: Tensor | null = null;
  requiresGrad: boolean;
  /** The node that produced this tensor, when it was recorded on the tape. */
  node: TapeNode | null = null;
  #buf: Buf | null;

  constructor(buf: Buf, requiresGrad = false) {
    this.#buf = buf;
    this.shape = buf.shape;
    this.requiresGrad = requiresGrad;
    scopes.at(-1)?.add(this);
  }

  static fromArray(data: Float32Array | readonly number[], shape: Shape, requiresGrad = false): Tensor {
    const values = data instanceof Float32Array ? data : Float32Array.from(data);
    if (values.length !== numel(shape)) {
      throw new Error(`Tensor.fromArray: ${values.length} values do not fill shape ${shapeStr(shape)}`);
    }
    return new Tensor(getBackend().upload(values, shape), requiresGrad);
  }

  static zeros(shape: Shape, requiresGrad = false): Tensor {
    return new Tensor(getBackend().zeros(shape), requiresGrad);
  }

  static full(shape: Shape, value: number, requiresGrad = false): Tensor {
    return Tensor.fromArray(new Float32Array(numel(shape)).fill(value), shape, requiresGrad);
  }

  get buf(): Buf {
    if (this.#buf === null) throw new Error(`tensor ${shapeStr(this.shape)} was used after it was freed`);
    return this.#buf;
  }

  get size(): number {
    return numel(this.shape);
  }

  get disposed(): boolean {
    return this.#buf === null;
  }

  /** Logical row-major values. */
  toArray(): Float32Array {
    return getBackend().download(this.buf);
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`item(): tensor has shape ${shapeStr(this.shape)}, not one element`);
    return this.toArray()[0];
  }

  /** Replace the values (same shape); the tensor keeps its identity (for parameters). */
  assign(values: Float32Array): void {
    if (values.length !== this.size) {
      throw new Error(`assign: ${values.length} values for a tensor of shape ${shapeStr(this.shape)}`);
    }
    this.replaceBuf(getBackend().upload(values, this.shape));
  }

  /** Swap in another buffer of the same shape, freeing the old one. */
  replaceBuf(buf: Buf): void {
    if (numel(buf.shape) !== this.size) throw new Error('replaceBuf: shape mismatch');
    if (this.#buf) getBackend().free(this.#buf);
    this.#buf = buf;
  }

  /** A tensor sharing nothing with the tape: a copy of the values without gradient history. */
  detach(): Tensor {
    return new Tensor(getBackend().clone(this.buf));
  }

  dispose(): void {
    if (this.#buf === null) return;
    getBackend().free(this.#buf);
    this.#buf = null;
    this.grad?.dispose();
    this.grad = null;
    scopes.at(-1)?.delete(this);
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Run fn without recording on the tape (evaluation). */
export function noGrad<T>(fn: () => T): T {
  const before = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = before;
  }
}

/** Whether an op with these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  return gradEnabled && inputs.some((t) => t?.requiresGrad === true);
}

/** Sees every op as it runs (the graph tracer); null when nothing is tracing. */
export type OpObserver = (op: string, inputs: readonly Tensor[], output: Tensor) => void;
let opObserver: OpObserver | null = null;

/** Run fn with `observer` seeing every op it runs. */
export function observeOps<T>(observer: OpObserver, fn: () => T): T {
  const before = opObserver;
  opObserver = observer;
  try {
    return fn();
  } finally {
    opObserver = before;
  }
}

/**
 * Wrap an op result as a tensor and record the node when any input requires a gradient. The
 * `backward` closure receives the output gradient and returns one gradient (or null) per input.
 */
export function record(
  op: string,
  out: Buf,
  inputs: readonly Tensor[],
  backward: TapeNode['backward'],
  release?: () => void,
): Tensor {
  const result = new Tensor(out);
  opObserver?.(op, inputs, result);
  if (needsGrad(...inputs)) {
    result.requiresGrad = true;
    const node: TapeNode = { op, inputs, output: result, backward, release };
    result.node = node;
    tape.push(node);
  } else {
    release?.();
  }
  return result;
}

/** Tensors reachable from a value returned by tidy: those are kept. */
function collectTensors(value: unknown, into: Set<Tensor>, seen = new Set<unknown>()): void {
  if (value instanceof Tensor) {
    into.add(value);
  } else if (value !== null && typeof value === 'object' && !seen.has(value)) {
    seen.add(value);
    for (const v of Object.values(value as Record<string, unknown>)) collectTensors(v, into, seen);
  }
}

/**
 * Run fn in a memory scope: every tensor it creates and does not return is freed when it ends,
 * and the tape nodes it recorded are released. Returned tensors move to the enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  const tapeStart = tape.length;
  scopes.push(scope);
  let result: T | undefined;
  try {
    result = fn();
    return result;
  } finally {
    scopes.pop();
    releaseTape(tapeStart);
    const kept = new Set<Tensor>();
    collectTensors(result, kept);
    const parent = scopes.at(-1);
    for (const t of scope) {
      if (kept.has(t)) {
        t.node = null;
        parent?.add(t);
      } else {
        t.dispose();
      }
    }
  }
}

/** Keep a tensor alive past the end of the current scope (it becomes the caller's to dispose). */
export function keep<T extends Tensor>(t: T): T {
  for (const scope of scopes) scope.delete(t);
  return t;
}

function releaseTape(from: number): void {
  for (let i = tape.length - 1; i >= from; i--) {
    const node = tape[i];
    node.release?.();
    node.output.node = null;
  }
  tape.length = from;
}

function accumulate(grads: Map<Tensor, Buf>, t: Tensor, g: Buf, backend: Backend): void {
  const existing = grads.get(t);
  if (existing === g) return; // the op accumulated into the pending gradient itself
  if (existing) {
    backend.axpyInPlace(existing, g, 1);
    backend.free(g);
  } else {
    grads.set(t, g);
  }
}

/** Leaf gradients accumulate into `grad`, which lives outside every scope (like parameters). */
function accumulateLeaf(t: Tensor, g: Buf, backend: Backend): void {
  if (t.grad) {
    backend.axpyInPlace(t.grad.buf, g, 1);
    backend.free(g);
  } else {
    const saved = scopes.splice(0, scopes.length);
    t.grad = new Tensor(g);
    scopes.push(...saved);
  }
}

/**
 * Reverse-mode sweep from `root` (a scalar unless `gradient` is given). Leaves that require a
 * gradient (no producing node) receive it in `.grad`; the tape is consumed.
 */
export function backward(root: Tensor, gradient?: Tensor): void {
  const backend = getBackend();
  if (!root.node) throw new Error(`backward: the tensor ${shapeStr(root.shape)} was not produced by a recorded op`);
  if (!gradient && root.size !== 1) {
    throw new Error(`backward: root has shape ${shapeStr(root.shape)}; pass a gradient for non-scalar roots`);
  }
  const grads = new Map<Tensor, Buf>();
  grads.set(root, gradient ? backend.clone(gradient.buf) : backend.upload(Float32Array.of(1), root.shape));
  const pending = (t: Tensor): Buf | undefined => (t.node ? grads.get(t) : undefined);
  const start = tape.indexOf(root.node);
  for (let i = start; i >= 0; i--) {
    const node = tape[i];
    const gOut = grads.get(node.output);
    if (!gOut) continue;
    grads.delete(node.output);
    const gIns = node.backward(gOut, pending);
    backend.free(gOut);
    node.inputs.forEach((input, k) => {
      const g = gIns[k];
      if (!g) return;
      if (!input.requiresGrad) backend.free(g);
      else if (input.node) accumulate(grads, input, g, backend);
      else accumulateLeaf(input, g, backend);
    });
  }
  for (const g of grads.values()) backend.free(g);
  releaseTape(0);
}

/** Nodes currently on the tape (for tests and diagnostics). */
export function tapeLength(): number {
  return tape.length;
}
