/** The quantization flags shared by train, eval and bench: --method, --wbits, --abits, --first-last. */
import type { Module } from '../nn/module.js';
import { type ParsedArgs, str } from './args.js';

export const quantizationOptions = {
  method: { type: 'string', default: 'float' },
  wbits: { type: 'string' },
  abits: { type: 'string' },
  'first-last': { type: 'string' },
} as const;

export interface QuantizationChoice {
  readonly method: string;
  readonly wbits: number;
  readonly abits: number;
}

/** Quantize the model in place as the flags say; float models are left alone. */
export function applyQuantizationFlags(_model: Module, args: ParsedArgs): QuantizationChoice {
  const method = str(args, 'method') ?? 'float';
  if (method !== 'float') throw new Error(`--method ${method}: quantization methods are not available yet`);
  return { method, wbits: 32, abits: 32 };
}
