/**
 * C99 code generation for an integer model (ir.ts): a source file with the runtime (runtime.ts),
 * the model's tables as `const` arrays (flash on a microcontroller), one static arena planned by
 * plan.ts, and `tq_infer`; plus a header with the API and the sizes as macros. The logits equal
 * the TypeScript integer engine's bit for bit (int32: the engine's logits are int32).
 */
import { TINYQUANT_VERSION } from '../../package.js';
import { packBits } from '../bitpack.js';
import { residualClamp, ruleWithCeiling } from '../clip.js';
import { type ActivationQuant, type AddOp, type ConvOp, type DType, type IntegerModel, type Op, type PoolOp, type QuantizeOp, type Requant, inputShape, tensorSize } from '../ir.js';
import { LoweringError } from '../lower.js';
import { validateIntegerModel } from '../validate.js';
import { type ArenaPlacement, DEFAULT_PREFIX, dropInProblem } from './names.js';
import { type ConvKernel, chooseConvKernels } from './kernels.js';
import { type OneRounding, foldedBias, oneRounding, reducedMultiplier } from './one-rounding.js';
import type { ArenaPlan } from './plan.js';
import { C_DTYPE_TAG, runtimeSource } from './runtime.js';

/** Byte order of the image tq_infer reads: channel planes (CIFAR's binary files) or interleaved pixels. */
export type ImageLayout = 'chw' | 'hwc';
export const IMAGE_LAYOUTS: readonly ImageLayout[] = ['chw', 'hwc'];

export interface CGenerateOptions {
  /** File name of the header, as the source #includes it (e.g. `model.h`). */
  readonly headerName: string;
  readonly imageLayout?: ImageLayout;
  /**
   * Prefix of every external symbol and macro, and of the model's tables (`kws`: kws_infer,
   * kws_class_names, KWS_CLASSES, header guard KWS_H), so that two models link into one program.
   * Default `tq` (tq_infer, TQ_CLASSES) with a guard made from the header name. The runtime's
   * functions are static: each model's source has its own copy, so they never clash.
   */
  readonly name?: string;
  /** `static` (default): an array in the source; `caller`: NAME_infer takes the arena as a third argument. */
  readonly arena?: ArenaPlacement;
  /** Places the static arena in this linker section (`__attribute__((section(...)))`). */
  readonly section?: string;
  /** Stores 4-bit activation codes two a byte where that lowers the arena (kernels.ts; default false: it costs instructions). */
  readonly packActivations?: boolean;
  /** Arena bytes the layout may use for faster kernels (larger dual-MAC blocks, fewer packed tensors; kernels.ts). Default: the generic kernels' plan. */
  readonly arenaBudget?: number;
}

export interface GeneratedC {
  readonly source: string;
  readonly header: string;
  readonly plan: ArenaPlan;
  /** The conv kernel of each op (null for other ops). */
  readonly kernels: readonly (ConvKernel | null)[];
  /** Layers on the generic conv kernel for a reason other than their shape (for the export report). */
  readonly notes: readonly string[];
  /** The arena: what packing and in place saved, the tensors at the peak (for the export report). */
  readonly arenaReport: readonly string[];
}

/** A model or an output the C target cannot take: the message names the layer, field or path. */
export class CExportError extends LoweringError {
  override name = 'CExportError';
}

const PER_LINE = 20;

/** A C integer literal (INT32_MIN has no literal of type int32). */
function literal(v: number): string {
  return v === -0x80000000 ? '(-2147483647 - 1)' : String(v);
}

function array(type: string, name: string, values: ArrayLike<number>, comment = ''): string {
  const items = Array.from(values.length > 0 ? values : [0], literal);
  const lines: string[] = [];
  for (let i = 0; i < items.length; i += PER_LINE) lines.push(`    ${items.slice(i, i + PER_LINE).join(', ')},`);
  return `${comment ? `/* ${comment} */\n` : ''}static const ${type} ${name}[${items.length}] = {\n${lines.join('\n')}\n};\n`;
}

/** A const instance of one of the runtime's structs, a designated initializer per line. */
function struct(type: string, name: string, fields: readonly string[]): string {
  return `static const ${type} ${name} = {\n    ${fields.join(',\n    ')}\n};\n`;
}

/** A C string literal: printable ASCII as is, everything else (and '?', so no trigraph forms) as octal escapes of its UTF-8 bytes. */
function cString(s: string): string {
  let out = '';
  for (const byte of new TextEncoder().encode(s)) {
    const ch = String.fromCharCode(byte);
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (byte >= 0x20 && byte < 0x7f && ch !== '?') out += ch;
    else out += `\\${byte.toString(8).padStart(3, '0')}`;
  }
  return `"${out}"`;
}

/** The `.NAME_h` and `.NAME_w` initializers of a [height, width] pair. */
function pairFields(name: string, [h, w]: readonly [number, number]): string[] {
  return [`.${name}_h = ${h}`, `.${name}_w = ${w}`];
}

/** The layer name of an op (the input op has none). */
function opName(op: Op, k: number): string {
  return op.kind === 'input' ? `op ${k} (input)` : op.name;
}

/** One input channel per group: the runtime's depthwise accumulate function. */
function isDepthwise(op: ConvOp): boolean {
  return op.inChannels === op.groups;
}

/** Keeps comments well formed whatever a layer name contains. */
function commentText(s: string): string {
  return s.replace(/\*\//g, '* /').replace(/[^\x20-\x7e]/g, '?');
}

/** The generated names: symbols and tables in lower case (`p`), macros in upper case (`P`). */
interface Names {
  readonly p: string;
  readonly P: string;
}

class Emitter {
  readonly data: string[] = [];
  readonly calls: string[] = [];
  readonly model: IntegerModel;
  readonly plan: ArenaPlan;
  readonly kernels: readonly (ConvKernel | null)[];
  readonly layout: ImageLayout;
  readonly p: string;
  /** The arena's first byte, as the infer function names it. */
  readonly arena: string;

  constructor(model: IntegerModel, plan: ArenaPlan, kernels: readonly (ConvKernel | null)[], layout: ImageLayout, names: Names, arena: ArenaPlacement) {
    this.model = model;
    this.plan = plan;
    this.kernels = kernels;
    this.layout = layout;
    this.p = names.p;
    this.arena = arena === 'static' ? `${names.p}_arena.bytes` : 'arena';
  }

  tensor(id: number): string {
    return `${this.arena} + ${this.plan.tensorOffset[id]}`;
  }

  /** The name of one of op k's tables or structs. */
  table(kind: string, k: number): string {
    return `${this.p}_${kind}_${k}`;
  }

  /** The runtime's tag of tensor id: its dtype, or TQ_U4 when the plan packs it. */
  dtype(id: number): string {
    return this.plan.packed.has(id) ? 'TQ_U4' : C_DTYPE_TAG[this.model.tensors[id].dtype];
  }

  /** The requantization tables of op k, the bias table as the runtime reads it (one-rounding.ts). */
  requant(r: Requant, k: number, bias: Int32Array): void {
    this.data.push(array('int32_t', this.table('mult', k), r.mult), array('uint8_t', this.table('shift', k), r.shift), array('int32_t', this.table('bias', k), bias));
  }

  /** Initializer of a tq_activation (its tables emitted as op k's), the ceiling folded into the rule; with `one`, its codes' form. */
  activation(q: ActivationQuant, k: number, one: OneRounding | null): string {
    if (one) return `{ .thresholds = NULL, .values = NULL, .frac_bits = ${one.fracBits}, .min_code = ${literal(one.minCode)}, .max_code = ${literal(one.maxCode)}, .one_rounding = 1 }`;
    const rule = ruleWithCeiling(q);
    const fields = [`.floor = ${literal(q.relu ? q.zeroPoint : -0x80000000)}`];
    if (rule.kind === 'thresholds') {
      if (rule.thresholds.length > 0x7fff) throw new CExportError(`${opName(this.model.ops[k], k)}: ${rule.thresholds.length} activation thresholds, the C runtime takes at most ${0x7fff}`);
      this.data.push(array('int32_t', this.table('thresholds', k), rule.thresholds), array('int16_t', this.table('values', k), rule.values));
      fields.push(`.thresholds = ${this.table('thresholds', k)}`, `.values = ${this.table('values', k)}`, `.count = ${rule.thresholds.length}`);
    } else {
      fields.push('.thresholds = NULL', '.values = NULL', `.frac_bits = ${rule.fracBits}`, `.min_code = ${literal(rule.minCode)}`, `.max_code = ${literal(rule.maxCode)}`);
    }
    return `{ ${fields.join(', ')} }`;
  }

  op(op: Op, k: number): void {
    switch (op.kind) {
      case 'input':
        return this.input(op.lut, op.output, k);
      case 'conv':
        return this.conv(op, k);
      case 'quantize':
        return this.quantize(op, k);
      case 'sumpool':
      case 'maxpool':
        return this.pool(op, k);
      case 'add':
        return this.add(op, k);
    }
  }

  pool(op: PoolOp, k: number): void {
    const [c, inH, inW] = this.model.tensors[op.input].shape;
    const [, outH, outW] = this.model.tensors[op.output].shape;
    const fields = [
      `.max = ${op.kind === 'maxpool' ? 1 : 0}`, `.channels = ${c}`, `.in_h = ${inH}`, `.in_w = ${inW}`, `.out_h = ${outH}`, `.out_w = ${outW}`,
      ...pairFields('kernel', op.kernel), ...pairFields('stride', op.stride), ...pairFields('pad', op.padding),
      `.in_dtype = ${this.dtype(op.input)}`, `.out_dtype = ${this.dtype(op.output)}`,
    ]; // prettier-ignore
    this.data.push(struct('tq_pool_op', this.table('pool', k), fields));
    this.calls.push(`tq_pool(&${this.table('pool', k)}, ${this.tensor(op.input)}, ${this.tensor(op.output)}); /* ${op.kind} ${commentText(op.name)} */`);
  }

  add(op: AddOp, k: number): void {
    const [lo, hi] = residualClamp(op.relu, op.ceiling, op.bits);
    const fields = [
      `.size = ${tensorSize(this.model.tensors[op.output])}`, `.a_dtype = ${this.dtype(op.a.input)}`, `.b_dtype = ${this.dtype(op.b.input)}`, `.out_dtype = ${this.dtype(op.output)}`,
      `.a_mult = ${literal(op.a.mult)}`, `.a_shift = ${op.a.shift}`, `.b_mult = ${literal(op.b.mult)}`, `.b_shift = ${op.b.shift}`, `.lo = ${literal(lo)}`, `.hi = ${literal(hi)}`,
    ]; // prettier-ignore
    this.data.push(struct('tq_add_op', this.table('add', k), fields));
    this.calls.push(`tq_add(&${this.table('add', k)}, ${this.tensor(op.a.input)}, ${this.tensor(op.b.input)}, ${this.tensor(op.output)}); /* ${commentText(op.name)} */`);
  }

  input(lut: Int16Array, output: number, k: number): void {
    const [c, h, w] = inputShape(this.model);
    this.data.push(array('int16_t', this.table('lut', k), lut, 'input: the normalized pixel per channel and byte value'));
    const [channelStride, pixelStride] = this.layout === 'chw' ? [h * w, 1] : [1, c];
    this.calls.push(`tq_input(image, ${this.table('lut', k)}, ${this.tensor(output)}, ${this.dtype(output)}, ${c}, ${h * w}, ${channelStride}, ${pixelStride});`);
  }

  conv(op: ConvOp, k: number): void {
    const { model } = this;
    const [inC, inH, inW] = model.tensors[op.input].shape;
    const [outC, outH, outW] = model.tensors[op.output].shape;
    const w = op.weights;
    const codes = packBits(w.codes, w.bits);
    const padded = new Uint8Array(codes.length + 1); // tq_weight_row reads two bytes at a time
    padded.set(codes);
    this.data.push(
      array('uint8_t', this.table('codes', k), padded, `${commentText(op.name)}: ${outC}x${inC / op.groups}x${op.kernel.join('x')}${op.groups > 1 ? `, ${op.groups} groups` : ''}, ${w.bits}-bit ${w.scheme} weights`),
      array('int16_t', this.table('levels', k), w.levels),
    );
    const e = op.epilogue;
    const one = e.kind === 'activation' ? oneRounding(op.requant, e) : null;
    const folded = one ? null : foldedBias(op.requant);
    this.requant(op.requant, k, one?.bias ?? folded ?? op.requant.bias);
    const fields = [
      `.codes = ${this.table('codes', k)}`, `.levels = ${this.table('levels', k)}`, `.mult = ${this.table('mult', k)}`, `.shift = ${this.table('shift', k)}`, `.bias = ${this.table('bias', k)}`,
      `.in_h = ${inH}`, `.in_w = ${inW}`, `.out_c = ${outC}`, `.out_h = ${outH}`, `.out_w = ${outW}`,
      ...pairFields('kernel', op.kernel), ...pairFields('stride', op.stride), ...pairFields('pad', op.padding), `.bits = ${w.bits}`,
      `.group_in = ${inC / op.groups}`, `.groups = ${op.groups}`,
      `.out_dtype = ${this.dtype(op.output)}`, ...(folded ? ['.folded = 1'] : []),
    ]; // prettier-ignore
    let shortcut = 'NULL';
    if (e.kind === 'activation') {
      this.data.push(`static const tq_activation ${this.table('activation', k)} = ${this.activation(e, k, one)};\n`);
      fields.push(`.epilogue = ${one ? 'TQ_CODES' : 'TQ_ACTIVATION'}`, `.activation = &${this.table('activation', k)}`);
    } else if (e.kind === 'residual') {
      const [lo, hi] = residualClamp(e.relu, e.ceiling, e.bits);
      fields.push('.epilogue = TQ_RESIDUAL', `.residual_lo = ${literal(lo)}`, `.residual_hi = ${literal(hi)}`);
      if (e.shortcut) {
        const s = e.shortcut;
        const [c, h, wd] = model.tensors[s.input].shape;
        const scale = reducedMultiplier(s.mult, s.shift);
        this.data.push(
          `static const tq_shortcut ${this.table('shortcut', k)} = { .mult = ${literal(scale.mult)}, .shift = ${scale.shift}, .stride = ${s.stride}, .channel_offset = ${s.channelOffset}, ` +
            `.channels = ${c}, .height = ${h}, .width = ${wd}, .dtype = ${this.dtype(s.input)} };\n`,
        );
        fields.push(`.shortcut = &${this.table('shortcut', k)}`);
        shortcut = this.tensor(s.input);
      }
    } else {
      fields.push('.epilogue = TQ_LOGITS');
    }
    this.data.push(struct('tq_conv', this.table('conv', k), fields));
    const scratch = `${this.arena} + ${this.plan.scratchOffset[k]}`;
    const dtype = this.plan.packed.has(op.input) ? 'u4' : model.tensors[op.input].dtype;
    const kernel = this.kernels[k];
    const args = `${this.tensor(op.input)}, ${this.tensor(op.output)}, ${shortcut}, ${scratch}); /* ${commentText(op.name)} */`;
    if (kernel?.kind === 'dsp') this.calls.push(`tq_conv_dsp_${dtype}(&${this.table('conv', k)}, ${kernel.block}, ${args}`);
    else if (kernel?.kind === 'triple') this.calls.push(`tq_conv_triple_${dtype}(&${this.table('conv', k)}, ${kernel.block}, ${kernel.chunk}, ${args}`);
    else if (kernel?.kind === 'depthwise') this.calls.push(`tq_conv_dw_${dtype}(&${this.table('conv', k)}, ${args}`);
    else this.calls.push(`tq_conv_run(&${this.table('conv', k)}, tq_${isDepthwise(op) ? 'depthwise' : 'accumulate'}_${dtype}, ${args}`);
  }

  quantize(op: QuantizeOp, k: number): void {
    const [c, h, w] = this.model.tensors[op.input].shape;
    const one = oneRounding(op.requant, op);
    this.requant(op.requant, k, one?.bias ?? op.requant.bias);
    const fields = [
      `.mult = ${this.table('mult', k)}`, `.shift = ${this.table('shift', k)}`, `.bias = ${this.table('bias', k)}`, `.per_channel = ${op.requant.mult.length > 1 ? 1 : 0}`,
      `.channels = ${c}`, `.plane = ${h * w}`, `.in_dtype = ${this.dtype(op.input)}`, `.out_dtype = ${this.dtype(op.output)}`,
      `.activation = ${this.activation(op, k, one)}`,
    ]; // prettier-ignore
    this.data.push(struct('tq_quantize_op', this.table('quantize', k), fields));
    this.calls.push(`tq_quantize(&${this.table('quantize', k)}, ${this.tensor(op.input)}, ${this.tensor(op.output)}); /* quantize for ${commentText(op.name)} */`);
  }
}

/** The default build keeps the guard it always had (from the header's name); a named one gets NAME_H. */
function guardName(o: ResolvedOptions): string {
  return o.name === undefined ? `TQ_${o.headerName.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_` : `${o.names.P}_H`;
}

type ResolvedOptions = Required<Omit<CGenerateOptions, 'name' | 'section' | 'packActivations' | 'arenaBudget'>> & Pick<CGenerateOptions, 'name' | 'section' | 'packActivations' | 'arenaBudget'> & { readonly names: Names };

/** The parameters of the infer function: as the header declares them, or as the source defines them (the arena as a void * it converts). */
function inferParameters(o: ResolvedOptions, definition = false): string {
  return `const uint8_t *image, int32_t *logits${o.arena === 'caller' ? `, void *${definition ? 'caller_arena' : 'arena'}` : ''}`;
}

function describe(model: IntegerModel): string {
  const m = model.meta;
  return `${m.model}, ${m.method} W${m.wbits}A${m.abits}, first/last ${m.firstLast}, int${m.residualBits} residual stream`;
}

function header(model: IntegerModel, o: ResolvedOptions, plan: ArenaPlan): string {
  const [c, h, w] = inputShape(model);
  const { p, P } = o.names;
  const classes = tensorSize(model.tensors[model.output]);
  const layout =
    o.imageLayout === 'chw'
      ? 'channel planes (CHW: all of channel 0 row by row, then channel 1, ...; the layout of CIFAR binary files)'
      : 'interleaved pixels (HWC: row by row, each pixel its channels in order)';
  const guard = guardName(o);
  const { mean, std } = model.meta.normalization;
  const memory =
    o.arena === 'static'
      ? `not reentrant (one static arena of\n * ${P}_ARENA_BYTES bytes${o.section ? `, in section ${o.section},` : ''} holds every intermediate tensor)`
      : `the caller passes the arena (${P}_ARENA_BYTES\n * bytes holding every intermediate tensor), so calls with different arenas may run concurrently`;
  const arenaDoc =
    o.arena === 'caller'
      ? `
 * arena: ${P}_ARENA_BYTES bytes aligned to 4 (e.g. static uint32_t arena[${P}_ARENA_BYTES / 4]), used
 *   for the call only; returns -1 (and computes nothing) when it is NULL or not aligned.`
      : '';
  return `/*
 * ${o.headerName}: integer-only inference of ${describe(model)}.
 * Generated by tinyquant ${TINYQUANT_VERSION} (tinyquant export --format c); do not edit.
 *
 * C99, no allocation, no floating point, no library calls; ${memory}.
 * Weights and tables are const.
 */
#ifndef ${guard}
#define ${guard}

#include <stdint.h>

#define ${P}_IMAGE_CHANNELS ${c}
#define ${P}_IMAGE_HEIGHT ${h}
#define ${P}_IMAGE_WIDTH ${w}
#define ${P}_IMAGE_BYTES ${c * h * w}
#define ${P}_CLASSES ${classes}
#define ${P}_ARENA_BYTES ${plan.bytes}
/* Real logit = ${P}_LOGIT_SCALE * logits[i] (informational; the class is the index of the largest). */
#define ${P}_LOGIT_SCALE ${model.tensors[model.output].scale.toPrecision(9)}

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Classifies one image and returns its class (the index of the first largest logit).
 * image: ${P}_IMAGE_BYTES raw uint8 pixels (0..255), ${layout}.
 *   The normalization the model was trained with (mean ${mean.map((v) => v.toPrecision(4)).join('/')}, std ${std.map((v) => v.toPrecision(4)).join('/')}
 *   of pixel/255) is applied inside, through a lookup table.
 * logits: ${P}_CLASSES int32 values, written when not NULL; bit-identical to the logits of
 *   tinyquant's TypeScript integer engine (src/export/engine.ts) for the same image.${arenaDoc}
 */
int ${p}_infer(${inferParameters(o)});

/* Class names, ${P}_CLASSES entries. */
extern const char *const ${p}_class_names[${P}_CLASSES];

#ifdef __cplusplus
}
#endif

#endif
`;
}

/** The arena's definition (static), or the infer function's view of the caller's and its check (caller). */
function arenaCode(o: ResolvedOptions): { readonly definition: string; readonly local: string; readonly check: string } {
  const { p, P } = o.names;
  if (o.arena === 'caller') {
    return {
      definition: '',
      local: '\n    uint8_t *const arena = (uint8_t *)caller_arena;',
      check: '\n    if (arena == NULL || ((uintptr_t)arena & 3u) != 0) return -1;',
    };
  }
  const section = o.section ? ` __attribute__((section(${cString(o.section)})))` : '';
  return {
    definition: `/* Every intermediate tensor and each conv's scratch space, at offsets planned from the op graph. */
static union {
    int32_t align;
    uint8_t bytes[${P}_ARENA_BYTES];
} ${p}_arena${section};

`,
    local: '',
    check: '',
  };
}

/** The options with their defaults, checked (CExportError naming the flag). */
function resolveOptions(opts: CGenerateOptions): ResolvedOptions {
  const o = { imageLayout: 'chw' as ImageLayout, arena: 'static' as ArenaPlacement, ...opts };
  if (!IMAGE_LAYOUTS.includes(o.imageLayout)) throw new CExportError(`image layout must be one of ${IMAGE_LAYOUTS.join(', ')}, got "${o.imageLayout}"`);
  if (!/^[A-Za-z0-9_.-]+\.h$/.test(o.headerName)) throw new CExportError(`header name "${o.headerName}" must be a plain file name ending in .h`);
  const problem = dropInProblem(o);
  if (problem) throw new CExportError(problem);
  const p = o.name ?? DEFAULT_PREFIX;
  return { ...o, names: { p, P: p.toUpperCase() } };
}

export function generateC(model: IntegerModel, opts: CGenerateOptions): GeneratedC {
  validateIntegerModel(model); // names the layer of anything the runtime cannot hold (e.g. weights beyond 8 bits)
  const o = resolveOptions(opts);
  const { p, P } = o.names;
  const { plan, kernels, notes, report } = chooseConvKernels(model, o.packActivations === true, o.arenaBudget);
  const emit = new Emitter(model, plan, kernels, o.imageLayout, o.names, o.arena);
  model.ops.forEach((op, k) => emit.op(op, k));
  const onDsp = (k: number): boolean => kernels[k]?.kind === 'dsp';
  const convs = model.ops.filter((op, k): op is ConvOp => op.kind === 'conv' && kernels[k]?.kind === 'generic');
  // Whether a conv has an h x w kernel and more than `pixels` output pixels (unrolled blocks are emitted only for those).
  const hasKernel = (h: number, w: number, pixels: number): boolean =>
    convs.some((op) => op.kernel[0] === h && op.kernel[1] === w && model.tensors[op.output].shape[1] * model.tensors[op.output].shape[2] > pixels);
  const inputTypes = (depthwise: boolean): DType[] => [...new Set(convs.filter((op) => isDepthwise(op) === depthwise).map((op) => model.tensors[op.input].dtype))];
  const runtime = runtimeSource({
    convInputs: inputTypes(false),
    depthwiseInputs: inputTypes(true),
    dspInputs: [...new Set(model.ops.flatMap((op, k) => (op.kind === 'conv' && onDsp(k) && !plan.packed.has(op.input) ? [model.tensors[op.input].dtype] : [])))],
    tripleInputs: [...new Set(model.ops.flatMap((op, k) => (op.kind === 'conv' && kernels[k]?.kind === 'triple' ? [model.tensors[op.input].dtype] : [])))],
    dspDepthwiseInputs: [...new Set(model.ops.flatMap((op, k) => (op.kind === 'conv' && kernels[k]?.kind === 'depthwise' ? [model.tensors[op.input].dtype] : [])))],
    packed: plan.packed.size > 0,
    dspPacked: model.ops.some((op, k) => op.kind === 'conv' && onDsp(k) && plan.packed.has(op.input)),
    unrolled: { k3: hasKernel(3, 3, 0), k1: hasKernel(1, 1, 1) },
    quantize: model.ops.some((op) => op.kind === 'quantize'),
    quantizeTwoRoundings: model.ops.some(
      (op) => op.kind === 'quantize' && !oneRounding(op.requant, op) && model.tensors[op.input].dtype === 'int8' && model.tensors[op.output].dtype === 'uint8' && !plan.packed.has(op.output),
    ),
    pool: model.ops.some((op) => op.kind === 'sumpool' || op.kind === 'maxpool'),
    add: model.ops.some((op) => op.kind === 'add'),
  });
  const logits = `(const int32_t *)(${emit.tensor(model.output)})`;
  const arena = arenaCode(o);
  const source = `/* Generated by tinyquant ${TINYQUANT_VERSION} (tinyquant export --format c): ${describe(model)}. Do not edit; see ${o.headerName}. */
#include "${o.headerName}"

#include <stddef.h>
#include <stdint.h>
${runtime}
/* ---- the model ---- */

${emit.data.join('\n')}
${arena.definition}const char *const ${p}_class_names[${P}_CLASSES] = { ${model.meta.classes.map(cString).join(', ')} };

int ${p}_infer(${inferParameters(o, true)})
{${arena.local}
    const int32_t *out;
    int32_t i, best = 0;${arena.check}
    ${emit.calls.join('\n    ')}
    out = ${logits};
    for (i = 0; i < ${P}_CLASSES; ++i) {
        if (logits) logits[i] = out[i];
        if (out[i] > out[best]) best = i;
    }
    return best;
}
`;
  return { source, header: header(model, o, plan), plan, kernels, notes, arenaReport: report };
}
