/**
 * Where the native addon can't be built, the build script still succeeds with one line saying how
 * to get it, and tinyquant runs on the js backend, saying so once with the command that fixes it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

const repo = fileURLToPath(new URL('../../', import.meta.url));
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tq-install-'));
  mkdirSync(join(dir, 'scripts'));
  mkdirSync(join(dir, 'native'));
  cpSync(join(repo, 'scripts', 'build-native.mjs'), join(dir, 'scripts', 'build-native.mjs'));
  cpSync(join(repo, 'package.json'), join(dir, 'package.json'));
  cpSync(join(repo, 'dist'), join(dir, 'dist'), { recursive: true });
  symlinkSync(join(repo, 'node_modules'), join(dir, 'node_modules'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('install without a working native build', () => {
  test('a failing build prints one line and exits 0', () => {
    writeFileSync(join(dir, 'native', 'binding.gyp'), '{ this is not gyp');
    const r = spawnSync(process.execPath, [join(dir, 'scripts', 'build-native.mjs')], { encoding: 'utf8', env: { ...process.env, npm_config_node_gyp: '' } });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, r.stdout);
    assert.match(lines[0], /^tinyquant: native backend not built \(.+\); using the js backend\. To enable it: apt-get install libdnnl-dev && npm run build:native$/);
  });

  test('--force fails loudly instead', () => {
    const r = spawnSync(process.execPath, [join(dir, 'scripts', 'build-native.mjs'), '--force'], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /cannot build the native backend/);
  });

  test('without the addon, the js backend is used; asking for native explains how to get it', () => {
    const index = new URL(`file://${join(dir, 'dist', 'src', 'backend', 'index.js')}`).href;
    const script = `import('${index}').then((m) => console.log(m.getBackend().name))`;
    const env = { ...process.env, TINYQUANT_BACKEND: '' };
    const r = spawnSync(process.execPath, ['-e', `${script}.then(() => import('${index}')).then((m) => m.getBackend())`], { encoding: 'utf8', env });
    assert.equal(r.stdout.trim(), 'js', r.stderr);
    // Said once, with the command that fixes it.
    assert.deepEqual(r.stderr.trim().split('\n'), [
      `tinyquant: using the js backend (pure TypeScript, about 75x slower to train): no native build for ${process.platform}-${process.arch} (neither prebuilt nor built from source). ` +
        'To get the native backend: apt-get install libdnnl-dev g++ make python3 && npm run build:native',
    ]);
    const forced = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...env, TINYQUANT_BACKEND: 'native' } });
    assert.notEqual(forced.status, 0);
    assert.match(forced.stderr, /native backend is not available: .*npm run build:native/);
  });
});
