/**
 * Compile and run generated C (generate.ts): natively with the host's gcc, and for a Cortex-M4
 * with arm-none-eabi-gcc (newlib) under QEMU's mps2-an386 board with `-icount shift=0`
 * (deterministic: one instruction per nanosecond of virtual time). Used by the tests and
 * bench/device.ts. Node only.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GeneratedC } from './generate.js';
import { DEVICE_LINKER_SCRIPT, DEVICE_MAIN, HOST_MAIN } from './harness.js';

/** Warnings the generated C must compile without. */
export const WARNING_FLAGS = ['-std=c99', '-Wall', '-Wextra', '-Werror'];
/** Cortex-M4 code generation (soft-float ABI: the generated code has no floating point anyway). */
export const CORTEX_M4_FLAGS = ['-O2', '-mcpu=cortex-m4', '-mthumb', '-mfloat-abi=soft', '-ffunction-sections', '-fdata-sections'];

/** The emulated boards: the compiler flags and QEMU machine of each core (both ARMv7E-M: the DSP kernels run on both). */
export const DEVICE_TARGETS = {
  'cortex-m4': { flags: CORTEX_M4_FLAGS, machine: 'mps2-an386' },
  'cortex-m7': { flags: CORTEX_M4_FLAGS.map((f) => (f === '-mcpu=cortex-m4' ? '-mcpu=cortex-m7' : f)), machine: 'mps2-an500' },
} as const satisfies Record<string, { readonly flags: readonly string[]; readonly machine: string }>;
export type DeviceTarget = keyof typeof DEVICE_TARGETS;
export const ARM_GCC = 'arm-none-eabi-gcc';
export const QEMU = 'qemu-system-arm';

export class ToolchainError extends Error {
  override name = 'ToolchainError';
}

/** Runs a program to its end; its stdout, or a ToolchainError with its stderr when it fails. */
export function runTool(cmd: string, args: readonly string[], opts: { cwd: string; input?: Uint8Array; timeoutMs?: number }): string {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, input: opts.input, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 256 << 20, encoding: 'buffer' });
  if (r.error) throw new ToolchainError(`${cmd}: ${r.error.message}`);
  const stdout = r.stdout.toString();
  if (r.status !== 0) throw new ToolchainError(`${cmd} ${args.join(' ')} failed (status ${r.status ?? r.signal}):\n${r.stderr.toString()}${stdout.slice(-2000)}`);
  return stdout;
}

/** Whether a program can be started (`--version`). */
export function hasTool(cmd: string): boolean {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8' });
  return !r.error && r.status === 0;
}

/** Why the Cortex-M4 run cannot happen here (missing tools), or null when it can. */
export function deviceToolsMissing(): string | null {
  const missing = [ARM_GCC, QEMU].filter((t) => !hasTool(t));
  return missing.length > 0 ? `${missing.join(' and ')} not installed (Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)` : null;
}

/** The C files of a generated model. */
export type CSources = Pick<GeneratedC, 'source' | 'header'>;

/**
 * A temporary directory holding model.c, the header (as model.h, which the harnesses include, and
 * under the name model.c includes) and `extra` files, removed after `use`.
 */
function withSources<T>(c: CSources, extra: Record<string, string>, use: (dir: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'tq-c-'));
  try {
    const included = /#include "([^"/]+)"/.exec(c.source)?.[1];
    writeFileSync(join(dir, 'model.c'), c.source);
    for (const name of new Set(['model.h', included ?? 'model.h'])) writeFileSync(join(dir, name), c.header);
    for (const [name, text] of Object.entries(extra)) writeFileSync(join(dir, name), text);
    return use(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function checkImages(images: Uint8Array, count: number, imageBytes: number): void {
  if (!Number.isInteger(count) || count < 1 || images.length !== count * imageBytes) {
    throw new ToolchainError(`${count} images of ${imageBytes} bytes need ${count * imageBytes} bytes, got ${images.length}`);
  }
}

function imageBytesOf(c: CSources): number {
  const m = /#define \w+_IMAGE_BYTES (\d+)/.exec(c.header);
  if (!m) throw new ToolchainError('the header defines no NAME_IMAGE_BYTES');
  return Number(m[1]);
}

export interface CRun {
  /** Class per image. */
  readonly top1: Int32Array;
  /** count x classes logits. */
  readonly logits: Int32Array;
}

function parseLogits(lines: readonly string[], count: number): CRun {
  if (lines.length !== count) throw new ToolchainError(`expected results for ${count} images, got ${lines.length}`);
  const rows = lines.map((l) => l.trim().split(/\s+/).map(Number));
  const classes = rows[0].length - 1;
  return { top1: Int32Array.from(rows, (r) => r[0]), logits: Int32Array.from(rows.flatMap((r) => r.slice(1, 1 + classes))) };
}

/**
 * Compile the generated C with the host's gcc (warnings as errors, `flags` added) and run it on
 * `count` images stored back to back in the layout the code was generated for.
 */
export function runOnHost(c: CSources, images: Uint8Array, count: number, flags: readonly string[] = ['-O2']): CRun {
  checkImages(images, count, imageBytesOf(c));
  return withSources(c, { 'main.c': HOST_MAIN }, (dir) => {
    runTool('gcc', [...WARNING_FLAGS, '-pedantic', ...flags, '-o', 'app', 'model.c', 'main.c'], { cwd: dir });
    const out = runTool(join(dir, 'app'), [], { cwd: dir, input: images });
    return parseLogits(out.split('\n').filter((l) => l.length > 0), count);
  });
}

/**
 * Runs a Cortex-M4 program under `qemu-system-arm -M mps2-an386 -icount shift=0` with semihosting
 * (files relative to `cwd`; `machine` mps2-an500 for a Cortex-M7); its output, or a ToolchainError
 * when it exits with a non-zero status.
 */
export function runUnderQemu(elf: string, cwd: string, timeoutMs = 600_000, machine: string = DEVICE_TARGETS['cortex-m4'].machine): string {
  // Semihosting output on an explicit stdio chardev: -nographic's stdio mux drops it once stdin is at its end.
  const args = ['-M', machine, '-display', 'none', '-chardev', 'stdio,id=semihosting', '-semihosting-config', 'enable=on,target=native,chardev=semihosting', '-icount', 'shift=0', '-kernel', elf];
  return runTool(QEMU, args, { cwd, timeoutMs });
}

/** Bytes of the ELF's (or object's) allocated sections, by name. */
export type SectionSizes = Record<string, number>;

function sectionSizes(file: string, cwd: string): SectionSizes {
  const out = runTool('arm-none-eabi-size', ['-A', '-d', file], { cwd });
  const sizes: SectionSizes = {};
  for (const line of out.split('\n')) {
    const m = /^(\.\S+)\s+(\d+)\s+\d+/.exec(line);
    if (m && !/^\.(comment|ARM\.attributes|debug)/.test(m[1])) sizes[m[1]] = Number(m[2]);
  }
  return sizes;
}

function sumSections(sizes: SectionSizes, prefixes: readonly string[]): number {
  return Object.entries(sizes).reduce((s, [name, bytes]) => s + (prefixes.some((p) => name === p || name.startsWith(`${p}.`)) ? bytes : 0), 0);
}

export interface DeviceRun extends CRun {
  /** SysTick ticks of each tq_infer call. */
  readonly ticks: Float64Array;
  /** Instructions per tick, measured on a loop of known length (40 on mps2-an386: 25 MHz, 1 ns per instruction). */
  readonly instructionsPerTick: number;
  /** Instructions of each tq_infer call (ticks x instructionsPerTick: resolution one tick). */
  readonly instructions: Float64Array;
  /** Deepest stack of a tq_infer call below its caller's stack pointer, bytes. */
  readonly inferStackBytes: number;
  /** Deepest stack of the whole program (reset to the end of the last inference), bytes. */
  readonly stackBytes: number;
  /** The linked program: flash (code + constants + initialized-data image) and static RAM. */
  readonly elf: { readonly text: number; readonly rodata: number; readonly data: number; readonly bss: number };
  /** The generated model's object file alone. */
  readonly model: { readonly text: number; readonly rodata: number; readonly data: number; readonly bss: number };
  /** Flash of the program: text + rodata + data (its initial values live in flash). */
  readonly flashBytes: number;
  /** RAM of the program: data + bss + stack high-water mark. */
  readonly ramBytes: number;
}

function parseDevice(out: string, count: number): Omit<DeviceRun, 'elf' | 'model' | 'flashBytes' | 'ramBytes'> {
  const lines = out.split('\n');
  const results = lines.filter((l) => l.startsWith('image '));
  const field = (l: string, name: string): number => Number(new RegExp(`\\b${name} (-?\\d+)`).exec(l)?.[1] ?? NaN);
  const calibration = lines.find((l) => l.startsWith('calibration '));
  if (!calibration || results.length !== count) throw new ToolchainError(`the Cortex-M4 program printed ${results.length} of ${count} results:\n${out.slice(-2000)}`);
  // The ratio is a whole number (1 ns per instruction, a clock period of whole ns); the loop measures it to within a tick.
  const measured = field(calibration, 'instructions') / field(calibration, 'ticks');
  const instructionsPerTick = Math.round(measured);
  if (!(Math.abs(measured - instructionsPerTick) < 0.01 * measured)) throw new ToolchainError(`calibration: ${measured} instructions per SysTick tick is not a whole number: ${calibration}`);
  const ticks = Float64Array.from(results, (l) => field(l, 'ticks'));
  const run = parseLogits(results.map((l) => `${field(l, 'class')} ${l.split(' logits ')[1]}`), count);
  return {
    ...run,
    ticks,
    instructionsPerTick,
    instructions: ticks.map((t) => Math.round(t * instructionsPerTick)),
    inferStackBytes: Math.max(...results.map((l) => field(l, 'stack'))),
    stackBytes: Math.max(...results.map((l) => field(l, 'total-stack'))),
  };
}

export interface DeviceOptions {
  /** The core and board (default cortex-m4: mps2-an386). */
  readonly target?: DeviceTarget;
  /** Extra compiler flags (after -O2 -mcpu=cortex-m4 -mthumb -mfloat-abi=soft). */
  readonly flags?: readonly string[];
  /** QEMU's time limit. */
  readonly timeoutMs?: number;
  /** Receives the compiled object's undefined symbols (what the model needs from libraries). */
  readonly onModelSymbols?: (undefinedSymbols: readonly string[]) => void;
  /** Objects or static libraries (absolute paths) linked after the model and the harness (bench/cmsis-nn.ts: CMSIS-NN). */
  readonly link?: readonly string[];
}

/**
 * Cross-compile for a Cortex-M4 (or `target` cortex-m7; newlib, no startup files: harness.ts has
 * its own), link within 1 MB flash and 256 KB SRAM, and run `count` images under `qemu-system-arm
 * -M mps2-an386` (M7: mps2-an500) `-icount shift=0` with semihosting.
 */
export function runOnDevice(c: CSources, images: Uint8Array, count: number, opts: DeviceOptions = {}): DeviceRun {
  checkImages(images, count, imageBytesOf(c));
  const missing = deviceToolsMissing();
  if (missing) throw new ToolchainError(missing);
  return withSources(c, { 'main.c': DEVICE_MAIN, 'link.ld': DEVICE_LINKER_SCRIPT }, (dir) => {
    const target = DEVICE_TARGETS[opts.target ?? 'cortex-m4'];
    const flags = [...WARNING_FLAGS, ...target.flags, ...(opts.flags ?? [])];
    runTool(ARM_GCC, [...flags, '-pedantic', '-c', 'model.c', '-o', 'model.o'], { cwd: dir });
    runTool(ARM_GCC, [...flags, '-c', 'main.c', '-o', 'main.o'], { cwd: dir });
    opts.onModelSymbols?.(
      runTool('arm-none-eabi-nm', ['-u', 'model.o'], { cwd: dir })
        .split('\n')
        .map((l) => l.trim().split(/\s+/).at(-1) ?? '')
        .filter((s) => s.length > 0),
    );
    runTool(ARM_GCC, [...target.flags, '-nostartfiles', '--specs=nano.specs', '-T', 'link.ld', '-Wl,--gc-sections', '-o', 'app.elf', 'model.o', 'main.o', ...(opts.link ?? [])], { cwd: dir });
    writeFileSync(join(dir, 'images.bin'), images);
    const out = runUnderQemu('app.elf', dir, opts.timeoutMs, target.machine);
    const elfSizes = sectionSizes('app.elf', dir);
    const modelSizes = sectionSizes('model.o', dir);
    const summary = (s: SectionSizes) => ({
      text: sumSections(s, ['.text', '.vectors']),
      rodata: sumSections(s, ['.rodata', '.ARM.exidx']),
      data: sumSections(s, ['.data']),
      bss: sumSections(s, ['.bss']),
    });
    const elf = summary(elfSizes);
    const parsed = parseDevice(out, count);
    return { ...parsed, elf, model: summary(modelSizes), flashBytes: elf.text + elf.rodata + elf.data, ramBytes: elf.data + elf.bss + parsed.stackBytes };
  });
}
