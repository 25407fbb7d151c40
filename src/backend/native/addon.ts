/**
 * The compiled addon: its JavaScript-facing types and how it is located and loaded. node-gyp-build
 * finds it: a source build (`native/build/Release/tinyquant.node`, `npm run build:native`) first,
 * else the prebuilt binary the package ships (`native/prebuilds/<platform>-<arch>/`, made by
 * scripts/prebuild.mjs), so an install needs no install script.
 */
import { createRequire } from 'node:module';
import { join, relative, sep } from 'node:path';
import { packageRoot } from '../../package.js';
import type { BatchNormSaved, Buf, QuantSpec, Shape } from '../backend.js';

declare const nativeBrand: unique symbol;

/** A buffer owned by the addon (a oneDNN memory in a possibly blocked layout). */
export interface NativeBuf extends Buf {
  readonly backend: 'native';
  readonly [nativeBrand]: 'buffer';
}

/** Batch-norm statistics and fused-ReLU mask held by the addon. */
export interface NativeSaved extends BatchNormSaved {
  readonly backend: 'native';
  readonly [nativeBrand]: 'saved';
}

type B = NativeBuf;

/** One backend instance inside the addon: the ops, run with this context's thread count. */
export interface AddonContext {
  readonly threads: number;
  upload(data: Float32Array, shape: Shape): B;
  download(x: B): Float32Array;
  zeros(shape: Shape): B;
  clone(x: B): B;
  free(x: B): void;
  freeSaved(s: NativeSaved): void;
  reshape(x: B, shape: Shape): B;
  add(a: B, b: B): B;
  addRelu(a: B, b: B): B;
  affine(x: B, alpha: number, beta: number): B;
  mul(a: B, b: B): B;
  relu(x: B): B;
  reluBackward(gy: B, y: B): B;
  clippedRelu(x: B, ceiling: number): B;
  clippedReluBackward(gy: B, y: B, ceiling: number): B;
  tanh(x: B): B;
  tanhBackward(gy: B, y: B): B;
  axpyInPlace(dst: B, src: B, alpha: number): void;
  dot(a: B, b: B): number;
  stats(x: B, channels: number): Float64Array;
  countNonFinite(x: B): number;
  conv2d(x: B, w: B, bias: B | null, ...conv: ConvArgs): B;
  conv2dBackwardData(gy: B, w: B, xShape: Shape, ...conv: ConvArgs): B;
  conv2dBackwardWeights(gy: B, x: B, wShape: Shape, withBias: boolean, ...conv: ConvArgs): [B, B | null];
  batchNormTrain(x: B, gamma: B, beta: B, runningMean: B, runningVar: B, ...bn: BatchNormArgs): [B, NativeSaved];
  batchNormInfer(x: B, gamma: B, beta: B, runningMean: B, runningVar: B, ...bn: BatchNormArgs): B;
  batchNormBackward(gy: B, x: B, gamma: B, saved: NativeSaved, ...bn: BatchNormArgs): [B, B, B];
  batchNormQuantizeTrain(
    x: B, gamma: B, beta: B, runningMean: B, runningVar: B, eps: number, momentum: number, relu: boolean, spec: QuantSpec,
  ): [B, NativeSaved];
  batchNormQuantizeBackward(
    gq: B, x: B, gamma: B, beta: B, saved: NativeSaved, eps: number, momentum: number, relu: boolean, spec: QuantSpec,
  ): [B, B, B, Float64Array];
  avgPool2d(x: B, ...pool: PoolArgs): B;
  avgPool2dBackward(gy: B, xShape: Shape, ...pool: PoolArgs): B;
  maxPool2d(x: B, ...pool: PoolArgs): B;
  maxPool2dBackward(gy: B, x: B, ...pool: PoolArgs): B;
  globalAvgPool(x: B): B;
  globalAvgPoolBackward(gy: B, xShape: Shape): B;
  linear(x: B, w: B, bias: B | null): B;
  linearBackwardData(gy: B, w: B): B;
  linearBackwardWeights(gy: B, x: B, withBias: boolean): [B, B | null];
  shortcutPad(x: B, stride: number, padBefore: number, padAfter: number): B;
  shortcutPadBackward(gy: B, xShape: Shape, stride: number, padBefore: number): B;
  softmaxCrossEntropy(logits: B, labels: Int32Array, smoothing: number): [loss: number, probs: B, correct: number];
  softmaxCrossEntropyBackward(probs: B, labels: Int32Array, smoothing: number, scale: number): B;
  sgdStep(
    param: B, grad: B, momentumBuf: B | null,
    lr: number, momentum: number, dampening: number, weightDecay: number, nesterov: boolean,
  ): void;
  adamStep(
    param: B, grad: B, m: B, v: B,
    lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, decoupled: boolean, step: number,
  ): void;
  quantize(x: B, spec: QuantSpec): B;
  addReluQuantize(a: B, b: B, spec: QuantSpec): [B, B];
  /** With `accumulate`, gx is added into it and that same buffer is returned. */
  quantizeBackward(x: B, gy: B, spec: QuantSpec, accumulate: B | null): [B, Float64Array];
}

export type ConvArgs = [strideH: number, strideW: number, padH: number, padW: number, groups: number];
export type PoolArgs = [kernelH: number, kernelW: number, strideH: number, strideW: number, padH: number, padW: number];
export type BatchNormArgs = [eps: number, momentum: number, relu: boolean];

export interface Addon {
  readonly Context: new (threads: number) => AddonContext;
  /** Bytes in live buffers and batch-norm states (all contexts of the process). */
  liveBytes(): number;
  /** The physical layout of a buffer in oneDNN notation ("abcd" = plain NCHW, "aBcd16b" = nChw16c). */
  layoutOf(x: NativeBuf): string;
  readonly onednnVersion: string;
  readonly defaultThreads: number;
}

/** The addon, or why it is not available and the one command that makes it so. */
export type AddonLoad = { readonly addon: Addon; readonly path: string } | { readonly reason: string; readonly fix: string };

const require = createRequire(import.meta.url);

/** node-gyp-build's lookup: `dir`/build/Release first, then `dir`/prebuilds/<platform>-<arch>/ by its tags. */
type FindBuild = (dir: string) => string;

/** The one command that builds the addon from source, in a checkout or in an installed package. */
export function sourceBuildCommand(root: string): string {
  const installed = root.split(sep).includes('node_modules');
  return `apt-get install libdnnl-dev g++ make python3 && ${installed ? 'npm explore tinyquant -- npm run build:native' : 'npm run build:native'}`;
}

/** The Debian package of a shared library the addon needs (libdnnl.so.N comes in libdnnlN, which brings the others). */
function debianPackageOf(library: string): string {
  const onednn = /^libdnnl\.so\.(\d+)/.exec(library);
  return onednn ? `libdnnl${onednn[1]}` : 'libdnnl2';
}

/**
 * OpenMP's default wait policy spins for a millisecond or more at every barrier. On a machine whose
 * cores are shared (data-loader workers, other processes) a spinning thread keeps a descheduled
 * teammate from running, and a training step can slow down several-fold; measured here under load:
 * ~2-3x the throughput with a short spin. Unless the user chose a policy, spin briefly (enough to
 * bridge consecutive ops) and then sleep. Must be set before libgomp loads with the addon.
 */
function boundOpenMpSpinning(): void {
  if (process.env.OMP_WAIT_POLICY === undefined && process.env.GOMP_SPINCOUNT === undefined) {
    process.env.GOMP_SPINCOUNT = '10000';
  }
}

/** Load the addon of the package at `root`, or say why it cannot be loaded. */
export function loadAddon(root?: string): AddonLoad {
  let dir: string;
  try {
    dir = join(root ?? packageRoot(), 'native');
  } catch (e) {
    return { reason: (e as Error).message, fix: 'reinstall tinyquant' };
  }
  let findBuild: FindBuild;
  try {
    findBuild = (require('node-gyp-build') as { path: FindBuild }).path;
  } catch (e) {
    return { reason: `its dependency node-gyp-build is missing (${(e as Error).message.split('\n')[0]})`, fix: 'npm install tinyquant' };
  }
  let path: string;
  try {
    path = findBuild(dir);
  } catch {
    return { reason: `no native build for ${process.platform}-${process.arch} (neither prebuilt nor built from source)`, fix: sourceBuildCommand(dir) };
  }
  const shown = relative(dir, path);
  try {
    boundOpenMpSpinning();
    return { addon: require(path) as Addon, path };
  } catch (e) {
    const message = (e as Error).message.split('\n')[0];
    const missing = /(lib[\w+.-]+\.so[\d.]*): cannot open shared object file/.exec(message);
    if (missing) return { reason: `native/${shown} needs ${missing[1]}, which is not installed`, fix: `apt-get install ${debianPackageOf(missing[1])}` };
    return { reason: `native/${shown} does not load: ${message}`, fix: sourceBuildCommand(dir) };
  }
}
