/**
 * The integer engine's contract: input checks, refusal of models that could overflow or are
 * malformed, operation counts and costs consistent with src/quant/cost.ts, and no Node-only code
 * in the browser-side modules.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { setBackend } from '../src/backend/index.js';
import { IntegerEngine } from '../src/export/engine.js';
import type { ConvOp, IntegerModel, Op } from '../src/export/ir.js';
import { modelReport } from '../src/export/report.js';
import { IntegerModelError } from '../src/export/validate.js';
import { modelCost } from '../src/quant/cost.js';
import { type TinyOptions, lowerTiny, tinyQuantizedModel } from './export-fixtures.js';

const APOT: TinyOptions = { method: 'apot', wbits: 4 };
let ir: IntegerModel;
let cost: ReturnType<typeof modelCost>;

before(() => {
  setBackend('js');
  const tiny = tinyQuantizedModel(APOT);
  ir = lowerTiny(tiny, APOT);
  cost = modelCost(tiny.model, [1, 3, 16, 16]);
});

function withOp(model: IntegerModel, name: string, edit: (op: ConvOp) => Op): IntegerModel {
  return { ...model, ops: model.ops.map((op) => (op.kind === 'conv' && op.name === name ? edit(op) : op)) };
}

describe('inputs', () => {
  test('an image of the wrong size or type is an error', () => {
    const engine = new IntegerEngine(ir);
    assert.throws(() => engine.infer(new Uint8Array(3 * 32 * 32)), /an image must be 768 bytes \(uint8 \[3, 16, 16\], channel planes\), got 3072/);
    assert.throws(() => engine.infer(new Float32Array(768) as unknown as Uint8Array), /an image must be 768 bytes/);
    assert.throws(() => engine.inferBatch(new Uint8Array(768 * 3 - 1), 3), /3 images of uint8 \[3, 16, 16\] need 2304 bytes, got 2303/);
    assert.equal(engine.inferBatch(new Uint8Array(0), 0).length, 0);
    assert.throws(() => new IntegerEngine(ir, { arithmetic: 'float' as never }), /arithmetic must be multiply or shift-add/);
  });

  test('results do not depend on what ran before (no state leaks between images)', () => {
    const engine = new IntegerEngine(ir);
    const a = Uint8Array.from({ length: 768 }, (_, i) => (i * 37) % 256);
    const b = Uint8Array.from({ length: 768 }, (_, i) => (i * 11 + 5) % 256);
    const first = engine.infer(a);
    engine.infer(b);
    assert.deepEqual(engine.infer(a), first);
  });
});

describe('malformed models are refused when the engine is built', () => {
  const cases: [string, IntegerModel, RegExp][] = [];
  before(() => {
    cases.push(
      ['a code beyond the level table', withOp(ir, 'layer1.0.conv1', (op) => ({ ...op, weights: { ...op.weights, codes: op.weights.codes.map((c, i) => (i === 5 ? 15 : c)) } })), /layer1\.0\.conv1.*weight 5 has code 15, but there are 15 levels/],
      ['a requantization that could overflow', withOp(ir, 'layer3.0.conv1', (op) => ({ ...op, requant: { ...op.requant, shift: new Uint8Array(op.outChannels) } })), /layer3\.0\.conv1.*channel 0: requantized values can reach/],
      ['thresholds out of order', withOp(ir, 'layer1.0.conv1', (op) => (op.epilogue.kind === 'activation' && op.epilogue.rule.kind === 'thresholds' ? { ...op, epilogue: { ...op.epilogue, rule: { ...op.epilogue.rule, thresholds: op.epilogue.rule.thresholds.slice().reverse() } } } : op)), /thresholds must be strictly ascending/],
      ['a tensor read before it is written', { ...ir, ops: [ir.ops[0], ...ir.ops.slice(2)] }, /input 1 is not a tensor written by an earlier op/],
      ['a weight bit-width the target cannot represent', withOp(ir, 'layer1.0.conv2', (op) => ({ ...op, weights: { ...op.weights, bits: 9 } })), /layer1\.0\.conv2.*weight bits must be 1\.\.8, got 9/],
      ['a shape mismatch', withOp(ir, 'layer2.0.conv1', (op) => ({ ...op, stride: [1, 1] as const })), /layer2\.0\.conv1.*has shape \[16,8,8\], expected \[16,16,16\]/],
    );
  });
  test('each case names the op and the problem', () => {
    for (const [what, model, pattern] of cases) assert.throws(() => new IntegerEngine(model), (e: Error) => e instanceof IntegerModelError && pattern.test(e.message), what);
  });
});

describe('costs', () => {
  test('MACs, BOPs and packed weight bytes per layer agree with src/quant/cost.ts', () => {
    const report = modelReport(ir);
    assert.deepEqual(report.layers.map((l) => l.name), cost.layers.map((l) => l.path));
    report.layers.forEach((l, i) => {
      const c = cost.layers[i];
      assert.equal(l.macs, c.macs, `${l.name} MACs`);
      assert.equal(l.bops, c.bops, `${l.name} BOPs`);
      assert.equal(l.weightBytes, c.weightBytes, `${l.name} bytes`);
      assert.equal(l.outputShape.reduce((a, d) => a * d), c.outputShape.reduce((a, d) => a * d), `${l.name} output size`);
    });
    assert.equal(report.totals.macs, cost.macs);
  });

  test('shift-add counts: APoT 4-bit weights have at most two powers of two, summed per power before one shift', () => {
    for (const l of modelReport(ir).layers) {
      assert.equal(l.multiplies, l.macs);
      if (!l.name.startsWith('layer')) continue;
      const outputs = l.outputShape.reduce((a, d) => a * d);
      // Numerators 1..10 use the powers 1, 2, 4, 8: at most three shifted groups and four group sums per output.
      assert.ok(l.shifts <= 3 * outputs, `${l.name}: ${l.shifts} shifts for ${outputs} outputs`);
      assert.ok(l.adds <= 2 * l.macs + 4 * outputs, `${l.name}: ${l.adds} adds for ${l.macs} MACs`);
      assert.ok(l.adds > l.macs / 2, `${l.name}: ${l.adds} adds`);
    }
  });

  test('peak activation memory counts the tensors live at once', () => {
    const report = modelReport(ir);
    // The stem output (int16 8x16x16) is still needed by the first block's shortcut while its conv2 writes its output.
    const block = report.layers.find((l) => l.name === 'layer1.0.conv2')!;
    assert.equal(block.activationBytes, 2 * (8 * 16 * 16 * 2) + 8 * 16 * 16);
    assert.ok(report.totals.peakActivationBytes >= Math.max(...report.layers.map((l) => l.activationBytes)));
  });
});

test('browser-side modules import nothing from Node', () => {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const file of ['engine', 'int-ops', 'ir', 'validate', 'tqm', 'sha256', 'bitpack', 'report']) {
    const source = readFileSync(join(here, '..', 'src', 'export', `${file}.js`), 'utf8');
    for (const m of source.matchAll(/from '([^']+)'/g)) assert.ok(m[1].startsWith('./'), `${file}: imports ${m[1]}`);
    assert.doesNotMatch(source, /\b(Buffer|process|require)\b/, file);
  }
});
