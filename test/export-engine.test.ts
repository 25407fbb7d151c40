/**
 * The integer engine's contract: bit-exact agreement with a straightforward reference written here
 * from ir.ts's formulas (every v2 op and option, both arithmetic paths), input checks, refusal of
 * models that could overflow or are malformed, operation counts and costs consistent with
 * src/graph/cost.ts, and no Node-only code in the browser-side modules.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { setBackend } from '../src/backend/index.js';
import { type Arithmetic, IntegerEngine } from '../src/export/engine.js';
import type { ActivationQuant, ConvOp, IntegerModel, Op, TensorInfo } from '../src/export/ir.js';
import { modelReport } from '../src/export/report.js';
import { IntegerModelError } from '../src/export/validate.js';
import { modelCost } from '../src/graph/cost.js';
import { type TinyOptions, lowerTiny, tinyQuantizedModel } from './export-fixtures.js';
import { irCases, randomImages } from './ir-models.js';

const APOT: TinyOptions = { method: 'apot', wbits: 4 };
let ir: IntegerModel;
let cost: ReturnType<typeof modelCost>;

before(() => {
  setBackend('js');
  const tiny = tinyQuantizedModel(APOT);
  ir = lowerTiny(tiny, APOT);
  cost = modelCost(tiny.model, [3, 16, 16]);
});

function withOp(model: IntegerModel, name: string, edit: (op: ConvOp) => Op): IntegerModel {
  return { ...model, ops: model.ops.map((op) => (op.kind === 'conv' && op.name === name ? edit(op) : op)) };
}

// ---- the reference: plain loops straight from ir.ts, BigInt for the 64-bit products -------------

const INT32 = [-(2 ** 31), 2 ** 31 - 1] as const;

/** v, checked to be an int32 (ir.ts: accumulators and requantized values never overflow). */
function int32(v: number, what: string): number {
  assert.ok(Number.isSafeInteger(v) && v >= INT32[0] && v <= INT32[1], `${what}: ${v} is not an int32`);
  return v;
}

/** rms(a, m, n) = floor((a*m + 2^(n-1)) / 2^n), a*m for n = 0. */
function rms(a: number, m: number, n: number): number {
  const product = BigInt(a) * BigInt(m);
  return int32(Number(n === 0 ? product : (product + (1n << BigInt(n - 1))) >> BigInt(n)), 'rms');
}

function activate(q: ActivationQuant, v: number): number {
  if (q.relu) v = Math.max(v, q.zeroPoint);
  if (q.ceiling !== null) v = Math.min(v, q.ceiling);
  const rule = q.rule;
  if (rule.kind === 'thresholds') return rule.values[rule.thresholds.filter((t) => v > t).length];
  const f = rule.fracBits;
  const code = f === 0 ? v : Math.floor((v + 2 ** (f - 1) - 1) / 2 ** f);
  return Math.min(Math.max(code, rule.minCode), rule.maxCode);
}

function residual(v: number, relu: boolean, ceiling: number | null, bits: number): number {
  if (relu) v = Math.max(v, 0);
  if (ceiling !== null) v = Math.min(v, ceiling);
  return Math.min(Math.max(v, -(2 ** (bits - 1))), 2 ** (bits - 1) - 1);
}

/** Every tensor of `model` on one image. */
function referenceTrace(model: IntegerModel, image: Uint8Array): number[][] {
  const values: number[][] = model.tensors.map(() => []);
  const at = (t: TensorInfo, data: number[], c: number, y: number, x: number): number | undefined =>
    y >= 0 && y < t.shape[1] && x >= 0 && x < t.shape[2] ? data[(c * t.shape[1] + y) * t.shape[2] + x] : undefined;
  for (const op of model.ops) {
    const out = model.tensors[op.output];
    const [C, H, W] = out.shape;
    const result = new Array<number>(C * H * W);
    const each = (f: (c: number, y: number, x: number) => number): void => {
      for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) result[(c * H + y) * W + x] = f(c, y, x);
    };
    if (op.kind === 'input') {
      each((c, y, x) => op.lut[c * 256 + image[(c * H + y) * W + x]]);
    } else if (op.kind === 'conv') {
      const input = model.tensors[op.input];
      const inGroup = op.inChannels / op.groups;
      const [[KH, KW], [SH, SW], [PH, PW]] = [op.kernel, op.stride, op.padding];
      each((o, y, x) => {
        const g = Math.floor(o / (op.outChannels / op.groups));
        let acc = 0;
        for (let c = 0; c < inGroup; c++) {
          for (let i = 0; i < KH; i++) {
            for (let j = 0; j < KW; j++) {
              const w = op.weights.levels[op.weights.codes[((o * inGroup + c) * KH + i) * KW + j]];
              acc += w * (at(input, values[op.input], g * inGroup + c, y * SH + i - PH, x * SW + j - PW) ?? 0);
            }
          }
        }
        const v = int32(rms(int32(acc, `${op.name} acc`), op.requant.mult[o], op.requant.shift[o]) + op.requant.bias[o], op.name);
        const e = op.epilogue;
        if (e.kind === 'activation') return activate(e, v);
        if (e.kind === 'logits') return v;
        const s = e.shortcut;
        const scChannels = s ? model.tensors[s.input].shape[0] : 0;
        const sc = s && o - s.channelOffset >= 0 && o - s.channelOffset < scChannels ? rms(at(model.tensors[s.input], values[s.input], o - s.channelOffset, y * s.stride, x * s.stride)!, s.mult, s.shift) : 0;
        return residual(v + sc, e.relu, e.ceiling, e.bits);
      });
    } else if (op.kind === 'quantize') {
      const r = op.requant;
      each((c, y, x) => {
        const k = r.mult.length === 1 ? 0 : c;
        return activate(op, rms(values[op.input][(c * H + y) * W + x], r.mult[k], r.shift[k]) + r.bias[k]);
      });
    } else if (op.kind === 'add') {
      const { a, b, relu, ceiling, bits } = op;
      each((c, y, x) => {
        const i = (c * H + y) * W + x;
        return residual(rms(values[a.input][i], a.mult, a.shift) + rms(values[b.input][i], b.mult, b.shift), relu, ceiling, bits);
      });
    } else {
      const input = model.tensors[op.input];
      const [[KH, KW], [SH, SW], [PH, PW]] = [op.kernel, op.stride, op.padding];
      each((c, y, x) => {
        const window: number[] = [];
        for (let i = 0; i < KH; i++) for (let j = 0; j < KW; j++) window.push(at(input, values[op.input], c, y * SH + i - PH, x * SW + j - PW) ?? NaN);
        const inside = window.filter((v) => !Number.isNaN(v));
        return op.kind === 'maxpool' ? Math.max(...inside) : inside.reduce((a, b) => a + b, 0);
      });
    }
    values[op.output] = result;
  }
  return values;
}

describe('bit-exact against the reference', () => {
  const check = (model: IntegerModel, images: Uint8Array, count: number, what: string): void => {
    const engines = (['multiply', 'shift-add'] as Arithmetic[]).map((arithmetic) => new IntegerEngine(model, { arithmetic }));
    const size = engines[0].imageSize;
    for (let n = 0; n < count; n++) {
      const image = images.subarray(n * size, (n + 1) * size);
      const expected = referenceTrace(model, image);
      for (const engine of engines) {
        engine.trace(image).forEach((t, i) => assert.deepEqual(Array.from(t), expected[i], `${what} (${engine.arithmetic}), image ${n}, tensor ${model.tensors[i].name}`));
      }
    }
  };

  test('every synthetic v2 case (dense, depthwise, grouped, pools, add, ceilings), tensor by tensor', () => {
    for (const { name, model } of irCases()) check(model, randomImages(model, 3, 7), 3, name);
  });

  test('a lowered ResNet', () => {
    check(ir, randomImages(ir, 2, 8), 2, 'tiny resnet');
  });

  test('the cases are not degenerate: ceilings, relus and clamps bite on some values, not on all', () => {
    for (const { name, model } of irCases()) {
      const trace = referenceTrace(model, randomImages(model, 1, 9));
      model.ops.forEach((op) => {
        if (op.kind === 'input') return;
        const values = trace[op.output];
        const distinct = new Set(values).size;
        assert.ok(distinct >= Math.min(3, values.length), `${name} ${op.name}: only ${distinct} distinct values`);
        const ceiling = op.kind === 'add' || op.kind === 'quantize' ? op.ceiling : op.kind === 'conv' && op.epilogue.kind !== 'logits' ? op.epilogue.ceiling : null;
        if (ceiling === null || op.kind === 'quantize' || (op.kind === 'conv' && op.epilogue.kind === 'activation')) return;
        const atCeiling = values.filter((v) => v === ceiling).length;
        assert.ok(atCeiling > 0 && atCeiling < values.length, `${name} ${op.name}: ${atCeiling} of ${values.length} values at the ceiling`);
      });
    }
  });
});

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
  test('v2 fields: each error names the op and the field', () => {
    const [dense, depthwise, residual, residualInt8] = irCases().map((c) => c.model);
    type Named = Exclude<Op, { kind: 'input' }>;
    const edit = (model: IntegerModel, name: string, change: (op: Named) => object): IntegerModel => ({
      ...model,
      ops: model.ops.map((op) => (op.kind !== 'input' && op.name === name ? ({ ...op, ...change(op) } as Op) : op)),
    });
    const conv = (op: Named): ConvOp => (op.kind === 'conv' ? op : assert.fail(`${op.name} is not a conv`));
    const tensorId = (model: IntegerModel, name: string): number => model.tensors.findIndex((t) => t.name === name);
    const v2: [string, IntegerModel, RegExp][] = [
      ['groups that do not divide the channels', edit(depthwise, 'grouped', () => ({ groups: 5 })), /op 5 \(conv grouped\): groups 5 must divide inChannels 16 and outChannels 12/],
      ['a weight count that ignores the groups', edit(depthwise, 'dw1', () => ({ groups: 4 })), /dw1\): weights\.codes: expected 144 codes \(O \* C\/G \* KH \* KW = 8 \* 2 \* 3 \* 3\), got 72/],
      ['a kernel that is not a pair', edit(dense, 'stem', () => ({ kernel: [3] })), /\(conv stem\): kernel must be an \[h, w\] pair of integers in \[1, 65536\], got \[3\]/],
      ['a zero stride', edit(dense, 'conv3', () => ({ stride: [1, 0] })), /\(conv conv3\): stride must be an \[h, w\] pair of integers in \[1, 65536\], got \[1,0\]/],
      ['an output height from the wrong stride', edit(dense, 'stem', () => ({ stride: [1, 1] })), /\(conv stem\): output stem\.out has shape \[8,7,11\], expected \[8,13,11\]/],
      ['a pool padding beyond half its kernel', edit(dense, 'pool1', () => ({ padding: [2, 1] })), /\(maxpool pool1\): padding \[2,1\] must be at most half the kernel \[3,2\]/],
      ['a global sumpool with the wrong window', edit(dense, 'gap', () => ({ kernel: [2, 3], stride: [1, 1] })), /\(sumpool gap\): output gap\.out has shape \[10,1,1\], expected \[10,2,1\]/],
      ['a maxpool that changes the dtype', { ...dense, tensors: dense.tensors.map((t) => (t.name === 'pool1.out' ? { ...t, dtype: 'int16' as const } : t)) }, /\(maxpool pool1\): output pool1\.out is int16; a maxpool keeps the input's dtype uint8/],
      ['an add of unequal shapes', edit(residual, 'layer2.add', (op) => ({ b: { ...(op as { b: object }).b, input: tensorId(residual, 'layer1.conv2.out') } })), /\(add layer2\.add\): layer1\.conv2\.out has shape \[8,10,14\], a \(layer2\.conv2\.out\) has \[16,5,7\]: an add needs equal shapes/],
      ['an add reading an unwritten tensor', edit(residual, 'layer2.add', (op) => ({ a: { ...(op as { a: object }).a, input: 999 } })), /\(add layer2\.add\): a\.input 999 is not a tensor written by an earlier op/],
      ['an add of 12 bits', edit(residualInt8, 'block.add', () => ({ bits: 12 })), /\(add block\.add\): bits must be 8 or 16, got 12/],
      ['an add ceiling below its relu', edit(residualInt8, 'block.add', () => ({ ceiling: -1 })), /\(add block\.add\): ceiling -1 is below the relu floor 0/],
      ['an activation ceiling below the zero point', edit(depthwise, 'conv1', (op) => ({ epilogue: { ...conv(op).epilogue, ceiling: -100 } })), /\(conv conv1\): ceiling -100 is below the relu floor -?\d+/],
      ['a fractional residual ceiling', edit(residual, 'layer1.conv2', (op) => ({ epilogue: { ...conv(op).epilogue, ceiling: 1.5 } })), /\(conv layer1\.conv2\) residual: ceiling must be null or an integer within ±2\^30, got 1\.5/],
      ['a conv reading sums beyond int16', edit(residual, 'fc', () => ({ input: tensorId(residual, 'gap.out') })), /\(conv fc\): input gap\.out has range \[0,196602\]; a conv input must fit int16/],
    ];
    for (const [what, model, pattern] of v2) assert.throws(() => new IntegerEngine(model), (e: Error) => e instanceof IntegerModelError && pattern.test(e.message), what);
  });
});

describe('costs', () => {
  test('MACs, BOPs and packed weight bytes per layer agree with src/graph/cost.ts', () => {
    const report = { ...modelReport(ir), layers: modelReport(ir).layers.filter((l) => l.params > 0) };
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
      if (!l.name.startsWith('layer') || l.kind !== 'conv') continue;
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

  test('v2 ops: a row for every op; MACs count groups and non-square windows; sumpool adds skip the padding; live memory of an add', () => {
    const [dense, depthwise, residual] = irCases().map((c) => c.model);
    for (const model of [dense, depthwise, residual]) {
      const report = modelReport(model);
      assert.deepEqual(report.layers.map((l) => l.name), model.ops.map((op) => (op.kind === 'input' ? 'input' : op.name)));
      model.ops.forEach((op, i) => {
        const row = report.layers[i];
        if (op.kind !== 'conv') return assert.equal(row.macs, 0, row.name);
        const [, oh, ow] = model.tensors[op.output].shape;
        assert.equal(row.macs, op.outChannels * (op.inChannels / op.groups) * op.kernel[0] * op.kernel[1] * oh * ow, row.name);
        assert.equal(row.bops, row.macs * op.weights.bits * row.inputBits, row.name);
      });
    }
    const kinds = Object.fromEntries(modelReport(depthwise).layers.map((l) => [l.name, l.kind]));
    assert.deepEqual(kinds, { input: 'input', conv1: 'conv', dw1: 'depthwise', pw1: 'conv', dw2: 'depthwise', grouped: 'grouped', avgpool: 'sumpool', 'avgpool.quantize': 'quantize', fc: 'linear' });
    // dw1: 8 channels x 9 weights per output over a [6, 5] output.
    assert.equal(modelReport(depthwise).layers[2].macs, 8 * 9 * 6 * 5);
    // avgpool: a 2x2 window, stride 1, padding 1 over [12, 3, 3]: each axis has windows covering 1, 2, 2, 1 positions.
    assert.equal(modelReport(depthwise).layers.find((l) => l.name === 'avgpool')!.adds, 12 * 6 * 6);
    // layer2.add reads two int16 [16, 5, 7] tensors and writes a third.
    assert.equal(modelReport(residual).layers.find((l) => l.name === 'layer2.add')!.activationBytes, 3 * 16 * 5 * 7 * 2);
  });
});

test('browser-side modules import nothing from Node', () => {
  const here = fileURLToPath(new URL('.', import.meta.url));
  // util/text.js (escaping names for messages) is browser-safe too, and checked here with them
  for (const file of ['engine', 'int-ops', 'ir', 'validate', 'tqm', 'sha256', 'bitpack', 'report', '../util/text']) {
    const source = readFileSync(join(here, '..', 'src', 'export', `${file}.js`), 'utf8');
    for (const m of source.matchAll(/from '([^']+)'/g)) assert.ok(m[1].startsWith('./') || m[1] === '../util/text.js', `${file}: imports ${m[1]}`);
    assert.doesNotMatch(source, /\b(Buffer|process|require)\b/, file);
  }
});
