/**
 * `createEngine`: the integer engine on WebAssembly kernels where the JavaScript engine runs them
 * (Node 20, current browsers; SIMD128), else the TypeScript kernels; both give the same logits
 * bit for bit. Browser-safe.
 */
import { type Arithmetic, type EngineBackend, type InferenceEngine, IntegerEngine } from './engine.js';
import type { IntegerModel } from './ir.js';
import { WasmIntegerEngine, wasmSupported } from './wasm/engine.js';

export interface CreateEngineOptions {
  /** `auto` (default): wasm where supported, else ts. */
  readonly backend?: EngineBackend | 'auto';
  /** The TypeScript engine's arithmetic path; `shift-add` implies the ts backend (the wasm kernels multiply). */
  readonly arithmetic?: Arithmetic;
}

export const ENGINE_BACKENDS: readonly (EngineBackend | 'auto')[] = ['auto', 'wasm', 'ts'];

export async function createEngine(model: IntegerModel, opts: CreateEngineOptions = {}): Promise<InferenceEngine> {
  const backend = opts.backend ?? 'auto';
  if (!ENGINE_BACKENDS.includes(backend)) throw new Error(`engine: backend must be one of ${ENGINE_BACKENDS.join(', ')}, got "${backend}"`);
  const shiftAdd = opts.arithmetic === 'shift-add';
  if (backend === 'wasm' && shiftAdd) throw new Error('engine: arithmetic "shift-add" runs on the ts backend only (the wasm kernels multiply)');
  if (backend === 'wasm' || (backend === 'auto' && !shiftAdd && wasmSupported())) return WasmIntegerEngine.create(model);
  return new IntegerEngine(model, { arithmetic: opts.arithmetic });
}
