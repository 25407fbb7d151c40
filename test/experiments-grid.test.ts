import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type GridSpec, expandGrid, parseGrid, readGrid } from '../src/experiments/grid.js';
import { packageRoot } from '../src/package.js';
import { sidecarOf, checkStarts } from '../src/experiments/starts.js';
import { tempDir } from './fixtures/data/make.js';

const base = {
  name: 'g',
  models: ['resnet8'],
  datasets: ['cifar10'],
  methods: ['apot', 'ewgs', 'lsq'],
  bits: [4, 'W3A3', { wbits: 2, abits: 2 }],
  seeds: [0, 1],
  recipe: { epochs: 3, batch: 16, lr: 0.05 },
};

function grid(over: Record<string, unknown> = {}): GridSpec {
  return parseGrid({ ...base, ...over }, 'g.yaml', '/grids');
}

describe('grid expansion', () => {
  test('methods x bits x seeds, with a float run the quantized runs start from and APoT progressive', () => {
    const plan = expandGrid(grid({ start: [{ model: 'resnet8', dataset: 'cifar10', float: true }], progressive: ['apot'] }), { scale: 'full' });
    const ids = plan.runs.map((r) => r.id);
    assert.equal(plan.runs.length, 1 + 3 * 3 * 2);
    assert.equal(ids[0], 'resnet8-cifar10-float-s0');
    const run = (id: string) => plan.runs.find((r) => r.id === id)!;
    // APoT: 4 bits from the float run's best, 3 from 4's best, 2 from 3's best.
    assert.deepEqual(run('resnet8-cifar10-apot-w4a4-s1').dependsOn, ['resnet8-cifar10-float-s0']);
    assert.equal(run('resnet8-cifar10-apot-w4a4-s1').config.init, join('runs', 'resnet8-cifar10-float-s0', 'best.json'));
    assert.deepEqual(run('resnet8-cifar10-apot-w3a3-s1').dependsOn, ['resnet8-cifar10-apot-w4a4-s1']);
    assert.equal(run('resnet8-cifar10-apot-w2a2-s1').config.init, join('runs', 'resnet8-cifar10-apot-w3a3-s1', 'best.json'));
    // Other methods start from the float run at every bit-width.
    assert.deepEqual(run('resnet8-cifar10-lsq-w2a2-s0').dependsOn, ['resnet8-cifar10-float-s0']);
    // Every run comes after the runs it starts from.
    plan.runs.forEach((r, i) => r.dependsOn.forEach((d) => assert.ok(ids.indexOf(d) < i, `${r.id} before ${d}`)));
    const c = run('resnet8-cifar10-ewgs-w3a3-s1').config;
    assert.deepEqual([c.method, c.wbits, c.abits, c.seed, c.epochs, c.batch, c.lr, c.model], ['ewgs', 3, 3, 1, 3, 16, 0.05, 'resnet8']);
    assert.equal(c.schedule.kind === 'cosine' && c.schedule.epochs, 3, 'a cosine schedule follows the epochs');
  });

  test('overrides apply in order to the runs they select; a scale restricts and applies last', () => {
    const g = grid({
      overrides: [
        { when: { method: 'ewgs' }, set: { optimizer: 'adam', lr: 0.001 } },
        { when: { method: ['ewgs', 'lsq'], bits: 2 }, set: { weightDecay: 3e-5 } },
        { when: { wbits: 3 }, set: { lr: 0.2 } },
      ],
      scales: { quick: { recipe: { epochs: 1, trainSubset: 64 }, methods: ['ewgs', 'lsq'], bits: [2], seeds: [1], note: 'tiny' } },
    });
    const full = expandGrid(g, { scale: 'full' });
    const cfg = (id: string) => full.runs.find((r) => r.id === id)!.config;
    assert.deepEqual([cfg('resnet8-cifar10-ewgs-w4a4-s0').optimizer, cfg('resnet8-cifar10-ewgs-w4a4-s0').lr], ['adam', 0.001]);
    assert.equal(cfg('resnet8-cifar10-ewgs-w2a2-s0').weightDecay, 3e-5);
    assert.equal(cfg('resnet8-cifar10-lsq-w2a2-s0').weightDecay, 3e-5);
    assert.equal(cfg('resnet8-cifar10-apot-w2a2-s0').weightDecay, 1e-4);
    assert.equal(cfg('resnet8-cifar10-ewgs-w3a3-s0').lr, 0.2, 'a later override wins');
    assert.equal(cfg('resnet8-cifar10-apot-w4a4-s0').optimizer, 'sgd');
    const quick = expandGrid(g, { scale: 'quick' });
    assert.deepEqual(quick.runs.map((r) => r.id), ['resnet8-cifar10-ewgs-w2a2-s1', 'resnet8-cifar10-lsq-w2a2-s1']);
    assert.ok(quick.runs.every((r) => r.config.epochs === 1 && r.config.trainSubset === 64));
    assert.equal(quick.runs[0].config.optimizer, 'adam');
    assert.throws(() => expandGrid(grid(), { scale: 'quick' }), /g\.yaml: has no quick scale \(add scales: \{ quick: \.\.\. \}\)/);
    assert.throws(() => expandGrid(g, { scale: 'standard' }), /g\.yaml: has no standard scale \(its scales: full, quick\)/);
  });

  test('a checkpoint start: quantized runs start from the file and an evaluation job measures the float baseline', () => {
    const plan = expandGrid(grid({ start: [{ model: 'resnet8', dataset: 'cifar10', checkpoint: 'package:models/x.safetensors' }], methods: ['lsq'], bits: [4] }), {
      scale: 'full',
      dataDir: '/data',
    });
    const path = join(packageRoot(), 'models', 'x.safetensors');
    assert.deepEqual(plan.runs.map((r) => [r.id, r.kind, r.config.init, r.startsFrom]), [
      ['resnet8-cifar10-float-start', 'evaluate', path, `checkpoint:${path}`],
      ['resnet8-cifar10-lsq-w4a4-s0', 'train', path, `checkpoint:${path}`],
      ['resnet8-cifar10-lsq-w4a4-s1', 'train', path, `checkpoint:${path}`],
    ]);
    assert.ok(plan.runs.every((r) => r.config.dataDir === '/data' && r.dependsOn.length === 0));
    const relative = expandGrid(grid({ start: [{ model: 'resnet8', dataset: 'cifar10', checkpoint: '../m.safetensors' }], methods: ['lsq'], bits: [4] }), { scale: 'full' });
    assert.equal(relative.runs[0].config.init, '/m.safetensors', 'relative to the grid file');
    assert.throws(() => checkStarts(plan), /the starting checkpoint .*x\.safetensors of g does not exist\. It ships in the npm package @tinyquant\/models \(`npm install @tinyquant\/models`.*`tinyquant run float-resnet20`/);
  });

  test('errors name the file, the field and the allowed values', () => {
    const bad = (over: Record<string, unknown>, re: RegExp) => assert.throws(() => grid(over), re);
    bad({ methods: ['apot', 'apot2'] }, /g\.yaml: methods\[1\] must be one of apot, ewgs, uniform, pact, lsq, float; got "apot2"/);
    bad({ models: ['resnet21'] }, /g\.yaml: models\[0\] must be one of resnet8, resnet20, .*; got "resnet21"/);
    bad({ datasets: ['cifar1000'] }, /g\.yaml: datasets\[0\] must be one of cifar10, cifar100, .*; got "cifar1000"/);
    bad({ bits: [4, 9] }, /g\.yaml: bits\[1\] must be a bit-width: .* with bits from 1 to 8; got 9/);
    bad({ bits: ['W4'] }, /g\.yaml: bits\[0\] must be a bit-width: a number \(weights = activations\), "W<w>A<a>" or \{wbits, abits\}; got "W4"/);
    bad({ bits: [1] }, /g\.yaml: bits W1A1 is not supported by apot \(weights: 2, 3, 4, 5; activations: 2, 3, 4, 5\)/);
    bad({ bits: [4, 4] }, /g\.yaml: bits\[1\] repeats/);
    bad({ seeds: [-1] }, /g\.yaml: seeds\[0\] must be an integer >= 0; got -1/);
    bad({ metods: ['apot'] }, /g\.yaml: metods is not a known field \(known: version, name, /);
    bad({ recipe: { method: 'lsq' } }, /g\.yaml: recipe\.method is set by the grid for each run/);
    bad({ recipe: { lerning: 1 } }, /g\.yaml: recipe\.lerning is not a training config field/);
    bad({ recipe: { lr: -1 } }, /g\.yaml: recipe: lr must be a number > 0; got -1/);
    bad({ overrides: [{ when: { method: 'apt' }, set: {} }] }, /g\.yaml: overrides\[0\]\.when\.method must be one of .*; got "apt"/);
    bad({ overrides: [{ when: { methods: 'apot' }, set: {} }] }, /g\.yaml: overrides\[0\]\.when\.methods is not a known field/);
    bad({ overrides: [{ set: { optimizer: 'rmsprop' } }] }, /g\.yaml: overrides\[0\]\.set: optimizer must be one of sgd, adam, adamw; got "rmsprop"/);
    bad({ start: [{ model: 'resnet8', dataset: 'cifar10' }] }, /g\.yaml: start\[0\] must give exactly one of checkpoint: PATH, float: true/);
    bad({ start: [{ model: 'resnet20', dataset: 'cifar10', scratch: true }] }, /g\.yaml: start\[0\] names resnet20\/cifar10, which is not in the grid's models x datasets/);
    bad({ progressive: ['pact'] }, /g\.yaml: progressive\[0\] must be one of apot, ewgs, lsq; got "pact"/);
    bad({ scales: { quick: { datasets: ['cifar100'] } } }, /g\.yaml: scales\.quick\.datasets\[0\] "cifar100" is not in the grid's datasets/);
    bad({ version: 2 }, /g\.yaml: version must be 1 \(this tinyquant reads grid version 1\); got 2/);
  });
});

describe('grid files and presets', () => {
  let dir: { dir: string; cleanup: () => void };
  before(() => (dir = tempDir('tq-grid-')));
  after(() => dir.cleanup());

  test('a YAML file with a syntax error names the file', () => {
    const file = join(dir.dir, 'broken.yaml');
    writeFileSync(file, 'name: [x\n');
    assert.throws(() => readGrid(file), /broken\.yaml: not valid YAML/);
  });

  test('a checkpoint start whose sidecar names another normalization or model is refused', () => {
    const checkpoint = join(dir.dir, 'float.safetensors');
    writeFileSync(checkpoint, 'weights');
    const plan = (sidecar: unknown) => {
      writeFileSync(join(dir.dir, 'float.json'), JSON.stringify(sidecar));
      return expandGrid(grid({ methods: ['lsq'], bits: [4], start: [{ model: 'resnet8', dataset: 'cifar10', checkpoint }] }), { scale: 'full' });
    };
    assert.throws(() => checkStarts(plan({ config: { model: 'resnet8', normalization: 'ewgs' }, top1: 90 })), /float\.safetensors was trained with normalization "ewgs" \(.*float\.json\), but the runs starting from it use "apot"/);
    assert.throws(() => checkStarts(plan({ config: { model: 'resnet20' } })), /trained with model "resnet20"/);
    checkStarts(plan({ config: { model: 'resnet8', dataset: 'cifar10', normalization: 'apot' } }));
  });

  test('every shipped preset expands at both scales', () => {
    for (const name of ['kiots2023', 'apot-reference', 'ewgs-reference', 'float-resnet20']) {
      const g = readGrid(name);
      assert.equal(g.name, name);
      for (const scale of ['full', 'quick'] as const) assert.ok(expandGrid(g, { scale }).runs.length > 0, `${name} ${scale}`);
    }
  });

  test('kiots2023: one recipe and int8 first/last layers for every method, one float start per dataset', () => {
    const plan = expandGrid(readGrid('kiots2023'), { scale: 'full' });
    const quantized = plan.runs.filter((r) => r.method !== 'float');
    assert.deepEqual(new Set(quantized.map((r) => r.method)), new Set(['apot', 'ewgs', 'uniform', 'pact', 'lsq']));
    assert.deepEqual(new Set(quantized.map((r) => `W${r.wbits}A${r.abits}`)), new Set(['W2A2', 'W3A3', 'W4A4']));
    assert.deepEqual(new Set(quantized.map((r) => r.dataset)), new Set(['cifar10', 'cifar100']));
    assert.ok(quantized.every((r) => r.config.firstLast === 'int8'));
    const recipe = (r: (typeof quantized)[number]) => JSON.stringify({ ...r.config, method: 0, wbits: 0, abits: 0, seed: 0, dataset: 0, init: 0 });
    assert.equal(new Set(quantized.map(recipe)).size, 1, 'the same recipe for every method and bit-width');
    const cifar10 = quantized.filter((r) => r.dataset === 'cifar10');
    assert.equal(new Set(cifar10.map((r) => r.config.init)).size, 1);
    assert.equal(cifar10[0].config.init, join(packageRoot(), 'models', 'resnet20-cifar10-float.safetensors'));
    assert.equal(sidecarOf(cifar10[0].config.init!), join(packageRoot(), 'models', 'resnet20-cifar10-float.json'));
    const quick = expandGrid(readGrid('kiots2023'), { scale: 'quick' });
    assert.ok(quick.runs.every((r) => r.dataset === 'cifar10'), 'CIFAR-100 is left out of the quick scale');
  });

  test('kiots2023 standard scale: all of CIFAR-10 for a few epochs, APoT progressive 4 -> 3 -> 2 bits, the rest from the float start', () => {
    const plan = expandGrid(readGrid('kiots2023'), { scale: 'standard' });
    const quantized = plan.runs.filter((r) => r.kind === 'train');
    assert.equal(quantized.length, 15);
    assert.ok(quantized.every((r) => r.dataset === 'cifar10' && r.seed === 0 && r.config.epochs === 5 && r.config.trainSubset === 0 && r.config.testSubset === 0));
    const from = (id: string) => plan.runs.find((r) => r.id === id)?.startsFrom;
    assert.equal(from('resnet20-cifar10-apot-w3a3-s0'), 'run:resnet20-cifar10-apot-w4a4-s0');
    assert.equal(from('resnet20-cifar10-apot-w2a2-s0'), 'run:resnet20-cifar10-apot-w3a3-s0');
    assert.match(from('resnet20-cifar10-apot-w4a4-s0')!, /^checkpoint:.*resnet20-cifar10-float\.safetensors$/);
    assert.equal(from('resnet20-cifar10-ewgs-w2a2-s0'), from('resnet20-cifar10-apot-w4a4-s0'));
    const full = expandGrid(readGrid('kiots2023'), { scale: 'full' });
    assert.ok(full.runs.filter((r) => r.dataset === 'cifar10').every((r) => r.dependsOn.length === 0), 'the full grid has no progressive runs');
  });

  test('apot-reference chains 4 -> 3 -> 2 bits from a float run; ewgs-reference starts every run from the float run', () => {
    const apot = expandGrid(readGrid('apot-reference'), { scale: 'full' }).runs;
    assert.deepEqual(apot.map((r) => r.dependsOn[0] ?? null), [null, 'resnet20-apot-cifar10-float-s0', 'resnet20-apot-cifar10-apot-w4a4-s0', 'resnet20-apot-cifar10-apot-w3a3-s0']);
    assert.equal(apot.find((r) => r.wbits === 2)!.config.weightDecay, 3e-5);
    assert.equal(apot.find((r) => r.wbits === 4)!.config.paramGroups.length, 2);
    const ewgs = expandGrid(readGrid('ewgs-reference'), { scale: 'full' }).runs;
    assert.ok(ewgs.slice(1).every((r) => r.dependsOn[0] === 'resnet20-ewgs-cifar10-float-s0' && r.config.init === join('runs', 'resnet20-ewgs-cifar10-float-s0', 'last.json')));
    assert.equal(ewgs[0].config.optimizer, 'sgd');
    assert.equal(ewgs[1].config.optimizer, 'adam');
  });
});
