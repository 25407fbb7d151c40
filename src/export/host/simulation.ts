/**
 * The addon's side of a simulated deployment's exact evaluation (src/export/simulate.ts): the
 * integer values a lowered conv or quantize op stores, computed from the float model's outputs by
 * the host int8 path's epilogue kernels (native/src/int8_simulate.hpp) instead of a JavaScript loop
 * per element. Same values as simulate.ts's loops, which remain the reference and the fallback.
 */
import type { NativeBuf } from '../../backend/native/addon.js';
import type { IntegerModel } from '../ir.js';
import { addonClass } from './engine.js';
import { type NativeModelSpec, nativeModelSpec } from './native-spec.js';

/** The addon's class (native/src/int8_binding.cc): the ops of one lowered model, by name. */
export interface NativeSimulation {
  /** A conv's stored values (real units, NCHW) from its float output before batch norm; see int8_simulate.hpp. */
  conv(name: string, conv: Float32Array, M: Float64Array, B: Float64Array, unit: number, shortcut: Float32Array | null, shortcutScale: number): Float32Array;
  /** A quantize op's codes (real units) of its input, whose integers are recovered at `step`. */
  quantize(name: string, x: Float32Array, step: number, unit: number): Float32Array;
  /** conv's values replaced in place (its own layout, no copy) by the conv's stored values; returns conv. Absent from older builds. */
  convBuffer?(name: string, conv: NativeBuf, M: Float64Array, B: Float64Array, unit: number, shortcut: NativeBuf | null, shortcutScale: number): NativeBuf;
  /** A quantize op's codes of x, a new buffer in x's layout. Absent from older builds. */
  quantizeBuffer?(name: string, x: NativeBuf, step: number, unit: number): NativeBuf;
}

type SimulationClass = new (spec: NativeModelSpec) => NativeSimulation;

/** The simulation of `model` by the addon, or why it cannot run here. */
export function nativeSimulation(model: IntegerModel): NativeSimulation | { readonly unavailable: string } {
  const ctor = addonClass<SimulationClass>('IntSimulation', 'the simulation kernels');
  return typeof ctor === 'string' ? { unavailable: ctor } : new ctor(nativeModelSpec(model));
}
