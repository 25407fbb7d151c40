/**
 * The command line's conventions: --version, `help <command>` and `<command> --help` made from the
 * option declarations the parser uses (so every accepted option is in the help), one-line errors
 * with the stack only on --debug, and exit codes by class: usage 2, input 3, runtime 1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { commandOptions, helpText, parse } from '../src/cli/args.js';
import { COMMANDS } from '../src/cli/commands.js';
import { errorClass, readingInput } from '../src/cli/errors.js';
import { TRAIN } from '../src/cli/train.js';
import { ConfigError } from '../src/train/config.js';
import { InputError, UsageError } from '../src/util/errors.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const VERSION = (JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version: string }).version;
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tq-cli-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function cli(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, TINYQUANT_DEBUG: '', ...env } });
}

describe('help and version', () => {
  test('--version and -v print the package version', () => {
    for (const flag of ['--version', '-v']) {
      const r = cli([flag]);
      assert.deepEqual({ status: r.status, stdout: r.stdout, stderr: r.stderr }, { status: 0, stdout: `${VERSION}\n`, stderr: '' });
    }
  });

  test('every option the parser accepts is in the help, and an option not in the help is refused', () => {
    for (const { spec } of COMMANDS) {
      const help = helpText(spec);
      for (const [name, o] of Object.entries(commandOptions(spec))) {
        assert.match(help, new RegExp(`^  (-\\w, )?--${name}( |$)`, 'm'), `${spec.name} --help lacks --${name}`);
        const argv = o.type === 'string' ? [`--${name}`, 'x'] : [`--${name}`];
        assert.equal(parse(spec, argv).values[name], o.type === 'string' ? 'x' : true, `${spec.name} does not parse --${name}`);
      }
      assert.throws(() => parse(spec, ['--not-an-option']), (e: Error) => e instanceof UsageError && e.message === `${spec.name}: Unknown option '--not-an-option' (tinyquant help ${spec.name} lists the options)`);
    }
  });

  test('train --help has the options it used to leave out', () => {
    const help = helpText(TRAIN);
    for (const name of ['quiet', 'no-augment', 'eval-batch', 'per-channel', 'debug']) assert.match(help, new RegExp(`--${name}\\b`), name);
  });

  test('tinyquant help <command> prints what <command> --help prints; help lists every command', () => {
    for (const name of ['train', 'export', 'bench train']) {
      const viaHelp = cli(['help', ...name.split(' ')]);
      const viaFlag = cli([...name.split(' '), '--help']);
      assert.equal(viaHelp.status, 0, viaHelp.stderr);
      assert.equal(viaHelp.stdout, viaFlag.stdout);
      assert.match(viaHelp.stdout, new RegExp(`^usage: tinyquant ${name} `));
    }
    const list = cli(['help']).stdout;
    for (const { spec } of COMMANDS) assert.ok(list.includes(`  ${spec.name} `), spec.name);
    assert.match(cli(['bench', '--help']).stdout, /bench train .*\n.*bench int /);
  });
});

describe('errors and exit codes', () => {
  test('usage errors exit 2 with one line', () => {
    const cases: [string[], string][] = [
      [['frobnicate'], 'tinyquant: unknown command "frobnicate" (tinyquant help lists the commands)'],
      [['train', '--frob'], "tinyquant: train: Unknown option '--frob' (tinyquant help train lists the options)"],
      [['bench'], 'tinyquant: bench: give one of bench train, bench int (tinyquant help bench)'],
      [['help', 'nosuch'], 'tinyquant: help: no command "nosuch" (tinyquant help lists the commands)'],
      [['bench', 'train', '--batch', '0x10'], 'tinyquant: --batch must be an integer >= 1, got "0x10"'],
      [['train', '--epochs', '1.5'], 'tinyquant: flags: epochs must be an integer in [1, ...]; got 1.5'],
      [['eval'], 'tinyquant: eval: --checkpoint FILE is required'],
    ];
    for (const [args, line] of cases) {
      const r = cli(args);
      assert.deepEqual({ status: r.status, stderr: r.stderr }, { status: 2, stderr: `${line}\n` }, args.join(' '));
    }
  });

  test('input errors (a missing or broken file, a bad field in a config file) exit 3 with one line', () => {
    const notTqm = join(dir, 'model.tqm');
    writeFileSync(notTqm, 'not a model at all, just some text that is long enough for the header');
    const config = join(dir, 'run.yaml');
    writeFileSync(config, 'model: resnet21\n');
    const cases: [string[], RegExp][] = [
      [['eval', '--checkpoint', join(dir, 'absent.json')], /^tinyquant: checkpoint .*absent\.json does not exist$/],
      [['inspect', join(dir, 'absent.tqm')], /^tinyquant: .*absent\.tqm: cannot read: ENOENT/],
      [['inspect', notTqm], /^tinyquant: .*model\.tqm: .+/],
      [['train', '--config', config, '--quiet'], /^tinyquant: .*run\.yaml \(with flags\): model must be one of resnet8, .*; got "resnet21"$/],
    ];
    for (const [args, line] of cases) {
      const r = cli(args);
      assert.equal(r.status, 3, `${args.join(' ')}: ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], line);
    }
  });

  test('runtime errors exit 1', () => {
    const r = cli(['bench', 'train', '--iters', '1', '--batch', '2'], { TINYQUANT_THREADS: 'lots', TINYQUANT_BACKEND: '' });
    assert.deepEqual({ status: r.status, stderr: r.stderr }, { status: 1, stderr: 'tinyquant: TINYQUANT_THREADS must be a positive integer, got "lots"\n' });
  });

  test('--debug (or TINYQUANT_DEBUG=1) adds the stack trace; usage errors stay one line', () => {
    const args = ['eval', '--checkpoint', join(dir, 'absent.json')];
    for (const r of [cli([...args, '--debug']), cli(args, { TINYQUANT_DEBUG: '1' })]) {
      assert.equal(r.status, 3);
      assert.match(r.stderr, /^tinyquant: Error: checkpoint .*absent\.json does not exist\n\s+at /);
    }
    assert.equal(cli(['train', '--frob', '--debug']).stderr.trim().split('\n').length, 1);
  });

  test('classes: named input errors, errors raised while reading input, path errors; bugs and the rest are runtime', () => {
    assert.equal(errorClass(new UsageError('x')), 'usage');
    assert.equal(errorClass(new InputError('x')), 'input');
    assert.equal(errorClass(new ConfigError('x')), 'input');
    assert.equal(errorClass(Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT', path: '/x' })), 'input');
    assert.equal(errorClass(Object.assign(new Error('ENOSPC: no space left'), { code: 'ENOSPC', path: '/x' })), 'runtime');
    assert.equal(errorClass(new Error('something broke')), 'runtime');
    const read = (e: Error) => {
      try {
        readingInput(() => {
          throw e;
        });
      } catch (caught) {
        assert.equal(caught, e, 'the error itself is rethrown');
        return errorClass(caught);
      }
      return assert.fail('readingInput swallowed the error');
    };
    assert.equal(read(new Error('x.tar: truncated header')), 'input');
    assert.equal(read(new TypeError('cannot read properties of undefined')), 'runtime');
    assert.equal(read(new UsageError('--x')), 'usage');
  });

  test('readingInput marks a rejected promise too', async () => {
    await assert.rejects(readingInput(() => Promise.reject(new Error('bad data'))), (e: Error) => errorClass(e) === 'input');
  });
});

describe('--json on run', () => {
  test('run --dry-run --json prints the plan', () => {
    const grid = join(dir, 'grid.yaml');
    writeFileSync(grid, 'name: tiny\nmodels: [resnet8]\ndatasets: [cifar10]\nmethods: [lsq]\nbits: [4]\nseeds: [0]\nrecipe: { epochs: 1 }\n');
    const r = cli(['run', grid, '--dry-run', '--json', '--data-dir', dir]);
    assert.equal(r.status, 0, r.stderr);
    const plan = JSON.parse(r.stdout) as { grid: string; scale: string; runs: { id: string; kind: string }[] };
    assert.equal(plan.grid, 'tiny');
    assert.equal(plan.scale, 'full');
    assert.deepEqual(plan.runs.map((x) => x.kind), ['train']);
    assert.match(plan.runs[0].id, /lsq/);
  });

  test('run --scale NAME picks one of the grid\'s scales; --quick is --scale quick', () => {
    const grid = join(dir, 'scaled.yaml');
    writeFileSync(grid, 'name: scaled\nmodels: [resnet8]\ndatasets: [cifar10]\nmethods: [lsq]\nbits: [4, 2]\nscales:\n  quick: { bits: [2] }\n  long: { recipe: { epochs: 3 } }\n');
    const plan = (...flags: string[]) => {
      const r = cli(['run', grid, '--dry-run', '--json', '--data-dir', dir, ...flags]);
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as { scale: string; runs: { id: string }[] };
    };
    assert.deepEqual([plan('--scale', 'long').scale, plan('--scale', 'long').runs.length], ['long', 2]);
    assert.deepEqual(plan('--quick'), plan('--scale', 'quick'));
    assert.equal(plan('--quick').runs.length, 1);
    const unknown = cli(['run', grid, '--dry-run', '--scale', 'huge', '--data-dir', dir]);
    assert.notEqual(unknown.status, 0);
    assert.match(unknown.stderr, /scaled\.yaml: has no huge scale \(its scales: full, quick, long\)/);
    const both = cli(['run', grid, '--dry-run', '--quick', '--scale', 'long', '--data-dir', dir]);
    assert.equal(both.status, 2, both.stderr);
    assert.match(both.stderr, /--quick and --scale long name two scales/);
  });
});
