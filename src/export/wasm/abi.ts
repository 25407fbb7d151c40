/**
 * The descriptors the WebAssembly kernels (source.ts) read: one struct per op kind, every field an
 * int32 (numbers, dtype tags, byte offsets into the module's memory), so the layout is the field
 * order and nothing else. The lists below are the one definition: source.ts emits the C typedefs
 * from them and engine.ts writes descriptors with them. Browser-safe.
 */
import { DTYPES, type DType } from '../ir.js';

export const STRUCTS = {
  /**
   * An activation quantization, the ceiling folded into the rule (clip.ts). count = -1: uniform
   * rounding; narrow_shift = -1: the thresholds do not narrow to int16 (source.ts activation_row).
   */
  tqw_activation: ['floor', 'count', 'thresholds', 'values', 'narrow_shift', 'thresholds8', 'steps8', 'frac_bits', 'min_code', 'max_code'],
  tqw_conv_op: [
    'input', 'in_dtype', 'in_c', 'in_h', 'in_w', 'output', 'out_dtype', 'out_c', 'out_h', 'out_w',
    'kernel_h', 'kernel_w', 'stride_h', 'stride_w', 'pad_h', 'pad_w', 'groups', 'kpad', 'weights',
    'mult', 'shift', 'bias', 'epilogue', 'activation', 'lo', 'hi',
    'sc', 'sc_dtype', 'sc_c', 'sc_h', 'sc_w', 'sc_stride', 'sc_offset', 'sc_mult', 'sc_shift',
    'hwc', 'columns', 'acc', 'row', 'sc_row',
  ],
  tqw_quantize_op: ['input', 'in_dtype', 'output', 'out_dtype', 'channels', 'plane', 'per_channel', 'mult', 'shift', 'bias', 'activation', 'row'],
  tqw_pool_op: ['max', 'channels', 'in_h', 'in_w', 'out_h', 'out_w', 'kernel_h', 'kernel_w', 'stride_h', 'stride_w', 'pad_h', 'pad_w', 'in_dtype', 'out_dtype', 'input', 'output'],
  tqw_add_op: ['size', 'a_mult', 'b_mult', 'lo', 'hi', 'a_shift', 'b_shift', 'a_dtype', 'b_dtype', 'out_dtype', 'a', 'b', 'output'],
  tqw_input_op: ['image', 'lut', 'output', 'out_dtype', 'channels', 'plane'],
} as const; // prettier-ignore

export type StructName = keyof typeof STRUCTS;
export type StructValues<S extends StructName> = Readonly<Record<(typeof STRUCTS)[S][number], number>>;

/** Conv epilogue tags (tqw_conv.epilogue). */
export const EPILOGUE_TAG = { activation: 0, residual: 1, logits: 2 } as const;

/** Thresholds up to this count are scanned with SIMD compares; more take the runtime's binary search. */
export const SIMD_THRESHOLDS = 48;

/** The runtime's dtype tags (runtime.ts: TQ_INT8, TQ_UINT8, TQ_INT16, TQ_INT32), ir.ts's DTYPES order. */
export function dtypeTag(dtype: DType): number {
  return DTYPES.indexOf(dtype);
}

/** A descriptor's int32 fields in struct order. */
export function encodeStruct<S extends StructName>(name: S, values: StructValues<S>): Int32Array {
  return Int32Array.from(STRUCTS[name] as readonly (keyof StructValues<S>)[], (field) => {
    const v = values[field];
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new Error(`wasm engine: ${name}.${String(field)} = ${v} is not an int32`);
    return v;
  });
}

/** The C typedefs of the descriptors. */
export function cStructs(): string {
  return Object.entries(STRUCTS)
    .map(([name, fields]) => `typedef struct {\n    int32_t ${fields.join(', ')};\n} ${name};\n`)
    .join('\n');
}
