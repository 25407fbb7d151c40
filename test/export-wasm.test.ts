/**
 * The WebAssembly integer engine (src/export/wasm/): the same integers as the TypeScript engine,
 * tensor by tensor, on every op and option of the IR (the synthetic models), on tiny lowered
 * ResNets of every method at 2, 3, 4 and 8 bits, on a lowered ResNet-20, and the same logits as the
 * C build on the host; each path of its kernels (SIMD threshold counts at the edges of int16, the
 * runtime's binary search, multipliers without shift, rounding without fraction bits); the
 * embedded module is the build of its source; the bundled engine entry running it in Chromium;
 * createEngine's choice and fallback; errors.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import type * as EngineEntry from '../src/engine.js';
import { setBackend } from '../src/backend/index.js';
import { generateC } from '../src/export/c/generate.js';
import { hasTool, runOnHost } from '../src/export/c/toolchain.js';
import { lowerUntrainedModel } from '../src/export/checkpoint-model.js';
import { IntegerEngine } from '../src/export/engine.js';
import { fastestIntegerEngine } from '../src/export/deployed.js';
import { createEngine } from '../src/export/engines.js';
import type { ActivationQuant, IntegerModel, Op, QuantizeOp, Requant } from '../src/export/ir.js';
import { WASM_SOURCE_SHA256 } from '../src/export/wasm/binary.js';
import { WasmIntegerEngine, narrowThresholds, wasmSupported } from '../src/export/wasm/engine.js';
import { wasmSourceHash } from '../src/export/wasm/source.js';
import { encodeTqm } from '../src/export/tqm.js';
import { createModel } from '../src/models/index.js';
import { packageRoot } from '../src/package.js';
import { quantize } from '../src/quant/quantize.js';
import { CLASSES, type LoweringChoices, NORMALIZATION, type TinyOptions, lowerTiny, syntheticImages, tinyQuantizedModel } from './export-fixtures.js';
import { IrModelBuilder, irCases, randomImages } from './ir-models.js';

const CHROMIUM = '/usr/bin/chromium';

before(() => setBackend('js'));

/** Both engines on each image: every tensor equal, then the batch logits. */
async function assertSameAsTs(model: IntegerModel, images: Uint8Array, count: number, what: string): Promise<void> {
  const ts = new IntegerEngine(model);
  const wasm = await WasmIntegerEngine.create(model);
  assert.equal(wasm.backend, 'wasm');
  images = images.subarray(0, count * ts.imageSize);
  for (let n = 0; n < count; n++) {
    const image = images.subarray(n * ts.imageSize, (n + 1) * ts.imageSize);
    const expected = ts.trace(image);
    wasm.trace(image).forEach((t, i) => {
      const first = t.findIndex((v, j) => v !== expected[i][j]);
      assert.ok(t.length === expected[i].length && first === -1, `${what}, image ${n}, tensor ${model.tensors[i].name}: element ${first} is ${t[first]}, the TypeScript engine's ${expected[i][first]}`);
    });
  }
  assert.deepEqual(wasm.inferBatch(images, count), ts.inferBatch(images, count), what);
}

/** Every op's activation quantization (conv activation epilogues and quantize ops). */
function activations(model: IntegerModel): ActivationQuant[] {
  return model.ops.flatMap((op): ActivationQuant[] => (op.kind === 'quantize' ? [op] : op.kind === 'conv' && op.epilogue.kind === 'activation' ? [op.epilogue] : []));
}

function mapActivations(model: IntegerModel, edit: (q: ActivationQuant) => ActivationQuant): IntegerModel {
  const ops = model.ops.map((op): Op => {
    if (op.kind === 'quantize') return { ...op, ...edit(op) } as QuantizeOp;
    if (op.kind === 'conv' && op.epilogue.kind === 'activation') return { ...op, epilogue: { kind: 'activation', ...edit(op.epilogue) } };
    return op;
  });
  return { ...model, ops };
}

describe('bit-exact with the TypeScript engine', () => {
  test('every synthetic IR case (dense, depthwise, grouped, strides, paddings, pools, adds, shortcuts, ceilings, linear), tensor by tensor', async () => {
    for (const seed of [1, 2]) for (const { name, model } of irCases(seed)) await assertSameAsTs(model, randomImages(model, 4, seed + 6), 4, `${name} (seed ${seed})`);
  });

  // APoT takes 2..5 bits; the uniform methods 8 too.
  const LOWERED: readonly { readonly options: TinyOptions; readonly lowering?: LoweringChoices }[] = [
    { options: { method: 'apot', wbits: 2 } },
    { options: { method: 'apot', wbits: 3, shortcut: 'B' } },
    { options: { method: 'apot', wbits: 4 }, lowering: { residualBits: 8 } },
    { options: { method: 'apot', wbits: 5 } },
    { options: { method: 'ewgs', wbits: 4 }, lowering: { inputBits: 16 } },
    { options: { method: 'uniform', wbits: 3, shortcut: 'B' }, lowering: { inputBits: 16, residualBits: 8 } },
    { options: { method: 'lsq', wbits: 2, perChannel: true, headBatchNorm: true } },
    { options: { method: 'pact', wbits: 8, firstLast: 'apot8' } },
  ];
  for (const { options, lowering } of LOWERED) {
    const label = `${options.method} W${options.wbits}A${options.wbits}${options.shortcut === 'B' ? ', option B' : ''}${lowering ? `, ${JSON.stringify(lowering)}` : ''}`;
    test(`a tiny lowered ResNet: ${label}`, async () => {
      const t = tinyQuantizedModel(options);
      await assertSameAsTs(lowerTiny(t, options, lowering), t.images.images, 6, label);
    });
  }

  test('a lowered ResNet-20 (APoT W4A4, int8 first and last layers)', async () => {
    const net = createModel('resnet20');
    quantize(net, { method: 'apot', wbits: 4, abits: 4, firstLast: 'int8' });
    const calibration = syntheticImages(8, 3, 32, 32, 3);
    const model = lowerUntrainedModel(net, { normalization: NORMALIZATION, calibration, meta: { model: 'resnet20', method: 'apot', wbits: 4, abits: 4, firstLast: 'int8', classes: CLASSES } });
    assert.equal(model.ops.filter((op) => op.kind === 'conv').length, 20);
    await assertSameAsTs(model, calibration.images, 3, 'resnet20');
  });
});

test('without the host int8 path, the device evaluation takes the wasm engine, with the same predictions', async () => {
  const { model } = irCases(5)[2];
  const images = randomImages(model, 16, 4);
  const fallback = await fastestIntegerEngine(model, false);
  assert.equal(fallback.name, 'wasm');
  const fastest = await fastestIntegerEngine(model);
  assert.deepEqual(fallback.engine.predict(images, 16), fastest.engine.predict(images, 16), `wasm against ${fastest.name}`);
  assert.deepEqual(fallback.engine.inferBatch(images, 16), new IntegerEngine(model).inferBatch(images, 16));
});

describe('kernel paths', () => {
  test('thresholds at the edges of int16 compare in eight int16 lanes, values beyond saturating; one bound further, or more than 48, take the binary search', async () => {
    // image (int16, up to +-2000) -> quantize with v = 32 x (beyond int16 both ways) -> linear layer
    const b = new IrModelBuilder(3);
    const image = b.input(1, 6, 8, 'int16');
    const q = b.quantize('edge', image, { rule: 'uniform', bits: 8 }, false); // output range [0, 255]: room for the codes below
    const base = b.build('edges', b.linear('fc', q, 4, 'int8'));
    const requant: Requant = { mult: Int32Array.of(1 << 30), shift: Uint8Array.of(25), bias: Int32Array.of(0) };
    const withThresholds = (thresholds: number[]): IntegerModel => ({
      ...base,
      ops: base.ops.map((op) => (op.kind === 'quantize' ? { ...op, relu: false, requant, rule: { kind: 'thresholds', thresholds: Int32Array.from(thresholds), values: Int32Array.from({ length: thresholds.length + 1 }, (_, k) => k) } } : op)),
    });
    const narrow = withThresholds([-32766, -32765, -1, 0, 1, 32766, 32767]);
    assert.deepEqual(narrowThresholds(Int32Array.from([-32766, -32765, -1, 0, 1, 32766, 32767])), { shift: 0, bounds: Int16Array.from([-32767, -32766, -2, -1, 0, 32765, 32766]) });
    const wide = withThresholds([-32767, 0, 32767]);
    assert.equal(narrowThresholds(Int32Array.from([-32767, 0, 32767])), null);
    const scaled = withThresholds([-40000, -2000, 2000, 40000]); // multiples of 16: s = 4
    assert.equal(narrowThresholds(Int32Array.from([-40000, -2000, 2000, 40000]))?.shift, 4);
    const manyThresholds = Array.from({ length: 100 }, (_, k) => -60000 + 1200 * k);
    const many = withThresholds(manyThresholds);
    assert.equal(narrowThresholds(Int32Array.from(manyThresholds)), null);
    for (const [what, model] of [['narrow', narrow], ['wide', wide], ['scaled', scaled], ['many', many]] as const) {
      const images = randomImages(model, 6, 4);
      const codes = new Set(new IntegerEngine(model).trace(images.subarray(0, 48))[q]);
      assert.ok(codes.size >= 3, `${what}: codes ${[...codes]}`);
      await assertSameAsTs(model, images, 6, what);
    }
  });

  test('lowered thresholds that do not narrow to int16 take the runtime\'s binary search', async () => {
    const four: TinyOptions = { method: 'apot', wbits: 4 };
    const t4 = tinyQuantizedModel(four);
    // Odd thresholds: no power of two divides them, and at the lowering's scale they leave int16.
    const odd = mapActivations(lowerTiny(t4, four), (q) => (q.rule.kind === 'thresholds' ? { ...q, rule: { ...q.rule, thresholds: q.rule.thresholds.map((v) => v + 1) } } : q));
    const narrowed = activations(odd).map((q) => (q.rule.kind === 'thresholds' ? narrowThresholds(q.rule.thresholds) : 'round'));
    assert.ok(narrowed.includes(null), 'some rule does not narrow');
    await assertSameAsTs(odd, t4.images.images, 4, 'odd thresholds');
  });

  test('multipliers without shift (v = acc * m) and rounding without fraction bits', async () => {
    const unit = (r: Requant): Requant => ({ mult: r.mult.map((m) => Math.sign(m)), shift: new Uint8Array(r.shift.length), bias: r.bias.map((v) => v % 7) });
    for (const { name, model } of irCases(3)) {
      const ops = model.ops.map((op): Op => {
        if (op.kind === 'conv') {
          const e = op.epilogue;
          const epilogue = e.kind === 'residual' && e.shortcut ? { ...e, shortcut: { ...e.shortcut, mult: 1, shift: 0 } } : e;
          return { ...op, requant: unit(op.requant), epilogue };
        }
        if (op.kind === 'quantize') return { ...op, requant: unit(op.requant) };
        if (op.kind === 'add') return { ...op, a: { ...op.a, mult: 1, shift: 0 }, b: { ...op.b, mult: -1, shift: 0 } };
        return op;
      });
      const edited = mapActivations({ ...model, ops }, (q) => (q.rule.kind === 'round' ? { ...q, rule: { ...q.rule, fracBits: 0 } } : q));
      await assertSameAsTs(edited, randomImages(edited, 3, 9), 3, `${name}, shift 0`);
    }
  });

  test('engines do not share state: two models interleaved, an image run again', async () => {
    const [a, b] = irCases(4);
    const [wa, wb] = [await WasmIntegerEngine.create(a.model), await WasmIntegerEngine.create(b.model)];
    const [ia, ib] = [randomImages(a.model, 2, 1), randomImages(b.model, 2, 2)];
    const first = wa.infer(ia.subarray(0, wa.imageSize));
    wb.inferBatch(ib, 2);
    wa.infer(ia.subarray(wa.imageSize));
    assert.deepEqual(wa.infer(ia.subarray(0, wa.imageSize)), first);
    assert.deepEqual(first, new IntegerEngine(a.model).infer(ia.subarray(0, wa.imageSize)));
  });
});

describe('the C build', () => {
  const missing = hasTool('gcc') ? false : 'skipped: gcc is not installed';
  test('the same logits as the generated C on the host', { skip: missing }, async () => {
    const options: TinyOptions = { method: 'ewgs', wbits: 3 };
    const t = tinyQuantizedModel(options);
    const cases = [...irCases(5), { name: 'tiny EWGS W3A3', model: lowerTiny(t, options) }];
    for (const { name, model } of cases) {
      const images = randomImages(model, 4, 3);
      const c = runOnHost(generateC(model, { headerName: 'model.h' }), images, 4);
      assert.deepEqual((await WasmIntegerEngine.create(model)).inferBatch(images, 4), c.logits, name);
    }
  });
});

describe('in Chromium', () => {
  const missing = existsSync(CHROMIUM) ? false : `skipped: ${CHROMIUM} is not installed`;
  test('the bundled tinyquant/engine runs a tqm on the wasm kernels in a page: the logits of Node\'s TypeScript engine, no page errors', { skip: missing }, async () => {
    const esbuild = await import('esbuild');
    const bundle = (await esbuild.build({ entryPoints: [join(packageRoot(), 'dist', 'src', 'engine.js')], bundle: true, format: 'iife', globalName: 'tq', platform: 'browser', write: false, logLevel: 'silent' })).outputFiles[0].text;
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on('console', (m) => void (m.type() === 'error' || m.type() === 'warning' ? problems.push(`console ${m.type()}: ${m.text()}`) : undefined));
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      await page.setContent('<!doctype html><title>wasm engine</title>');
      await page.addScriptTag({ content: bundle });
      for (const { name, model } of irCases(6)) {
        const images = randomImages(model, 3, 2);
        const input = { tqm: Buffer.from(encodeTqm(model)).toString('base64'), images: Buffer.from(images).toString('base64') };
        const out = await page.evaluate(async ({ tqm, images }) => {
          const engine = (globalThis as unknown as { tq: typeof EngineEntry }).tq;
          const decode = (s: string): Uint8Array => Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0));
          const e = await engine.createEngine(engine.decodeTqm(decode(tqm)));
          return { backend: e.backend, logits: Array.from(e.inferBatch(decode(images), 3)) };
        }, input);
        assert.equal(out.backend, 'wasm', name);
        assert.deepEqual(out.logits, Array.from(new IntegerEngine(model).inferBatch(images, 3)), name);
      }
      assert.deepEqual(problems, []);
    } finally {
      await browser.close();
    }
  });
});

describe('the module and createEngine', () => {
  test('the embedded module is the build of source.ts (else: npm run build:wasm)', () => {
    assert.equal(WASM_SOURCE_SHA256, wasmSourceHash(), 'src/export/wasm/source.ts or its flags changed since binary.ts was built: run npm run build:wasm');
  });

  test('createEngine: wasm by default, ts when asked or for shift-add, errors for the rest', async () => {
    const { model } = irCases(1)[2];
    assert.ok(wasmSupported());
    assert.equal((await createEngine(model)).backend, 'wasm');
    assert.equal((await createEngine(model, { backend: 'wasm' })).backend, 'wasm');
    const ts = await createEngine(model, { backend: 'ts' });
    assert.ok(ts instanceof IntegerEngine);
    const shiftAdd = await createEngine(model, { arithmetic: 'shift-add' });
    assert.ok(shiftAdd instanceof IntegerEngine && shiftAdd.arithmetic === 'shift-add');
    await assert.rejects(createEngine(model, { backend: 'wasm', arithmetic: 'shift-add' }), /shift-add" runs on the ts backend only/);
    await assert.rejects(createEngine(model, { backend: 'gpu' as never }), /backend must be one of auto, wasm, ts, got "gpu"/);
  });

  test('without WebAssembly: auto falls back to the TypeScript engine, wasm says why it cannot', async () => {
    const { model } = irCases(1)[0];
    const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebAssembly')!;
    delete (globalThis as { WebAssembly?: unknown }).WebAssembly;
    try {
      assert.equal(wasmSupported(), false);
      assert.equal((await createEngine(model)).backend, 'ts');
      await assert.rejects(createEngine(model, { backend: 'wasm' }), /wasm engine: this JavaScript engine has no WebAssembly with SIMD128 \(use the TypeScript engine, backend "ts"\)/);
    } finally {
      Object.defineProperty(globalThis, 'WebAssembly', saved);
    }
    assert.equal((await createEngine(model)).backend, 'wasm');
  });

  test('inputs are checked as the TypeScript engine checks them; malformed models are refused', async () => {
    const { model } = irCases(1)[2];
    const engine = await WasmIntegerEngine.create(model);
    assert.throws(() => engine.infer(new Uint8Array(engine.imageSize + 1)), /engine: an image must be 420 bytes \(uint8 \[3, 10, 14\], channel planes\), got 421/);
    assert.throws(() => engine.inferBatch(new Uint8Array(2 * engine.imageSize - 1), 2), /2 images of uint8 \[3, 10, 14\] need 840 bytes, got 839/);
    assert.equal(engine.inferBatch(new Uint8Array(0), 0).length, 0);
    assert.deepEqual(Array.from(engine.predict(randomImages(model, 3, 1), 3)), Array.from(new IntegerEngine(model).predict(randomImages(model, 3, 1), 3)));
    await assert.rejects(WasmIntegerEngine.create({ ...model, ops: model.ops.slice(1) }), /first op must be the input op|not a tensor written/);
  });
});
