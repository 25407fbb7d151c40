/**
 * The host integer path: a lowered model (ir.ts) run by the native addon, its convolutions as
 * oneDNN int8 convolutions (uint8/int8 activations x int8 weights, int32 accumulation: AVX-512
 * VNNI or AMX where present; on x86 without VNNI, whose int8 kernels saturate, oneDNN float32
 * direct convolutions of the same integers, with the weights split into narrower parts where a
 * layer's sums could pass 2^24, the end of float32's exact integers; `TINYQUANT_HOST_INT8=float`
 * forces that path) and everything else (requantization, activation codes, residual adds,
 * pooling) in C++ kernels with the integer engine's arithmetic. Same logits as `IntegerEngine`
 * (src/export/engine.ts), bit for bit, many times faster. Images run in batches (NHWC).
 */
import { defaultThreads } from '../../backend/index.js';
import { loadAddon } from '../../backend/native/addon.js';
import { argmaxRows } from '../int-ops.js';
import type { IntegerModel } from '../ir.js';
import { inputShape, tensorSize } from '../ir.js';
import { validateIntegerModel } from '../validate.js';
import { type NativeModelSpec, nativeModelSpec } from './native-spec.js';

/** The addon's class (native/src/int8_binding.cc). */
interface NativeIntModel {
  readonly threads: number;
  infer(images: Uint8Array, count: number): Int32Array;
  describe(): string[];
}

interface HostAddon {
  readonly IntModel?: new (spec: NativeModelSpec, threads: number, batch: number) => NativeIntModel;
}

export interface HostEngineOptions {
  /** OpenMP threads; default TINYQUANT_THREADS, else all cores. */
  readonly threads?: number;
  /** Images per pass (default 128): larger batches amortize the per-op overhead, smaller ones use less memory. */
  readonly batch?: number;
}

export type HostAvailability = { readonly available: true } | { readonly available: false; readonly reason: string };

/** A class the addon exports for the host int8 path (`what` it holds, for the message), or why it is not there. */
export function addonClass<T>(name: string, what: string): T | string {
  const load = loadAddon();
  if (!('addon' in load)) return `${load.reason}; to fix: ${load.fix}`;
  const ctor = (load.addon as unknown as Record<string, T | undefined>)[name];
  return ctor ?? `the native addon was built without ${what} (rebuild it: npm run build:native)`;
}

function loadIntModelClass(): NonNullable<HostAddon['IntModel']> | string {
  return addonClass<NonNullable<HostAddon['IntModel']>>('IntModel', 'the int8 path');
}

/** Whether the host int8 path can run here, and why not. */
export function hostEngineAvailability(): HostAvailability {
  const found = loadIntModelClass();
  return typeof found === 'string' ? { available: false, reason: found } : { available: true };
}

export class HostIntegerEngine {
  readonly model: IntegerModel;
  readonly inputShape: readonly [number, number, number];
  readonly imageSize: number;
  readonly classes: number;
  readonly threads: number;
  readonly batch: number;
  readonly #native: NativeIntModel;

  constructor(model: IntegerModel, opts: HostEngineOptions = {}) {
    const found = loadIntModelClass();
    if (typeof found === 'string') throw new Error(`host int8 engine: not available: ${found}`);
    const threads = opts.threads ?? defaultThreads();
    const batch = opts.batch ?? 128;
    if (!Number.isInteger(threads) || threads < 0) throw new Error(`host int8 engine: threads must be a non-negative integer, got ${threads}`);
    if (!Number.isInteger(batch) || batch < 1 || batch > 65536) throw new Error(`host int8 engine: batch must be an integer in [1, 65536], got ${batch}`);
    validateIntegerModel(model);
    this.model = model;
    this.inputShape = inputShape(model);
    this.imageSize = this.inputShape[0] * this.inputShape[1] * this.inputShape[2];
    this.classes = tensorSize(model.tensors[model.output]);
    this.batch = batch;
    this.#native = new found(nativeModelSpec(model), threads, batch);
    this.threads = this.#native.threads;
  }

  /** Int32 logits of one image: uint8, [C, H, W] planes (the CIFAR binary layout). */
  infer(image: Uint8Array): Int32Array {
    if (!(image instanceof Uint8Array) || image.length !== this.imageSize) {
      throw new Error(`host int8 engine: an image must be ${this.imageSize} bytes (uint8 [${this.inputShape.join(', ')}], channel planes), got ${image?.length ?? typeof image}`);
    }
    return this.#native.infer(image, 1);
  }

  /** Logits of `count` images stored back to back; count * classes values. */
  inferBatch(images: Uint8Array, count: number): Int32Array {
    if (!(images instanceof Uint8Array) || !Number.isInteger(count) || count < 0 || images.length !== count * this.imageSize) {
      throw new Error(`host int8 engine: ${count} images of uint8 [${this.inputShape.join(', ')}] need ${count * this.imageSize} bytes, got ${images?.length}`);
    }
    return this.#native.infer(images, count);
  }

  /** Top-1 class of each of `count` images (first maximum on ties). */
  predict(images: Uint8Array, count: number): Int32Array {
    return argmaxRows(this.inferBatch(images, count), this.classes);
  }

  /** The oneDNN implementation of each convolution (e.g. `brg:avx512_core_amx`), one line per conv. */
  describe(): string[] {
    return this.#native.describe();
  }
}
