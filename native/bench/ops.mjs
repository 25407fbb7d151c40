#!/usr/bin/env node
/**
 * The ResNet-20 layer ops at batch 128: tinyquant's native backend and PyTorch (ops_torch.py,
 * Debian's python3-torch) side by side, alternating over several rounds in one run; prints the
 * best time of each op on each side and the ratio. Inputs are in the layouts the ops see during
 * training (blocked activations for the native backend, NCHW-contiguous for PyTorch).
 *   node native/bench/ops.mjs [--threads 2] [--rounds 3] [--reps 20] [--python /usr/bin/python3]
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadNativeBackend, nativeUnavailableReason } from '../../dist/src/backend/native/index.js';
import { Rng } from '../../dist/src/util/rng.js';

const { values } = parseArgs({
  options: {
    batch: { type: 'string', default: '128' },
    threads: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    reps: { type: 'string', default: '20' },
    python: { type: 'string', default: 'python3' },
  },
});
const n = Number(values.batch);
const reps = Number(values.reps);
const be = loadNativeBackend(Number(values.threads));
if (!be) throw new Error(`native backend unavailable: ${nativeUnavailableReason()}`);
const rng = new Rng(0);

function upload(shape, scale = 1, shift = 0) {
  const size = shape.reduce((a, b) => a * b, 1);
  return be.upload(Float32Array.from({ length: size }, () => rng.normal() * scale + shift), shape);
}

/** An activation in the layout a convolution produces (a 1x1 identity convolution of random values). */
function activation(shape, scale = 1, shift = 0) {
  const c = shape[1];
  const eye = new Float32Array(c * c);
  for (let i = 0; i < c; i++) eye[i * c + i] = 1;
  const plain = upload(shape, scale, shift);
  const w = be.upload(eye, [c, c, 1, 1]);
  const out = be.conv2d(plain, w, null, { stride: [1, 1], padding: [0, 0], groups: 1 });
  be.free(plain);
  be.free(w);
  return out;
}

/** Best milliseconds of `run` (whose result is released by `release`, outside the timing). */
function bestMs(run, release = () => {}) {
  for (let i = 0; i < 2; i++) release(run());
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t = process.hrtime.bigint();
    const r = run();
    best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e6);
    release(r);
  }
  return best;
}

const free = (b) => be.free(b);

function convOps(name, c, h, o, stride, out) {
  const p = { stride: [stride, stride], padding: [1, 1], groups: 1 };
  const x = c === 3 ? upload([n, c, h, h]) : activation([n, c, h, h]);
  const w = upload([o, c, 3, 3], 0.1);
  const y = be.conv2d(x, w, null, p);
  const gy = activation(y.shape);
  out[`${name} forward`] = bestMs(() => be.conv2d(x, w, null, p), free);
  out[`${name} backward data`] = bestMs(() => be.conv2dBackwardData(gy, w, x.shape, p), free);
  out[`${name} backward weights`] = bestMs(() => be.conv2dBackwardWeights(gy, x, w.shape, false, p), (g) => be.free(g.gw));
  [x, w, y, gy].forEach(free);
}

function batchNormOps(name, shape, relu, out) {
  const c = shape[1];
  const x = activation(shape, 2, 0.5);
  const gamma = be.upload(new Float32Array(c).fill(1), [c]);
  const beta = be.zeros([c]);
  const rm = be.zeros([c]);
  const rv = be.upload(new Float32Array(c).fill(1), [c]);
  const gy = activation(shape);
  const p = { eps: 1e-5, momentum: 0.1, relu };
  const releaseTrain = (r) => {
    be.free(r.y);
    be.freeSaved(r.saved);
  };
  out[`${name} forward`] = bestMs(() => be.batchNormTrain(x, gamma, beta, rm, rv, p), releaseTrain);
  const fwd = be.batchNormTrain(x, gamma, beta, rm, rv, p);
  out[`${name} backward`] = bestMs(() => be.batchNormBackward(gy, x, fwd.y, gamma, fwd.saved, p), (g) => [g.gx, g.gGamma, g.gBeta].forEach(free));
  releaseTrain(fwd);
  [x, gamma, beta, rm, rv, gy].forEach(free);
}

function nativeRound() {
  const out = {};
  convOps('conv 3->16 3x3 32x32', 3, 32, 16, 1, out);
  convOps('conv 16->16 3x3 32x32', 16, 32, 16, 1, out);
  convOps('conv 16->32 3x3 s2 32x32', 16, 32, 32, 2, out);
  convOps('conv 32->32 3x3 16x16', 32, 16, 32, 1, out);
  convOps('conv 64->64 3x3 8x8', 64, 8, 64, 1, out);
  batchNormOps('bn+relu 16x32x32', [n, 16, 32, 32], true, out);
  batchNormOps('bn 16x32x32', [n, 16, 32, 32], false, out);
  batchNormOps('bn+relu 64x8x8', [n, 64, 8, 8], true, out);
  const a = activation([n, 16, 32, 32]);
  const b = activation([n, 16, 32, 32]);
  const y = be.addRelu(a, b);
  out['addRelu 16x32x32'] = bestMs(() => be.addRelu(a, b), free);
  out['reluBackward 16x32x32'] = bestMs(() => be.reluBackward(b, y), free);
  out['shortcutPad 16x32x32 -> 32x16x16'] = bestMs(() => be.shortcutPad(a, 2, 8, 8), free);
  const g32 = activation([n, 32, 16, 16]);
  out['shortcutPad backward'] = bestMs(() => be.shortcutPadBackward(g32, a.shape, 2, 8), free);
  const x64 = activation([n, 64, 8, 8]);
  out['globalAvgPool 64x8x8'] = bestMs(() => be.globalAvgPool(x64), free);
  const feats = upload([n, 64]);
  const w = upload([10, 64]);
  const bias = upload([10]);
  out['linear 64->10'] = bestMs(() => be.linear(feats, w, bias), free);
  const logits = upload([n, 10]);
  const labels = Int32Array.from({ length: n }, () => rng.int(10));
  out['cross-entropy'] = bestMs(() => be.softmaxCrossEntropy(logits, labels, 0), (r) => be.free(r.probs));
  const param = upload([270000]);
  const grad = upload([270000]);
  const buf = be.zeros([270000]);
  const sgd = { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 5e-4, nesterov: false };
  out['sgd step 270k params'] = bestMs(() => be.sgdStep(param, grad, buf, sgd));
  [a, b, y, g32, x64, feats, w, bias, logits, param, grad, buf].forEach(free);
  return out;
}

function torchRound() {
  const script = fileURLToPath(new URL('./ops_torch.py', import.meta.url));
  const args = [script, '--batch', String(n), '--threads', values.threads, '--reps', String(reps)];
  return JSON.parse(execFileSync(values.python, args, { encoding: 'utf8' }).trim().split('\n').at(-1));
}

const best = { native: {}, torch: {} };
const keep = (side, round) => {
  for (const [op, ms] of Object.entries(round)) best[side][op] = Math.min(best[side][op] ?? Infinity, ms);
};
for (let r = 0; r < Number(values.rounds); r++) {
  keep('native', nativeRound());
  keep('torch', torchRound());
}
console.log(`batch ${n}, ${be.threads} threads, best of ${values.rounds} rounds x ${reps} reps (ms)`);
console.log(`${'op'.padEnd(36)} ${'tinyquant'.padStart(9)} ${'PyTorch'.padStart(9)} ${'PyTorch/tq'.padStart(10)}`);
for (const op of Object.keys(best.native)) {
  const [ours, theirs] = [best.native[op], best.torch[op]];
  console.log(`${op.padEnd(36)} ${ours.toFixed(3).padStart(9)} ${theirs.toFixed(3).padStart(9)} ${(theirs / ours).toFixed(2).padStart(10)}`);
}
