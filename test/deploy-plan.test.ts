/**
 * The deployment plan and the simulated deployment (src/export/plan.ts, simulate.ts): the
 * fake-quantized model with its deployment simulated computes the integer model's logits, for
 * every method; a run's final phase trains under the plan, records it, resumes bit for bit and
 * reports the integer model's accuracy; a model the lowering rejects stops the run before training.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { type ImageDataset, allocShared } from '../src/data/index.js';
import { fakeQuantLogits, missedTargets } from '../src/export/agreement.js';
import { type CalibrationImages, normalizeImages } from '../src/export/calibrate.js';
import { IntegerEngine } from '../src/export/engine.js';
import { loadTrainedModel, lowerTrainedModel } from '../src/export/checkpoint-model.js';
import { layerWeights, lowerGraph } from '../src/export/lower.js';
import { type DeploymentPlan, planDeployment, readDeploymentPlan } from '../src/export/plan.js';
import { LoweringError, foldAffine } from '../src/export/requant.js';
import { hostEngineAvailability } from '../src/export/host/engine.js';
import { nativeSimulation } from '../src/export/host/simulation.js';
import { getBackend } from '../src/backend/index.js';
import { NativeBackend } from '../src/backend/native/index.js';
import type { NativeBuf } from '../src/backend/native/addon.js';
import { type EpilogueEngine, deploymentRewrite, simulatedForward } from '../src/export/simulate.js';
import { type BatchNormNode, type ConvNode, type Graph, type GraphNode, isKind, runGraph, trace } from '../src/graph/index.js';
import { BatchNorm, Conv2d, GlobalAvgPool, Linear, Sequential } from '../src/nn/layers.js';
import { Module } from '../src/nn/module.js';
import type { MethodName } from '../src/quant/quantizer.js';
import * as ops from '../src/tensor/ops.js';
import { Tensor, noGrad, tidy } from '../src/tensor/tensor.js';
import { readCheckpoint } from '../src/train/checkpoint.js';
import { resolveConfig } from '../src/train/config.js';
import { type TrainingData, evaluateCheckpoint, train } from '../src/train/trainer.js';
import { Rng } from '../src/util/rng.js';
import { CLASSES, NORMALIZATION, syntheticImages, tinyQuantizedModel } from './export-fixtures.js';
import { tempDir } from './fixtures/data/make.js';

const METHODS: readonly MethodName[] = ['apot', 'ewgs', 'uniform', 'pact', 'lsq'];
const SHAPE = [3, 16, 16] as const;

/** The model traced, planned (or `plan` as given) and lowered under the plan. */
function deployTiny(method: MethodName, bits: number, replan: (graph: Graph, plan: DeploymentPlan) => DeploymentPlan = (_, p) => p) {
  const t = tinyQuantizedModel({ method, wbits: bits, seed: 3 });
  const graph = trace(t.model, [...SHAPE]);
  const plan = replan(graph, planDeployment(graph, { normalization: NORMALIZATION, calibration: t.images }));
  const ir = lowerGraph(graph, { normalization: NORMALIZATION, plan, meta: { model: 'tiny', method, wbits: bits, abits: bits, firstLast: 'int8', classes: CLASSES } });
  return { ...t, graph, plan, ir };
}

/**
 * The plan with the stem's stream (and the streams sharing its scale) at twice the real unit of
 * its first channel's accumulator: that channel's requantized value is acc / 2, an exact half for
 * every odd accumulator, where rounding the float32 value and the device's round-half-up differ.
 */
function halvesPlan(graph: Graph, plan: DeploymentPlan): DeploymentPlan {
  const stem = graph.nodes.find((n) => isKind(n, 'conv'))! as GraphNode<ConvNode>;
  const bn = graph.nodes.find((n) => n.inputs[0] === stem.id && isKind(n, 'batchnorm')) as GraphNode<BatchNormNode>;
  const unit = foldAffine(stem.op, layerWeights(stem, () => {}), plan.input.scale, bn.op).M[0];
  const old = plan.streams[bn.name];
  assert.ok(old !== undefined, 'the stem is a stream');
  return { ...plan, streams: Object.fromEntries(Object.entries(plan.streams).map(([k, v]) => [k, v === old ? 2 * unit : v])) };
}

/** The JavaScript loops always; the addon's kernels (on NCHW copies, and on the native backend's buffers) where it is built (CI builds it). */
const EPILOGUES: readonly EpilogueEngine[] = hostEngineAvailability().available ? ['js', 'native-nchw', 'native'] : ['js'];

/** Per image: every value the integer engine stores in a stream and the logits, against the simulated evaluation's, exactly. */
function assertExact(d: ReturnType<typeof deployTiny>, images: CalibrationImages, epilogues: EpilogueEngine): void {
  const engine = new IntegerEngine(d.ir);
  const rewrite = deploymentRewrite(d.graph, d.plan, 'evaluation', d.ir, epilogues);
  const streams = d.ir.ops.flatMap((op) => (op.kind === 'conv' && op.epilogue.kind !== 'activation' ? [op.output] : []));
  const size = SHAPE[0] * SHAPE[1] * SHAPE[2];
  for (let n = 0; n < images.count; n++) {
    const image = images.images.subarray(n * size, (n + 1) * size);
    const ints = engine.trace(image);
    const simulated = new Map<string, Float32Array>();
    noGrad(() =>
      tidy(() => {
        const x = Tensor.fromArray(normalizeImages(image, 1, SHAPE[0], NORMALIZATION), [1, ...SHAPE]);
        runGraph(d.graph, x, { rewrite, observe: (node, v) => simulated.set(node.name, v.toArray()) });
      }),
    );
    for (const k of streams) {
      const info = d.ir.tensors[k];
      const got = simulated.get(d.ir.tensors[k].name === 'logits' ? d.graph.nodes[d.graph.output].name : info.name);
      assert.ok(got, `${info.name}: no simulated value`);
      ints[k].forEach((v, i) => assert.equal(got[i], Math.fround(info.scale * v), `${epilogues} epilogues, image ${n}, ${info.name}[${i}]: simulated ${got[i] / info.scale}, integer ${v}`));
    }
  }
}

describe('simulated deployment', () => {
  for (const method of METHODS) {
    for (const bits of [4, 2]) {
      test(`${method} W${bits}A${bits}: the simulated evaluation's stream values and logits are the integer engine's exactly, by every epilogue engine; as trained they are not`, () => {
        const d = deployTiny(method, bits);
        const images = syntheticImages(24, ...SHAPE, 11);
        for (const engine of EPILOGUES) assertExact(d, images, engine);
        const simulated = fakeQuantLogits(d.model, images.images, images.count, SHAPE, NORMALIZATION, 16, simulatedForward(d.model, SHAPE, d.plan, d.ir));
        const asTrained = fakeQuantLogits(d.model, images.images, images.count, SHAPE, NORMALIZATION, 16);
        const integer = new IntegerEngine(d.ir).inferBatch(images.images, images.count);
        const unit = d.ir.tensors[d.ir.output].scale;
        assert.deepEqual(simulated, Float32Array.from(integer, (v) => unit * v), 'batched logits');
        // The deployment's quantization is a real difference the simulation removes: the model as trained is off on most images.
        const within = Array.from({ length: images.count }, (_, n) => integer.subarray(n * 10, n * 10 + 10).every((v, k) => Math.abs(asTrained[n * 10 + k] - unit * v) <= unit)).filter(Boolean).length;
        assert.ok(within < 0.5 * images.count, `as trained, ${within} images are within one step`);
      });
    }
    test(`${method}: exact where the requantized stream value is an exact half (round half up, as the device)`, () => {
      const d = deployTiny(method, 4, halvesPlan);
      const stem = d.ir.ops.find((op) => op.kind === 'conv')!;
      assert.ok(stem.kind === 'conv' && stem.requant.mult[0] === 2 ** 30 && stem.requant.shift[0] === 31, 'the first channel requantizes by exactly 1/2');
      const images = syntheticImages(8, ...SHAPE, 12);
      // The case hits halves: the first channel's accumulators (the stem conv's float output in its unit) are odd on many pixels.
      const conv = d.graph.nodes.find((n) => isKind(n, 'conv'))! as GraphNode<ConvNode>;
      const unit = foldAffine(conv.op, layerWeights(conv, () => {}), d.plan.input.scale, null).M[0];
      let output: Float32Array = new Float32Array(0);
      noGrad(() => tidy(() => runGraph(d.graph, Tensor.fromArray(normalizeImages(images.images, images.count, SHAPE[0], NORMALIZATION), [images.count, ...SHAPE]), { observe: (n, v) => void (n.id === conv.id && (output = v.toArray())) })));
      const plane = SHAPE[1] * SHAPE[2];
      const odd = Array.from({ length: images.count * plane }, (_, i) => Math.round(output[Math.floor(i / plane) * conv.op.outChannels * plane + (i % plane)] / unit)).filter((acc) => acc % 2 !== 0).length;
      assert.ok(odd > images.count * plane * 0.2, `${odd} odd accumulators`);
      for (const engine of EPILOGUES) assertExact(d, images, engine);
    });
  }

  test('the addon computes the same values on plain and channel-blocked native buffers as on NCHW arrays, for every epilogue and the quantize op', { skip: !(getBackend() instanceof NativeBackend) || !hostEngineAvailability().available }, () => {
    const backend = getBackend() as NativeBackend;
    const d = deployTiny('ewgs', 4);
    const native = nativeSimulation(d.ir);
    assert.ok(!('unavailable' in native) && native.convBuffer && native.quantizeBuffer, 'the addon has the buffer methods');
    const rng = new Rng(5);
    const images = 2;
    /** x as uploaded (plain) and through a 1x1 identity conv (exact: one product by 1, the rest by 0), the layout oneDNN picks. */
    const layouts = (x: Float32Array, shape: number[]): Tensor[] => {
      const plain = Tensor.fromArray(x, shape);
      if (shape.length !== 4) return [plain];
      const c = shape[1];
      const blocked = ops.conv2d(plain, Tensor.fromArray(Float32Array.from({ length: c * c }, (_, i) => (i % (c + 1) === 0 ? 1 : 0)), [c, c, 1, 1]), null, { stride: [1, 1], padding: [0, 0], groups: 1 });
      return [plain, blocked];
    };
    const seen = new Set<string>();
    const kinds = new Set<string>();
    for (const op of d.ir.ops) {
      if (op.kind !== 'conv' && op.kind !== 'quantize') continue;
      const info = d.ir.tensors[op.kind === 'conv' ? op.output : op.input];
      const [c, h, w] = info.shape;
      const shape = h * w === 1 && op.kind === 'quantize' ? [images, c] : [images, c, h, w];
      const n = images * c * h * w;
      const M = Float64Array.from({ length: c }, (_, k) => (k === 1 ? 0 : 0.01 * (1 + (k % 3))));
      const B = Float64Array.from({ length: c }, (_, k) => 0.1 * k - 0.5);
      const plane = h * w;
      const unit = op.kind === 'conv' ? M : new Float64Array(c).fill(info.scale);
      const x = Float32Array.from({ length: n }, (_, i) => {
        const k = Math.floor(i / plane) % c;
        return (op.kind === 'conv' ? B[k] : 0) + (unit[k] || 0.01) * (rng.int(600) - 300 + 0.2 * (rng.next() - 0.5));
      });
      if (op.kind === 'quantize') {
        const want = native.quantize(op.name, x, info.scale, d.ir.tensors[op.output].scale);
        for (const t of layouts(x, shape)) {
          seen.add(backend.layoutOf(t.buf as NativeBuf));
          const got: Tensor = new Tensor(native.quantizeBuffer!(op.name, t.buf as NativeBuf, info.scale, d.ir.tensors[op.output].scale));
          assert.deepEqual(got.toArray(), want, `${op.name} (quantize) on ${backend.layoutOf(t.buf as NativeBuf)}`);
        }
        kinds.add('quantize');
        continue;
      }
      const e = op.epilogue;
      const sc = e.kind === 'residual' && e.shortcut ? { scale: d.ir.tensors[e.shortcut.input].scale, values: Float32Array.from({ length: n }, () => d.ir.tensors[e.shortcut!.input].scale * (rng.int(200) - 100)) } : null;
      kinds.add(e.kind + (sc ? ' with shortcut' : ''));
      const want = native.conv(op.name, x, M, B, info.scale, sc?.values ?? null, sc?.scale ?? 1);
      const shortcuts = sc ? layouts(sc.values, shape) : [null];
      for (const t of layouts(x, shape)) {
        for (const s of shortcuts) {
          const layout = `${backend.layoutOf(t.buf as NativeBuf)}${s ? ` + shortcut ${backend.layoutOf(s.buf as NativeBuf)}` : ''}`;
          seen.add(backend.layoutOf(t.buf as NativeBuf));
          const y = t.detach();
          assert.equal(native.convBuffer!(op.name, y.buf as NativeBuf, M, B, info.scale, s ? (s.buf as NativeBuf) : null, sc?.scale ?? 1), y.buf, 'in place');
          assert.deepEqual(y.toArray(), want, `${op.name} (${e.kind}) on ${layout}`);
        }
      }
    }
    assert.ok([...seen].some((l) => /\d+b$/.test(l)) && seen.has('abcd'), `plain and blocked layouts seen: ${[...seen].join(', ')}`);
    assert.deepEqual([...kinds].sort(), ['activation', 'logits', 'quantize', 'residual', 'residual with shortcut'], 'every epilogue kind and the quantize op');
  });

  test('a plan made for another model names the node it lacks', () => {
    const a = tinyQuantizedModel({ method: 'apot', wbits: 4, seed: 3 });
    const plan = planDeployment(trace(a.model, [...SHAPE]), { normalization: NORMALIZATION, calibration: a.images });
    const renamed = { ...plan, streams: Object.fromEntries(Object.entries(plan.streams).map(([k, v]) => [`other.${k}`, v])) };
    assert.throws(() => deploymentRewrite(trace(a.model, [...SHAPE]), renamed, 'training'), (e: Error) => e instanceof LoweringError && /: the deployment plan has no scale for this stream value/.test(e.message));
  });

  test('a plan read back from JSON is checked field by field', () => {
    const a = tinyQuantizedModel({ method: 'lsq', wbits: 4, seed: 3 });
    const plan = planDeployment(trace(a.model, [...SHAPE]), { normalization: NORMALIZATION, calibration: a.images });
    assert.deepEqual(readDeploymentPlan(JSON.parse(JSON.stringify(plan)), 'run/last.json'), plan);
    assert.throws(() => readDeploymentPlan({ ...plan, input: { bits: 12, scale: 1 } }, 'run/last.json'), /run\/last\.json: deployment plan input\.bits must be 8 or 16, got 12/);
    const [first] = Object.keys(plan.streams);
    assert.throws(() => readDeploymentPlan({ ...plan, streams: { ...plan.streams, [first]: -1 } }, 'f.json'), new RegExp(`f\\.json: deployment plan streams\\["${first.replace(/\./g, '\\.')}"\\] must be a positive number`));
    assert.throws(() => readDeploymentPlan({ ...plan, version: 9 }, 'f.json'), /f\.json: deployment plan version must be 1, got 9/);
  });

  test('the agreement targets: 99.5 % at 4 bits and more, 99 % below, top-1 within 0.2 points', () => {
    assert.deepEqual(missedTargets({ sameTop1: 99.6, fakeQuantTop1: 80, integerTop1: 80.2 }, { wbits: 4, abits: 4 }), []);
    assert.equal(missedTargets({ sameTop1: 99.4, fakeQuantTop1: 80, integerTop1: 80 }, { wbits: 4, abits: 4 }).length, 1);
    assert.deepEqual(missedTargets({ sameTop1: 99.1, fakeQuantTop1: 80, integerTop1: 80 }, { wbits: 2, abits: 4 }), []);
    assert.match(missedTargets({ sameTop1: 99.9, fakeQuantTop1: 80, integerTop1: 80.3 }, { wbits: 2, abits: 2 })[0], /integer top-1 80\.30% is 0\.30 points from the fake-quantized 80\.00%/);
  });
});

/** A small residual net: stem, one residual block, pooling, classifier. */
class ResidualNet extends Module {
  readonly stem: Sequential;
  readonly branch: Sequential;
  readonly head: Sequential;

  constructor() {
    super();
    const rng = new Rng(5);
    this.stem = this.registerModule('stem', new Sequential(new Conv2d(1, 6, 3, { rng, padding: 1 }), new BatchNorm(6, { relu: true })));
    this.branch = this.registerModule(
      'branch',
      new Sequential(new Conv2d(6, 6, 3, { rng, padding: 1 }), new BatchNorm(6, { relu: true }), new Conv2d(6, 6, 3, { rng, padding: 1 }), new BatchNorm(6)),
    );
    this.head = this.registerModule('head', new Sequential(new GlobalAvgPool(), new Linear(6, 2, { rng })));
  }

  override forward(x: Tensor): Tensor {
    const s = this.stem.call(x);
    return this.head.call(ops.addRelu(this.branch.call(s), s));
  }
}

/** Its logits pass a ReLU, which the integer model's int32 logits do not have. */
class ReluLogitsNet extends ResidualNet {
  override forward(x: Tensor): Tensor {
    return ops.relu(super.forward(x));
  }
}

/** Dark images are class 0, bright ones class 1, with a gradient that differs per image (8x8 grey). */
function brightness(split: 'train' | 'test', count: number): ImageDataset {
  const rng = new Rng(split === 'train' ? 1 : 2);
  const images = allocShared(count * 64);
  const labels = Int32Array.from({ length: count }, (_, i) => i % 2);
  for (let i = 0; i < count; i++) {
    const slope = rng.next() * 8;
    for (let p = 0; p < 64; p++) images[i * 64 + p] = Math.min(255, (labels[i] ? 150 : 40) + Math.floor(slope * (p % 8) + rng.next() * 30));
  }
  return { name: 'brightness', split, images, labels, count, channels: 1, height: 8, width: 8, classes: ['dark', 'bright'], source: 'test' };
}

describe('the final phase of a run', () => {
  const data: TrainingData = { train: brightness('train', 32), test: brightness('test', 16) };
  const fields = { method: 'apot', wbits: 4, epochs: 2, batch: 8, evalBatch: 8, lr: 0.05, normalization: 'none', augment: false, workers: 0 };
  const config = resolveConfig({ ...fields, deploy: { finalEpochs: 1, calibrationImages: 16 } });

  test('trains under the plan, records it, reports the device, and resumes bit for bit', async () => {
    const { dir, cleanup } = tempDir('tq-final-phase-');
    try {
      const lines: string[] = [];
      const progress = { step: () => {}, line: (text: string) => void lines.push(text) };
      const whole = await train({ config, outDir: join(dir, 'whole'), model: new ResidualNet(), data, handleSignals: false, progress });
      assert.equal(whole.status, 'finished');
      assert.ok(whole.device, 'the run evaluates the integer model');
      assert.equal(whole.device.images, 16);
      assert.equal(whole.device.sameTop1, 100, 'the integer model picks the simulated fake-quant model\'s class on every test image');
      const final = JSON.parse(readFileSync(join(dir, 'whole', 'final.json'), 'utf8'));
      assert.equal(final.device.top1, whole.device.top1);
      const sidecar = JSON.parse(readFileSync(join(dir, 'whole', 'last.json'), 'utf8'));
      assert.deepEqual(readDeploymentPlan(sidecar.deploymentPlan, 'last.json'), sidecar.deploymentPlan);
      assert.deepEqual(sidecar.classes, ['dark', 'bright']);

      assert.equal(whole.epochs.length, 3, 'two epochs, then the final phase');
      assert.equal(final.top1, whole.epochs[2].testTop1);
      assert.match(lines.join('\n'), /simulated evaluation the last epoch's/, 'the final evaluation is the last epoch\'s (same model, same plan), not a second pass');
      // Stopped in the middle of the final phase (epoch 3, step 2 of 4), then resumed.
      const parts = join(dir, 'parts');
      const first = await train({ config, outDir: parts, model: new ResidualNet(), data, handleSignals: false, stopAfterSteps: 10 });
      assert.equal(first.status, 'interrupted');
      assert.ok(JSON.parse(readFileSync(join(parts, 'last.json'), 'utf8')).deploymentPlan, 'the plan is in the checkpoint of the interrupted final phase');
      const resumed = await train({ config, outDir: parts, model: new ResidualNet(), data, handleSignals: false, resume: true });
      assert.equal(resumed.status, 'finished');
      const [a, b] = [readCheckpoint(join(dir, 'whole')).state, readCheckpoint(parts).state];
      for (const [key, t] of a) assert.deepEqual(b.get(key), t, `${key} differs after resuming`);
      assert.deepEqual(resumed.device, whole.device);
    } finally {
      cleanup();
    }
  });

  test('the final phase freezes batch norm (statistics, scale and shift) and steps at deploy.finalLr', async () => {
    const { dir, cleanup } = tempDir('tq-final-bn-');
    try {
      // Stopped at the end of epoch 2 (8 steps), before the final phase; the whole run after it.
      await train({ config, outDir: join(dir, 'before'), model: new ResidualNet(), data, handleSignals: false, stopAfterSteps: 8 });
      await train({ config, outDir: join(dir, 'whole'), model: new ResidualNet(), data, handleSignals: false });
      const [before, after] = [readCheckpoint(join(dir, 'before')).state, readCheckpoint(join(dir, 'whole')).state];
      for (const key of ['stem.1.running_mean', 'stem.1.running_var', 'branch.1.running_mean', 'branch.3.running_var']) {
        assert.deepEqual(after.get(key), before.get(key), `${key} moved in the final phase`);
      }
      assert.notDeepEqual(after.get('stem.0.weight'), before.get('stem.0.weight'), 'the weights did train in the final phase');
      for (const key of ['stem.1.weight', 'stem.1.bias', 'branch.1.weight', 'branch.3.bias']) assert.deepEqual(after.get(key), before.get(key), `${key} moved in the final phase`);
      // The final phase steps at deploy.finalLr times the configured learning rate.
      const fullLr = resolveConfig({ ...fields, deploy: { finalEpochs: 1, finalLr: 1, calibrationImages: 16 } });
      await train({ config: fullLr, outDir: join(dir, 'full-lr'), model: new ResidualNet(), data, handleSignals: false });
      const lrs = (run: string): number[] => readFileSync(join(dir, run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).lr);
      const [scaled, full] = [lrs('whole'), lrs('full-lr')];
      assert.deepEqual(scaled.slice(0, 2), full.slice(0, 2));
      assert.equal(full[2], config.lr);
      assert.ok(Math.abs(scaled[2] / full[2] - config.deploy.finalLr) < 1e-9, `final-phase lr ${scaled[2]} vs ${full[2]}`);
    } finally {
      cleanup();
    }
  });

  test('a model the lowering rejects stops the run before training, naming the layer', async () => {
    const { dir, cleanup } = tempDir('tq-undeployable-');
    try {
      const one = resolveConfig({ ...fields, epochs: 1 });
      await assert.rejects(
        train({ config: one, outDir: join(dir, 'run'), model: new ReluLogitsNet(), data, handleSignals: false }),
        (e: Error) => e instanceof LoweringError && /^cannot deploy this model: relu: the model's output must be a linear or conv layer/.test(e.message) && /deploy\.evaluate false/.test(e.message),
      );
      assert.equal(existsSync(join(dir, 'run', 'last.json')), false, 'nothing was trained');
      const off = resolveConfig({ ...fields, epochs: 1, deploy: { evaluate: false } });
      const r = await train({ config: off, outDir: join(dir, 'off'), model: new ReluLogitsNet(), data, handleSignals: false });
      assert.equal(r.device, null);
    } finally {
      cleanup();
    }
  });
});

test('export lowers a run with the plan its checkpoint records, and refuses contradicting bit options', async () => {
  const { dir, cleanup } = tempDir('tq-plan-export-');
  try {
    const config = resolveConfig({ model: 'resnet8', method: 'uniform', wbits: 4, epochs: 1, batch: 8, evalBatch: 8, lr: 0.01, normalization: 'none', augment: false, workers: 0 });
    const make = (split: 'train' | 'test', count: number): ImageDataset => {
      const { images } = syntheticImages(count, 3, 16, 16, split === 'train' ? 1 : 2);
      const shared = allocShared(images.length);
      shared.set(images);
      return { name: 'synthetic', split, images: shared, labels: Int32Array.from({ length: count }, (_, i) => i % 10), count, channels: 3, height: 16, width: 16, classes: CLASSES, source: 'test' };
    };
    const run = join(dir, 'run');
    const testSet = make('test', 8);
    const r = await train({ config, outDir: run, data: { train: make('train', 16), test: testSet }, handleSignals: false });
    // `tinyquant eval` of the run evaluates what the run reported: its plan simulated, and the integer model.
    const again = await evaluateCheckpoint(config, readCheckpoint(run), testSet, 8);
    assert.equal(again.top1, r.final?.top1);
    assert.deepEqual(again.device, r.device);
    const trained = loadTrainedModel(run);
    assert.ok(trained.plan, 'the run recorded the plan its final evaluation used');
    // No dataset is needed: the plan gives the scales, the checkpoint the class names.
    const { ir, plan } = await lowerTrainedModel(trained, { dataDir: join(dir, 'nowhere') });
    assert.deepEqual(plan, trained.plan);
    assert.deepEqual(ir.meta.classes, CLASSES);
    assert.equal(r.device?.images, 8);
    await assert.rejects(lowerTrainedModel(trained, { residualBits: 8 }), /--residual-bits 8 contradicts the run's deployment plan \(16 bits\); pass --replan/);
    writeFileSync(join(run, 'last.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(run, 'last.json'), 'utf8')), deploymentPlan: { version: 1 } }));
    assert.throws(() => loadTrainedModel(run), /run: deployment plan input is missing/);
  } finally {
    cleanup();
  }
});
