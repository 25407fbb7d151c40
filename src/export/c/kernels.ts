/**
 * Which convolution kernel of the C runtime each conv of a model runs, and the arena plan that
 * follows. The dual-MAC kernel (runtime-dsp.ts) takes dense convs (groups = 1) of 8- or 16-bit
 * inputs, any kernel, stride and padding; its scratch holds a block of decoded weight rows, so per
 * layer the largest block (all output channels, then halves, down to 2) is taken that leaves the
 * arena no larger than the generic kernels' plan. The triple-MAC kernel (runtime-triple.ts) takes
 * such convs instead where their values and weights are small enough for its 10-bit fields to
 * hold at least 4 dot steps (tripleChunk), at the dual-MAC blocks or larger ones that keep the
 * arena as it is. The depthwise kernel (runtime-dsp.ts) takes 3x3 depthwise convs of 8- or 16-bit
 * inputs where its padded input plane leaves the arena as large.
 * Everything else runs the generic kernels (runtime.ts), with the reason in `notes` where a dual-MAC
 * kernel could have taken the conv: int32 inputs, residual convs whose output is narrower than their
 * shortcut (the plan may write them over it, which the generic kernel's channel-by-channel order
 * allows and the dual-MAC kernel's order does not), and layers whose smallest block or padded plane
 * would grow the arena; grouped convs and depthwise convs of other kernels have no note.
 *
 * Packed activations: a tensor of activation codes in 0..15 (a quantize op's or an activation
 * epilogue's output) is stored two codes a byte when every conv reading it as its input runs the
 * dual-MAC kernel (its im2col unpacks; the generic kernel reads inputs through typed pointers);
 * the other readers (quantize, pool, add, shortcuts) load elements through the runtime's tagged
 * load, which unpacks. A tensor whose conv reader ends on the generic kernel is unpacked and the
 * choice redone. `report` says what packing and in place saved and which tensors make the peak.
 */
import { ruleWithCeiling } from '../clip.js';
import { type ActivationQuant, type ConvOp, DTYPE_INFO, type IntegerModel, tensorSize } from '../ir.js';
import { type ArenaPlan, alignUp, convScratchBytes, planArena } from './plan.js';

/**
 * The kernel of one conv op: `dsp` with the output channels decoded at a time, `triple` (the
 * triple-MAC kernel, runtime-triple.ts) likewise, with the dot steps between reading its fields, `depthwise` (the
 * 3x3 depthwise kernel over a zero-padded copy of each input plane), or `generic`.
 */
export type ConvKernel =
  | { readonly kind: 'dsp'; readonly block: number }
  | { readonly kind: 'triple'; readonly block: number; readonly chunk: number }
  | { readonly kind: 'depthwise' }
  | { readonly kind: 'generic' };

export interface KernelChoice {
  /** By op index (null for ops that are not convs). */
  readonly kernels: readonly (ConvKernel | null)[];
  readonly plan: ArenaPlan;
  /** One line per conv on the generic kernel that is not grouped or depthwise by design. */
  readonly notes: readonly string[];
  /** What the layout choices saved and what makes the peak (for the export report and the bench). */
  readonly report: readonly string[];
}

/** Int16 entries of an im2col column (and a decoded weight row) of the dual-MAC kernel: the patch rounded up to 8 (runtime-dsp.ts). */
function columnLength(op: ConvOp): number {
  return Math.ceil((op.inChannels * op.kernel[0] * op.kernel[1]) / 8) * 8;
}

/** Scratch bytes of the dual-MAC kernel with `block` decoded weight rows (an odd block's last one twice) and two columns. */
export function dspScratchBytes(op: ConvOp, block: number): number {
  return 2 * columnLength(op) * (2 * Math.ceil(block / 2) + 2);
}

/** Words of a decoded weight row (and an im2col column) of the triple-MAC kernel: the patch in triples, rounded up to 4 (runtime-triple.ts). */
function tripleWords(op: ConvOp): number {
  return Math.ceil((op.inChannels * op.kernel[0] * op.kernel[1]) / 3 / 4) * 4;
}

/** Scratch bytes of the triple-MAC kernel with `block` decoded weight rows (an odd block's last one twice) and two columns. */
export function tripleScratchBytes(op: ConvOp, block: number): number {
  return 4 * tripleWords(op) * (2 * Math.ceil(block / 2) + 2);
}

/** The triple-MAC kernel's field limits (runtime-triple.ts): the sum read from a signed 10-bit field, the low part below 2^19. */
const TRIPLE_FIELD = { sum: 511, low: 2 ** 19 - 1 } as const;
/** The least useful chunk: the dot's unroll. */
const TRIPLE_UNROLL = 4;

/**
 * The dot steps between reading the triple-MAC kernel's fields (runtime-triple.ts): the largest
 * multiple of 4 with 3 n P <= 511 and 2049 n P < 2^19 (P = the largest |input value| times the
 * largest |weight level|) that divides the row's words (a multiple of 4); null when that is
 * below 4 (or the input is not 8- or 16-bit): the layer stays on the dual-MAC kernel.
 */
export function tripleChunk(model: IntegerModel, op: ConvOp): number | null {
  const input = model.tensors[op.input];
  if (input.dtype === 'int32') return null;
  const product = Math.max(Math.abs(input.range[0]), Math.abs(input.range[1])) * op.weights.levels.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const steps = product === 0 ? Infinity : Math.min(Math.floor(TRIPLE_FIELD.sum / (3 * product)), Math.floor(TRIPLE_FIELD.low / (2049 * product)));
  const words = tripleWords(op);
  for (let chunk = Math.floor(Math.min(steps, words) / TRIPLE_UNROLL) * TRIPLE_UNROLL; chunk >= TRIPLE_UNROLL; chunk -= TRIPLE_UNROLL) if (words % chunk === 0) return chunk;
  return null;
}

/** Scratch bytes of the depthwise kernel: one input plane as int16 with the padding its windows cover. */
export function depthwiseScratchBytes(model: IntegerModel, op: ConvOp): number {
  const [, outH, outW] = model.tensors[op.output].shape;
  return alignUp(2 * ((outH - 1) * op.stride[0] + 3) * ((outW - 1) * op.stride[1] + 3));
}

/** Whether the depthwise kernel takes the conv: 3x3, one input channel per group, 8- or 16-bit input. */
function depthwiseFits(model: IntegerModel, op: ConvOp): boolean {
  return op.inChannels === op.groups && op.kernel[0] === 3 && op.kernel[1] === 3 && model.tensors[op.input].dtype !== 'int32';
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

/** Smallest and largest code an activation quantization writes. */
function codeRange(q: ActivationQuant): [number, number] {
  const rule = ruleWithCeiling(q);
  return rule.kind === 'thresholds' ? [Math.min(...rule.values), Math.max(...rule.values)] : [rule.minCode, rule.maxCode];
}

/** Tensors whose codes fit a nibble and whose conv readers (as input) are dense: the candidates for packing. */
function packable(model: IntegerModel): Set<number> {
  const out = new Set<number>();
  model.ops.forEach((op) => {
    const q = op.kind === 'quantize' ? op : op.kind === 'conv' && op.epilogue.kind === 'activation' ? op.epilogue : null;
    if (!q || op.output === model.output || DTYPE_INFO[model.tensors[op.output].dtype].bytes !== 1) return;
    const [lo, hi] = codeRange(q);
    if (lo >= 0 && hi <= 15) out.add(op.output);
  });
  for (const op of model.ops) if (op.kind === 'conv' && dspUnfit(model, op) !== '') out.delete(op.input);
  return out;
}

/** Packed tensors read as input by a conv on the generic kernel. */
function unpackedReaders(model: IntegerModel, kernels: readonly (ConvKernel | null)[], packed: ReadonlySet<number>): number[] {
  return model.ops.flatMap((op, k) => (op.kind === 'conv' && kernels[k]?.kind !== 'dsp' && packed.has(op.input) ? [op.input] : []));
}

/** The op at which the plan's live buffers are largest, and its live bytes. */
function peakOf(model: IntegerModel, plan: ArenaPlan): { readonly op: number; readonly bytes: number } {
  const live = (k: number): number => plan.buffers.reduce((s, b) => s + (b.first <= k && k <= b.last ? b.bytes : 0), 0);
  let peak = { op: 0, bytes: live(0) };
  for (let k = 1; k < model.ops.length; k++) {
    const bytes = live(k);
    if (bytes > peak.bytes) peak = { op: k, bytes };
  }
  return peak;
}

/**
 * The tensors to pack: the packable ones live at the peak of the generic kernels' plan (which
 * bounds the arena), peak after peak, until no peak has one; of these steps the first with the
 * smallest plan. Unpacking costs instructions (im2col, the epilogue's nibble store), so tensors
 * that would not lower the arena stay bytes.
 */
function packForPeak(model: IntegerModel): Set<number> {
  const candidates = packable(model);
  const packed = new Set<number>();
  let plan = planArena(model);
  let best = { bytes: plan.bytes, packed: new Set<number>() };
  for (;;) {
    const { op } = peakOf(model, plan);
    const add = plan.buffers.filter((b) => b.first <= op && op <= b.last).flatMap((b) => b.tensors.filter((t) => candidates.has(t) && !packed.has(t)));
    if (add.length === 0) return best.packed;
    for (const t of add) packed.add(t);
    plan = planArena(model, undefined, { packed });
    if (plan.bytes < best.bytes) best = { bytes: plan.bytes, packed: new Set(packed) };
  }
}

/**
 * `pack`: store 4-bit activation codes two a byte where that lowers the arena (default off: it
 * costs instructions). `budget`: arena bytes the layout may use: blocks are the largest that keep
 * the arena within it (rather than within the generic kernels' plan), and with `pack` only as
 * many tensors are packed as it takes to get there (the smallest arena when no choice gets there).
 */
export function chooseConvKernels(model: IntegerModel, pack = false, budget?: number): KernelChoice {
  const packed = !pack ? new Set<number>() : budget === undefined ? packForPeak(model) : packForBudget(model, budget);
  for (;;) {
    const choice = chooseFor(model, packed, budget);
    const drop = unpackedReaders(model, choice.kernels, packed);
    if (drop.length === 0) return { ...choice, report: report(model, choice, packed.size === 0 ? choice.plan : chooseFor(model, new Set(), budget).plan) };
    for (const t of drop) packed.delete(t);
  }
}

/**
 * Packed tensors for an arena budget: one at a time, of the packable tensors live at the peak the
 * one whose conv readers unpack the fewest codes (elements x window x the passes their block
 * makes over the input), until the plan fits; packForPeak's choice when it never does.
 */
function packForBudget(model: IntegerModel, budget: number): Set<number> {
  const candidates = packable(model);
  const packed = new Set<number>();
  for (;;) {
    const { kernels, plan } = chooseFor(model, packed, budget);
    if (plan.bytes <= budget) return packed;
    const { op } = peakOf(model, plan);
    const live = plan.buffers.filter((b) => b.first <= op && op <= b.last).flatMap((b) => b.tensors.filter((t) => candidates.has(t) && !packed.has(t)));
    if (live.length === 0) return packForPeak(model);
    const cost = (t: number): number => unpackedCodes(model, kernels, t);
    packed.add(live.reduce((a, b) => (cost(b) < cost(a) ? b : a)));
  }
}

/** Codes of tensor t that its conv readers' im2col unpacks: elements x window x the passes over the input (output channels / block). */
function unpackedCodes(model: IntegerModel, kernels: readonly (ConvKernel | null)[], t: number): number {
  const size = tensorSize(model.tensors[t]);
  return model.ops.reduce((sum, op, k) => {
    const kernel = kernels[k];
    if (op.kind !== 'conv' || op.input !== t) return sum;
    const passes = kernel?.kind === 'dsp' ? Math.ceil(model.tensors[op.output].shape[0] / kernel.block) : 1;
    return sum + size * op.kernel[0] * op.kernel[1] * passes;
  }, 0);
}

/** One line per fast conv kernel family naming its layers (the triple-MAC kernel's with the dot steps between field reads), for the export report and the bench. */
export function kernelLayers(model: IntegerModel, kernels: readonly (ConvKernel | null)[]): string[] {
  const triple: string[] = [];
  const dual: string[] = [];
  model.ops.forEach((op, k) => {
    const kernel = kernels[k];
    if (op.kind !== 'conv' || !kernel) return;
    if (kernel.kind === 'triple') triple.push(`${op.name} (block ${kernel.block}, every ${kernel.chunk} steps)`);
    else if (kernel.kind === 'dsp') dual.push(`${op.name} (block ${kernel.block})`);
  });
  return [
    ...(triple.length > 0 ? [`triple-MAC kernel (3 MACs per MLA; fields read every n steps): ${triple.join(', ')}`] : []),
    ...(dual.length > 0 ? [`dual-MAC kernel: ${dual.join(', ')}`] : []),
  ];
}

/** Lines on the arena: what packing and in place saved against the plain layout, and the tensors live at the peak. */
function report(model: IntegerModel, choice: Omit<KernelChoice, 'report'>, unpacked: ArenaPlan): string[] {
  const { plan, kernels } = choice;
  const scratch = (op: ConvOp, k: number): number => scratchOf(model, kernels[k], op);
  const copies = planArena(model, scratch, { packed: plan.packed, inPlace: false });
  const aliased = plan.buffers.reduce((s, b) => s + Math.max(0, b.tensors.length - 1), 0);
  const { op: peak, bytes } = peakOf(model, plan);
  const op = model.ops[peak];
  const parts = plan.buffers
    .filter((b) => b.first <= peak && peak <= b.last)
    .sort((a, b) => b.bytes - a.bytes)
    .map((b) => {
      if (b.scratchOf >= 0) return `scratch of ${(model.ops[b.scratchOf] as ConvOp).name} ${b.bytes}`;
      const t = model.tensors[b.tensors[b.tensors.length - 1]];
      return `${t.name} ${plan.packed.has(b.tensors[0]) ? 'packed u4' : t.dtype} ${t.shape.join('x')} ${b.bytes}`;
    });
  return [
    `arena ${plan.bytes} bytes: packed 4-bit activations (${plan.packed.size} tensors) save ${unpacked.bytes - plan.bytes} (${unpacked.bytes} unpacked); ` +
      `in place (${aliased} tensors written over an input) saves ${copies.bytes - plan.bytes} (${copies.bytes} without)`,
    `arena peak ${bytes} bytes at ${op.kind === 'input' ? 'the input' : op.name} (${op.kind}): ${parts.join(', ')}`,
  ];
}

/** Scratch bytes of a conv on the given kernel. */
function scratchOf(model: IntegerModel, kernel: ConvKernel | null, op: ConvOp): number {
  if (kernel?.kind === 'dsp') return dspScratchBytes(op, kernel.block);
  if (kernel?.kind === 'triple') return tripleScratchBytes(op, kernel.block);
  return kernel?.kind === 'depthwise' ? depthwiseScratchBytes(model, op) : convScratchBytes(model, op);
}

/** The kernel choice for a given set of packed tensors, blocks within the generic kernels' plan or the budget, whichever is larger. */
function chooseFor(model: IntegerModel, packed: ReadonlySet<number>, budget = 0): Omit<KernelChoice, 'report'> {
  const kernels: (ConvKernel | null)[] = model.ops.map((op) => (op.kind === 'conv' ? { kind: 'generic' } : null));
  const scratch = (op: ConvOp, k: number): number => scratchOf(model, kernels[k], op);
  let plan = planArena(model, scratch, { packed });
  const limit = Math.max(plan.bytes, budget);
  const notes = new Map<number, string>();
  const tooLarge: number[] = [];
  model.ops.forEach((op, k) => {
    if (op.kind !== 'conv') return;
    const unfit = dspUnfit(model, op);
    if (unfit) {
      notes.set(k, `${op.name}: generic conv kernel (${unfit})`);
      return;
    }
    const tries = candidates(model, op, unfit === null);
    if (!tries) return;
    // The first candidate (largest first) whose scratch keeps the arena within the generic kernels' plan.
    for (const kernel of tries.kernels) {
      kernels[k] = kernel;
      const tried = planArena(model, scratch, { packed });
      if (tried.bytes <= limit) {
        plan = tried;
        return;
      }
    }
    kernels[k] = { kind: 'generic' };
    if (unfit === '') tooLarge.push(k);
    notes.set(k, `${op.name}: ${tries.fallback} (the ${tries.scratch} would grow the arena beyond ${limit} bytes)`);
  });
  const triple = withTriple(model, packed, kernels, plan, budget > 0 ? Math.max(plan.bytes, budget) : plan.bytes, tooLarge);
  return { ...triple, notes: [...notes].flatMap(([k, note]) => (triple.kernels[k]?.kind === 'generic' ? [note] : [])) };
}

/**
 * The dual-MAC choice with the triple-MAC kernel wherever its chunk allows (not for packed
 * inputs: it has no nibble im2col): first at the same blocks (its scratch is smaller), then layer
 * by layer its block as large as keeps the arena within `limit` (the dual-MAC choice's arena, or
 * the budget); the dense convs in `tooLarge` (generic: no dual-MAC block fitted) take its largest
 * block that fits. So no layer gives up a kernel and the arena does not grow; the dual-MAC choice
 * as it was if the swap alone would grow it.
 */
function withTriple(
  model: IntegerModel,
  packed: ReadonlySet<number>,
  kernels: readonly (ConvKernel | null)[],
  plan: ArenaPlan,
  limit: number,
  tooLarge: readonly number[],
): { kernels: (ConvKernel | null)[]; plan: ArenaPlan } {
  const chunkOf = (op: ConvOp): number | null => (packed.has(op.input) ? null : tripleChunk(model, op));
  const next = model.ops.map((op, k): ConvKernel | null => {
    const kernel = kernels[k];
    const chunk = op.kind === 'conv' && kernel?.kind === 'dsp' ? chunkOf(op) : null;
    return chunk !== null && kernel?.kind === 'dsp' ? { kind: 'triple', block: kernel.block, chunk } : kernel;
  });
  const scratch = (op: ConvOp, k: number): number => scratchOf(model, next[k], op);
  let best = planArena(model, scratch, { packed });
  if (best.bytes > limit) return { kernels: [...kernels], plan };
  model.ops.forEach((op, k) => {
    const kernel = next[k];
    if (op.kind !== 'conv') return;
    const chunk = kernel?.kind === 'triple' ? kernel.chunk : tooLarge.includes(k) ? chunkOf(op) : null;
    if (chunk === null) return;
    const smallest = kernel?.kind === 'triple' ? kernel.block : 0;
    for (const block of blocks(model.tensors[op.output].shape[0]).filter((b) => b > smallest)) {
      next[k] = { kind: 'triple', block, chunk };
      const tried = planArena(model, scratch, { packed });
      if (tried.bytes <= limit) {
        best = tried;
        return;
      }
    }
    next[k] = kernel;
  });
  return { kernels: next, plan: best };
}

/** The kernels a conv may take besides the generic one, largest scratch first, and what the note says when none fits; null: none. */
function candidates(model: IntegerModel, op: ConvOp, grouped: boolean): { kernels: ConvKernel[]; fallback: string; scratch: string } | null {
  if (!grouped) return { kernels: blocks(model.tensors[op.output].shape[0]).map((block) => ({ kind: 'dsp', block })), fallback: 'generic conv kernel', scratch: "dual-MAC kernel's scratch" };
  return depthwiseFits(model, op) ? { kernels: [{ kind: 'depthwise' }], fallback: 'generic depthwise kernel', scratch: "depthwise kernel's padded plane" } : null;
}
