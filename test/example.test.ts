/**
 * The README's "Bring your own model and data" example (examples/own-model.mjs) runs as a user
 * would run it, on an image folder made here: two classes of 28x28 grey PNGs (a bright square on
 * the left or on the right), trained, lowered and exported to every format.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Rng } from '../src/util/rng.js';
import { encodeGreyPng, tempDir } from './fixtures/data/make.js';

const EXAMPLE = fileURLToPath(new URL('../../examples/own-model.mjs', import.meta.url));

function squares(dir: string, perClass: number): void {
  const rng = new Rng(4);
  for (const [label, side] of [['left', 2], ['right', 16]] as const) {
    mkdirSync(join(dir, label), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const grey = Uint8Array.from({ length: 28 * 28 }, () => Math.floor(40 * rng.next()));
      const [y0, x0] = [4 + Math.floor(rng.next() * 12), side + Math.floor(rng.next() * 8)];
      for (let y = y0; y < y0 + 8; y++) for (let x = x0; x < x0 + 8; x++) grey[y * 28 + x] = 200 + Math.floor(50 * rng.next());
      writeFileSync(join(dir, label, `${i}.png`), encodeGreyPng(28, 28, grey));
    }
  }
}

test('examples/own-model.mjs trains a user net on an image folder and writes tqm, C and ONNX', () => {
  const { dir, cleanup } = tempDir('tq-example-');
  try {
    const images = join(dir, 'images');
    squares(images, 200);
    const out = join(dir, 'out');
    const printed = execFileSync(process.execPath, [EXAMPLE, images, out], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const top1 = Number(/fake-quantized top-1 ([\d.]+) %/.exec(printed)?.[1]);
    assert.ok(top1 >= 90, `the two classes are easy: top-1 ${top1} %\n${printed}`);
    const same = Number(/same class as the fake-quantized model on ([\d.]+) % of 80 test images/.exec(printed)?.[1]);
    assert.ok(same >= 90, printed);
    for (const f of ['model.tqm', 'model.onnx', 'c/model.c', 'c/model.h', 'last.json']) assert.ok(existsSync(join(out, f)), `${f} written`);
  } finally {
    cleanup();
  }
});
