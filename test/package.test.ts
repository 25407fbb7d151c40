/**
 * The package as a user gets it: `npm pack` of this checkout (with the prebuilt native backend made
 * from the local build, as `prepack` makes it), installed into a fresh project with
 * `npm install --offline` from the local npm cache, then used from there: `import ... from
 * 'tinyquant'` and `'tinyquant/engine'` (and their types), the CLI through npx, and the backend
 * that trains. Nothing is fetched: the project's lockfile pins this checkout's versions, and a
 * dependency whose tarball is not in the cache fails the install with npm's ENOTCACHED naming it
 * (`npm ci` of this checkout fills the cache).
 */
import assert from 'node:assert/strict';
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { IntegerEngine, encodeTqm } from '../src/index.js';
import { irCases, randomImages } from './ir-models.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const built = existsSync(join(repo, 'native', 'build', 'Release', 'tinyquant.node'));
const version = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
const tsc = join(repo, 'node_modules', 'typescript', 'bin', 'tsc');
let dir: string;
let app: string;
let packed: { filename: string; size: number; entryCount: number; files: { path: string }[] };

function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  return spawnSync(command, args, { cwd, encoding: 'utf8', env: { ...process.env, TINYQUANT_BACKEND: '', TINYQUANT_DEBUG: '', npm_config_update_notifier: 'false', ...env } });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${r.status}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** Run an ES module in the app project; its stdout. */
function inApp(code: string, env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  const file = join(app, `script-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(file, code);
  return run(process.execPath, [file], app, env);
}

interface LockEntry {
  version: string;
  resolved?: string;
  dev?: boolean;
  dependencies?: Record<string, string>;
}

/**
 * The fresh project's lockfile: tinyquant from the tarball and its dependencies at this checkout's
 * locked versions, each with its registry URL. npm then takes every tarball from its cache by
 * integrity; without a lockfile it would need the registry's package documents, which `npm ci`
 * does not cache.
 */
function appLockfile(spec: string): unknown {
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string>; peerDependencies?: unknown; peerDependenciesMeta?: unknown; bin?: unknown; license?: string };
  const lock = JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const packages: Record<string, unknown> = {
    '': { name: 'app', version: '1.0.0', dependencies: { tinyquant: spec } },
    'node_modules/tinyquant': { version: pkg.version, resolved: spec, license: pkg.license, dependencies: pkg.dependencies, peerDependencies: pkg.peerDependencies, peerDependenciesMeta: pkg.peerDependenciesMeta, bin: pkg.bin },
  };
  const pending = Object.keys(pkg.dependencies);
  while (pending.length > 0) {
    const name = pending.pop() as string;
    const key = `node_modules/${name}`;
    if (packages[key] !== undefined) continue;
    const { dev: _dev, ...entry } = lock.packages[key];
    packages[key] = { ...entry, resolved: entry.resolved ?? `https://registry.npmjs.org/${name}/-/${name.split('/').pop()}-${entry.version}.tgz` };
    pending.push(...Object.keys(entry.dependencies ?? {}));
  }
  return { name: 'app', version: '1.0.0', lockfileVersion: 3, requires: true, packages };
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tq-package-'));
  if (built) ok(run(process.execPath, [join(repo, 'scripts', 'prebuild.mjs'), '--no-build'], repo), 'prebuild');
  // The scripts (prepack: the native build, prepare: tsc) have run for this checkout already: the test's own dist is current.
  const pack = ok(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], repo), 'npm pack');
  packed = (JSON.parse(pack) as (typeof packed)[])[0];
  app = join(dir, 'app');
  mkdirSync(app);
  const spec = `file:../${packed.filename}`;
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module', dependencies: { tinyquant: spec } }));
  writeFileSync(join(app, 'package-lock.json'), JSON.stringify(appLockfile(spec)));
  const install = run('npm', ['install', '--offline', '--no-audit', '--no-fund', join(dir, packed.filename)], app);
  assert.equal(install.status, 0, `npm install --offline of the tarball failed (a dependency not in the npm cache? run npm ci first):\n${install.stderr}`);
  assert.doesNotMatch(install.stderr, /install-scripts|postinstall|gyp/, 'no install script runs');
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('the packed package', () => {
  test('ships what runs and nothing of the tests, benchmarks or fixtures', () => {
    const paths = packed.files.map((f) => f.path);
    console.log(`tarball: ${packed.entryCount} files, ${packed.size} bytes`);
    for (const p of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/engine.js', 'dist/src/engine.d.ts',
      'dist/src/cli/main.js', 'native/binding.gyp', 'native/src/addon.cc', 'scripts/build-native.mjs', 'presets/kiots2023.yaml']) {
      assert.ok(paths.includes(p), `${p} is missing from the tarball`);
    }
    // The float models are their own package (@tinyquant/models, next test).
    const unwanted = paths.filter((p) => /^(dist\/(test|bench)\/|test\/|bench\/|src\/|scripts\/fixtures\/|native\/build\/|models\/)|\.map$|\.pth$|\.tgz$/.test(p));
    assert.deepEqual(unwanted, []);
    if (built) assert.ok(paths.some((p) => p.startsWith(`native/prebuilds/${process.platform}-${process.arch}/`) && p.endsWith('.node')), 'the prebuilt backend');
    assert.ok(packed.size < 2_000_000, `the tarball is ${packed.size} bytes, over 2 MB`);
  });

  test('the presets start from the float model of @tinyquant/models once it is installed, and say so before', () => {
    const before = run('npx', ['--offline', 'tinyquant', 'run', 'kiots2023', '--dry-run'], app);
    assert.equal(before.status, 3, 'a missing input file');
    assert.match(before.stderr, /resnet20-cifar10-float\.safetensors of kiots2023 does not exist\. It ships in the npm package @tinyquant\/models \(`npm install @tinyquant\/models`/);
    const models = (JSON.parse(ok(run('npm', ['pack', './models', '--json', '--pack-destination', dir], repo), 'npm pack ./models')) as (typeof packed)[])[0];
    assert.deepEqual(models.files.map((f) => f.path).sort(), ['package.json', 'resnet20-cifar10-float.json', 'resnet20-cifar10-float.safetensors']);
    ok(run('npm', ['install', '--offline', '--no-audit', '--no-fund', join(dir, models.filename)], app), 'npm install of the models package');
    assert.match(ok(run('npx', ['--offline', 'tinyquant', 'run', 'kiots2023', '--dry-run'], app), 'run --dry-run'), /^kiots2023 \(full scale\): \d+ runs/);
  });

  test("import from 'tinyquant' and its types, without onnxruntime-node installed", () => {
    assert.equal(ok(inApp("import { TINYQUANT_VERSION, createModel } from 'tinyquant';\nconsole.log(TINYQUANT_VERSION, typeof createModel);"), 'import tinyquant').trim(), `${version} function`);
    assert.notEqual(inApp("await import('onnxruntime-node');").status, 0, 'onnxruntime-node is an optional peer: not installed');
    const deep = inApp("await import('tinyquant/dist/src/index.js');");
    assert.match(deep.stderr, /ERR_PACKAGE_PATH_NOT_EXPORTED/);
    assert.equal(ok(inApp("import { createRequire } from 'node:module';\nconsole.log(createRequire(import.meta.url)('tinyquant/package.json').version);"), 'package.json').trim(), version);
  });

  test("'tinyquant/engine' decodes a tqm from bytes and runs it bit for bit; its types need no Node.js types", () => {
    const { model } = irCases(5)[2];
    writeFileSync(join(app, 'model.tqm'), encodeTqm(model));
    const images = randomImages(model, 3, 9);
    writeFileSync(join(app, 'images.bin'), images);
    const code = `import { readFileSync } from 'node:fs';
import { IntegerEngine, decodeTqm } from 'tinyquant/engine';
const model = decodeTqm(new Uint8Array(readFileSync('model.tqm')));
console.log(JSON.stringify(Array.from(new IntegerEngine(model).inferBatch(new Uint8Array(readFileSync('images.bin')), 3))));`;
    const logits = JSON.parse(ok(inApp(code), 'tinyquant/engine'));
    assert.deepEqual(logits, Array.from(new IntegerEngine(model).inferBatch(images, 3)));
    writeFileSync(join(app, 'browser.ts'), "import { IntegerEngine, decodeTqm, type ModelReport } from 'tinyquant/engine';\nexport const run = (b: Uint8Array): Int32Array => new IntegerEngine(decodeTqm(b)).infer(b);\nexport type R = ModelReport;\n");
    writeFileSync(join(app, 'node.ts'), "import { type TrainConfig, resolveConfig } from 'tinyquant';\nexport const c: TrainConfig = resolveConfig({});\n");
    const options = { noEmit: true, strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022' };
    // A browser project: DOM, no Node types, and the engine's declarations checked too.
    writeFileSync(join(app, 'tsconfig.browser.json'), JSON.stringify({ compilerOptions: { ...options, types: [], lib: ['es2022', 'dom'] }, files: ['browser.ts'] }));
    writeFileSync(join(app, 'tsconfig.node.json'), JSON.stringify({ compilerOptions: { ...options, skipLibCheck: true }, files: ['node.ts'] }));
    ok(run(process.execPath, [tsc, '-p', 'tsconfig.browser.json'], app), 'tsc of the engine entry without Node types');
    ok(run(process.execPath, [tsc, '-p', 'tsconfig.node.json'], app), 'tsc of the main entry');
  });

  test('the CLI through npx: --version, and the backend that trains', () => {
    assert.equal(ok(run('npx', ['--offline', 'tinyquant', '--version'], app), 'npx tinyquant --version').trim(), version);
    const bench = run('npx', ['--offline', 'tinyquant', 'bench', 'train', '--model', 'resnet8', '--batch', '2', '--iters', '1', '--warmup', '0', '--json'], app);
    const result = JSON.parse(ok(bench, 'bench train')) as { backend: string };
    if (built) {
      assert.equal(result.backend, 'native', 'the prebuilt binary is found');
      assert.equal(bench.stderr, '');
    } else {
      assert.equal(result.backend, 'js');
      assert.match(bench.stderr, /^tinyquant: using the js backend .*To get the native backend: apt-get install .*npm explore tinyquant -- npm run build:native\n$/);
    }
  });
});
