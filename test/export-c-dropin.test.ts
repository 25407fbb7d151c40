/**
 * Drop-in C (`tinyquant export --format c --name --arena --section --image-layout --build-files`):
 * the exported CMakeLists.txt and Makefile fragment build the example on the host (gcc) and for a
 * Cortex-M4 (arm-none-eabi-gcc, run under QEMU mps2-an386), and its printed class and logits are the
 * TypeScript integer engine's; two models with different names link into one program (host and M4)
 * whose only external symbols carry their prefixes, one arena in its named section, the other the
 * caller's; bad names, sections and flag combinations are refused, naming the flag, before any file
 * is written.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { errorClass } from '../src/cli/errors.js';
import { exportCommand } from '../src/cli/export.js';
import { loadDataset } from '../src/data/load.js';
import { type CGenerateOptions, generateC } from '../src/export/c/generate.js';
import { EXAMPLE_LINKER_SCRIPT, EXAMPLE_LINK_FLAGS, EXAMPLE_STARTUP } from '../src/export/c/harness.js';
import { imageInLayout } from '../src/export/c/project.js';
import { ARM_GCC, CORTEX_M4_FLAGS, WARNING_FLAGS, deviceToolsMissing, hasTool, runTool, runUnderQemu } from '../src/export/c/toolchain.js';
import { loadTrainedModel, lowerTrainedModel } from '../src/export/checkpoint-model.js';
import { IntegerEngine } from '../src/export/engine.js';
import { type IntegerModel, inputShape } from '../src/export/ir.js';
import { calibratedRun, quietly } from './export-fixtures.js';
import { cifar10Folder, cifarRecords } from './fixtures/data/make.js';
import { irCases, randomImages } from './ir-models.js';

const deviceMissing = deviceToolsMissing();
const cmakeMissing = hasTool('cmake') && hasTool('make') ? null : 'cmake or make not installed (Debian: cmake make)';
const M4 = CORTEX_M4_FLAGS.join(' ');

interface Printed {
  readonly top: number;
  readonly logits: number[];
}

/** The example's "class K NAME" and "logits ..." lines. */
function printed(out: string, prefix = ''): Printed {
  const top = new RegExp(`^${prefix}class (-?\\d+) `, 'm').exec(out);
  const logits = new RegExp(`^${prefix}logits((?: -?\\d+)+)$`, 'm').exec(out);
  assert.ok(top && logits, `no class and logits lines in:\n${out}`);
  return { top: Number(top[1]), logits: logits[1].trim().split(' ').map(Number) };
}

/** The engine's class (first largest logit) and logits of one CHW image. */
function engineResult(model: IntegerModel, image: Uint8Array): Printed {
  const logits = Array.from(new IntegerEngine(model).inferBatch(image, 1));
  return { top: logits.indexOf(Math.max(...logits)), logits };
}

/** The C array initializer of some bytes. */
function bytesArray(name: string, size: string, bytes: Uint8Array): string {
  return `static const uint8_t ${name}[${size}] = { ${Array.from(bytes).join(', ')} };\n`;
}

let dir: string;
before(() => {
  setBackend('js');
  dir = mkdtempSync(join(tmpdir(), 'tq-c-dropin-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('tinyquant export --format c --build-files: the example built with CMake and with the Makefile fragment', () => {
  let run: string;
  let model: IntegerModel;
  let images: Uint8Array;
  const out = (): string => join(dir, 'kws');
  before(async () => {
    cifar10Folder(dir, (i) => cifarRecords(Array.from({ length: 4 }, (_, r) => [(r * 3 + i) % 10]), i * 100), cifarRecords(Array.from({ length: 3 }, (_, r) => [(r * 3 + 9) % 10]), 9));
    run = calibratedRun(dir, 'apot4', { method: 'apot', wbits: 4 }, 8, 1);
    mkdirSync(out());
    const args = ['--checkpoint', run, '--format', 'c', '--out', join(out(), 'kws.c'), '--name', 'kws', '--arena', 'caller', '--image-layout', 'hwc', '--build-files'];
    await quietly(() => exportCommand([...args, '--data-dir', dir, '--calibration-images', '8']));
    model = (await lowerTrainedModel(loadTrainedModel(run), { dataDir: dir, calibrationImages: 8 })).ir;
    images = (await loadDataset({ name: 'cifar10', split: 'test', dataDir: dir })).images;
  });
  const image = (n: number): Uint8Array => images.slice(n * 3072, (n + 1) * 3072);

  test('--pack-activations reaches the generator: uniform 4-bit codes two per byte, a smaller arena', async () => {
    const ewgs = calibratedRun(dir, 'ewgs4', { method: 'ewgs', wbits: 4 }, 8, 1);
    const arena = async (name: string, extra: string[]): Promise<{ bytes: number; source: string }> => {
      mkdirSync(join(dir, name));
      await quietly(() => exportCommand(['--checkpoint', ewgs, '--format', 'c', '--out', join(dir, name, 'kws.c'), '--name', 'kws', ...extra, '--data-dir', dir, '--calibration-images', '8']));
      return { bytes: Number(/#define KWS_ARENA_BYTES (\d+)/.exec(readFileSync(join(dir, name, 'kws.h'), 'utf8'))![1]), source: readFileSync(join(dir, name, 'kws.c'), 'utf8') };
    };
    const [bytes, packed] = [await arena('ewgs-bytes', []), await arena('ewgs-packed', ['--pack-activations'])];
    assert.ok(packed.bytes < bytes.bytes, `packed arena ${packed.bytes}, unpacked ${bytes.bytes}`);
    assert.match(packed.source, /tq_im2col_u4/);
    assert.doesNotMatch(bytes.source, /tq_im2col_u4/);
  });

  test('writes the sources, CMakeLists.txt, kws.mk and main.c; the header has the prefixed API', () => {
    assert.deepEqual(readdirSync(out()).sort(), ['CMakeLists.txt', 'kws.c', 'kws.h', 'kws.mk', 'main.c']);
    const header = readFileSync(join(out(), 'kws.h'), 'utf8');
    assert.match(header, /#ifndef KWS_H\n#define KWS_H\n/);
    assert.match(header, /int kws_infer\(const uint8_t \*image, int32_t \*logits, void \*arena\);/);
    assert.match(header, /extern const char \*const kws_class_names\[KWS_CLASSES\];/);
    assert.match(header, /interleaved pixels \(HWC/);
    assert.doesNotMatch(header, /\bTQ_|\btq_/);
    assert.match(readFileSync(join(out(), 'CMakeLists.txt'), 'utf8'), /add_library\(kws STATIC kws\.c kws\.h\)/);
  });

  test('host: CMake builds kws_example; it prints the engine class and logits of the embedded image and of a file', { skip: cmakeMissing ?? false }, () => {
    const build = join(dir, 'cmake-host');
    runTool('cmake', ['-S', out(), '-B', build, '-DCMAKE_C_COMPILER=gcc', `-DCMAKE_C_FLAGS=${[...WARNING_FLAGS, '-pedantic', '-O2'].join(' ')}`], { cwd: dir });
    runTool('cmake', ['--build', build], { cwd: dir });
    const embedded = runTool(join(build, 'kws_example'), [], { cwd: dir });
    assert.deepEqual(printed(embedded), engineResult(model, image(0)));
    assert.match(embedded, /^engine same logits$/m);
    writeFileSync(join(dir, 'image1.hwc'), imageInLayout(image(1), [3, 32, 32], 'hwc'));
    assert.deepEqual(printed(runTool(join(build, 'kws_example'), [join(dir, 'image1.hwc')], { cwd: dir })), engineResult(model, image(1)));
    writeFileSync(join(dir, 'short.bin'), new Uint8Array(100));
    assert.throws(() => runTool(join(build, 'kws_example'), [join(dir, 'short.bin')], { cwd: dir }), /short\.bin: not an image of 3072 bytes/);
  });

  /** A Makefile that includes kws.mk and builds the example (plus `EXTRA_OBJECTS`). */
  function makefile(): string {
    const file = join(dir, 'make');
    mkdirSync(file, { recursive: true });
    writeFileSync(
      join(file, 'Makefile'),
      `include ${join(out(), 'kws.mk')}\nCFLAGS = ${[...WARNING_FLAGS, '-pedantic', '-O2'].join(' ')} $(TARGET_FLAGS) $(addprefix -I,$(KWS_INCLUDE_DIRS))\n` +
        `example: $(KWS_SOURCES) $(KWS_EXAMPLE_SOURCES) $(EXTRA_OBJECTS)\n\t$(CC) $(CFLAGS) -o $@ $^ $(LDFLAGS)\n` +
        `startup.o: startup.c\n\t$(CC) $(TARGET_FLAGS) -c -o $@ $<\n`,
    );
    writeFileSync(join(file, 'startup.c'), EXAMPLE_STARTUP);
    writeFileSync(join(file, 'link.ld'), EXAMPLE_LINKER_SCRIPT);
    return file;
  }

  test('host: a Makefile including kws.mk builds the same example', { skip: cmakeMissing ?? false }, () => {
    const file = makefile();
    runTool('make', ['-s', '-B', '-C', file, 'CC=gcc', 'example'], { cwd: dir });
    assert.deepEqual(printed(runTool(join(file, 'example'), [], { cwd: dir })), engineResult(model, image(0)));
  });

  test('Cortex-M4: the Makefile fragment and a firmware CMake project with add_subdirectory build the example; under QEMU it prints the engine logits', { skip: (deviceMissing ?? cmakeMissing) ?? false }, () => {
    const expected = engineResult(model, image(0));
    const file = makefile();
    const linkFlags = EXAMPLE_LINK_FLAGS.map((f) => (f === 'link.ld' ? join(file, 'link.ld') : f)).join(' ');
    runTool('make', ['-s', '-B', '-C', file, `CC=${ARM_GCC}`, `TARGET_FLAGS=${M4}`, `LDFLAGS=${linkFlags}`, 'EXTRA_OBJECTS=startup.o', 'example'], { cwd: dir });
    const fromMake = runUnderQemu('example', file, 120_000);
    assert.deepEqual(printed(fromMake), expected);
    assert.match(fromMake, /^engine same logits$/m);

    const firmware = join(dir, 'firmware');
    mkdirSync(firmware);
    writeFileSync(join(firmware, 'startup.c'), EXAMPLE_STARTUP);
    writeFileSync(join(firmware, 'toolchain.cmake'), `set(CMAKE_SYSTEM_NAME Generic)\nset(CMAKE_SYSTEM_PROCESSOR arm)\nset(CMAKE_C_COMPILER ${ARM_GCC})\nset(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)\n`);
    writeFileSync(
      join(firmware, 'CMakeLists.txt'),
      `cmake_minimum_required(VERSION 3.13)\nproject(firmware C)\nadd_subdirectory(${out()} kws)\n` +
        `target_compile_options(kws PRIVATE -pedantic)\nadd_executable(firmware.elf ${join(out(), 'main.c')} startup.c)\ntarget_link_libraries(firmware.elf PRIVATE kws)\n` +
        `target_link_options(firmware.elf PRIVATE ${linkFlags})\nset_source_files_properties(${join(out(), 'main.c')} PROPERTIES COMPILE_OPTIONS -pedantic)\n`,
    );
    const build = join(firmware, 'build');
    const cflags = `${M4} ${WARNING_FLAGS.join(' ')}`;
    runTool('cmake', ['-S', firmware, '-B', build, `-DCMAKE_TOOLCHAIN_FILE=${join(firmware, 'toolchain.cmake')}`, `-DCMAKE_C_FLAGS=${cflags}`], { cwd: dir });
    runTool('cmake', ['--build', build], { cwd: dir });
    assert.ok(!readdirSync(build).includes('kws_example'), 'as a subdirectory the model builds no example of its own');
    assert.deepEqual(printed(runUnderQemu('firmware.elf', build, 120_000)), expected);
  });
});

describe('two models with different --name in one program', () => {
  const [dense, depthwise] = irCases();
  const kws: CGenerateOptions = { headerName: 'kws.h', name: 'kws', section: '.bss.tq' };
  const vww: CGenerateOptions = { headerName: 'vww.h', name: 'vww', arena: 'caller', imageLayout: 'hwc' };
  const kwsImage = randomImages(dense.model, 1, 3);
  const vwwImage = randomImages(depthwise.model, 1, 4);
  const MAIN = `#include <stdio.h>
#include "kws.h"
#include "vww.h"
${bytesArray('kws_image', 'KWS_IMAGE_BYTES', kwsImage)}${bytesArray('vww_image', 'VWW_IMAGE_BYTES', imageInLayout(vwwImage, inputShape(depthwise.model), 'hwc'))}
static uint32_t vww_memory[VWW_ARENA_BYTES / 4];

static void show(const char *model, int top, const int32_t *logits, int classes)
{
    int i;
    printf("%s class %d \\n%s logits", model, top, model);
    for (i = 0; i < classes; ++i) printf(" %ld", (long)logits[i]);
    printf("\\n");
}

int main(int argc, char **argv)
{
    int32_t a[KWS_CLASSES], b[VWW_CLASSES];
    (void)argc;
    (void)argv;
    show("kws", kws_infer(kws_image, a), a, KWS_CLASSES);
    show("vww", vww_infer(vww_image, b, vww_memory), b, VWW_CLASSES);
    return 0;
}
`;
  /** A directory with both models' files and the program. */
  function sources(): string {
    const d = mkdtempSync(join(dir, 'two-'));
    for (const [o, m] of [
      [kws, dense.model],
      [vww, depthwise.model],
    ] as const) {
      const c = generateC(m, o);
      writeFileSync(join(d, o.headerName.replace(/\.h$/, '.c')), c.source);
      writeFileSync(join(d, o.headerName), c.header);
    }
    writeFileSync(join(d, 'main.c'), MAIN);
    return d;
  }

  function check(out: string): void {
    assert.deepEqual(printed(out, 'kws '), engineResult(dense.model, kwsImage));
    assert.deepEqual(printed(out, 'vww '), engineResult(depthwise.model, vwwImage));
  }

  test('host gcc: they link, each object exports only its prefixed symbols, and each computes its engine logits', () => {
    const d = sources();
    const flags = [...WARNING_FLAGS, '-pedantic', '-O2'];
    for (const name of ['kws', 'vww']) {
      runTool('gcc', [...flags, '-c', `${name}.c`, '-o', `${name}.o`], { cwd: d });
      const symbols = runTool('nm', ['-g', '--defined-only', `${name}.o`], { cwd: d }).trim().split('\n').map((l) => l.split(' ').at(-1));
      assert.deepEqual(symbols.sort(), [`${name}_class_names`, `${name}_infer`], `${name}.o`);
    }
    runTool('gcc', [...flags, '-o', 'app', 'main.c', 'kws.o', 'vww.o'], { cwd: d });
    check(runTool(join(d, 'app'), [], { cwd: d }));
  });

  test('Cortex-M4: they link and run under QEMU; the static arena is in section .bss.tq', { skip: deviceMissing ?? false }, () => {
    const d = sources();
    writeFileSync(join(d, 'startup.c'), EXAMPLE_STARTUP);
    writeFileSync(join(d, 'link.ld'), EXAMPLE_LINKER_SCRIPT);
    const flags = [...WARNING_FLAGS, ...CORTEX_M4_FLAGS];
    for (const name of ['kws', 'vww', 'main']) runTool(ARM_GCC, [...flags, '-pedantic', '-c', `${name}.c`, '-o', `${name}.o`], { cwd: d });
    runTool(ARM_GCC, [...flags, '-c', 'startup.c', '-o', 'startup.o'], { cwd: d });
    assert.match(runTool('arm-none-eabi-objdump', ['-t', 'kws.o'], { cwd: d }), /\s\.bss\.tq\s+[0-9a-f]+\s+kws_arena$/m);
    runTool(ARM_GCC, [...CORTEX_M4_FLAGS, ...EXAMPLE_LINK_FLAGS, '-o', 'app.elf', 'main.o', 'kws.o', 'vww.o', 'startup.o'], { cwd: d });
    check(runUnderQemu('app.elf', d, 120_000));
  });

  test('accepted section names compile for the M4 and hold the arena', { skip: deviceMissing ?? false }, () => {
    const d = mkdtempSync(join(dir, 'sections-'));
    for (const section of ['.bss.tq', '.sram2', 'ccmram', '_ram.x1', '.noinit']) {
      writeFileSync(join(d, 'm.h'), generateC(dense.model, { headerName: 'm.h', name: 'm', section }).header);
      writeFileSync(join(d, 'm.c'), generateC(dense.model, { headerName: 'm.h', name: 'm', section }).source);
      runTool(ARM_GCC, [...WARNING_FLAGS, '-pedantic', ...CORTEX_M4_FLAGS, '-c', 'm.c', '-o', 'm.o'], { cwd: d });
      const table = runTool('arm-none-eabi-objdump', ['-t', 'm.o'], { cwd: d });
      assert.ok(table.split('\n').some((l) => l.endsWith(' m_arena') && l.includes(` ${section}\t`)), `${section}:\n${table}`);
    }
  });
});

describe('bad input', () => {
  const { model } = irCases()[0];

  test('a --name that is not a C identifier, a keyword or reserved is refused, naming the flag', () => {
    for (const [name, why] of [
      ['1kws', /--name "1kws": not a C identifier/],
      ['kw s', /--name "kw s": not a C identifier/],
      ['kws-2', /not a C identifier/],
      ['', /--name "": not a C identifier/],
      ['int', /--name "int": a C keyword/],
      ['_Bool', /a C keyword/],
      ['_kws', /starts with '_'.*_KWS_H/],
      ['tq_kws', /the prefix tq_ is the generated runtime's own/],
    ] as const) {
      assert.throws(() => generateC(model, { headerName: 'm.h', name }), why, name);
    }
  });

  test('a section the assembler or a RAM arena cannot take is refused, naming the flag', () => {
    for (const [section, why] of [
      ['.bss tq', /--section "\.bss tq": a section name is letters, digits/],
      ['.bss"x', /a section name is letters/],
      ['', /a section name is letters/],
      ['1bss', /not starting with a digit/],
      ['.text.arena', /\.text sections hold code, constants or metadata/],
      ['.rodata', /\.rodata sections/],
      ['.ARM.exidx', /\.ARM sections/],
    ] as const) {
      assert.throws(() => generateC(model, { headerName: 'm.h', section }), why, section);
    }
    assert.throws(() => generateC(model, { headerName: 'm.h', arena: 'caller', section: '.bss.tq' }), /--section \.bss\.tq with --arena caller/);
  });

  test('the command line refuses bad flags before it lowers or writes anything', async () => {
    const out = join(dir, 'bad');
    mkdirSync(out);
    const base = ['--checkpoint', join(dir, 'no-such-run'), '--out', join(out, 'm.c')];
    for (const [extra, why] of [
      [['--format', 'c', '--name', '9lives'], /--name "9lives": not a C identifier/],
      [['--format', 'c', '--name', 'while'], /--name "while": a C keyword/],
      [['--format', 'c', '--section', '.bss tq'], /--section "\.bss tq"/],
      [['--format', 'c', '--arena', 'caller', '--section', '.bss.tq'], /--section .* with --arena caller/],
      [['--format', 'c', '--arena', 'heap'], /--arena must be one of static, caller; got "heap"/],
      [['--format', 'c', '--image-layout', 'nhwc'], /--image-layout must be one of chw, hwc/],
      [['--format', 'tqm', '--name', 'kws'], /--name applies to --format c only/],
      [['--format', 'onnx', '--build-files'], /--build-files applies to --format c only/],
    ] as const) {
      await assert.rejects(exportCommand([...base, ...extra]), (e: Error) => errorClass(e) === 'usage' && why.test(e.message), extra.join(' '));
    }
    assert.deepEqual(readdirSync(out), []);
  });

  test('--build-files overwrites no build file tinyquant did not write, and the example is not the model', async () => {
    const out = join(dir, 'own-project');
    mkdirSync(out);
    writeFileSync(join(out, 'CMakeLists.txt'), 'project(mine C)\n');
    const run = calibratedRun(dir, 'uniform2', { method: 'uniform', wbits: 2 }, 4, 1);
    const args = ['--checkpoint', run, '--format', 'c', '--build-files', '--data-dir', dir, '--calibration-images', '4'];
    await assert.rejects(exportCommand([...args, '--out', join(out, 'net.c')]), (e: Error) => errorClass(e) === 'input' && /CMakeLists\.txt exists and was not written by tinyquant/.test(e.message));
    await assert.rejects(exportCommand([...args, '--out', join(out, 'main.c')]), /the example program is main\.c; give the model another name/);
    assert.deepEqual(readdirSync(out), ['CMakeLists.txt']);
    assert.equal(readFileSync(join(out, 'CMakeLists.txt'), 'utf8'), 'project(mine C)\n');
  });
});
