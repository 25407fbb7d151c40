/**
 * A zoo model through the command line on a dataset that is not CIFAR: `tinyquant train` of the
 * DS-CNN on Fashion-MNIST (1 channel, 28x28, from Debian's dataset-fashion-mnist), then `export`
 * to tqm (verified), C and ONNX and `inspect`, all reading the image shape the checkpoint recorded.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempDir } from './fixtures/data/make.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const FASHION = '/usr/share/datasets/fashion-mnist';
const skip = existsSync(FASHION) ? false : `skipped: ${FASHION} not installed (Debian: dataset-fashion-mnist)`;

function tinyquant(...args: string[]): string {
  return execFileSync(process.execPath, [CLI, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

test('dscnn on Fashion-MNIST: train, export tqm/C/ONNX, inspect', { skip }, () => {
  const { dir, cleanup } = tempDir('tq-cli-zoo-');
  try {
    const run = join(dir, 'run');
    tinyquant('train', '--model', 'dscnn', '--dataset', 'fashion-mnist', '--method', 'apot', '--wbits', '4', '--abits', '4', '--epochs', '1', '--train-subset', '256', '--test-subset', '64', '--out', run, '--quiet');
    assert.deepEqual(JSON.parse(readFileSync(join(run, 'last.json'), 'utf8')).inputShape, [1, 28, 28], 'the checkpoint records the image shape');
    const verified = tinyquant('export', '--checkpoint', run, '--format', 'tqm', '--out', join(dir, 'm.tqm'), '--verify', '32');
    assert.match(verified, /verify on 32 test images: same top-1 [\d.]+%/);
    tinyquant('export', '--checkpoint', run, '--format', 'c', '--out', join(dir, 'kws.c'));
    assert.ok(existsSync(join(dir, 'kws.c')) && existsSync(join(dir, 'kws.h')));
    assert.match(tinyquant('export', '--checkpoint', run, '--format', 'onnx', '--out', join(dir, 'm.onnx')), /ONNX opset 13 in QDQ form; input float32 NCHW normalized with the 'fashion-mnist' preset/);
    const table = tinyquant('inspect', join(dir, 'm.tqm'));
    assert.match(table, /dscnn, apot W4A4/);
    assert.match(table, /blocks\.0\.0\s+depthwise\s+4\/4/);
  } finally {
    cleanup();
  }
});
