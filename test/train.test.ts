import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readCheckpoint } from '../src/train/checkpoint.js';
import { type TrainConfig, resolveConfig } from '../src/train/config.js';
import { DivergedError, train } from '../src/train/trainer.js';
import { cifar10Folder, cifarRecords, tempDir } from './fixtures/data/make.js';

let root: { dir: string; cleanup: () => void };
let dataDir: string;

before(() => {
  root = tempDir('tq-train-');
  dataDir = cifar10Folder(
    join(root.dir, 'data'),
    (i) => cifarRecords(Array.from({ length: 8 }, (_, r) => [(r + i) % 10]), i * 100),
    cifarRecords(Array.from({ length: 12 }, (_, r) => [r % 10]), 7),
  );
});
after(() => root.cleanup());

function config(overrides: Record<string, unknown>): TrainConfig {
  return resolveConfig({ model: 'resnet8', dataset: 'cifar10', dataDir, batch: 16, evalBatch: 16, epochs: 2, workers: 0, lr: 0.05, ...overrides });
}

describe('training runs', () => {
  test('a resumed run ends with exactly the weights of an uninterrupted one (EWGS with the Hessian schedule)', async () => {
    const c = config({ method: 'ewgs', wbits: 2, abits: 2, firstLast: 'float', ewgs: { hessian: true, hessianEvery: 1, hessianBatches: 1, hessianSamples: 3 } });
    const whole = join(root.dir, 'whole');
    const parts = join(root.dir, 'parts');
    const a = await train({ config: c, outDir: whole, handleSignals: false });
    assert.equal(a.status, 'finished');
    // 40 images / 16 = 3 steps per epoch: stop inside epoch 2, after its Hessian estimate.
    const first = await train({ config: c, outDir: parts, handleSignals: false, stopAfterSteps: 4 });
    assert.equal(first.status, 'interrupted');
    assert.equal(JSON.parse(readFileSync(join(parts, 'last.json'), 'utf8')).progress.step, 1);
    const b = await train({ config: c, outDir: parts, resume: true, handleSignals: false });
    assert.equal(b.status, 'finished');
    const sa = readCheckpoint(whole).state;
    const sb = readCheckpoint(parts).state;
    assert.deepEqual([...sa.keys()], [...sb.keys()]);
    for (const [k, v] of sa) assert.deepEqual(sb.get(k)!.data, v.data, `${k} differs after resuming`);
    assert.ok(sa.get('layer1.0.conv1.bkwd_scaling_factorA')!.data[0] >= 0);
    assert.deepEqual(b.epochs.map((e) => e.trainLoss), a.epochs.map((e) => e.trainLoss));
    assert.equal(b.final!.top1, a.final!.top1);
    assert.deepEqual(b.fingerprint, a.fingerprint);
  });

  test('resuming with a different config is refused, naming the fields', async () => {
    const dir = join(root.dir, 'other');
    await train({ config: config({ epochs: 1 }), outDir: dir, handleSignals: false, stopAfterSteps: 1 });
    await assert.rejects(train({ config: config({ epochs: 1, lr: 0.2 }), outDir: dir, resume: true, handleSignals: false }), /cannot resume with a different config \(fields lr differ\)/);
  });

  test('a diverging run stops with a clear error and leaves no partial files', async () => {
    const dir = join(root.dir, 'diverge');
    await assert.rejects(train({ config: config({ lr: 1e30, epochs: 1 }), outDir: dir, handleSignals: false }), (e: Error) => {
      assert.ok(e instanceof DivergedError, e.message);
      assert.match(e.message, /training diverged at epoch 1, step \d+: .*(NaN|Infinity|not finite)/);
      return true;
    });
    assert.ok(readdirSync(dir).every((f) => !f.includes('.tmp')));
  });

  test('a kill at any moment of a checkpoint write leaves a readable checkpoint', async () => {
    const dir = join(root.dir, 'kill');
    await train({ config: config({ epochs: 1 }), outDir: dir, handleSignals: false, stopAfterSteps: 1 });
    const script = `
      import { readCheckpoint, saveCheckpoint } from '${new URL('../src/train/checkpoint.js', import.meta.url).href}';
      import { createModel } from '${new URL('../src/models/index.js', import.meta.url).href}';
      const m = createModel('resnet8');
      const meta = readCheckpoint('${dir}').meta;
      for (let i = 0; ; i++) saveCheckpoint('${dir}', 'last', m, null, { config: meta.config, progress: { ...meta.progress, step: i }, metrics: {} });
    `;
    for (const ms of [30, 80, 150, 260]) {
      spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: ms, killSignal: 'SIGKILL' });
      const ck = readCheckpoint(dir);
      assert.ok(ck.state.has('conv1.weight'));
    }
  });

  test('config errors name the field and the allowed values', () => {
    assert.throws(() => resolveConfig({ methd: 'apot' }, 'c.yaml'), /c\.yaml: methd is not a known field/);
    assert.throws(() => resolveConfig({ method: 'apot2' }, 'c.yaml'), /c\.yaml: method must be one of float, apot, ewgs, uniform, pact, lsq; got "apot2"/);
    assert.throws(() => resolveConfig({ epochs: 0 }, 'c.yaml'), /c\.yaml: epochs must be an integer in \[1, \.\.\.\]; got 0/);
    assert.throws(() => resolveConfig({ schedule: { kind: 'multistep', milestones: [10, 'x'] } }, 'c.yaml'), /schedule\.milestones\[1\] must be an integer/);
    assert.throws(() => resolveConfig({ ewgs: { hessianEvry: 3 } }, 'c.yaml'), /ewgs\.hessianEvry is not a known field/);
    assert.throws(() => resolveConfig({ paramGroups: [{ name: 'q', match: 'kind:quantizer', lr: 1, weightDecay: 0 }] }, 'c'), /paramGroups\[0\]\.match \(kind\) must be one of weight, bias, norm, quant/);
    const c = resolveConfig({ method: 'lsq', wbits: 3 });
    assert.equal(c.abits, 3);
  });
});

describe('memory and initialization', () => {
  test('backend memory stays flat over training steps (every backend)', async () => {
    const { createBackend, withBackend } = await import('../src/backend/index.js');
    const { createModel } = await import('../src/models/index.js');
    const { Sgd, groupParameters } = await import('../src/optim/index.js');
    const { trainStep } = await import('../src/train/step.js');
    const backends = [createBackend('js')];
    try {
      backends.push(createBackend('native'));
    } catch {
      // js only
    }
    for (const be of backends) {
      withBackend(be, () => {
        const model = createModel('resnet8', { seed: 1 });
        const opt = new Sgd(groupParameters(model, [], { lr: 0.01, weightDecay: 1e-4 }), { momentum: 0.9 });
        const batch = { images: new Float32Array(4 * 3 * 32 * 32).fill(0.5), labels: Int32Array.of(0, 1, 2, 3), shape: [4, 3, 32, 32] as const };
        trainStep(model, opt, batch);
        const after1 = be.liveBytes();
        for (let i = 0; i < 6; i++) trainStep(model, opt, batch);
        assert.equal(be.liveBytes(), after1, `${be.name}: live bytes grew over steps`);
        opt.dispose();
        for (const [, t] of model.stateEntries()) t.dispose();
      });
    }
  });

  test('progressive initialization: a 3-bit run starts from a 4-bit checkpoint and inherits its quantizer parameters', async () => {
    const four = join(root.dir, 'apot4');
    await train({ config: config({ method: 'apot', wbits: 4, abits: 4, epochs: 1 }), outDir: four, handleSignals: false });
    const alpha4 = readCheckpoint(four).state.get('layer1.0.conv1.act_alpha')!.data[0];
    assert.notEqual(alpha4, 8, 'alpha moved away from its initial value during the 4-bit run');
    const three = join(root.dir, 'apot3');
    await train({ config: config({ method: 'apot', wbits: 3, abits: 3, epochs: 1, lr: 1e-9, paramGroups: [{ name: 'q', match: 'kind:quant', lr: 1e-12, weightDecay: 0 }], init: join(four, 'last.json') }), outDir: three, handleSignals: false });
    const alpha3 = readCheckpoint(three).state.get('layer1.0.conv1.act_alpha')!.data[0];
    assert.ok(Math.abs(alpha3 - alpha4) < 1e-6, `alpha ${alpha3} was not inherited from ${alpha4}`);
  });

  test('starting weights of another architecture are refused, naming the file and entries', async () => {
    const src = join(root.dir, 'apot4');
    await assert.rejects(
      train({ config: config({ model: 'resnet20', method: 'apot', wbits: 4, epochs: 1, init: join(src, 'last.json') }), outDir: join(root.dir, 'wrongarch'), handleSignals: false }),
      /last-e0001-s000000\.safetensors.*(has shape|entries the model does not have|lack)/,
    );
  });
});
