/**
 * `tinyquant export --format c`: the generated C compiled with gcc (-std=c99 -Wall -Wextra -Werror
 * -pedantic) computes the integer engine's logits bit for bit on tiny quantized ResNets (APoT and
 * uniform methods, int8/int16 inputs and residual streams, option A and B shortcuts, both image
 * layouts) and on the synthetic models of every IR op and option (test/ir-models.ts: non-square
 * and 1x1 kernels, strides and paddings, depthwise and grouped convs, clipped ReLUs, windowed
 * sumpool, maxpool, add); the ceilings folded into tables (clip.ts) equal the IR's min; the arena
 * plan never overlaps live buffers; the same C cross-compiled for a Cortex-M4 runs under QEMU
 * (mps2-an386) with the same logits, no allocator and no floating point; and bad input fails
 * clearly without leaving files.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { errorClass } from '../src/cli/errors.js';
import { exportCommand } from '../src/cli/export.js';
import { loadDataset } from '../src/data/load.js';
import { cOutputPaths } from '../src/export/c/exporter.js';
import { type GeneratedC, generateC } from '../src/export/c/generate.js';
import { planArena } from '../src/export/c/plan.js';
import { imageInLayout } from '../src/export/c/project.js';
import { deviceToolsMissing, runOnDevice, runOnHost } from '../src/export/c/toolchain.js';
import { loadTrainedModel, lowerTrainedModel } from '../src/export/checkpoint-model.js';
import { residualClamp, ruleWithCeiling } from '../src/export/clip.js';
import { IntegerEngine } from '../src/export/engine.js';
import { countBelow, roundToCode } from '../src/export/int-ops.js';
import type { ActivationQuant, CodeRule, IntegerModel } from '../src/export/ir.js';
import { type LoweringChoices, type TinyOptions, calibratedRun, lowerTiny, quietly, tinyQuantizedModel } from './export-fixtures.js';
import { cifar10Folder, cifarRecords } from './fixtures/data/make.js';
import { IrModelBuilder, irCases, randomImages } from './ir-models.js';

interface Case {
  readonly label: string;
  readonly options: TinyOptions;
  readonly lowering?: LoweringChoices;
}

const CASES: readonly Case[] = [
  { label: 'APoT W4A4, option A, int8 image, int16 residual', options: { method: 'apot', wbits: 4 } },
  { label: 'uniform W3A3, option B, int16 image, int8 residual', options: { method: 'uniform', wbits: 3, shortcut: 'B' }, lowering: { inputBits: 16, residualBits: 8 } },
  { label: 'LSQ W2A2 per channel, head batch norm', options: { method: 'lsq', wbits: 2, perChannel: true, headBatchNorm: true } },
  { label: 'PACT W8A8, APoT first/last layers', options: { method: 'pact', wbits: 8, firstLast: 'apot8' } },
];

/** The synthetic models of every IR op, with a few random images each. */
const IR_CASES = irCases().map(({ name, model }) => ({ name, model, images: randomImages(model, 4, 5), count: 4 }));

const lowered = new Map<string, { model: IntegerModel; images: Uint8Array; count: number }>();

function tiny(c: Case): { model: IntegerModel; images: Uint8Array; count: number } {
  if (!lowered.has(c.label)) {
    const t = tinyQuantizedModel(c.options);
    lowered.set(c.label, { model: lowerTiny(t, c.options, c.lowering), images: t.images.images, count: t.images.count });
  }
  return lowered.get(c.label)!;
}

function assertSameLogits(actual: Int32Array, expected: Int32Array, what: string): void {
  assert.equal(actual.length, expected.length, what);
  const first = actual.findIndex((v, i) => v !== expected[i]);
  assert.equal(first, -1, `${what}: logit ${first} is ${actual[first]}, the engine's ${expected[first]}`);
}

let dir: string;
before(() => {
  setBackend('js');
  dir = mkdtempSync(join(tmpdir(), 'tq-export-c-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('generated C on the host', () => {
  for (const c of CASES) {
    test(`${c.label}: logits bit-identical to the integer engine`, () => {
      const { model, images, count } = tiny(c);
      const expected = new IntegerEngine(model).inferBatch(images, count);
      const run = runOnHost(generateC(model, { headerName: 'model.h' }), images, count);
      assertSameLogits(run.logits, expected, c.label);
      const engine = new IntegerEngine(model);
      assert.deepEqual(Array.from(run.top1), Array.from(engine.predict(images, count)));
    });
  }

  for (const c of IR_CASES) {
    test(`synthetic ${c.name}: logits bit-identical to the integer engine`, () => {
      const generated = generateC(c.model, { headerName: 'model.h' });
      const run = runOnHost(generated, c.images, c.count);
      assertSameLogits(run.logits, new IntegerEngine(c.model).inferBatch(c.images, c.count), c.name);
      // Dense convs run the dual-MAC or the triple-MAC kernel (or say why not); 3x3 depthwise convs the depthwise kernel (or say why not); other convs with one input
      // channel per group the generic depthwise accumulate function, the rest the general one.
      c.model.ops.forEach((op, k) => {
        if (op.kind !== 'conv') return;
        const dtype = c.model.tensors[op.input].dtype;
        const kind = generated.kernels[k]?.kind;
        const depthwise3x3 = op.groups !== 1 && op.inChannels === op.groups && op.kernel.join('x') === '3x3';
        // Dense convs leave the dual-MAC kernel only with a note saying why, 3x3 depthwise convs the depthwise kernel likewise.
        if (op.groups === 1 && kind !== 'dsp' && kind !== 'triple') assert.ok(generated.notes.some((n) => n.startsWith(`${op.name}: generic conv kernel (`)), `${c.name} ${op.name}`);
        if (depthwise3x3 && kind !== 'depthwise') assert.ok(generated.notes.some((n) => n.startsWith(`${op.name}: generic depthwise kernel (`)), `${c.name} ${op.name}`);
        if (op.groups !== 1) assert.ok(kind !== 'dsp' && kind !== 'triple', `${c.name} ${op.name}`);
        if (!depthwise3x3) assert.notEqual(kind, 'depthwise', `${c.name} ${op.name}`);
        const call =
          kind === 'dsp'
            ? `tq_conv_dsp_${dtype}\\(&\\w+, \\d+,`
            : kind === 'triple'
              ? `tq_conv_triple_${dtype}\\(&\\w+, \\d+, \\d+,`
              : kind === 'depthwise'
                ? `tq_conv_dw_${dtype}\\(&\\w+,`
                : `tq_conv_run\\([^;]*tq_${op.inChannels === op.groups ? 'depthwise' : 'accumulate'}_${dtype},`;
        assert.match(generated.source, new RegExp(`${call}[^;]*; /\\* ${op.name.replaceAll('.', '\\.')} \\*/`), `${c.name} ${op.name}`);
      });
    });
  }

  test('packed 4-bit activations (packActivations): same logits; smaller arena; the planner reports what packing and in place saved', () => {
    let packedSomewhere = false;
    for (const c of [...CASES.map((k) => ({ name: k.label, ...tiny(k) })), ...IR_CASES]) {
      const plain = generateC(c.model, { headerName: 'model.h' });
      const generated = generateC(c.model, { headerName: 'model.h', packActivations: true });
      assertSameLogits(runOnHost(generated, c.images, c.count).logits, new IntegerEngine(c.model).inferBatch(c.images, c.count), `${c.name} packed`);
      assert.ok(generated.plan.bytes <= plain.plan.bytes, `${c.name}: packed arena ${generated.plan.bytes} > ${plain.plan.bytes}`);
      assert.match(generated.arenaReport[0], new RegExp(`^arena ${generated.plan.bytes} bytes: packed 4-bit activations \\(${generated.plan.packed.size} tensors\\) save ${plain.plan.bytes - generated.plan.bytes} `));
      for (const t of generated.plan.packed) {
        // Only codes that fit a nibble, read by dense convs on the dual-MAC kernel (or through the tagged load).
        assert.ok(c.model.tensors[t].range[1] <= 15 && c.model.tensors[t].range[0] >= 0, `${c.name}: tensor ${t} range ${c.model.tensors[t].range}`);
        c.model.ops.forEach((op, k) => {
          if (op.kind === 'conv' && op.input === t) assert.equal(generated.kernels[k]?.kind, 'dsp', `${c.name} ${op.name}`);
        });
      }
      if (generated.plan.packed.size > 0) {
        packedSomewhere = true;
        assert.ok(generated.plan.bytes < plain.plan.bytes, `${c.name}: packing that saves nothing`);
        const convReads = c.model.ops.some((op) => op.kind === 'conv' && generated.plan.packed.has(op.input));
        assert.equal(/tq_conv_dsp_u4\(/.test(generated.source), convReads, `${c.name}: the packed dual-MAC kernel is emitted when a conv reads packed codes`);
      }
    }
    assert.ok(packedSomewhere, 'no model packed a tensor');
  });

  test('arenaBudget: the arena stays within it, packing only what it takes (none where the plain layout fits); same logits', () => {
    let between = false;
    for (const c of [...CASES.map((k) => ({ name: k.label, ...tiny(k) })), ...IR_CASES]) {
      const plain = generateC(c.model, { headerName: 'model.h' });
      const smallest = generateC(c.model, { headerName: 'model.h', packActivations: true });
      const engine = new IntegerEngine(c.model).inferBatch(c.images, c.count);
      // Beyond the smallest arena nothing fits: the smallest layout.
      const tight = generateC(c.model, { headerName: 'model.h', packActivations: true, arenaBudget: 4 });
      assert.equal(tight.plan.bytes, smallest.plan.bytes, `${c.name}: budget below every layout`);
      for (const budget of [Math.floor((smallest.plan.bytes + plain.plan.bytes) / 8) * 4, plain.plan.bytes, 2 * plain.plan.bytes]) {
        const generated = generateC(c.model, { headerName: 'model.h', packActivations: true, arenaBudget: budget });
        assert.ok(generated.plan.bytes <= Math.max(budget, smallest.plan.bytes), `${c.name}: arena ${generated.plan.bytes} beyond budget ${budget}`);
        assert.ok(generated.plan.packed.size <= smallest.plan.packed.size, `${c.name}: budget ${budget} packs more than the smallest layout`);
        if (budget >= plain.plan.bytes) assert.equal(generated.plan.packed.size, 0, `${c.name}: budget ${budget} fits unpacked`);
        if (generated.plan.packed.size > 0 && generated.plan.packed.size < smallest.plan.packed.size) between = true;
        assertSameLogits(runOnHost(generated, c.images, c.count).logits, engine, `${c.name} budget ${budget}`);
      }
    }
    assert.ok(between, 'no budget packed some tensors but fewer than the smallest layout');
  });

  test('interleaved (HWC) images give the same logits', () => {
    const { model, images, count } = tiny(CASES[0]);
    const generated = generateC(model, { headerName: 'net.h', imageLayout: 'hwc' });
    assert.match(generated.header, /interleaved pixels \(HWC/);
    const run = runOnHost(generated, imageInLayout(images, model.tensors[0].shape, 'hwc'), count);
    assertSameLogits(run.logits, new IntegerEngine(model).inferBatch(images, count), 'HWC');
  });

  test('the arena plan never overlaps buffers that are live at the same time, and reuses storage', () => {
    // The ResNets reuse most of their storage; the short synthetic chains some of it.
    const models = [...CASES.map((k) => ({ label: k.label, model: tiny(k).model, reuse: 2 })), ...IR_CASES.map((k) => ({ label: k.name, model: k.model, reuse: 1 }))];
    for (const c of models) {
      const { model } = c;
      const generated = generateC(model, { headerName: 'model.h' });
      const { plan } = generated;
      // The dual-MAC kernels' scratch never grows the arena beyond the generic kernels' plan.
      assert.ok(plan.bytes <= planArena(model).bytes, `${c.label}: arena ${plan.bytes} > ${planArena(model).bytes}`);
      for (const [i, a] of plan.buffers.entries()) {
        assert.ok(a.offset >= 0 && a.offset % 4 === 0 && a.offset + a.bytes <= plan.bytes, `${c.label}: buffer ${i} outside the arena`);
        for (const b of plan.buffers.slice(i + 1)) {
          const live = a.first <= b.last && b.first <= a.last;
          const overlap = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
          assert.ok(!(live && overlap), `${c.label}: buffers of tensors [${a.tensors}] and [${b.tensors}] overlap while both are live`);
        }
      }
      const separate = plan.buffers.reduce((s, b) => s + b.bytes, 0);
      assert.ok(plan.bytes >= plan.lowerBound && plan.bytes < separate / c.reuse, `${c.label}: arena ${plan.bytes}, lower bound ${plan.lowerBound}, all buffers ${separate}`);
      assert.ok(plan.buffers.some((b) => b.tensors.length > 1), `${c.label}: no tensor is computed in place`);
      assert.match(generated.header, new RegExp(`#define TQ_ARENA_BYTES ${plan.bytes}\\b`));
    }
  });
});

describe('generated C on a Cortex-M4 (QEMU mps2-an386)', () => {
  const missing = deviceToolsMissing();
  test('same logits as the engine; no allocation, no floating point; sizes and instruction counts', { skip: missing ? `skipped: ${missing}` : false }, () => {
    const { model, images, count } = tiny(CASES[0]);
    const n = 3;
    const some = images.subarray(0, (images.length / count) * n);
    const generated: GeneratedC = generateC(model, { headerName: 'model.h' });
    let symbols: readonly string[] = [];
    const run = runOnDevice(generated, some, n, { onModelSymbols: (s) => (symbols = s) });
    assertSameLogits(run.logits, new IntegerEngine(model).inferBatch(some, n), 'Cortex-M4');
    // The model may call the compiler's memset/memcpy (loops it recognizes) and nothing else.
    assert.deepEqual(symbols.filter((s) => !/^(memset|memcpy|__aeabi_mem(set|clr|cpy)\d*)$/.test(s)), [], `model.o needs ${symbols.join(', ')}`);
    assert.equal(run.instructionsPerTick, 40, 'mps2-an386: 25 MHz SysTick, one instruction per ns under -icount shift=0');
    for (const i of run.instructions) assert.ok(i > 100_000 && Math.abs(i - run.instructions[0]) < run.instructions[0] * 0.01, `instructions ${Array.from(run.instructions)}`);
    assert.equal(run.model.bss, generated.plan.bytes, 'the model keeps its state in the arena only');
    assert.equal(run.model.data, 0);
    assert.ok(run.model.rodata > 0 && run.model.text > 0 && run.flashBytes >= run.model.text + run.model.rodata);
    assert.ok(run.inferStackBytes > 0 && run.stackBytes >= run.inferStackBytes && run.stackBytes < 4096, `stack ${run.inferStackBytes}/${run.stackBytes}`);
    assert.equal(run.ramBytes, run.elf.data + run.elf.bss + run.stackBytes);
  });
  test('dual-MAC kernel (3x3 stride 1 and 2, 1x1 stride 2) and a conv it leaves to the generic kernel: same logits on the host, the M4 and the M7', { skip: missing ? `skipped: ${missing}` : false }, () => {
    const { model, images, count } = tiny(CASES[1]);
    const generated = generateC(model, { headerName: 'model.h' });
    const shapes = new Set<string>();
    model.ops.forEach((op, k) => {
      if (op.kind === 'conv' && generated.kernels[k]?.kind === 'dsp') shapes.add(`${op.kernel.join('x')}s${op.stride[0]}`);
    });
    assert.deepEqual([...shapes].sort(), ['1x1s1', '1x1s2', '3x3s1', '3x3s2']);
    assert.ok(generated.notes.some((n) => /^layer\d\.0\.conv2: generic conv kernel \(output narrower than its shortcut/.test(n)), generated.notes.join('; '));
    const n = 2;
    const some = images.subarray(0, (images.length / count) * n);
    const expected = new IntegerEngine(model).inferBatch(some, n);
    assertSameLogits(runOnHost(generated, some, n).logits, expected, 'host (portable dual MAC)');
    assertSameLogits(runOnDevice(generated, some, n).logits, expected, 'Cortex-M4 (SMLAD)');
    assertSameLogits(runOnDevice(generated, some, n, { target: 'cortex-m7' }).logits, expected, 'Cortex-M7 (mps2-an500)');
  });
  test('packed 4-bit activations (nibble im2col, nibble stores): same logits on the M4 as on the host and in the engine', { skip: missing ? `skipped: ${missing}` : false }, () => {
    const { model, images, count } = tiny(CASES[1]);
    const generated = generateC(model, { headerName: 'model.h', packActivations: true });
    assert.ok(generated.plan.packed.size > 0, 'the case packs some tensor');
    assert.match(generated.source, /tq_conv_dsp_u4\(/);
    const n = 2;
    const some = images.subarray(0, (images.length / count) * n);
    assertSameLogits(runOnDevice(generated, some, n).logits, new IntegerEngine(model).inferBatch(some, n), 'Cortex-M4 packed');
  });
  test('depthwise kernel (3x3, strides 1 and 2, channel multiplier 2, uniform and APoT codes, a ceiling; int8 and uint8 inputs): same logits on the host, the M4 and the M7', { skip: missing ? `skipped: ${missing}` : false }, () => {
    const b = new IrModelBuilder(5);
    let x = b.input(2, 11, 9, 'int8');
    x = b.conv('dw0', x, { out: 4, kernel: [3, 3], padding: [1, 1], groups: 2, weights: 'uniform', target: { kind: 'activation', act: { rule: 'uniform', bits: 4 } } });
    x = b.conv('dw1', x, { out: 8, kernel: [3, 3], stride: [2, 2], groups: 4, weights: 'apot', target: { kind: 'activation', act: { rule: 'apot', bits: 4 } } });
    x = b.conv('dw2', x, { out: 8, kernel: [3, 3], stride: [1, 2], padding: [1, 1], groups: 8, weights: 'uniform', target: { kind: 'activation', act: { rule: 'uniform', bits: 3, ceiling: true } } });
    const model = b.build('depthwise-kernels', b.linear('fc', x, 5));
    const generated = generateC(model, { headerName: 'model.h' });
    const onKernel = model.ops.flatMap((op, k) => (op.kind === 'conv' && generated.kernels[k]?.kind === 'depthwise' ? [`${op.name} ${model.tensors[op.input].dtype}`] : []));
    assert.deepEqual(onKernel, ['dw0 int8', 'dw1 uint8', 'dw2 uint8']);
    assert.match(generated.source, /tq_conv_dw_int8\(&\w+,[^;]*; \/\* dw0 \*\//);
    const n = 3;
    const images = randomImages(model, n, 9);
    const expected = new IntegerEngine(model).inferBatch(images, n);
    assertSameLogits(runOnHost(generated, images, n).logits, expected, 'host (portable dual MAC)');
    assertSameLogits(runOnDevice(generated, images, n).logits, expected, 'Cortex-M4 (SMLAD)');
    assertSameLogits(runOnDevice(generated, images, n, { target: 'cortex-m7' }).logits, expected, 'Cortex-M7 (mps2-an500)');
  });
  for (const c of IR_CASES) {
    test(`synthetic ${c.name}: same logits as the engine`, { skip: missing ? `skipped: ${missing}` : false }, () => {
      const one = c.images.subarray(0, c.images.length / c.count);
      const run = runOnDevice(generateC(c.model, { headerName: 'model.h' }), one, 1);
      assertSameLogits(run.logits, new IntegerEngine(c.model).inferBatch(one, 1), `Cortex-M4 ${c.name}`);
    });
  }
});

/** The IR's activation quantization of v, ceiling applied as it says (engine semantics). */
function activationCode(q: ActivationQuant, v: number): number {
  if (q.relu && v < q.zeroPoint) v = q.zeroPoint;
  if (q.ceiling !== null && v > q.ceiling) v = q.ceiling;
  return codeOf(q.rule, v);
}

function codeOf(rule: CodeRule, v: number): number {
  return rule.kind === 'thresholds' ? rule.values[countBelow(rule.thresholds, v)] : roundToCode(v, rule.fracBits, rule.minCode, rule.maxCode);
}

describe('ceilings folded into tables (clip.ts)', () => {
  const thresholds: CodeRule = { kind: 'thresholds', thresholds: Int32Array.from([-6, 2, 7, 20, 41]), values: Int32Array.from([0, 1, 3, 4, 6, 8]) };
  const rounding = (fracBits: number): CodeRule => ({ kind: 'round', fracBits, minCode: -3, maxCode: 9 });

  test('rule(min(max(v, zero point), ceiling)) equals the folded rule of max(v, zero point) for every v', () => {
    for (const rule of [thresholds, rounding(0), rounding(1), rounding(3)]) {
      for (const relu of [false, true]) {
        for (const ceiling of [null, -40, -6, -5, 0, 2, 3, 7, 13, 41, 42, 100]) {
          const q: ActivationQuant = { relu, ceiling, zeroPoint: -2, rule };
          const folded = ruleWithCeiling(q);
          for (let v = -80; v <= 120; v++) {
            const floored = relu && v < q.zeroPoint ? q.zeroPoint : v;
            assert.equal(codeOf(folded, floored), activationCode(q, v), `${rule.kind} ${JSON.stringify(rule.kind === 'round' ? rule : {})} relu ${relu} ceiling ${ceiling} v ${v}`);
          }
        }
      }
    }
  });

  test('the residual clamp equals ReLU, then the ceiling, then saturation', () => {
    for (const bits of [8, 16]) {
      const limit = 2 ** (bits - 1);
      for (const relu of [false, true]) {
        for (const ceiling of [null, -limit - 5, -limit, -3, 0, 5, limit - 1, limit + 7]) {
          const [lo, hi] = residualClamp(relu, ceiling, bits);
          for (const v of [-limit - 9, -limit, -4, -3, -1, 0, 1, 4, 5, 6, limit - 1, limit, limit + 8]) {
            let expected = relu && v < 0 ? 0 : v;
            if (ceiling !== null && expected > ceiling) expected = ceiling;
            expected = Math.max(-limit, Math.min(limit - 1, expected));
            assert.equal(Math.min(Math.max(v, lo), hi), expected, `bits ${bits} relu ${relu} ceiling ${ceiling} v ${v}`);
          }
        }
      }
    }
  });
});

describe('bad input', () => {
  test('a weight bit-width the C target cannot represent names the layer', () => {
    const { model } = tiny(CASES[0]);
    const ops = model.ops.map((op) => (op.kind === 'conv' && op.name === 'layer2.0.conv1' ? { ...op, weights: { ...op.weights, bits: 9 } } : op));
    assert.throws(() => generateC({ ...model, ops }, { headerName: 'model.h' }), /layer2\.0\.conv1.*weight bits must be 1\.\.8, got 9/);
  });

  test('images of the wrong size are refused before anything runs', () => {
    const { model } = tiny(CASES[0]);
    const generated = generateC(model, { headerName: 'model.h' });
    assert.throws(() => runOnHost(generated, new Uint8Array(3 * 16 * 16 + 1), 1), /1 images of 768 bytes need 768 bytes, got 769/);
    assert.throws(() => generateC(model, { headerName: 'model h.h' }), /header name "model h\.h" must be a plain file name/);
  });

  test('--out: NAME.c, NAME or a directory; anything else is refused', () => {
    assert.deepEqual(cOutputPaths(join(dir, 'net.c')), { source: join(dir, 'net.c'), header: join(dir, 'net.h') });
    assert.deepEqual(cOutputPaths(join(dir, 'net')), { source: join(dir, 'net.c'), header: join(dir, 'net.h') });
    assert.deepEqual(cOutputPaths(dir), { source: join(dir, 'model.c'), header: join(dir, 'model.h') });
    assert.throws(() => cOutputPaths(join(dir, 'net.tqm')), /give NAME\.c, NAME \(no extension\) or a directory/);
    assert.throws(() => cOutputPaths(join(dir, 'missing', 'net.c')), /directory .*missing does not exist/);
    assert.throws(() => cOutputPaths(join(dir, 'my net.c')), /"my net" must be letters, digits/);
  });
});

describe('tinyquant export --format c', () => {
  /** A run directory with a resnet8 checkpoint quantized (calibrated, not trained) as `fields` say. */
  let apotRun: string;
  before(() => {
    cifar10Folder(dir, (i) => cifarRecords(Array.from({ length: 4 }, (_, r) => [(r * 3 + i) % 10]), i * 100), cifarRecords(Array.from({ length: 6 }, (_, r) => [(r * 3 + 9) % 10]), 9));
    apotRun = calibratedRun(dir, 'apot3', { method: 'apot', wbits: 3 }, 8, 1);
  });

  test('writes model.c and model.h into a directory; they compute the engine logits of the same checkpoint', async () => {
    const out = join(dir, 'c-out');
    mkdirSync(out);
    await quietly(() => exportCommand(['--checkpoint', apotRun, '--format', 'c', '--out', `${out}/`, '--data-dir', dir, '--calibration-images', '8']));
    assert.deepEqual(readdirSync(out).sort(), ['model.c', 'model.h']);
    const { ir: model } = await lowerTrainedModel(loadTrainedModel(apotRun), { dataDir: dir, calibrationImages: 8 });
    const test = await loadDataset({ name: 'cifar10', split: 'test', dataDir: dir });
    const files = { source: readFileSync(join(out, 'model.c'), 'utf8'), header: readFileSync(join(out, 'model.h'), 'utf8') };
    assert.match(files.header, /int tq_infer\(const uint8_t \*image, int32_t \*logits\);/);
    const c = runOnHost(files, test.images, test.count);
    assertSameLogits(c.logits, new IntegerEngine(model).inferBatch(test.images, test.count), 'exported files');
  });

  test('an --out the format cannot write is a clear error and writes nothing', async () => {
    for (const out of [join(dir, 'net.tqm'), join(dir, 'absent', 'net.c')]) {
      await assert.rejects(
        exportCommand(['--checkpoint', apotRun, '--format', 'c', '--out', out, '--data-dir', dir, '--calibration-images', '4']),
        (e: Error) => errorClass(e) === 'input' && /give NAME\.c|does not exist/.test(e.message),
      );
    }
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp') || f.startsWith('net')), []);
  });
});
