/**
 * Agreement of the js backend with PyTorch 1.13, forward and backward, on the fixed inputs of
 * test/fixtures/ops/reference.json (written by scripts/fixtures/ops_reference.py).
 *
 * Agreement measure: relErr(a, b) = max_i |a_i - b_i| / max(max_i |b_i|, 1e-6), b the PyTorch
 * value; every compared tensor must have relErr <= 1e-4.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { QuantSpec, Shape } from '../src/backend/backend.js';
import { QUANT_SUMS } from '../src/backend/backend.js';
import { JsBackend, type JsBuf } from '../src/backend/js/index.js';

const TOLERANCE = 1e-4;
const FIXTURE = new URL('../../test/fixtures/ops/reference.json', import.meta.url);

interface Tensor {
  readonly shape: Shape;
  readonly data: Float32Array;
}

interface Case {
  readonly name: string;
  readonly op: string;
  readonly params: Record<string, unknown>;
  readonly scalars: Record<string, number>;
  readonly tensors: Record<string, Tensor>;
}

function loadCases(): Case[] {
  const raw = JSON.parse(readFileSync(FIXTURE, 'utf8')) as { cases: (Omit<Case, 'tensors'> & { tensors: Record<string, { shape: number[]; data: string }> })[] };
  return raw.cases.map((c) => ({
    ...c,
    tensors: Object.fromEntries(Object.entries(c.tensors).map(([k, t]) => {
      const bytes = Buffer.from(t.data, 'base64');
      const data = new Float32Array(bytes.byteLength / 4);
      for (let i = 0; i < data.length; i++) data[i] = bytes.readFloatLE(4 * i);
      return [k, { shape: t.shape, data }];
    })),
  }));
}

function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  assert.equal(actual.length, expected.length, 'length mismatch');
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    diff = Number.isNaN(d) ? Infinity : Math.max(diff, d);
    ref = Math.max(ref, Math.abs(expected[i]));
  }
  return diff / Math.max(ref, 1e-6);
}

/**
 * Runs one case with a fresh backend: `compare(name, actual)` checks a result against the fixture
 * tensor of that name (or a scalar against `scalars`); everything allocated must be freed.
 */
function check(c: Case, body: (be: JsBackend, t: (name: string) => JsBuf, compare: (name: string, actual: ArrayLike<number> | JsBuf) => void) => void): void {
  const be = new JsBackend();
  const uploaded: JsBuf[] = [];
  const t = (name: string): JsBuf => {
    const tensor = c.tensors[name];
    assert.ok(tensor, `${c.name}: the fixture has no tensor ${name}`);
    const b = be.upload(tensor.data, tensor.shape);
    uploaded.push(b);
    return b;
  };
  const compare = (name: string, actual: ArrayLike<number> | JsBuf): void => {
    let values: ArrayLike<number>;
    if (ArrayBuffer.isView(actual) || Array.isArray(actual)) {
      values = actual as ArrayLike<number>;
    } else {
      const buf = actual as JsBuf;
      assert.deepEqual(buf.shape, c.tensors[name].shape, `${c.name}: shape of ${name}`);
      values = be.download(buf);
      be.free(buf);
    }
    const expected = name in c.scalars ? [c.scalars[name]] : c.tensors[name]?.data;
    assert.ok(expected, `${c.name}: the fixture has no value ${name}`);
    const err = relErr(values, expected);
    assert.ok(err <= TOLERANCE, `${c.name}: ${name} differs from PyTorch, relErr ${err.toExponential(2)}`);
  };
  body(be, t, compare);
  uploaded.forEach((b) => be.free(b));
  assert.equal(be.liveBytes(), 0, `${c.name}: leaked backend memory`);
}

type Runner = (c: Case) => void;

const p = <T>(c: Case, key: string): T => c.params[key] as T;

const runners: Record<string, Runner> = {
  conv2d: (c) => check(c, (be, t, compare) => {
    const params = { stride: p<[number, number]>(c, 'stride'), padding: p<[number, number]>(c, 'padding'), groups: p<number>(c, 'groups') };
    const hasBias = 'b' in c.tensors;
    const [x, w, gy] = [t('x'), t('w'), t('gy')];
    compare('y', be.conv2d(x, w, hasBias ? t('b') : null, params));
    compare('gx', be.conv2dBackwardData(gy, w, x.shape, params));
    const { gw, gb } = be.conv2dBackwardWeights(gy, x, w.shape, hasBias, params);
    compare('gw', gw);
    if (gb) compare('gb', gb);
  }),

  batchNormTrain: (c) => check(c, (be, t, compare) => {
    const params = { eps: p<number>(c, 'eps'), momentum: p<number>(c, 'momentum'), relu: p<boolean>(c, 'relu') };
    const [x, gamma, rm, rv] = [t('x'), t('gamma'), t('runningMean'), t('runningVar')];
    const { y, saved } = be.batchNormTrain(x, gamma, t('beta'), rm, rv, params);
    compare('runningMeanAfter', be.download(rm));
    compare('runningVarAfter', be.download(rv));
    const r = be.batchNormBackward(t('gy'), x, y, gamma, saved, params);
    be.freeSaved(saved);
    compare('y', y);
    compare('gx', r.gx);
    compare('gGamma', r.gGamma);
    compare('gBeta', r.gBeta);
  }),

  batchNormInfer: (c) => check(c, (be, t, compare) => {
    const params = { eps: p<number>(c, 'eps'), momentum: p<number>(c, 'momentum'), relu: p<boolean>(c, 'relu') };
    compare('y', be.batchNormInfer(t('x'), t('gamma'), t('beta'), t('runningMean'), t('runningVar'), params));
  }),

  avgPool2d: (c) => check(c, (be, t, compare) => {
    const params = { kernel: p<[number, number]>(c, 'kernel'), stride: p<[number, number]>(c, 'stride'), padding: p<[number, number]>(c, 'padding') };
    const x = t('x');
    compare('y', be.avgPool2d(x, params));
    compare('gx', be.avgPool2dBackward(t('gy'), x.shape, params));
  }),

  globalAvgPool: (c) => check(c, (be, t, compare) => {
    const x = t('x');
    compare('y', be.globalAvgPool(x));
    compare('gx', be.globalAvgPoolBackward(t('gy'), x.shape));
  }),

  linear: (c) => check(c, (be, t, compare) => {
    const hasBias = 'b' in c.tensors;
    const [x, w, gy] = [t('x'), t('w'), t('gy')];
    compare('y', be.linear(x, w, hasBias ? t('b') : null));
    compare('gx', be.linearBackwardData(gy, w));
    const { gw, gb } = be.linearBackwardWeights(gy, x, hasBias);
    compare('gw', gw);
    if (gb) compare('gb', gb);
  }),

  shortcutPad: (c) => check(c, (be, t, compare) => {
    const [stride, before, after] = [p<number>(c, 'stride'), p<number>(c, 'padBefore'), p<number>(c, 'padAfter')];
    const x = t('x');
    compare('y', be.shortcutPad(x, stride, before, after));
    compare('gx', be.shortcutPadBackward(t('gy'), x.shape, stride, before));
  }),

  softmaxCrossEntropy: (c) => check(c, (be, t, compare) => {
    const labels = Int32Array.from(p<number[]>(c, 'labels'));
    const smoothing = p<number>(c, 'smoothing');
    const r = be.softmaxCrossEntropy(t('logits'), labels, smoothing);
    compare('loss', [r.loss]);
    assert.equal(r.correct, c.scalars.correct, `${c.name}: correct`);
    compare('gLogits', be.softmaxCrossEntropyBackward(r.probs, labels, smoothing, p<number>(c, 'scale')));
    compare('probs', r.probs);
  }),

  add: (c) => check(c, (be, t, compare) => compare('y', be.add(t('a'), t('b')))),
  mul: (c) => check(c, (be, t, compare) => compare('y', be.mul(t('a'), t('b')))),
  affine: (c) => check(c, (be, t, compare) => compare('y', be.affine(t('x'), p<number>(c, 'alpha'), p<number>(c, 'beta')))),

  addRelu: (c) => check(c, (be, t, compare) => {
    const y = be.addRelu(t('a'), t('b'));
    const g = be.reluBackward(t('gy'), y);
    compare('ga', be.download(g));
    compare('gb', g);
    compare('y', y);
  }),

  relu: (c) => check(c, (be, t, compare) => {
    const y = be.relu(t('a'));
    compare('ga', be.reluBackward(t('gy'), y));
    compare('y', y);
  }),

  tanh: (c) => check(c, (be, t, compare) => {
    const y = be.tanh(t('a'));
    compare('ga', be.tanhBackward(t('gy'), y));
    compare('y', y);
  }),

  stats: (c) => check(c, (be, t, compare) => {
    compare('stats', be.stats(t('x'), p<number>(c, 'channels')));
    compare('dot', [be.dot(t('x'), t('dotB'))]);
  }),

  sgd: (c) => check(c, (be, t, compare) => {
    const params = {
      lr: p<number>(c, 'lr'), momentum: p<number>(c, 'momentum'), dampening: p<number>(c, 'dampening'),
      weightDecay: p<number>(c, 'weightDecay'), nesterov: p<boolean>(c, 'nesterov'),
    };
    const param = t('p0');
    const velocity = params.momentum > 0 ? be.zeros(param.shape) : null;
    for (let step = 1; step <= 3; step++) {
      // PyTorch starts the buffer at the first gradient: zero buffer and no dampening on step 1
      be.sgdStep(param, t(`g${step - 1}`), velocity, { ...params, dampening: step === 1 ? 0 : params.dampening });
      compare(`p${step}`, be.download(param));
      if (velocity) compare(`v${step}`, be.download(velocity));
    }
    if (velocity) be.free(velocity);
  }),

  adam: (c) => check(c, (be, t, compare) => {
    const param = t('p0');
    const [m, v] = [be.zeros(param.shape), be.zeros(param.shape)];
    for (let step = 1; step <= 3; step++) {
      be.adamStep(param, t(`g${step - 1}`), m, v, {
        lr: p<number>(c, 'lr'), beta1: p<number>(c, 'beta1'), beta2: p<number>(c, 'beta2'), eps: p<number>(c, 'eps'),
        weightDecay: p<number>(c, 'weightDecay'), decoupled: p<boolean>(c, 'decoupled'), step,
      });
      compare(`p${step}`, be.download(param));
      compare(`m${step}`, be.download(m));
      compare(`v${step}`, be.download(v));
    }
    [m, v].forEach((b) => be.free(b));
  }),

  quantize: (c) => check(c, (be, t, compare) => runQuantizerCase(c, be, t, compare)),
};

/** The per-method mapping of quant-methods.md onto one QuantSpec and the parameter gradients. */
function runQuantizerCase(c: Case, be: JsBackend, t: (name: string) => JsBuf, compare: (name: string, actual: ArrayLike<number> | JsBuf) => void): void {
  const scalar = (name: string): Float32Array => c.tensors[name].data;
  const base = {
    offset: Float32Array.of(0), outOffset: Float32Array.of(0), symmetric: false, levels: null, steps: 1,
    loInclusive: true, hiInclusive: true, passClipped: false, delta: 0, channels: 1,
  };
  const sumsOf = (spec: QuantSpec, x: JsBuf): { sums: Float64Array; gx: JsBuf } => be.quantizeBackward(x, t('gy'), spec);
  const sum = (sums: Float64Array, k: number, channel = 0): number => sums[channel * QUANT_SUMS + k];
  const x = t('x');
  const method = p<string>(c, 'method');
  if (method === 'dorefa_weight') {
    const tanh = be.tanh(x);
    const m = Math.max(...Array.from(be.download(tanh), Math.abs));
    const spec: QuantSpec = { ...base, scale: Float32Array.of(2 * m), offset: Float32Array.of(-m), lo: 0, hi: 1, steps: p<number>(c, 'steps'), outScale: Float32Array.of(2), outOffset: Float32Array.of(-1) };
    compare('y', be.quantize(tanh, spec));
    const { gx } = sumsOf(spec, tanh);
    compare('g_x', be.tanhBackward(gx, tanh));
    [gx, tanh].forEach((b) => be.free(b));
    return;
  }
  let spec: QuantSpec;
  let parameterGradients: (sums: Float64Array) => Record<string, number[]>;
  /** y = alpha * Q(x / alpha): d/dalpha = S2 + lo * S3 + hi * S4 per channel. */
  const outputScaleGradient = (s: QuantSpec) => (sums: Float64Array): number[] =>
    Array.from({ length: s.channels }, (_, ch) => sum(sums, 2, ch) + s.lo * sum(sums, 3, ch) + s.hi * sum(sums, 4, ch));
  switch (method) {
    case 'apot_weight': {
      const alpha = scalar('alpha');
      spec = { ...base, channels: alpha.length, scale: alpha, outScale: alpha, offset: new Float32Array(alpha.length), outOffset: new Float32Array(alpha.length),
        lo: -1, hi: 1, symmetric: true, levels: Float32Array.from(p<number[]>(c, 'levels')) };
      const g = outputScaleGradient(spec);
      parameterGradients = (sums) => ({ g_alpha: g(sums) });
      break;
    }
    case 'apot_activation': {
      spec = { ...base, scale: scalar('alpha'), outScale: scalar('alpha'), lo: 0, hi: 1, levels: Float32Array.from(p<number[]>(c, 'levels')) };
      const g = outputScaleGradient(spec);
      parameterGradients = (sums) => ({ g_alpha: g(sums) });
      break;
    }
    case 'ewgs': {
      const [l, u] = [scalar('l')[0], scalar('u')[0]];
      const weight = p<boolean>(c, 'weight');
      const outScale = weight ? 2 : 1;
      spec = { ...base, scale: Float32Array.of(u - l), offset: Float32Array.of(l), lo: 0, hi: 1, steps: p<number>(c, 'steps'),
        outScale: Float32Array.of(outScale), outOffset: Float32Array.of(weight ? -1 : 0), delta: p<number>(c, 'delta') };
      // d xn/dl = (xn - 1) / (u - l), d xn/du = -xn / (u - l), inside only; dL/dxn = outScale * g'
      const k = outScale / Math.fround(u - l);
      parameterGradients = (sums) => ({ g_l: [k * (sum(sums, 1) - sum(sums, 0))], g_u: [-k * sum(sums, 1)] });
      break;
    }
    case 'lsq': {
      spec = { ...base, scale: scalar('s'), outScale: scalar('s'), lo: -p<number>(c, 'qn'), hi: p<number>(c, 'qp') };
      const g = outputScaleGradient(spec);
      parameterGradients = (sums) => ({ g_s: g(sums) });
      break;
    }
    case 'pact': {
      // PACT: 0 <= a < alpha passes; d/dalpha is the sum of g at and above alpha
      spec = { ...base, scale: scalar('alpha'), outScale: scalar('alpha'), lo: 0, hi: 1, steps: p<number>(c, 'steps'), hiInclusive: false };
      parameterGradients = (sums) => ({ g_alpha: [sum(sums, 4)] });
      break;
    }
    default:
      throw new Error(`${c.name}: unknown quantizer method ${method}`);
  }
  compare('y', be.quantize(x, spec));
  const { sums, gx } = sumsOf(spec, x);
  compare('g_x', gx);
  for (const [name, values] of Object.entries(parameterGradients(sums))) compare(name, values);
}

describe('js backend agrees with PyTorch 1.13 (test/fixtures/ops/reference.json)', () => {
  const cases = loadCases();
  it('the fixture covers every op group', () => {
    const ops = new Set(cases.map((c) => c.op));
    for (const op of Object.keys(runners)) assert.ok(ops.has(op), `no fixture case for ${op}`);
  });
  for (const c of cases) {
    it(c.name, () => {
      const run = runners[c.op];
      assert.ok(run, `no runner for op ${c.op}`);
      run(c);
    });
  }
});
