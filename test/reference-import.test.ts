/**
 * Checkpoints in the shape of the APoT and EWGS reference implementations (PyTorch zip and legacy
 * formats, DataParallel prefixes, their module names) load into our quantized ResNets and give the
 * same eval-mode logits as PyTorch (fixtures: scripts/fixtures/reference_checkpoints.py).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ResNet, type ShortcutOption } from '../src/models/resnet.js';
import { type QuantizeOptions, quantize } from '../src/quant/quantize.js';
import { EwgsQuantizer } from '../src/quant/ewgs.js';
import { allQuantizers } from '../src/quant/quantize.js';
import { readCheckpoint } from '../src/train/checkpoint.js';
import { Tensor, noGrad, tidy } from '../src/tensor/tensor.js';

const dir = new URL('./fixtures/models/', import.meta.url.replace('/dist/test/', '/test/'));
const expected = JSON.parse(readFileSync(new URL('reference_logits.json', dir), 'utf8')) as { input: number[]; shape: number[]; apot: number[]; ewgs: number[] };

function model(shortcut: ShortcutOption, headBatchNorm: boolean, q: QuantizeOptions): ResNet {
  const m = new ResNet({ blocks: [3, 3, 3], widths: [4, 8, 16], numClasses: 10, inChannels: 3, shortcut, headBatchNorm, init: 'kaiming-normal-fan-out', seed: 0 });
  quantize(m, q);
  return m;
}

function logits(m: ResNet): Float32Array {
  m.eval();
  return tidy(() => noGrad(() => m.call(Tensor.fromArray(expected.input, expected.shape)).toArray()));
}

function maxRelErr(a: ArrayLike<number>, b: readonly number[]): number {
  const scale = Math.max(1e-6, ...b.map(Math.abs));
  return Math.max(...b.map((v, i) => Math.abs(a[i] - v))) / scale;
}

describe('reference checkpoints', () => {
  test('APoT W4A4 (zip format, module. prefix, fc and downsample names, 8-bit first/last) evaluates like PyTorch', () => {
    const m = model('B', false, { method: 'apot', wbits: 4, abits: 4, firstLast: 'apot8' });
    const { state, source } = readCheckpoint(new URL('apot_resnet20_w4a4.pth.tar', dir).pathname);
    const report = m.loadStateDict(state, { source });
    assert.deepEqual(report.missing, []);
    assert.ok(state.has('layer2.0.shortcut.0.weight_quant.wgt_alpha') && state.has('linear.weight'));
    const err = maxRelErr(logits(m), expected.apot);
    assert.ok(err < 1e-4, `logits differ: ${err}`);
  });

  test('EWGS W2A2 (legacy format, uW/lW/uA/lA/output_scale, backward scaling buffers, BN1d head) evaluates like PyTorch', () => {
    const m = model('A', true, { method: 'ewgs', wbits: 2, abits: 2, firstLast: 'float' });
    const { state, source } = readCheckpoint(new URL('ewgs_resnet20_w2a2.pth', dir).pathname);
    const report = m.loadStateDict(state, { source });
    assert.deepEqual(report.missing, []);
    const err = maxRelErr(logits(m), expected.ewgs);
    assert.ok(err < 1e-4, `logits differ: ${err}`);
    const deltas = allQuantizers(m).filter(([, q]) => q instanceof EwgsQuantizer).map(([, q]) => (q as EwgsQuantizer).delta);
    assert.ok(deltas.length === 36 && deltas.every((d) => Math.abs(d - 0.001) < 1e-9), 'delta comes from bkwd_scaling_factor');
  });

  test('a checkpoint for another architecture is refused, naming the entry and shapes', () => {
    const m = model('A', false, { method: 'apot', wbits: 4, abits: 4, firstLast: 'apot8' });
    const { state, source } = readCheckpoint(new URL('apot_resnet20_w4a4.pth.tar', dir).pathname);
    assert.throws(() => m.loadStateDict(state, { source }), /apot_resnet20_w4a4\.pth\.tar: unexpected layer2\.0\.shortcut\.0\.weight/);
  });
});
