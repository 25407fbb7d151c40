/**
 * The C export on a Cortex-M4 and a Cortex-M7: for each bit-width, the integer model of a registry model (default
 * ResNet-20; any zoo model: `--model dscnn`, `mobilenetv1-0.25`, `resnet8-mlperf`) is turned into C
 * (src/export/c), cross-compiled with arm-none-eabi-gcc -O2 -mcpu=cortex-m4 -mthumb
 * -mfloat-abi=soft (newlib; the generated code has no floating point, so the float ABI does not
 * change it; -mcpu=cortex-m7 for the M7) and run under `qemu-system-arm -M mps2-an386` (M7:
 * `mps2-an500`) `-icount shift=0` with semihosting on
 * CIFAR-10 test images (models with another input shape: seeded synthetic images of that shape,
 * which leave sizes and instruction counts as they are); its logits (and those of the same C built with the host's gcc, also with
 * -std=c99 -Wall -Wextra -Werror) are compared with the TypeScript integer engine's.
 *
 *   node dist/bench/device.js [--bits 2,3,4,8] [--images N] [--method ewgs] [--model resnet20]
 *        [--targets cortex-m4,cortex-m7]
 *        [--float FILE.safetensors] [--normalization apot] [--residual-bits 16|8] [--input-bits 8|16] [--pack-activations]
 *        [--arena-budget BYTES]
 *        [--run BITS=RUN_DIR ...] [--data-dir DIR] [--json] [--out FILE.json]
 *
 * Models: with `--run BITS=DIR` the trained checkpoint of that bit-width (lowered as `tinyquant
 * export` lowers it, calibrating on its training split); otherwise the architecture quantized with
 * `--method` at W=A=bits, started from `--float` weights when given (else random weights), with
 * quantizers and fixed-point scales calibrated on 256 test images that are not among those run.
 * Sizes and instruction counts do not depend on training; accuracy does (printed for reference).
 *
 * Measured: flash = text + rodata (+ initialized data) of the linked program (model, runtime,
 * startup, harness); RAM = data + bss (the model's arena, the image buffer) + the stack
 * high-water mark (stack painted before each inference); instructions per inference = SysTick
 * ticks x instructions per tick (40: 25 MHz clock, -icount shift=0 runs one instruction per ns;
 * measured by the harness on a loop of known length; resolution one tick); per MAC: divided by
 * the multiply-accumulates of the model's convs (output elements x window).
 */
import { existsSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type NormalizationPreset, resolveNormalization } from '../src/data/augment.js';
import type { ImageDataset } from '../src/data/dataset.js';
import { loadDataset } from '../src/data/load.js';
import { compareLogits, top1Accuracy } from '../src/export/agreement.js';
import { generateC } from '../src/export/c/generate.js';
import { kernelLayers } from '../src/export/c/kernels.js';
import { DEVICE_TARGETS, type DeviceTarget, deviceToolsMissing, runOnDevice, runOnHost } from '../src/export/c/toolchain.js';
import { loadTrainedModel, lowerTrainedModel } from '../src/export/checkpoint-model.js';
import { IntegerEngine } from '../src/export/engine.js';
import type { IntegerModel } from '../src/export/ir.js';
import { type ModelName, isModelName, modelNames, models } from '../src/models/index.js';
import type { MethodName } from '../src/quant/quantizer.js';
import { CALIBRATION, calibratedModel, convMacs, datasetSlice } from './common.js';

const DEFAULT_FLOAT = 'models/resnet20-cifar10-float.safetensors';
/** ResNet-20's targets by bit-width, KiB = 1024 bytes; every other model: a Cortex-M4 with 256 KB SRAM and 1 MB flash. */
const RESNET20_TARGETS: Record<number, { flash: number; ram?: number }> = { 4: { flash: 200 * 1024, ram: 96 * 1024 }, 2: { flash: 120 * 1024 } };
const MCU_BUDGET = { flash: 1024 * 1024, ram: 256 * 1024 };

const { values } = parseArgs({
  options: {
    bits: { type: 'string', default: '2,3,4,8' },
    images: { type: 'string', default: '10' },
    method: { type: 'string', default: 'ewgs' },
    model: { type: 'string', default: 'resnet20' },
    targets: { type: 'string', default: 'cortex-m4,cortex-m7' },
    normalization: { type: 'string', default: 'apot' },
    'residual-bits': { type: 'string', default: '16' },
    'input-bits': { type: 'string', default: '8' },
    'pack-activations': { type: 'boolean', default: false },
    'arena-budget': { type: 'string' },
    float: { type: 'string' },
    run: { type: 'string', multiple: true, default: [] },
    'data-dir': { type: 'string', default: '/work/shared/data' },
    json: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});

function log(message: string): void {
  if (!values.json) console.error(message);
}

/** `count` images of `shape` with smooth structure plus noise (deterministic), labelled 0. */
function syntheticDataset(shape: readonly [number, number, number], count: number): ImageDataset {
  const [channels, height, width] = shape;
  const images = new Uint8Array(count * channels * height * width);
  let state = 12345;
  const next = (): number => ((state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let n = 0; n < count; n++) {
    const [fy, fx, phase] = [next() * 0.6, next() * 0.6, next() * 6];
    for (let i = 0; i < channels * height * width; i++) {
      const [y, x] = [Math.floor(i / width) % height, i % width];
      images[n * channels * height * width + i] = Math.max(0, Math.min(255, Math.round(128 + 80 * Math.sin(fy * y + fx * x + phase) + 30 * (next() - 0.5))));
    }
  }
  const classes = Array.from({ length: models[values.model as keyof typeof models].numClasses }, (_, i) => `class${i}`);
  return { name: 'synthetic', split: 'test', images, labels: new Int32Array(count), count, channels, height, width, classes, source: 'synthetic' };
}

function quantizedModel(bits: number, test: ImageDataset, floatFile: string | undefined): IntegerModel {
  const o = {
    model: values.model as ModelName,
    method: values.method as MethodName,
    bits,
    floatFile,
    normalization: resolveNormalization(values.normalization as NormalizationPreset, test.channels),
    residualBits: Number(values['residual-bits']) as 8 | 16,
    inputBits: Number(values['input-bits']) as 8 | 16,
  };
  return calibratedModel(o, test);
}

async function integerModel(bits: number, test: ImageDataset, floatFile: string | undefined): Promise<{ model: IntegerModel; source: string }> {
  const run = values.run.find((r) => r.startsWith(`${bits}=`))?.slice(`${bits}=`.length);
  if (run) {
    const lowering = { dataDir: values['data-dir'], residualBits: Number(values['residual-bits']) as 8 | 16, inputBits: Number(values['input-bits']) as 8 | 16 };
    return { model: (await lowerTrainedModel(loadTrainedModel(run), lowering)).ir, source: run };
  }
  const source = `${values.model} ${values.method} W${bits}A${bits}, ${floatFile ? `from ${floatFile}` : 'random weights'}, calibrated (not trained)`;
  return { model: quantizedModel(bits, test, floatFile), source };
}

/** --arena-budget BYTES as a number, undefined when not given. */
function arenaBudget(): number | undefined {
  const text = values['arena-budget'];
  if (text === undefined) return undefined;
  const bytes = Number(text);
  if (!Number.isInteger(bytes) || bytes <= 0) throw new Error(`bench/device: --arena-budget takes a positive number of bytes, got "${text}"`);
  return bytes;
}

async function main(): Promise<void> {
  const missing = deviceToolsMissing();
  if (missing) throw new Error(`bench/device: ${missing}`);
  const bits = values.bits.split(',').map(Number);
  const targets = values.targets.split(',') as DeviceTarget[];
  const unknown = targets.find((t) => !(t in DEVICE_TARGETS));
  if (unknown) throw new Error(`bench/device: --targets takes ${Object.keys(DEVICE_TARGETS).join(', ')}, got "${unknown}"`);
  const count = Number(values.images);
  if (!isModelName(values.model)) throw new Error(`bench/device: --model must be one of ${modelNames.join(', ')}`);
  const floatFile = values.float ?? (values.model === 'resnet20' && existsSync(DEFAULT_FLOAT) ? DEFAULT_FLOAT : undefined);
  const shape = models[values.model].inputShape;
  const cifar = shape.join('x') === '3x32x32';
  const test = cifar ? await loadDataset({ name: 'cifar10', split: 'test', dataDir: values['data-dir'] }) : syntheticDataset(shape, CALIBRATION.start + CALIBRATION.images);
  const sample = datasetSlice(test, 0, count);
  const rows = [];
  for (const b of bits) {
    log(`W${b}A${b}: lowering`);
    const { model, source } = await integerModel(b, test, floatFile);
    const generated = generateC(model, { headerName: 'model.h', packActivations: values['pack-activations'], arenaBudget: arenaBudget() });
    const engine = new IntegerEngine(model).inferBatch(sample.images, sample.count);
    const host = runOnHost(generated, sample.images, sample.count);
    const classes = model.meta.classes.length;
    const macs = convMacs(model);
    for (const target of targets) {
      log(`W${b}A${b}: running ${sample.count} images under QEMU ${DEVICE_TARGETS[target].machine}`);
      const device = runOnDevice(generated, sample.images, sample.count, { target });
      // The C program's class is the first maximum of its logits, as compareLogits and top1Accuracy take it.
      const onDevice = compareLogits(device.logits, engine, classes);
      const instructions = Math.round(device.instructions.reduce((s, v) => s + v, 0) / sample.count);
      const row = {
        bits: b,
        core: target,
        machine: DEVICE_TARGETS[target].machine,
        source,
        flashBytes: device.flashBytes,
        text: device.elf.text,
        rodata: device.elf.rodata,
        ramBytes: device.ramBytes,
        data: device.elf.data,
        bss: device.elf.bss,
        arenaBytes: generated.plan.bytes,
        stackBytes: device.stackBytes,
        modelFlashBytes: device.model.text + device.model.rodata,
        macs,
        instructions,
        instructionsPerMac: instructions / macs,
        instructionsMin: Math.min(...device.instructions),
        instructionsMax: Math.max(...device.instructions),
        images: sample.count,
        identicalLogits: onDevice.identicalImages,
        hostIdenticalLogits: compareLogits(host.logits, engine, classes).identicalImages,
        top1Agreement: onDevice.sameTop1,
        top1Accuracy: top1Accuracy(device.logits, sample.labels, classes),
        genericConvs: generated.notes,
        kernels: kernelLayers(model, generated.kernels),
        arena: generated.arenaReport,
        target: (values.model === 'resnet20' ? RESNET20_TARGETS[b] : MCU_BUDGET) ?? null,
      };
      log(JSON.stringify(row));
      rows.push(row);
    }
  }
  const result = { flags: Object.fromEntries(targets.map((t) => [t, [...DEVICE_TARGETS[t].flags]])), qemu: '-icount shift=0', rows };
  if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
  if (values.json) {
    console.log(JSON.stringify(result));
    return;
  }
  const kib = (n: number): string => (n / 1024).toFixed(1);
  console.log(
    `\n${values.model} (int${values['input-bits']} image, int${values['residual-bits']} residual stream; ${rows[0]?.macs.toLocaleString('en-US')} MACs per inference), ` +
      `${targets.map((t) => `${t} (${DEVICE_TARGETS[t].flags.join(' ')}; QEMU ${DEVICE_TARGETS[t].machine})`).join(', ')}, -icount shift=0, ${sample.count} ${cifar ? 'CIFAR-10 test' : 'synthetic'} images`,
  );
  console.log('| bits | core | flash B (text + rodata) | flash KiB | RAM B (data + bss + stack) | RAM KiB | arena B | stack B | instructions / inference | instructions / MAC | logits identical to TS engine (device / host gcc) | top-1 agreement % | top-1 accuracy % | target |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const t = r.target;
    const verdict = t ? `flash <= ${kib(t.flash)} KiB: ${r.flashBytes <= t.flash ? 'met' : 'MISSED'}${t.ram ? `; RAM <= ${kib(t.ram)} KiB: ${r.ramBytes <= t.ram ? 'met' : 'MISSED'}` : ''}` : '';
    console.log(
      `| ${r.bits} | ${r.core.replace('cortex-', '').toUpperCase()} | ${r.flashBytes} (${r.text} + ${r.rodata}${r.data ? ` + ${r.data}` : ''}) | ${kib(r.flashBytes)} | ${r.ramBytes} (${r.data} + ${r.bss} + ${r.stackBytes}) | ${kib(r.ramBytes)} | ` +
        `${r.arenaBytes} | ${r.stackBytes} | ${r.instructions.toLocaleString('en-US')} | ${r.instructionsPerMac.toFixed(2)} | ${r.identicalLogits}/${r.images} / ${r.hostIdenticalLogits}/${r.images} | ${r.top1Agreement.toFixed(1)} | ${r.top1Accuracy.toFixed(1)} | ${verdict} |`,
    );
  }
  const generic = [...new Set(rows.flatMap((r) => r.genericConvs))];
  if (generic.length > 0) console.log(`convs on the generic kernel: ${generic.join('; ')}`);
  for (const line of new Set(rows.flatMap((r) => r.arena.map((l) => `W${r.bits}: ${l}`)))) console.log(line);
  console.log(`models: ${[...new Set(rows.map((r) => r.source))].join('; ')}`);
}

await main();
