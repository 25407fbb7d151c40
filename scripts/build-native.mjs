#!/usr/bin/env node
/**
 * Builds the native backend from source (native/binding.gyp -> native/build/Release/tinyquant.node)
 * with node-gyp: in a checkout (scripts/start.sh, .ci/run), and where the shipped prebuilt binary
 * does not fit (`npm explore tinyquant -- npm run build:native`). No install script runs it. Without
 * `--force`, when oneDNN, a C++ compiler or the Node.js headers are missing, or the build fails, it
 * prints one line and exits 0 (tinyquant then uses the js backend); `--force` (`npm run
 * build:native`) shows the whole build and fails loudly. Nothing is downloaded: the Node.js headers
 * must be installed locally.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = join(root, 'native');
const addonPath = join(nativeDir, 'build', 'Release', 'tinyquant.node');
const logPath = join(nativeDir, 'build-native.log');
const force = process.argv.includes('--force');
const HINT = 'apt-get install libdnnl-dev && npm run build:native';

/** Stop without the native backend: one line (exit 0) during install, an error with --force. */
function giveUp(reason) {
  if (force) {
    console.error(`tinyquant: cannot build the native backend: ${reason}`);
    process.exit(1);
  }
  console.log(`tinyquant: native backend not built (${reason}); using the js backend. To enable it: ${HINT}`);
  process.exit(0);
}

function envDirs(...names) {
  return names.flatMap((n) => (process.env[n] ?? '').split(delimiter)).filter((d) => d !== '');
}

function findOneDnnHeader() {
  const dirs = [...envDirs('CPATH', 'CPLUS_INCLUDE_PATH'), '/usr/include', '/usr/local/include', '/opt/intel/oneapi/dnnl/latest/include'];
  return dirs.find((d) => existsSync(join(d, 'oneapi', 'dnnl', 'dnnl.hpp')));
}

function findOneDnnLibrary() {
  const dirs = [
    ...envDirs('LIBRARY_PATH', 'LD_LIBRARY_PATH'),
    '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib', '/usr/local/lib64',
  ];
  return dirs.find((d) => existsSync(d) && readdirSync(d).some((f) => /^libdnnl\.so/.test(f)));
}

function findCompiler() {
  const candidates = [process.env.CXX, 'c++', 'g++', 'clang++'].filter(Boolean);
  return candidates.find((cxx) => spawnSync(cxx, ['--version'], { stdio: 'ignore' }).status === 0);
}

/** node-gyp the way npm runs it: npm_config_node_gyp, else the copy bundled with npm. */
function findNodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  const npmCli = process.env.npm_execpath;
  if (npmCli) candidates.push(join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  for (const dir of envDirs('PATH')) {
    const npm = join(dir, 'npm');
    if (existsSync(npm)) candidates.push(join(dirname(realpathSync(npm)), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  candidates.push(join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  try {
    candidates.push(createRequire(join(root, 'package.json')).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not installed locally
  }
  return candidates.find((c) => c && existsSync(c));
}

/** A directory with include/node/node_version.h matching this Node.js, for node-gyp's --nodedir. */
function findNodeHeaders() {
  const version = process.version.slice(1);
  const prefixes = [
    process.env.npm_config_nodedir,
    resolve(dirname(process.execPath), '..'),
    '/usr',
    '/usr/local',
  ].filter(Boolean);
  return prefixes.find((prefix) => {
    const header = join(prefix, 'include', 'node', 'node_version.h');
    if (!existsSync(header)) return false;
    const text = readFileSync(header, 'utf8');
    const part = (name) => text.match(new RegExp(`#define ${name} (\\d+)`))?.[1];
    return `${part('NODE_MAJOR_VERSION')}.${part('NODE_MINOR_VERSION')}.${part('NODE_PATCH_VERSION')}` === version;
  });
}

function main() {
  if (!findOneDnnHeader()) giveUp('oneDNN headers not found');
  if (!findOneDnnLibrary()) giveUp('oneDNN library libdnnl.so not found');
  if (!findCompiler()) giveUp('no C++ compiler found');
  const nodeGyp = findNodeGyp();
  if (!nodeGyp) giveUp('node-gyp not found');
  const nodeDir = findNodeHeaders();
  if (!nodeDir) giveUp(`Node.js ${process.version} headers not found`);

  // configure + build rather than rebuild: an addon that processes are using stays in place
  // until the new one replaces it, and a failed build leaves it intact.
  let log = '';
  for (const step of ['configure', 'build']) {
    const args = [nodeGyp, step, `--directory=${nativeDir}`, `--nodedir=${nodeDir}`, ...(step === 'build' ? ['--jobs=max'] : [])];
    const result = spawnSync(process.execPath, args, { stdio: force ? 'inherit' : 'pipe', encoding: 'utf8' });
    log += `${result.stdout ?? ''}${result.stderr ?? ''}`;
    if (!force) writeFileSync(logPath, log);
    if (result.status !== 0) giveUp(`the build failed; see ${force ? 'the output above' : logPath}`);
  }

  const check = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(addonPath)})`], { encoding: 'utf8' });
  if (check.status !== 0) giveUp(`the built addon does not load: ${check.stderr.trim().split('\n')[0]}`);
  console.log(`tinyquant: native backend built (${addonPath})`);
}

main();
