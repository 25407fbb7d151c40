/**
 * Numbers on the command line are decimal: `--wbits 0x4` or `--lr 0x10` is not 4 or 16 but an error
 * naming the field and the text, and so are empty or padded values. Errors print as one line.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { decimalNumber, parse } from '../src/cli/args.js';
import { TRAIN, configFromFlags, trainConfig } from '../src/cli/train.js';
import { ConfigError, resolveConfig, totalEpochs } from '../src/train/config.js';

test('decimalNumber reads decimal notation only', () => {
  for (const [text, value] of [['4', 4], ['-0.5', -0.5], ['1e-3', 0.001], ['.25', 0.25], ['+2', 2], ['3.', 3], ['2E2', 200]] as const) {
    assert.equal(decimalNumber(text), value, text);
  }
  for (const text of ['0x4', '0b1', '0o7', '', ' 4', '4 ', 'Infinity', 'NaN', '1_000', '4e', '--1']) assert.equal(decimalNumber(text), null, JSON.stringify(text));
});

test('train flags: hexadecimal and padded numbers are refused by name', () => {
  const flags = (argv: string[]) => configFromFlags(parse(TRAIN, argv));
  assert.throws(() => resolveConfig(flags(['--wbits', '0x4']), 'flags'), (e: Error) => e instanceof ConfigError && /wbits must be an integer in \[1, 32\]; got "0x4"/.test(e.message));
  assert.throws(() => resolveConfig(flags(['--lr', '0x10']), 'flags'), /lr must be a number > 0; got "0x10"/);
  assert.throws(() => resolveConfig(flags(['--epochs', ' 2']), 'flags'), /epochs must be an integer/);
  assert.equal(resolveConfig(flags(['--lr', '1e-3', '--epochs', '2']), 'flags').lr, 0.001);
});

test('deploy flags set deploy.finalEpochs and deploy.evaluate over a config file\'s deploy block', () => {
  const config = (argv: string[]) => trainConfig(parse(TRAIN, argv));
  assert.deepEqual([config([]).deploy.finalEpochs, config([]).deploy.evaluate], [0, true]);
  const flagged = config(['--method', 'apot', '--epochs', '3', '--final-epochs', '1', '--no-deploy']).deploy;
  assert.deepEqual([flagged.finalEpochs, flagged.evaluate], [1, false]);
  const file = join(mkdtempSync(join(tmpdir(), 'tq-deploy-flags-')), 'run.yaml');
  writeFileSync(file, 'method: lsq\nepochs: 4\ndeploy:\n  calibrationImages: 64\n  finalEpochs: 2\n');
  const merged = config(['--config', file, '--final-epochs', '3']).deploy;
  assert.deepEqual([merged.calibrationImages, merged.finalEpochs, merged.evaluate], [64, 3, true]);
  assert.throws(() => config(['--method', 'lsq', '--epochs', '2', '--final-epochs', '0x1']), /finalEpochs/);
  assert.equal(totalEpochs(config(['--method', 'lsq', '--epochs', '2', '--final-epochs', '3'])), 5, 'the final phase follows the epochs');
  assert.equal(totalEpochs(config(['--epochs', '2', '--final-epochs', '3'])), 2, 'a float run has no final phase');
  for (const bad of [0, 1.5, -0.1, '0.1']) {
    assert.throws(() => resolveConfig({ method: 'lsq', deploy: { finalLr: bad } }, 'flags'), /deploy\.finalLr must be a factor in \(0, 1\]/);
  }
  assert.equal(resolveConfig({ method: 'lsq', deploy: { finalLr: 0.25 } }, 'flags').deploy.finalLr, 0.25);
  assert.equal(config([]).deploy.finalLr, 0.02);
});

test('a failing command prints one line naming what is wrong, and its stack only with TINYQUANT_DEBUG=1', () => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const run = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, [cli, 'eval', '--checkpoint', '/nonexistent/run'], { encoding: 'utf8', env: { ...process.env, ...env } });
  const plain = run({ TINYQUANT_DEBUG: '' });
  assert.equal(plain.status, 3);
  assert.deepEqual(plain.stderr.trim().split('\n'), ['tinyquant: checkpoint /nonexistent/run does not exist']);
  const debug = run({ TINYQUANT_DEBUG: '1' });
  assert.match(debug.stderr, /^tinyquant: Error: checkpoint \/nonexistent\/run does not exist\n\s+at /);
});
