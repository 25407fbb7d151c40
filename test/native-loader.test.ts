/**
 * How the native addon is found (src/backend/native/addon.ts): the prebuilt binary under
 * native/prebuilds/ when there is no source build, the source build before it, and where the
 * binary's shared libraries are missing, the Debian package that has them. Each load runs in its
 * own process, in a package root made by the test.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const built = join(repo, 'native', 'build', 'Release', 'tinyquant.node');
const addonModule = fileURLToPath(new URL('../src/backend/native/addon.js', import.meta.url));
const prebuildDir = (root: string) => join(root, 'native', 'prebuilds', `${process.platform}-${process.arch}`);
const PREBUILT_NAME = 'tinyquant.napi.glibc.node';
const hasCompiler = spawnSync('cc', ['--version'], { stdio: 'ignore' }).status === 0;
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tq-loader-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** loadAddon(root) in a fresh process: the path it loaded (and oneDNN's version), or its reason and fix. */
function load(root: string): { path?: string; onednn?: string; reason?: string; fix?: string } {
  const script = `import('${addonModule}').then(({ loadAddon }) => { const l = loadAddon(${JSON.stringify(root)}); ` +
    `console.log(JSON.stringify('addon' in l ? { path: l.path, onednn: l.addon.onednnVersion } : l)); })`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

function packageRootWith(name: string): string {
  const root = join(dir, name);
  mkdirSync(join(root, 'native'), { recursive: true });
  return root;
}

describe('the native addon loader', { skip: existsSync(built) ? false : 'the native addon is not built here' }, () => {
  test('finds the prebuilt binary when there is no build directory', () => {
    const root = packageRootWith('prebuilt-only');
    mkdirSync(prebuildDir(root), { recursive: true });
    copyFileSync(built, join(prebuildDir(root), PREBUILT_NAME));
    const r = load(root);
    assert.equal(r.path, join(prebuildDir(root), PREBUILT_NAME), JSON.stringify(r));
    assert.match(r.onednn ?? '', /^\d+\.\d+/);
  });

  test('prefers a source build to the prebuilt binary', () => {
    const root = packageRootWith('both');
    mkdirSync(prebuildDir(root), { recursive: true });
    mkdirSync(join(root, 'native', 'build', 'Release'), { recursive: true });
    copyFileSync(built, join(prebuildDir(root), PREBUILT_NAME));
    copyFileSync(built, join(root, 'native', 'build', 'Release', 'tinyquant.node'));
    assert.equal(load(root).path, join(root, 'native', 'build', 'Release', 'tinyquant.node'));
  });

  test('with neither, says so and gives the source build command', () => {
    const r = load(packageRootWith('none'));
    assert.equal(r.reason, `no native build for ${process.platform}-${process.arch} (neither prebuilt nor built from source)`);
    assert.equal(r.fix, 'apt-get install libdnnl-dev g++ make python3 && npm run build:native');
  });

  test('inside node_modules, the source build runs through npm explore', () => {
    const r = load(packageRootWith(join('node_modules', 'tinyquant')));
    assert.equal(r.fix, 'apt-get install libdnnl-dev g++ make python3 && npm explore tinyquant -- npm run build:native');
  });

  test('a prebuilt binary whose oneDNN is not installed names the Debian package', { skip: hasCompiler ? false : 'no C compiler' }, () => {
    // A stand-in binary that needs libdnnl.so.99, which the test removes after linking.
    const root = packageRootWith('no-onednn');
    const work = join(dir, 'stub');
    mkdirSync(work);
    writeFileSync(join(work, 'dnnl.c'), 'int dnnl_stub(void) { return 1; }\n');
    writeFileSync(join(work, 'addon.c'), 'int dnnl_stub(void);\nint addon_stub(void) { return dnnl_stub(); }\n');
    const cc = (args: string[]) => assert.equal(spawnSync('cc', args, { cwd: work, encoding: 'utf8' }).status, 0, args.join(' '));
    cc(['-shared', '-fPIC', '-Wl,-soname,libdnnl.so.99', '-o', 'libdnnl.so.99', 'dnnl.c']);
    mkdirSync(prebuildDir(root), { recursive: true });
    cc(['-shared', '-fPIC', '-o', join(prebuildDir(root), PREBUILT_NAME), 'addon.c', join(work, 'libdnnl.so.99')]);
    rmSync(join(work, 'libdnnl.so.99'));
    const r = load(root);
    assert.equal(r.reason, `native/prebuilds/${process.platform}-${process.arch}/${PREBUILT_NAME} needs libdnnl.so.99, which is not installed`);
    assert.equal(r.fix, 'apt-get install libdnnl99');
  });
});
