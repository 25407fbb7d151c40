/**
 * Config and grid files checked with their zod schemas: one test per class of error (type, range,
 * integer, enum, unknown field, nested block, list element, combination, grid axis, recipe,
 * cross-section checks), each message one line naming the source and the field; the resolution
 * rules resume depends on (defaults, older bases, configs read back from run directories); the
 * precision of the TrainConfig type (checked when the tests compile); and the committed JSON Schemas
 * that editors read, equal to the ones generated from the zod schemas.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { UsageError, parse } from '../src/cli/args.js';
import { TRAIN, trainConfig } from '../src/cli/train.js';
import { GRID_FIELDS } from '../src/experiments/grid-schema.js';
import { parseGrid, readGrid } from '../src/experiments/grid.js';
import { jsonSchemaFiles } from '../src/json-schemas.js';
import { packageRoot } from '../src/package.js';
import { CONFIG_FIELDS, ConfigError, DEFAULT_CONFIG, type TrainConfig, configDifferences, configForFile, readConfigFile, resolveConfig } from '../src/train/config.js';
import { tempDir } from './fixtures/data/make.js';

/** `f()` throws a ConfigError whose message is one line and equals (or matches) `message`. */
function refuses(f: () => unknown, message: string | RegExp): void {
  assert.throws(f, (e: Error) => {
    assert.ok(e instanceof ConfigError, `${e}`);
    if (typeof message === 'string') assert.equal(e.message, message);
    else assert.match(e.message, message);
    assert.ok(!e.message.includes('\n'));
    return true;
  });
}

const config = (raw: unknown) => () => resolveConfig(raw, 'run.yaml');

describe('config errors name the source and the field', () => {
  test('type: a value of another type, the value quoted as JSON', () => {
    refuses(config({ batch: '16' }), 'run.yaml: batch must be an integer in [1, ...]; got "16"');
    refuses(config({ augment: 'yes' }), 'run.yaml: augment must be true or false; got "yes"');
    refuses(config({ init: 7 }), 'run.yaml: init must be a non-empty string; got 7');
    refuses(config({ lr: null }), 'run.yaml: lr must be a number > 0; got null');
    refuses(config('model: resnet20'), 'run.yaml: must be an object of fields');
  });

  test('range and integers: out of range, fractional, hexadecimal or padded text', () => {
    refuses(config({ wbits: 33 }), 'run.yaml: wbits must be an integer in [1, 32]; got 33');
    refuses(config({ epochs: 1.5 }), 'run.yaml: epochs must be an integer in [1, ...]; got 1.5');
    refuses(config({ momentum: 1.5 }), 'run.yaml: momentum must be a number in [0, 1]; got 1.5');
    refuses(config({ weightDecay: -1 }), 'run.yaml: weightDecay must be a number in [0, Infinity]; got -1');
    refuses(config({ valSplit: 1 }), 'run.yaml: valSplit must be a fraction in [0, 1); got 1');
    refuses(config({ workers: 65 }), 'run.yaml: workers must be an integer in [0, 64]; got 65');
    // a file's quoted number and a flag's non-decimal text stay text: refused, naming the field
    refuses(config({ wbits: '0x4' }), 'run.yaml: wbits must be an integer in [1, 32]; got "0x4"');
    assert.throws(() => trainConfig(parse(TRAIN, ['--abits', '0x4', '--wbits', '4', '--method', 'lsq'])), (e: Error) => e instanceof UsageError && e.message === 'flags: abits must be an integer in [1, 32]; got "0x4"');
    assert.throws(() => trainConfig(parse(TRAIN, ['--lr', ' 0.1'])), (e: Error) => e instanceof UsageError && e.message === 'flags: lr must be a number > 0; got " 0.1"');
  });

  test('enum: the allowed values listed', () => {
    refuses(config({ optimizer: 'rmsprop' }), 'run.yaml: optimizer must be one of sgd, adam, adamw; got "rmsprop"');
    refuses(config({ firstLast: 'int4' }), 'run.yaml: firstLast must be one of float, apot8, int8, same, reference; got "int4"');
    refuses(config({ channels: 2 }), 'run.yaml: channels must be 1 (grey) or 3 (RGB); got 2');
  });

  test('unknown fields, at the top and in every block, with the known ones', () => {
    refuses(config({ learningRate: 0.1 }), /^run\.yaml: learningRate is not a known field \(known: model, dataset, dataDir, .*, evalEvery\)$/);
    refuses(config({ deploy: { inputbits: 8 } }), 'run.yaml: deploy.inputbits is not a known field (known: evaluate, finalEpochs, finalLr, residualBits, inputBits, calibrationImages)');
    refuses(config({ schedule: { kind: 'multistep', milestones: [2], epochs: 3 } }), 'run.yaml: schedule.epochs is not a known field (known: kind, milestones, gamma)');
    refuses(config({ paramGroups: [{ name: 'q', match: 'kind:quant', lr: 1, weightDecay: 0, momentum: 0 }] }), 'run.yaml: paramGroups[0].momentum is not a known field (known: name, match, lr, weightDecay)');
    // an unknown field is reported before other problems, as a typo is the likelier cause
    refuses(config({ epochs: 0, epoch: 3 }), `run.yaml: epoch is not a known field (known: ${CONFIG_FIELDS.join(', ')})`);
  });

  test('nested blocks: their fields by path, missing ones from the defaults', () => {
    refuses(config({ deploy: { residualBits: 12 } }), 'run.yaml: deploy.residualBits must be 8 or 16; got 12');
    refuses(config({ ewgs: { hessianEstimator: 'both' } }), 'run.yaml: ewgs.hessianEstimator must be one of joint, per-quantizer; got "both"');
    refuses(config({ ewgs: [] }), 'run.yaml: ewgs must be an object');
    refuses(config({ schedule: { kind: 'step' } }), 'run.yaml: schedule.kind must be one of constant, multistep, cosine; got "step"');
    refuses(config({ schedule: 'cosine' }), 'run.yaml: schedule must be an object with kind constant, multistep or cosine');
    const c = resolveConfig({ ewgs: { delta: 0.25 }, deploy: { inputBits: 16 }, schedule: { kind: 'multistep', milestones: [1] } });
    assert.deepEqual(c.ewgs, { ...DEFAULT_CONFIG.ewgs, delta: 0.25 });
    assert.deepEqual(c.deploy, { ...DEFAULT_CONFIG.deploy, inputBits: 16 });
    assert.deepEqual(c.schedule, { kind: 'multistep', milestones: [1], gamma: 0.1 });
  });

  test('list and tuple elements by index', () => {
    refuses(config({ schedule: { kind: 'multistep', milestones: [3, -1] } }), 'run.yaml: schedule.milestones[1] must be an integer in [0, ...]; got -1');
    refuses(config({ paramGroups: [{ name: 'q', match: 'kind:quant', lr: -1, weightDecay: 0 }] }), 'run.yaml: paramGroups[0].lr must be a number in [0, Infinity]; got -1');
    refuses(config({ paramGroups: [{ name: 'q', match: '[', lr: 1, weightDecay: 0 }] }), 'run.yaml: paramGroups[0].match is not a valid regular expression: Invalid regular expression: /[/: Unterminated character class');
    refuses(config({ imageSize: [32, 0] }), 'run.yaml: imageSize[1] (width) must be an integer in [1, 65535]; got 0');
    refuses(config({ imageSize: [32] }), 'run.yaml: imageSize must be [height, width]; got [32]');
  });

  test('combinations of fields, checked over the defaults', () => {
    refuses(config({ method: 'lsq', wbits: 32 }), 'run.yaml: wbits/abits must be set below 32 for method lsq');
    refuses(config({ resize: true, dataset: 'imagefolder', dataPath: 'imgs' }), 'run.yaml: resize needs imageSize [height, width], the size to resize to');
  });

  test('a config file: errors name the file (with the flags over it)', () => {
    const { dir, cleanup } = tempDir('tq-config-');
    try {
      const file = join(dir, 'run.yaml');
      writeFileSync(file, 'method: lsq\ndeploy:\n  calibrationImages: 0\n');
      refuses(() => resolveConfig(readConfigFile(file), file), `${file}: deploy.calibrationImages must be an integer in [1, 100000]; got 0`);
      refuses(() => trainConfig(parse(TRAIN, ['--config', file, '--epochs', '2'])), `${file} (with flags): deploy.calibrationImages must be an integer in [1, 100000]; got 0`);
    } finally {
      cleanup();
    }
  });
});

describe('config resolution', () => {
  test('the defaults are the schema defaults; quantized runs default to 4 bits, a cosine to the run length', () => {
    assert.deepEqual(resolveConfig({}), DEFAULT_CONFIG);
    const c = resolveConfig({ method: 'ewgs', epochs: 7, schedule: { kind: 'cosine' } });
    assert.deepEqual([c.wbits, c.abits, c.schedule], [4, 4, { kind: 'cosine', epochs: 7, minFactor: 0 }]);
    assert.equal(resolveConfig({ dataset: 'mnist' }).normalization, 'mnist');
    assert.equal(resolveConfig({ lr: undefined }).lr, DEFAULT_CONFIG.lr, 'a field given as undefined is not given');
  });

  test('an older base lacks fields added since: they take their defaults; given fields win over the base', () => {
    const { deploy, evalEvery, ...older } = { ...DEFAULT_CONFIG, method: 'lsq' as const, wbits: 3, abits: 3, lr: 0.02 };
    assert.ok(deploy && evalEvery);
    const c = resolveConfig({ epochs: 5 }, 'old run', older as unknown as TrainConfig);
    assert.deepEqual([c.deploy, c.evalEvery, c.lr, c.wbits, c.epochs], [DEFAULT_CONFIG.deploy, DEFAULT_CONFIG.evalEvery, 0.02, 3, 5]);
  });

  test('a config read back from a run directory equals the one the run was given', () => {
    const { dir, cleanup } = tempDir('tq-config-');
    try {
      const given = resolveConfig({ method: 'apot', init: 'float.safetensors', dataDir: 'data', schedule: { kind: 'cosine' }, paramGroups: [{ name: 'q', match: 'kind:quant', lr: 0.001, weightDecay: 0 }] });
      const file = join(dir, 'config.json');
      writeFileSync(file, JSON.stringify(configForFile(given)));
      const back = resolveConfig({ ...DEFAULT_CONFIG, ...JSON.parse(readFileSync(file, 'utf8')) }, file);
      assert.equal(back.init, resolve('float.safetensors'));
      assert.deepEqual(configDifferences(back, given), []);
      assert.deepEqual(configDifferences(back, resolveConfig({ ...given, lr: 0.2 })), ['lr']);
    } finally {
      cleanup();
    }
  });

  test('TrainConfig is precise (typeChecks compiles only while it is)', () => {
    assert.equal(typeof typeChecks, 'function');
  });
});

/** Never called: each line marked @ts-expect-error must stay a type error (the test build fails otherwise). */
function typeChecks(c: TrainConfig): unknown[] {
  // @ts-expect-error read-only
  c.lr = 1;
  // @ts-expect-error nested blocks are read-only too
  c.deploy.inputBits = 16;
  // @ts-expect-error not a method
  const method: TrainConfig['method'] = 'lsq2';
  // @ts-expect-error 8 or 16 only
  const bits: TrainConfig['deploy']['residualBits'] = 12;
  // @ts-expect-error a tuple of two
  const size: TrainConfig['imageSize'] = [32, 32, 3];
  // @ts-expect-error a required field
  const noBatch: TrainConfig = { ...c, batch: undefined };
  const kinds: TrainConfig['schedule']['kind'][] = ['constant', 'multistep', 'cosine'];
  const optional: (keyof TrainConfig)[] = ['dataDir', 'dataPath', 'channels', 'imageSize', 'init'];
  return [method, bits, size, noBatch, kinds, optional];
}

const GRID = { name: 'g', models: ['resnet8'], datasets: ['cifar10'], methods: ['lsq', 'float'], bits: [4, 3] };
const grid = (over: Record<string, unknown>) => () => parseGrid({ ...GRID, ...over }, 'g.yaml', '/grids');

describe('grid errors name the file and the field', () => {
  test('grid axes: a single value or a non-empty list of distinct allowed values', () => {
    refuses(grid({ models: 'resnet9' }), `g.yaml: models must be one of ${['resnet8', 'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet20-apot', 'resnet56-apot', 'resnet20-ewgs', 'resnet18', 'resnet8-mlperf', 'dscnn', 'mobilenetv1-0.25'].join(', ')}; got "resnet9"`);
    refuses(grid({ datasets: ['cifar10', 'svhn'] }), 'g.yaml: datasets[1] must be one of cifar10, cifar100, mnist, fashion-mnist, imagefolder; got "svhn"');
    refuses(grid({ methods: [] }), 'g.yaml: methods must not be empty');
    refuses(grid({ seeds: [0, 0] }), 'g.yaml: seeds[1] repeats 0');
    refuses(grid({ seeds: '1' }), 'g.yaml: seeds must be an integer >= 0; got "1"');
    refuses(grid({ methods: ['lsq'], bits: undefined }), 'g.yaml: bits must be given for lsq: a bit-width (a number, "W<w>A<a>" or {wbits, abits}) or a list of them');
    assert.deepEqual(parseGrid({ ...GRID, models: 'resnet8', bits: 'w2a4' }, 'g.yaml', '/').bits, [{ wbits: 2, abits: 4 }]);
  });

  test('bit-widths: each form, its range, and the unknown fields of {wbits, abits}', () => {
    refuses(grid({ bits: [4, 'W4A9'] }), 'g.yaml: bits[1] must be a bit-width: a number (weights = activations), "W<w>A<a>" or {wbits, abits} with bits from 1 to 8; got "W4A9"');
    refuses(grid({ bits: [{ wbits: 2, abits: 0 }] }), 'g.yaml: bits[0].abits must be a bit count from 1 to 8; got 0');
    refuses(grid({ bits: [{ wbits: 2, abits: 2, bits: 2 }] }), 'g.yaml: bits[0].bits is not a known field (known: wbits, abits)');
    refuses(grid({ bits: [[4, 4]] }), 'g.yaml: bits[0] must be a bit-width: a number (weights = activations), "W<w>A<a>" or {wbits, abits}; got [4,4]');
    refuses(grid({ bits: [4, 'W4A4'] }), 'g.yaml: bits[1] repeats {"wbits":4,"abits":4}');
  });

  test('unknown fields in every section', () => {
    refuses(grid({ seed: [0] }), /^g\.yaml: seed is not a known field \(known: version, name, title, .*, scales\)$/);
    refuses(grid({ overrides: [{ when: { bit: 4 }, set: {} }] }), 'g.yaml: overrides[0].when.bit is not a known field (known: method, model, dataset, bits, wbits, abits)');
    refuses(grid({ start: [{ model: 'resnet8', dataset: 'cifar10', float: true, use: 'best' }] }), 'g.yaml: start[0].use is not a known field (known: model, dataset, checkpoint, float, scratch)');
    refuses(grid({ scales: { quick: { epochs: 1 } } }), 'g.yaml: scales.quick.epochs is not a known field (known: note, recipe, overrides, models, datasets, methods, bits, seeds, progressive)');
    refuses(grid({ fairness: { sameSeed: true } }), 'g.yaml: fairness.sameSeed is not a known field (known: sameStart, sameDataOrder)');
  });

  test('nested sections: their types and values by path', () => {
    refuses(grid({ overrides: { when: {} } }), 'g.yaml: overrides must be a list of {when, set}');
    refuses(grid({ overrides: [{ when: 'lsq' }] }), 'g.yaml: overrides[0].when must be a mapping of fields; got "lsq"');
    refuses(grid({ overrides: [{ when: { abits: [4, 40] } }] }), 'g.yaml: overrides[0].when.abits[1] must be a bit count from 1 to 32; got 40');
    refuses(grid({ start: [{ model: 'resnet8', dataset: 'cifar10', float: 'first' }] }), 'g.yaml: start[0].float must be true, best or last; got "first"');
    refuses(grid({ fairness: { sameStart: 1 } }), 'g.yaml: fairness.sameStart must be true or false; got 1');
    refuses(grid({ name: 'my grid' }), "g.yaml: name must be letters, digits, '.', '_' or '-'; got \"my grid\"");
    refuses(grid({ version: 2 }), 'g.yaml: version must be 1 (this tinyquant reads grid version 1); got 2');
    refuses(() => parseGrid(['g'], 'g.yaml', '/'), 'g.yaml: grid must be a mapping of fields; got ["g"]');
  });

  test('recipes: only training config fields the grid does not set, values checked by the config schema', () => {
    refuses(grid({ recipe: { wbits: 4 } }), 'g.yaml: recipe.wbits is set by the grid for each run (models, datasets, methods, bits, seeds, start); remove it from the recipe');
    refuses(grid({ scales: { quick: { recipe: { epoch: 1 } } } }), /^g\.yaml: scales\.quick\.recipe\.epoch is not a training config field \(known: dataDir, .*, evalEvery\)$/);
    refuses(grid({ recipe: { deploy: { residualBits: 4 } } }), 'g.yaml: recipe: deploy.residualBits must be 8 or 16; got 4');
    refuses(grid({ overrides: [{ when: { method: 'lsq' }, set: { momentum: 2 } }] }), 'g.yaml: overrides[0].set: momentum must be a number in [0, 1]; got 2');
  });

  test('what involves several sections: supported bits, starts inside the grid, the quick subsets, progressive methods', () => {
    refuses(grid({ methods: ['apot'], bits: [4, 'W4A6'] }), 'g.yaml: bits W4A6 is not supported by apot (weights: 2, 3, 4, 5; activations: 2, 3, 4, 5)');
    refuses(grid({ start: [{ model: 'resnet8', dataset: 'cifar100', scratch: true }] }), "g.yaml: start[0] names resnet8/cifar100, which is not in the grid's models x datasets");
    refuses(grid({ start: [{ model: 'resnet8', dataset: 'cifar10', scratch: true, checkpoint: 'f.safetensors' }] }), 'g.yaml: start[0] must give exactly one of checkpoint: PATH, float: true | best | last (train one in the grid; start from its best or last epoch), scratch: true; got checkpoint, scratch');
    refuses(grid({ scales: { quick: { bits: 2 } } }), 'g.yaml: scales.quick.bits[0] {"wbits":2,"abits":2} is not in the grid\'s bits');
    refuses(grid({ progressive: 'apot' }), 'g.yaml: progressive must be one of lsq; got "apot"');
    refuses(grid({ scales: { long: { progressive: 'apot' } } }), 'g.yaml: scales.long.progressive[0] "apot" is not in the grid\'s methods');
    refuses(grid({ scales: { full: {} } }), "g.yaml: scales.full is reserved: full is the grid itself; name the scale otherwise");
    refuses(grid({ scales: { Big: {} } }), /^g\.yaml: scales\.Big.* must be lower-case letters/);
  });

  test('a grid file: errors name the file', () => {
    const { dir, cleanup } = tempDir('tq-grid-');
    try {
      const file = join(dir, 'mine.yaml');
      writeFileSync(file, 'name: mine\nmodels: resnet8\ndatasets: cifar10\nmethods: [float]\nrecipe:\n  epochs: many\n');
      refuses(() => readGrid(file), `${file}: recipe: epochs must be an integer in [1, ...]; got "many"`);
    } finally {
      cleanup();
    }
  });
});

describe('JSON Schemas for editors', () => {
  const root = packageRoot();

  test('the committed schemas are the ones generated from the zod schemas (npm run schemas writes them)', () => {
    for (const { path, text } of jsonSchemaFiles()) {
      assert.equal(readFileSync(join(root, path), 'utf8'), text, `${path} is out of date: run npm run schemas`);
    }
  });

  test('each preset names the grid schema on its first line, for yaml-language-server', () => {
    const presets = readdirSync(join(root, 'presets')).filter((f) => f.endsWith('.yaml'));
    assert.ok(presets.length >= 4);
    for (const name of presets) {
      const file = join(root, 'presets', name);
      const first = readFileSync(file, 'utf8').split('\n')[0];
      const m = /^# yaml-language-server: \$schema=(\S+)$/.exec(first);
      assert.ok(m, `${name}: first line ${JSON.stringify(first)}`);
      assert.equal(resolve(dirname(file), m[1]), join(root, 'schemas', 'grid.schema.json'), name);
    }
  });

  test('the schemas offer the fields tinyquant reads, with the defaults of the config', () => {
    const [config, gridSchema] = jsonSchemaFiles().map((f) => JSON.parse(f.text));
    assert.deepEqual(Object.keys(config.properties), CONFIG_FIELDS);
    assert.equal(config.additionalProperties, false);
    assert.equal(config.properties.batch.default, DEFAULT_CONFIG.batch);
    assert.equal(config.properties.wbits.default, undefined, 'a default that depends on the method is described, not given');
    assert.deepEqual(config.properties.deploy.properties.residualBits.enum, [8, 16]);
    const recipe = gridSchema.definitions.recipe;
    assert.deepEqual(Object.keys(recipe.properties), CONFIG_FIELDS.filter((k) => !(GRID_FIELDS as readonly string[]).includes(k)));
    assert.equal(recipe.properties.epochs.default, DEFAULT_CONFIG.epochs);
    for (const name of ['kiots2023', 'float-resnet20']) {
      const g = readGrid(name);
      for (const key of Object.keys(g.recipe)) assert.ok(key in recipe.properties, `${name}: recipe.${key}`);
    }
    assert.deepEqual(gridSchema.required, ['name', 'models', 'datasets', 'methods']);
  });
});
