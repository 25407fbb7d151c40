/**
 * Side by side on a Cortex-M4: tinyquant's generated C and the same network built on CMSIS-NN's
 * int8 kernels (issue 14). The integer model of ResNet-20 at W8A8 with an int8 residual stream
 * (lowered from the shipped float weights, a uniform method, calibrated) is exported twice:
 * tinyquant's C (src/export/c), and a C driver written here that calls CMSIS-NN's public API
 * layer by layer (arm_convolve_wrapper_s8, arm_elementwise_add_s8 for the residual joins,
 * arm_avgpool_s8 + arm_pad_s8 for the option-A shortcuts, arm_avgpool_s8 for the global pooling,
 * arm_fully_connected_per_channel_s8). Both run under the same harness (src/export/c/toolchain.ts:
 * arm-none-eabi-gcc with the same flags, QEMU mps2-an386 -icount shift=0, SysTick counting, stack
 * painting); the script prints instructions per inference and per MAC, flash and RAM of both and
 * their ratio, and the top-1 agreement of the two on the images run.
 *
 *   node dist/bench/cmsis-nn.js [--cmsis-nn DIR] [--cmsis-core DIR] [--images N] [--method lsq]
 *        [--data-dir DIR] [--float FILE.safetensors] [--cmsis-opt=-O3] [--save-driver FILE.c] [--json]
 *
 * CMSIS-NN is not part of the repository: --cmsis-nn (default $TQ_CMSIS_NN) is a checkout of
 * github.com/ARM-software/CMSIS-NN, --cmsis-core (default $TQ_CMSIS_CORE) a directory holding
 * CMSIS-Core's cmsis_compiler.h (CMSIS_6's CMSIS/Core/Include, or the checkout's root). Its
 * sources are compiled into a static library in a temporary directory for each run, with
 * tinyquant's flags (--cmsis-opt replaces their -O2 for CMSIS-NN's sources, e.g. -O3 or -Ofast; the
 * driver itself always gets -O2). --save-driver writes the generated driver for reading.
 *
 * The CMSIS network is the TFLite-style translation of the same integer model, not a bit-exact
 * copy: each conv's requantization (rms + bias, then the code rounding) becomes CMSIS's per-channel
 * Q31 multiplier and shift with the bias moved into accumulator units; uint8 activation codes are
 * stored as int8 with zero point -128; a block's first conv reads the int8 residual stream itself
 * (tinyquant requantizes it to the conv's activation codes first: the `quantize` op is folded into
 * the conv's multiplier, so its clip at the quantizer's top is lost); conv outputs that join a
 * residual are clamped to int8 before the add; the logits are int8 (step chosen from calibration
 * images). CMSIS's rounding differs as well, hence the agreement figure.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { writeFileAtomic } from '../src/io/atomic.js';
import { resolveNormalization } from '../src/data/augment.js';
import { loadDataset } from '../src/data/load.js';
import { top1Accuracy } from '../src/export/agreement.js';
import { generateC } from '../src/export/c/generate.js';
import { ARM_GCC, type CSources, DEVICE_TARGETS, type DeviceRun, deviceToolsMissing, runOnDevice, runTool } from '../src/export/c/toolchain.js';
import { IntegerEngine } from '../src/export/engine.js';
import { type ConvOp, type IntegerModel, type Op } from '../src/export/ir.js';
import type { MethodName } from '../src/quant/quantizer.js';
import { CALIBRATION, calibratedModel, convMacs, datasetSlice } from './common.js';

/** The largest |logit| of the calibration images maps to this int8 value. */
const LOGIT_HEADROOM = 100;
/** CMSIS-NN's source folders the driver needs (float variants left out). */
const CMSIS_SOURCE_DIRS = ['ConvolutionFunctions', 'BasicMathFunctions', 'PoolingFunctions', 'FullyConnectedFunctions', 'NNSupportFunctions', 'PadFunctions'];
/** TFLite's input shift for int8 adds: the inputs get 20 fractional bits before they are rescaled. */
const ADD_LEFT_SHIFT = 20;

const { values } = parseArgs({
  options: {
    'cmsis-nn': { type: 'string', default: process.env.TQ_CMSIS_NN },
    'cmsis-core': { type: 'string', default: process.env.TQ_CMSIS_CORE },
    images: { type: 'string', default: '10' },
    method: { type: 'string', default: 'lsq' },
    float: { type: 'string', default: 'models/resnet20-cifar10-float.safetensors' },
    'data-dir': { type: 'string', default: '/work/shared/data' },
    json: { type: 'boolean', default: false },
    'save-driver': { type: 'string' },
    'cmsis-opt': { type: 'string', default: '-O2' },
  },
});

function fail(message: string): never {
  console.error(`bench/cmsis-nn: ${message}`);
  process.exit(1);
}

/** The CMSIS-NN checkout and the folder with cmsis_compiler.h, checked. */
function cmsisPaths(): { nn: string; core: string } {
  const nnDir = values['cmsis-nn'];
  const coreDir = values['cmsis-core'];
  if (!nnDir) fail('no CMSIS-NN checkout: pass --cmsis-nn DIR or set TQ_CMSIS_NN (a checkout of github.com/ARM-software/CMSIS-NN)');
  if (!coreDir) fail('no CMSIS-Core headers: pass --cmsis-core DIR or set TQ_CMSIS_CORE (CMSIS_6/CMSIS/Core/Include, with cmsis_compiler.h)');
  const nn = resolve(nnDir);
  for (const f of ['Include/arm_nnfunctions.h', 'Source/ConvolutionFunctions']) {
    if (!existsSync(join(nn, f))) fail(`--cmsis-nn ${nn}: expected ${f} there (a checkout of github.com/ARM-software/CMSIS-NN)`);
  }
  const core = [coreDir, join(coreDir, 'CMSIS/Core/Include'), join(coreDir, 'Include')].map((d) => resolve(d)).find((d) => existsSync(join(d, 'cmsis_compiler.h')));
  if (!core) fail(`--cmsis-core ${coreDir}: expected cmsis_compiler.h there, in CMSIS/Core/Include or in Include (CMSIS_6 or CMSIS_5)`);
  return { nn, core };
}

/** Compiles CMSIS-NN's int8 sources for `flags` into dir/libcmsisnn.a. */
function buildCmsisLibrary(paths: { nn: string; core: string }, flags: readonly string[], dir: string): string {
  const sources = CMSIS_SOURCE_DIRS.flatMap((d) =>
    readdirSync(join(paths.nn, 'Source', d))
      .filter((f) => f.endsWith('.c') && !/_f(16|32)\.c$/.test(f))
      .map((f) => join(paths.nn, 'Source', d, f)),
  );
  runTool(ARM_GCC, [...flags, `-I${paths.nn}/Include`, `-I${paths.core}`, '-c', ...sources], { cwd: dir, timeoutMs: 600_000 });
  const objects = readdirSync(dir).filter((f) => f.endsWith('.o'));
  runTool('arm-none-eabi-ar', ['rcs', 'libcmsisnn.a', ...objects], { cwd: dir });
  return join(dir, 'libcmsisnn.a');
}

/** CMSIS's (Q31 multiplier, shift) of a positive real: real = mult / 2^31 * 2^shift. */
function q31(real: number): [number, number] {
  if (!(real > 0)) return [0, 0];
  let shift = Math.floor(Math.log2(real)) + 1;
  let mult = Math.round((real / 2 ** shift) * 2 ** 31);
  if (mult === 2 ** 31) [mult, shift] = [2 ** 30, shift + 1];
  if (shift < -31 || shift > 30) throw new Error(`bench/cmsis-nn: multiplier ${real} out of CMSIS's shift range`);
  return [mult, shift];
}

/** Where a tinyquant tensor lives in the CMSIS network: tinyquant's integer = scale * (int8 value + offset). */
interface Placed {
  readonly buffer: number;
  readonly offset: number;
  readonly scale: number;
  /** [H, W, C] of the CMSIS tensor. */
  readonly hwc: readonly [number, number, number];
}

const cArray = (type: string, name: string, data: ArrayLike<number>): string => `static const ${type} ${name}[${data.length}] = {${Array.from(data).join(',')}};\n`;

/** Generates the CMSIS-NN driver: model.c (tq_infer on CMSIS-NN) and model.h (the harness's API). */
class CmsisDriver {
  private tables = '';
  private body: string[] = [];
  private placed = new Map<number, Placed>();
  private buffers: { free: boolean }[] = [];
  private maxBytes = 0;
  private maxScratch = 0;
  private lastUse = new Map<number, number>();
  private layer = 0;

  constructor(
    private readonly model: IntegerModel,
    private readonly logitStep: number,
  ) {
    model.ops.forEach((op, i) => {
      for (const t of opInputs(op)) this.lastUse.set(t, i);
    });
  }

  private alloc(bytes: number, busy: readonly number[] = []): number {
    this.maxBytes = Math.max(this.maxBytes, bytes);
    const free = this.buffers.findIndex((b, i) => b.free && !busy.includes(i));
    if (free >= 0) {
      this.buffers[free].free = false;
      return free;
    }
    this.buffers.push({ free: false });
    return this.buffers.length - 1;
  }

  /** Frees the tensors whose last use is op `opIndex` (`only`: that one tensor), unless a tensor read later shares the buffer. */
  private release(opIndex: number, only?: number): void {
    for (const [t, last] of this.lastUse) {
      const p = this.placed.get(t);
      if (last !== opIndex || !p || (only !== undefined && t !== only)) continue;
      if (![...this.placed.entries()].some(([u, q]) => u !== t && q.buffer === p.buffer && (this.lastUse.get(u) ?? -1) > opIndex)) this.buffers[p.buffer].free = true;
    }
  }

  private at(t: number): Placed {
    const p = this.placed.get(t);
    if (!p) throw new Error(`bench/cmsis-nn: tensor ${this.model.tensors[t].name} is used before it is made`);
    return p;
  }

  private dims(hwc: readonly number[]): string {
    return `{1, ${hwc[0]}, ${hwc[1]}, ${hwc[2]}}`;
  }

  build(): CSources {
    this.model.ops.forEach((op, i) => {
      this.emit(op, i);
      this.release(i);
    });
    const [c, h, w] = this.model.tensors[(this.model.ops[0] as { output: number }).output].shape;
    const classes = this.model.meta.classes.length;
    const header = `#ifndef CMSIS_MODEL_H\n#define CMSIS_MODEL_H\n#include <stdint.h>\n#define TQ_IMAGE_BYTES ${c * h * w}\n#define TQ_CLASSES ${classes}\nint tq_infer(const uint8_t *image, int32_t *logits);\n#endif\n`;
    const buffers = this.buffers.map((_, i) => `static int8_t buf${i}[${this.maxBytes}] __attribute__((aligned(4)));\n`).join('');
    const source = `/* ResNet-20 on CMSIS-NN's int8 kernels, generated by bench/cmsis-nn.ts from tinyquant's integer model. */
#include "model.h" /* first: the harness names the header after the first quoted include */
#include "arm_nnfunctions.h"

${this.tables}${buffers}static int8_t scratch[${this.maxScratch}] __attribute__((aligned(4)));

static int conv(const int8_t *in, int8_t *out, cmsis_nn_dims id, cmsis_nn_dims fd, cmsis_nn_dims od, int stride, int pad, int32_t in_off, int32_t out_off, int32_t lo, int32_t hi,
                const int8_t *weights, const int32_t *bias, const int32_t *mult, const int32_t *shift)
{
    cmsis_nn_context ctx;
    cmsis_nn_conv_params p;
    cmsis_nn_per_channel_quant_params q;
    cmsis_nn_dims bd = {1, 1, 1, od.c};
    p.input_offset = in_off;
    p.output_offset = out_off;
    p.stride.w = p.stride.h = stride;
    p.padding.w = p.padding.h = pad;
    p.dilation.w = p.dilation.h = 1;
    p.activation.min = lo;
    p.activation.max = hi;
    q.multiplier = (int32_t *)mult;
    q.shift = (int32_t *)shift;
    ctx.buf = scratch;
    ctx.size = arm_convolve_wrapper_s8_get_buffer_size(&p, &id, &fd, &od);
    if (ctx.size > (int32_t)sizeof scratch) return -1;
    return arm_convolve_wrapper_s8(&ctx, &p, &q, &id, in, &fd, weights, &bd, bias, &od, out) == ARM_CMSIS_NN_SUCCESS ? 0 : -1;
}

static int pool(const int8_t *in, int8_t *out, cmsis_nn_dims id, cmsis_nn_dims fd, cmsis_nn_dims od, int stride)
{
    cmsis_nn_context ctx;
    cmsis_nn_pool_params p;
    p.stride.w = p.stride.h = stride;
    p.padding.w = p.padding.h = 0;
    p.activation.min = -128;
    p.activation.max = 127;
    ctx.buf = scratch;
    ctx.size = arm_avgpool_s8_get_buffer_size(od.w, id.c);
    if (ctx.size > (int32_t)sizeof scratch) return -1;
    return arm_avgpool_s8(&ctx, &p, &id, in, &fd, &od, out) == ARM_CMSIS_NN_SUCCESS ? 0 : -1;
}

int tq_infer(const uint8_t *image, int32_t *logits)
{
    int err = 0;
    int i, best = 0;
${this.body.join('\n')}
    if (err) return -1;
    for (i = 0; i < TQ_CLASSES; ++i) {
        if (logits) logits[i] = out_logits[i];
        if (out_logits[i] > out_logits[best]) best = i;
    }
    return best;
}
`;
    return { source, header };
  }

  private emit(op: Op, index: number): void {
    const t = this.model.tensors;
    switch (op.kind) {
      case 'input': {
        const [c, h, w] = t[op.output].shape;
        if (t[op.output].dtype !== 'int8') throw new Error('bench/cmsis-nn: the input op must give int8 (--input-bits 8)');
        const b = this.alloc(c * h * w);
        this.placed.set(op.output, { buffer: b, offset: 0, scale: 1, hwc: [h, w, c] });
        this.tables += cArray('int8_t', 'input_lut', op.lut);
        // The normalization LUT and CHW -> HWC: what tinyquant's input op does, in the driver (CMSIS-NN has no such op).
        this.body.push(`    { int c, p; for (p = 0; p < ${h * w}; ++p) for (c = 0; c < ${c}; ++c) buf${b}[p * ${c} + c] = input_lut[c * 256 + image[c * ${h * w} + p]]; }`);
        return;
      }
      case 'quantize': {
        const src = this.at(op.input);
        if (op.rule.kind !== 'round' || op.requant.mult.length !== 1 || op.requant.bias[0] !== 0) throw new Error(`bench/cmsis-nn: ${op.name}: only a per-tensor uniform quantize without bias folds into the next conv`);
        // The consumer reads the source tensor itself; its integers are `factor` times the source's.
        const factor = op.requant.mult[0] / 2 ** (op.requant.shift[0] + op.rule.fracBits);
        this.placed.set(op.output, { ...src, scale: src.scale * factor });
        return;
      }
      case 'sumpool': {
        const src = this.at(op.input);
        const [h, w, c] = src.hwc;
        if (op.kernel[0] !== h || op.kernel[1] !== w) throw new Error(`bench/cmsis-nn: ${op.name}: only global pooling is translated`);
        const b = this.alloc(c, [src.buffer]);
        this.body.push(`    err |= pool(buf${src.buffer}, buf${b}, (cmsis_nn_dims)${this.dims(src.hwc)}, (cmsis_nn_dims){1, ${h}, ${w}, 1}, (cmsis_nn_dims){1, 1, 1, ${c}}, 1);`);
        this.maxScratch = Math.max(this.maxScratch, 4 * c);
        // The average is the sum / (H*W): tinyquant's sum is H*W times it.
        this.placed.set(op.output, { buffer: b, offset: src.offset, scale: src.scale * h * w, hwc: [1, 1, c] });
        return;
      }
      case 'conv':
        this.emitConv(op, index);
        return;
      default:
        throw new Error(`bench/cmsis-nn: op ${op.kind} (${op.name}) is not translated`);
    }
  }

  private emitConv(op: ConvOp, index: number): void {
    const t = this.model.tensors;
    const src = this.at(op.input);
    const [oc, oh, ow] = t[op.output].shape;
    const [kh, kw] = op.kernel;
    const ic = op.inChannels;
    if (op.groups !== 1 || op.stride[0] !== op.stride[1] || op.padding[0] !== op.padding[1]) throw new Error(`bench/cmsis-nn: ${op.name}: only dense convs with square stride and padding are translated`);
    const name = `l${this.layer++}`;
    const weights = new Int8Array(oc * kh * kw * ic);
    for (let o = 0; o < oc; o++)
      for (let c = 0; c < ic; c++)
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) {
            const v = op.weights.levels[op.weights.codes[((o * ic + c) * kh + i) * kw + j]];
            if (v < -128 || v > 127) throw new Error(`bench/cmsis-nn: ${op.name}: weight ${v} does not fit int8`);
            weights[((o * kh + i) * kw + j) * ic + c] = v;
          }
    const ep = op.epilogue;
    // tinyquant: out = (acc * mult / 2^shift + bias) / 2^frac in units of `unit` (the residual: 1; logits: logitStep).
    const frac = ep.kind === 'activation' ? (ep.rule.kind === 'round' ? ep.rule.fracBits : NaN) : 0;
    if (Number.isNaN(frac)) throw new Error(`bench/cmsis-nn: ${op.name}: non-uniform activation levels (APoT) are not translated; use a uniform method`);
    const unit = ep.kind === 'logits' ? this.logitStep : 1;
    const mult = new Int32Array(oc);
    const shift = new Int32Array(oc);
    const bias = new Int32Array(oc);
    for (let o = 0; o < oc; o++) {
      const real = (src.scale * op.requant.mult[o]) / 2 ** (op.requant.shift[o] + frac) / unit;
      [mult[o], shift[o]] = q31(real);
      bias[o] = Math.round((op.requant.bias[o] * 2 ** op.requant.shift[o]) / (src.scale * op.requant.mult[o]));
    }
    this.tables += cArray('int8_t', `${name}_w`, weights) + cArray('int32_t', `${name}_b`, bias) + cArray('int32_t', `${name}_m`, mult) + cArray('int32_t', `${name}_s`, shift);
    const relu = ep.kind !== 'logits' && ep.relu;
    if (ep.kind !== 'logits' && ep.ceiling !== null) throw new Error(`bench/cmsis-nn: ${op.name}: clipped activations are not translated`);
    if (ep.kind === 'activation' && ep.zeroPoint !== 0) throw new Error(`bench/cmsis-nn: ${op.name}: activation zero point ${ep.zeroPoint} is not translated`);
    // uint8 codes are stored as int8 code - 128; residual and logits as they are (clamped before an add).
    const outOffset = ep.kind === 'activation' ? -128 : 0;
    const lo = ep.kind === 'residual' && relu && !ep.shortcut ? 0 : -128;
    const out = this.alloc(oc * oh * ow, [src.buffer]);
    if (ep.kind === 'logits') {
      if (kh !== src.hwc[0] || kw !== src.hwc[1] || kh * kw !== 1) throw new Error(`bench/cmsis-nn: ${op.name}: only a linear layer on a 1x1 input is translated`);
      this.body.push(
        `    { cmsis_nn_context ctx = {scratch, 0}; cmsis_nn_fc_params p = {${src.offset}, 0, 0, {-128, 127}}; cmsis_nn_per_channel_quant_params q = {(int32_t *)${name}_m, (int32_t *)${name}_s};\n` +
          `      cmsis_nn_dims id = {1, 1, 1, ${ic}}, fd = {${ic}, 1, 1, ${oc}}, bd = {1, 1, 1, ${oc}}, od = {1, 1, 1, ${oc}};\n` +
          `      err |= arm_fully_connected_per_channel_s8(&ctx, &p, &q, &id, buf${src.buffer}, &fd, ${name}_w, &bd, ${name}_b, &od, buf${out}) != ARM_CMSIS_NN_SUCCESS; }\n` +
          `    const int8_t *out_logits = buf${out};`,
      );
    } else {
      this.body.push(
        `    err |= conv(buf${src.buffer}, buf${out}, (cmsis_nn_dims)${this.dims(src.hwc)}, (cmsis_nn_dims){${oc}, ${kh}, ${kw}, ${ic}}, (cmsis_nn_dims){1, ${oh}, ${ow}, ${oc}}, ${op.stride[0]}, ${op.padding[0]}, ${src.offset}, ${outOffset}, ${lo}, 127, ${name}_w, ${name}_b, ${name}_m, ${name}_s); /* ${op.name} */`,
      );
      const aligned = Math.ceil((kh * kw * ic) / 4) * 4;
      this.maxScratch = Math.max(this.maxScratch, 2 * aligned * 2);
    }
    this.placed.set(op.output, { buffer: out, offset: ep.kind === 'activation' ? 128 : 0, scale: 1, hwc: [oh, ow, oc] });
    if (ep.kind === 'residual' && ep.shortcut) this.emitShortcutAdd(op, ep.shortcut, relu, out, index);
  }

  /** The residual join: the shortcut (option A: subsampled by a 1x1 average pool, zero channels padded) added to the conv's output in place. */
  private emitShortcutAdd(op: ConvOp, sc: NonNullable<Extract<ConvOp['epilogue'], { kind: 'residual' }>['shortcut']>, relu: boolean, out: number, index: number): void {
    const s = this.at(sc.input);
    const [oc, oh, ow] = this.model.tensors[op.output].shape;
    let scBuffer = s.buffer;
    if (sc.stride !== 1 || s.hwc[2] !== oc) {
      this.release(index, op.input);
      const pooled = this.alloc(oh * ow * s.hwc[2], [s.buffer, out]);
      this.body.push(`    err |= pool(buf${s.buffer}, buf${pooled}, (cmsis_nn_dims)${this.dims(s.hwc)}, (cmsis_nn_dims){1, 1, 1, 1}, (cmsis_nn_dims){1, ${oh}, ${ow}, ${s.hwc[2]}}, ${sc.stride});`);
      this.release(index, sc.input);
      const padded = this.alloc(oh * ow * oc, [pooled, out]);
      const post = oc - s.hwc[2] - sc.channelOffset;
      this.body.push(
        `    { cmsis_nn_dims size = {1, ${oh}, ${ow}, ${s.hwc[2]}}, pre = {0, 0, 0, ${sc.channelOffset}}, post = {0, 0, 0, ${post}};\n` +
          `      err |= arm_pad_s8(buf${pooled}, buf${padded}, ${-s.offset}, &size, &pre, &post) != ARM_CMSIS_NN_SUCCESS; }`,
      );
      this.buffers[pooled].free = true;
      scBuffer = padded;
      this.buffers[padded].free = true; // released after the add below, which is the last use
    }
    // Both inputs get ADD_LEFT_SHIFT fractional bits, are halved (mult 0.5) then the sum is scaled back: TFLite's int8 add.
    const [m2, s2] = q31((sc.mult / 2 ** sc.shift) * s.scale * 0.5);
    const [mo, so] = q31(2 / 2 ** ADD_LEFT_SHIFT);
    this.body.push(
      `    err |= arm_elementwise_add_s8(buf${out}, buf${scBuffer}, 0, ${2 ** 30}, 0, ${s.offset}, ${m2}, ${s2}, ${ADD_LEFT_SHIFT}, buf${out}, 0, ${mo}, ${so}, ${relu ? 0 : -128}, 127, ${oc * oh * ow}) != ARM_CMSIS_NN_SUCCESS;`,
    );
  }
}

function opInputs(op: Op): number[] {
  switch (op.kind) {
    case 'input':
      return [];
    case 'conv':
      return op.epilogue.kind === 'residual' && op.epilogue.shortcut ? [op.input, op.epilogue.shortcut.input] : [op.input];
    case 'add':
      return [op.a.input, op.b.input];
    default:
      return [op.input];
  }
}

/** Multiply-accumulates of the model's convs (output elements x window), as bench/device.ts counts them. */
function summary(name: string, run: DeviceRun, macs: number, count: number) {
  const instructions = Math.round(run.instructions.reduce((s, v) => s + v, 0) / count);
  return { name, instructions, instructionsPerMac: instructions / macs, flashBytes: run.flashBytes, ramBytes: run.ramBytes, bss: run.elf.bss, stackBytes: run.stackBytes, text: run.elf.text, rodata: run.elf.rodata };
}

async function main(): Promise<void> {
  const paths = cmsisPaths();
  const missing = deviceToolsMissing();
  if (missing) fail(missing);
  if (!existsSync(values.float)) fail(`--float ${values.float}: no such file (the shipped float ResNet-20 weights)`);
  const count = Number(values.images);
  const log = (m: string): void => {
    if (!values.json) console.error(m);
  };
  const test = await loadDataset({ name: 'cifar10', split: 'test', dataDir: values['data-dir'] });
  const size = test.channels * test.height * test.width;
  const method = values.method as MethodName;
  log(`lowering resnet20 ${method} W8A8, int8 residual stream`);
  const model = calibratedModel({ model: 'resnet20', method, bits: 8, floatFile: values.float, normalization: resolveNormalization('apot', test.channels), residualBits: 8, inputBits: 8 }, test);
  const classes = model.meta.classes.length;
  const engine = new IntegerEngine(model);
  const calibrationLogits = engine.inferBatch(datasetSlice(test, CALIBRATION.start, 64).images, 64);
  const logitStep = Math.max(...calibrationLogits.map(Math.abs)) / LOGIT_HEADROOM;
  const images = test.images.subarray(0, count * size);
  const labels = test.labels.subarray(0, count);
  const macs = convMacs(model);
  const target = DEVICE_TARGETS['cortex-m4'];

  log(`tinyquant C: running ${count} images under QEMU ${target.machine}`);
  const tq = runOnDevice(generateC(model, { headerName: 'model.h' }), images, count);

  const libDir = mkdtempSync(join(tmpdir(), 'tq-cmsis-'));
  try {
    log(`CMSIS-NN: compiling ${paths.nn}/Source (${CMSIS_SOURCE_DIRS.join(', ')}) at ${values['cmsis-opt']}`);
    const lib = buildCmsisLibrary(paths, target.flags.map((f) => (f === '-O2' ? values['cmsis-opt'] : f)), libDir);
    const driver = new CmsisDriver(model, logitStep).build();
    if (values['save-driver']) writeFileAtomic(values['save-driver'], driver.source);
    log(`CMSIS-NN driver: running ${count} images under QEMU ${target.machine}`);
    const cm = runOnDevice(driver, images, count, { flags: [`-I${paths.nn}/Include`, `-I${paths.core}`], link: [lib] });
    const rows = [summary('tinyquant C', tq, macs, count), summary('CMSIS-NN', cm, macs, count)];
    const agreement = tq.top1.filter((k, i) => cm.top1[i] === k).length;
    const result = {
      model: `resnet20 ${method} W8A8 (int8 residual stream), from ${values.float}, calibrated (not trained)`,
      flags: [...target.flags],
      cmsisOpt: values['cmsis-opt'],
      machine: target.machine,
      images: count,
      macs,
      rows,
      ratio: { instructions: rows[1].instructions / rows[0].instructions, flash: rows[1].flashBytes / rows[0].flashBytes, ram: rows[1].ramBytes / rows[0].ramBytes },
      top1Agreement: (100 * agreement) / count,
      top1Accuracy: { tinyquant: top1Accuracy(tq.logits, labels, classes), cmsis: top1Accuracy(cm.logits, labels, classes) },
      cmsisErrors: Array.from(cm.top1).filter((k) => k < 0).length,
    };
    if (values.json) {
      console.log(JSON.stringify(result));
      return;
    }
    console.log(`\n${result.model}; ${macs.toLocaleString('en-US')} MACs per inference; ${target.flags.join(' ')} (CMSIS-NN's sources at ${values['cmsis-opt']}); QEMU ${target.machine} -icount shift=0; ${count} CIFAR-10 test images`);
    console.log('| build | instructions / inference | instructions / MAC | flash B (text + rodata) | RAM B (bss + stack) |');
    console.log('|---|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.name} | ${r.instructions.toLocaleString('en-US')} | ${r.instructionsPerMac.toFixed(2)} | ${r.flashBytes} (${r.text} + ${r.rodata}) | ${r.ramBytes} (${r.bss} + ${r.stackBytes}) |`);
    console.log(`CMSIS-NN / tinyquant: instructions x${result.ratio.instructions.toFixed(2)}, flash x${result.ratio.flash.toFixed(2)}, RAM x${result.ratio.ram.toFixed(2)}`);
    console.log(`top-1 agreement CMSIS-NN vs tinyquant: ${result.top1Agreement.toFixed(1)}% of ${count}; top-1 accuracy: tinyquant ${result.top1Accuracy.tinyquant.toFixed(1)}%, CMSIS-NN ${result.top1Accuracy.cmsis.toFixed(1)}%${result.cmsisErrors ? `; CMSIS-NN calls failed on ${result.cmsisErrors} images` : ''}`);
  } finally {
    rmSync(libDir, { recursive: true, force: true });
  }
}

await main();
