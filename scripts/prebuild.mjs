#!/usr/bin/env node
/**
 * Makes the prebuilt native backend that the package ships (`npm pack` / `npm publish` run this as
 * `prepack`): builds the addon (scripts/build-native.mjs --force: incremental, fails loudly) and
 * puts a stripped copy where node-gyp-build looks at run time,
 * native/prebuilds/<platform>-<arch>/tinyquant.napi.<libc>.node, so an install needs no install
 * script and no compiler. Not prebuildify: that runs a clean `node-gyp rebuild` that fetches the
 * Node.js headers from the network, where build-native.mjs finds them locally and checks oneDNN.
 *
 * The binary links oneDNN dynamically (Debian's libdnnl; bookworm: libdnnl2, libdnnl.so.2) rather
 * than bundling it: libdnnl.so is about 40 MB, twenty times the rest of the package, and apt keeps
 * it patched. The addon has no -march flags, so it runs on any x86-64 (kernels pick AVX2 /
 * AVX-512 at run time).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { arch, platform } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const built = join(root, 'native', 'build', 'Release', 'tinyquant.node');
const libc = platform() === 'linux' && existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
const dir = join(root, 'native', 'prebuilds', `${platform()}-${arch()}`);
const target = join(dir, `tinyquant.napi${platform() === 'linux' ? `.${libc}` : ''}.node`);

if (!process.argv.includes('--no-build')) {
  const build = spawnSync(process.execPath, [join(root, 'scripts', 'build-native.mjs'), '--force'], { stdio: 'inherit' });
  if (build.status !== 0) process.exit(build.status ?? 1);
}
if (!existsSync(built)) {
  console.error(`tinyquant: ${built} is missing: build the addon first (npm run build:native)`);
  process.exit(1);
}
mkdirSync(dir, { recursive: true });
for (const old of readdirSync(dir)) rmSync(join(dir, old)); // one binary per platform
const strip = spawnSync('strip', ['--strip-unneeded', '-o', target, built], { stdio: 'inherit' });
if (strip.status !== 0) copyFileSync(built, target); // no binutils: ship it unstripped
console.log(`tinyquant: prebuilt native backend ${target} (${statSync(target).size} bytes)`);
