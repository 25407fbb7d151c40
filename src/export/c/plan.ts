/**
 * Static memory plan of an integer model (ir.ts) for the C target: every tensor and every conv's
 * scratch space gets a byte offset in one arena, so the generated C needs no allocator.
 *
 * - Lifetimes: a tensor lives from the op that writes it to the last op that reads it (the logits
 *   to the end, when they are copied out); a conv's scratch (generic kernel: one int32
 *   accumulator plane and one decoded weight row, the input channels of one group times the
 *   kernel; dual-MAC kernel: a block of decoded weight rows and two im2col columns; depthwise kernel:
 *   one zero-padded input plane; sized by kernels.ts) lives during that conv only. Pooling and add ops need no scratch.
 * - In place: an op whose output is written index by index in ascending order, each index after the
 *   same index of an input was read, may write over that input when the input dies at this op and
 *   the output's elements are not wider: element-wise quantize and add ops (over either input),
 *   and residual convs over their shortcut (stride 1, no channel offset, same shape). Pooling
 *   reads windows, so never. Aliased tensors share one buffer.
 * - Packed 4-bit tensors (`PlanOptions.packed`, chosen by kernels.ts): activation codes in 0..15 stored
 *   two a byte (element i in byte i / 2, the low nibble for even i): half the bytes. Widths compare
 *   in bits, so a packed output may go over an unpacked input, never the reverse (the runtime
 *   writes a nibble by read-modify-write, which keeps its neighbour).
 * - Placement: buffers by size, largest first, each at the lowest 4-byte aligned offset that does
 *   not overlap a placed buffer with an intersecting lifetime (greedy by size).
 */
import { DTYPE_INFO, type ConvOp, type IntegerModel, type Op, tensorSize } from '../ir.js';
import { opInputs } from '../validate.js';

export interface Buffer {
  readonly bytes: number;
  /** First and last op index during which the buffer is live (inclusive). */
  readonly first: number;
  readonly last: number;
  /** Tensor ids stored in it (none for a scratch buffer). */
  readonly tensors: readonly number[];
  /** The conv op index whose scratch space this is, or -1. */
  readonly scratchOf: number;
  readonly offset: number;
}

/** The layout choices of a plan (kernels.ts makes them; the defaults are the plain layout). */
export interface PlanOptions {
  /** Tensors stored as packed 4-bit codes (default none). */
  readonly packed?: ReadonlySet<number>;
  /** Whether ops may write over an input (default true; false measures what in place saves). */
  readonly inPlace?: boolean;
}

export interface ArenaPlan {
  /** Arena size in bytes (a multiple of 4). */
  readonly bytes: number;
  /** Byte offset of each tensor. */
  readonly tensorOffset: readonly number[];
  /** Byte offset of each conv op's scratch (by op index; -1 for other ops). */
  readonly scratchOffset: readonly number[];
  /** Largest sum of live buffer sizes over ops: no placement of these buffers can be smaller. */
  readonly lowerBound: number;
  readonly buffers: readonly Buffer[];
  /** The packed 4-bit tensors. */
  readonly packed: ReadonlySet<number>;
}

/** Bits per element of tensor t as the plan stores it. */
function storageBits(model: IntegerModel, packed: ReadonlySet<number>, t: number): number {
  return packed.has(t) ? 4 : 8 * DTYPE_INFO[model.tensors[t].dtype].bytes;
}

const ALIGN = 4;

export function alignUp(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}

/** Bytes of a conv's scratch on the generic kernel: an int32 accumulator per output pixel and an int16 weight per weight of one output channel. */
export function convScratchBytes(model: IntegerModel, op: ConvOp): number {
  const [, h, w] = model.tensors[op.output].shape;
  return alignUp(4 * h * w) + alignUp(2 * (op.inChannels / op.groups) * op.kernel[0] * op.kernel[1]);
}

/** The inputs an op could overwrite with its output, element for element (see the file comment). */
function elementwiseInputs(model: IntegerModel, op: Op): number[] {
  if (op.kind === 'quantize') return [op.input];
  if (op.kind === 'add') return [op.a.input, op.b.input];
  if (op.kind !== 'conv' || op.epilogue.kind !== 'residual' || !op.epilogue.shortcut) return [];
  const s = op.epilogue.shortcut;
  const [src, out] = [model.tensors[s.input], model.tensors[op.output]];
  if (s.stride !== 1 || s.channelOffset !== 0 || src.shape.some((d, i) => d !== out.shape[i]) || s.input === op.input) return [];
  return [s.input];
}

/** The input tensor op k overwrites with its output: one that dies at k and is not narrower, if any. */
function inPlaceSource(model: IntegerModel, op: Op, k: number, last: readonly number[], packed: ReadonlySet<number>): number | null {
  const bits = storageBits(model, packed, op.output);
  return elementwiseInputs(model, op).find((t) => last[t] === k && bits <= storageBits(model, packed, t)) ?? null;
}

interface Group {
  tensors: number[];
  bytes: number;
  first: number;
  last: number;
  scratchOf: number;
}

/** Greedy placement in the given order (lowest aligned offset clear of placed overlapping buffers); offsets in the order of `groups`. */
function placeInOrder(groups: readonly Group[], order: readonly number[]): number[] {
  const offsets = new Array<number>(groups.length).fill(-1);
  for (const g of order) {
    const busy = order
      .filter((h) => offsets[h] >= 0 && groups[h].first <= groups[g].last && groups[g].first <= groups[h].last)
      .map((h) => [offsets[h], offsets[h] + groups[h].bytes] as const)
      .sort((a, b) => a[0] - b[0]);
    let at = 0;
    for (const [start, end] of busy) {
      if (at + groups[g].bytes <= start) break;
      at = Math.max(at, alignUp(end));
    }
    offsets[g] = at;
  }
  return offsets;
}

/**
 * Greedy placement, largest first; where placing in the order of first use (largest first among
 * equals) gives a smaller arena, that instead (by size alone, long-lived early buffers may end up
 * above short-lived large scratch of later layers, fragmenting the top).
 */
function place(groups: readonly Group[]): number[] {
  const ids = groups.map((_, i) => i);
  const top = (offsets: readonly number[]): number => groups.reduce((m, g, i) => Math.max(m, offsets[i] + g.bytes), 0);
  const bySize = placeInOrder(groups, [...ids].sort((a, b) => groups[b].bytes - groups[a].bytes || groups[a].first - groups[b].first));
  const byFirst = placeInOrder(groups, [...ids].sort((a, b) => groups[a].first - groups[b].first || groups[b].bytes - groups[a].bytes));
  const byLife = placeInOrder(groups, [...ids].sort((a, b) => groups[b].last - groups[b].first - (groups[a].last - groups[a].first) || groups[b].bytes - groups[a].bytes));
  return [byFirst, byLife].reduce((best, o) => (top(o) < top(best) ? o : best), bySize);
}

/** The scratch bytes of conv op k (the kernel chosen for it decides; default: the generic kernel's). */
export type ScratchSize = (op: ConvOp, k: number) => number;

export function planArena(model: IntegerModel, scratchBytes: ScratchSize = (op) => convScratchBytes(model, op), options: PlanOptions = {}): ArenaPlan {
  const { tensors, ops } = model;
  const packed = options.packed ?? new Set<number>();
  const first = new Array<number>(tensors.length).fill(-1);
  const last = new Array<number>(tensors.length).fill(-1);
  ops.forEach((op, k) => {
    first[op.output] = k;
    last[op.output] = Math.max(last[op.output], k);
    for (const t of opInputs(op)) last[t] = k;
  });
  last[model.output] = ops.length;
  // Union of aliased tensors: owner[t] is the tensor whose buffer t uses.
  const owner = tensors.map((_, t) => t);
  ops.forEach((op, k) => {
    const source = options.inPlace === false ? null : inPlaceSource(model, op, k, last, packed);
    if (source !== null) owner[op.output] = owner[source];
  });
  const groups = new Map<number, Group>();
  tensors.forEach((t, id) => {
    if (first[id] < 0) return;
    const root = owner[id];
    const g = groups.get(root) ?? { tensors: [], bytes: 0, first: first[id], last: last[id], scratchOf: -1 };
    g.tensors.push(id);
    g.bytes = Math.max(g.bytes, alignUp(Math.ceil((tensorSize(t) * storageBits(model, packed, id)) / 8)));
    g.first = Math.min(g.first, first[id]);
    g.last = Math.max(g.last, last[id]);
    groups.set(root, g);
  });
  const all = [...groups.values()];
  ops.forEach((op, k) => {
    if (op.kind === 'conv') all.push({ tensors: [], bytes: alignUp(scratchBytes(op, k)), first: k, last: k, scratchOf: k });
  });
  const offsets = place(all);
  const buffers: Buffer[] = all.map((g, i) => ({ ...g, offset: offsets[i] }));
  const tensorOffset = new Array<number>(tensors.length).fill(-1);
  const scratchOffset = new Array<number>(ops.length).fill(-1);
  for (const b of buffers) {
    for (const t of b.tensors) tensorOffset[t] = b.offset;
    if (b.scratchOf >= 0) scratchOffset[b.scratchOf] = b.offset;
  }
  let lowerBound = 0;
  for (let k = 0; k <= ops.length; k++) lowerBound = Math.max(lowerBound, buffers.reduce((s, b) => s + (b.first <= k && k <= b.last ? b.bytes : 0), 0));
  const bytes = alignUp(buffers.reduce((m, b) => Math.max(m, b.offset + b.bytes), 0));
  return { bytes, tensorOffset, scratchOffset, lowerBound, buffers, packed };
}
