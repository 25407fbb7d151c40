/** The quantization flags shared by train, eval and bench: --method, --wbits, --abits, --first-last, --per-channel. */
import type { Module } from '../nn/module.js';
import { type FirstLastPolicy, type QuantizationSummary, firstLastPolicies, quantize } from '../quant/quantize.js';
import { type MethodName, methodNames } from '../quant/quantizer.js';
import { type Options, type ParsedArgs, UsageError, flag, num, oneOf } from './args.js';

const METHODS = ['float', ...methodNames] as const;

export const quantizationOptions: Options = {
  method: { type: 'string', value: METHODS.join('|'), description: 'quantization method (float: none)' },
  wbits: { type: 'string', value: 'W', description: 'weight bits' },
  abits: { type: 'string', value: 'A', description: 'activation bits (default: the weight bits)' },
  'first-last': { type: 'string', value: firstLastPolicies.join('|'), description: 'how the first and last layers are quantized' },
  'per-channel': { type: 'boolean', description: 'weight quantizers per output channel instead of per layer' },
};

export interface QuantizationChoice {
  readonly method: MethodName | 'float';
  readonly wbits: number;
  readonly abits: number;
  readonly firstLast: FirstLastPolicy;
  readonly perChannel: boolean;
}

export function quantizationChoice(args: ParsedArgs): QuantizationChoice {
  const method = oneOf(args, 'method', METHODS, 'float');
  if (method === 'float') return { method, wbits: 32, abits: 32, firstLast: 'float', perChannel: false };
  const wbits = num(args, 'wbits', { integer: true, min: 1, fallback: 4 });
  const abits = num(args, 'abits', { integer: true, min: 1, fallback: wbits });
  const firstLast = oneOf(args, 'first-last', firstLastPolicies, 'int8');
  return { method, wbits, abits, firstLast, perChannel: flag(args, 'per-channel') };
}

/** Quantize the model in place as chosen; float leaves it alone and returns null. */
export function applyQuantization(model: Module, q: QuantizationChoice): QuantizationSummary | null {
  if (q.method === 'float') return null;
  try {
    return quantize(model, { method: q.method, wbits: q.wbits, abits: q.abits, firstLast: q.firstLast, perChannel: q.perChannel });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}
