/**
 * A whole ResNet-20 forward and backward agrees with PyTorch 1.13 on fixed inputs, on every
 * available backend (reference tensors: scripts/fixtures/resnet_reference.py).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Backend } from '../src/backend/backend.js';
import { createBackend, withBackend } from '../src/backend/index.js';
import { type NamedTensor, readSafetensorsFile, toFloat32 } from '../src/io/index.js';
import { ResNet } from '../src/models/resnet.js';
import type { StateDict } from '../src/nn/module.js';
import * as ops from '../src/tensor/ops.js';
import { Tensor, backward, tidy } from '../src/tensor/tensor.js';

const FIXTURES = new URL('./fixtures/models/', import.meta.url.replace('/dist/test/', '/test/'));

function backends(): Backend[] {
  const list = [createBackend('js')];
  try {
    list.push(createBackend('native'));
  } catch (e) {
    console.log(`# native backend not available (${(e as Error).message}): checking js only`);
  }
  return list;
}

/** max|a - b| / max(max|b|, 1e-6): relative to the reference's scale. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 1e-6;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

const cases = [
  { file: 'resnet20_optionA.safetensors', shortcut: 'A' as const, headBatchNorm: false },
  { file: 'resnet20_optionB_bn1d.safetensors', shortcut: 'B' as const, headBatchNorm: true },
];

describe('ResNet-20 against PyTorch', () => {
  for (const c of cases) {
    for (const backend of backends()) {
      test(`${c.file} on ${backend.name}: logits, loss, every gradient, running statistics, eval logits`, () =>
        withBackend(backend, () => {
          const { tensors } = readSafetensorsFile(new URL(c.file, FIXTURES).pathname);
          const get = (name: string): NamedTensor => {
            const t = tensors.get(name);
            if (!t) throw new Error(`fixture lacks ${name}`);
            return t;
          };
          const model = new ResNet({ blocks: [3, 3, 3], widths: [4, 8, 16], numClasses: 10, inChannels: 3, shortcut: c.shortcut, headBatchNorm: c.headBatchNorm, init: 'kaiming-normal-fan-in', seed: 0 });
          const state: StateDict = new Map();
          for (const [k, t] of tensors) if (k.startsWith('state.')) state.set(k.slice(6), { shape: t.shape, data: toFloat32(t) });
          model.loadStateDict(state);
          const labels = Int32Array.from(toFloat32(get('labels')));
          const input = get('input');
          tidy(() => {
            const out = ops.crossEntropy(model.call(Tensor.fromArray(toFloat32(input), input.shape)), labels);
            const logits = (out.loss.node!.inputs[0] as Tensor).toArray();
            assert.ok(relErr(logits, toFloat32(get('logits'))) <= 1e-4, `logits ${relErr(logits, toFloat32(get('logits')))}`);
            assert.ok(Math.abs(out.lossValue - toFloat32(get('loss'))[0]) <= 1e-4 * Math.abs(toFloat32(get('loss'))[0]));
            backward(out.loss);
          });
          let checked = 0;
          for (const [name, p] of model.namedParameters()) {
            const e = relErr(p.grad!.toArray(), toFloat32(get(`grad.${name}`)));
            assert.ok(e <= 1e-4, `grad ${name}: relative error ${e}`);
            checked++;
          }
          assert.equal(checked, [...tensors.keys()].filter((k) => k.startsWith('grad.')).length);
          for (const [name, b] of model.namedBuffers()) {
            assert.ok(relErr(b.toArray(), toFloat32(get(`after.${name}`))) <= 1e-5, `running statistic ${name}`);
          }
          model.eval();
          const evalLogits = tidy(() => model.call(Tensor.fromArray(toFloat32(input), input.shape)).toArray());
          assert.ok(relErr(evalLogits, toFloat32(get('eval_logits'))) <= 1e-4, 'eval logits');
          for (const p of model.parameters()) p.dispose();
        }));
    }
  }
});
