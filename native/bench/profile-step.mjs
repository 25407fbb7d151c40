#!/usr/bin/env node
/**
 * Where a training step of the native backend spends its time: wraps every backend method with a
 * timer, runs ResNet training steps on synthetic data and prints the time per op (and what is
 * left for JavaScript: autograd, modules, optimizer bookkeeping). Run after `npm run build`:
 *   node native/bench/profile-step.mjs [--model resnet20] [--batch 128] [--iters 10]
 */
import { parseArgs } from 'node:util';
import { setBackend } from '../../dist/src/backend/index.js';
import { loadNativeBackend, nativeUnavailableReason } from '../../dist/src/backend/native/index.js';
import { createModel } from '../../dist/src/models/index.js';
import { Sgd, groupParameters } from '../../dist/src/optim/index.js';
import { trainStep } from '../../dist/src/train/step.js';
import { Rng } from '../../dist/src/util/rng.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet20' },
    batch: { type: 'string', default: '128' },
    iters: { type: 'string', default: '10' },
    threads: { type: 'string', default: '0' },
  },
});
const batch = Number(values.batch);
const iters = Number(values.iters);
const native = loadNativeBackend(Number(values.threads));
if (!native) throw new Error(`native backend unavailable: ${nativeUnavailableReason()}`);

const totals = new Map();
let recording = false;
const timed = new Proxy(native, {
  get(target, prop) {
    const value = Reflect.get(target, prop, target);
    if (typeof value !== 'function') return value;
    return (...args) => {
      if (!recording) return value.apply(target, args);
      const start = process.hrtime.bigint();
      try {
        return value.apply(target, args);
      } finally {
        const t = totals.get(prop) ?? { ms: 0, calls: 0 };
        t.ms += Number(process.hrtime.bigint() - start) / 1e6;
        t.calls++;
        totals.set(prop, t);
      }
    };
  },
});
setBackend(timed);

const model = createModel(values.model, { seed: 0 });
const optimizer = new Sgd(groupParameters(model, [], { lr: 0.01, weightDecay: 5e-4 }), { momentum: 0.9 });
const rng = new Rng(1);
const images = Float32Array.from({ length: batch * 3 * 32 * 32 }, () => rng.normal());
const labels = Int32Array.from({ length: batch }, () => rng.int(10));
const data = { images, labels, shape: [batch, 3, 32, 32] };
for (let i = 0; i < 3; i++) trainStep(model, optimizer, data);
recording = true;
const start = process.hrtime.bigint();
for (let i = 0; i < iters; i++) trainStep(model, optimizer, data);
const stepMs = Number(process.hrtime.bigint() - start) / 1e6 / iters;
const rows = [...totals].map(([op, t]) => ({ op, ms: t.ms / iters, calls: t.calls / iters })).sort((a, b) => b.ms - a.ms);
const opMs = rows.reduce((s, r) => s + r.ms, 0);
console.log(`${values.model} batch ${batch}, ${native.threads} threads: ${stepMs.toFixed(1)} ms/step, ${(1000 * batch / stepMs).toFixed(1)} img/s`);
for (const r of rows) console.log(`  ${r.op.padEnd(28)} ${r.ms.toFixed(2).padStart(8)} ms ${r.calls.toFixed(0).padStart(5)} calls ${(100 * r.ms / stepMs).toFixed(1).padStart(5)}%`);
console.log(`  ${'(outside the backend)'.padEnd(28)} ${(stepMs - opMs).toFixed(2).padStart(8)} ms`);
console.log(`peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MB`);
