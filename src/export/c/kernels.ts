/**
 * Which convolution kernel of the C runtime each conv of a model runs, and the arena plan that
 * follows. The dual-MAC kernel (runtime-dsp.ts) takes dense convs (groups = 1) of 8- or 16-bit
 * inputs, any kernel, stride and padding; its scratch holds a block of decoded weight rows, so per
 * layer the largest block (all output channels, then halves, down to 2) is taken that leaves the
 * arena no larger than the generic kernels' plan. Everything else runs the generic kernels
 * (runtime.ts), with the reason in `notes`: grouped and depthwise convs, int32 inputs, residual
 * convs whose output is narrower than their shortcut (the plan may write them over it, which the
 * generic kernel's channel-by-channel order allows and the dual-MAC kernel's order does not), and
 * layers whose smallest block would grow the arena.
 */
import { type ConvOp, DTYPE_INFO, type IntegerModel } from '../ir.js';
import { type ArenaPlan, convScratchBytes, planArena } from './plan.js';

/** The kernel of one conv op: `dsp` with the output channels decoded at a time, or `generic`. */
export type ConvKernel = { readonly kind: 'dsp'; readonly block: number } | { readonly kind: 'generic' };

export interface KernelChoice {
  /** By op index (null for ops that are not convs). */
  readonly kernels: readonly (ConvKernel | null)[];
  readonly plan: ArenaPlan;
  /** One line per conv on the generic kernel that is not grouped or depthwise by design. */
  readonly notes: readonly string[];
}

/** Int16 entries of an im2col column (and a decoded weight row) of the dual-MAC kernel: the patch rounded up to 8 (runtime-dsp.ts). */
function columnLength(op: ConvOp): number {
  return Math.ceil((op.inChannels * op.kernel[0] * op.kernel[1]) / 8) * 8;
}

/** Scratch bytes of the dual-MAC kernel with `block` decoded weight rows (an odd block's last one twice) and two columns. */
export function dspScratchBytes(op: ConvOp, block: number): number {
  return 2 * columnLength(op) * (2 * Math.ceil(block / 2) + 2);
}

/** Why the dual-MAC kernel cannot take the conv at all, or null. */
function dspUnfit(model: IntegerModel, op: ConvOp): string | null {
  if (op.groups !== 1) return null; // grouped and depthwise convs have generic kernels of their own: no note
  if (model.tensors[op.input].dtype === 'int32') return 'int32 input (the dual MACs take 16-bit values)';
  // The plan may put such an output over its shortcut (plan.ts), which is safe only when written in index order.
  const shortcut = op.epilogue.kind === 'residual' ? op.epilogue.shortcut : null;
  if (shortcut && DTYPE_INFO[model.tensors[shortcut.input].dtype].bytes > DTYPE_INFO[model.tensors[op.output].dtype].bytes) {
    return 'output narrower than its shortcut: in place it must be written in index order';
  }
  return '';
}

/** Blocks to try, largest first: all output channels, then halves down to 2. */
function blocks(outChannels: number): number[] {
  const out: number[] = [];
  for (let b = outChannels; b > 2; b = Math.ceil(b / 2)) out.push(b);
  return [...out, Math.min(2, outChannels)];
}

export function chooseConvKernels(model: IntegerModel): KernelChoice {
  const kernels: (ConvKernel | null)[] = model.ops.map((op) => (op.kind === 'conv' ? { kind: 'generic' } : null));
  const scratch = (op: ConvOp, k: number): number => {
    const kernel = kernels[k];
    return kernel?.kind === 'dsp' ? dspScratchBytes(op, kernel.block) : convScratchBytes(model, op);
  };
  let plan = planArena(model, scratch);
  const limit = plan.bytes;
  const notes: string[] = [];
  model.ops.forEach((op, k) => {
    if (op.kind !== 'conv') return;
    const unfit = dspUnfit(model, op);
    if (unfit === null) return;
    if (unfit) {
      notes.push(`${op.name}: generic conv kernel (${unfit})`);
      return;
    }
    for (const block of blocks(model.tensors[op.output].shape[0])) {
      kernels[k] = { kind: 'dsp', block };
      const tried = planArena(model, scratch);
      if (tried.bytes <= limit) {
        plan = tried;
        return;
      }
    }
    kernels[k] = { kind: 'generic' };
    notes.push(`${op.name}: generic conv kernel (the dual-MAC kernel's scratch would grow the arena beyond ${limit} bytes)`);
  });
  return { kernels, plan, notes };
}
