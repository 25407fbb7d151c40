import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/util/rng.js';
import { resolveNormalization, sampleAugmentation, CIFAR_AUGMENT, type SampleAugmentation } from '../src/data/index.js';
import { normalizationTable, transformImage } from '../src/data/augment.js';

test('random crop offsets stay within [-4, 4], use every offset, and flips happen about half the time', () => {
  const seen = { dy: new Set<number>(), dx: new Set<number>() };
  let flips = 0;
  const samples = 2000;
  for (let position = 0; position < samples; position++) {
    const a = sampleAugmentation(7, 3, position, CIFAR_AUGMENT);
    assert.ok(Math.abs(a.dy) <= 4 && Math.abs(a.dx) <= 4, `offset ${a.dy},${a.dx}`);
    seen.dy.add(a.dy);
    seen.dx.add(a.dx);
    if (a.flip) flips++;
  }
  assert.equal(seen.dy.size, 9);
  assert.equal(seen.dx.size, 9);
  assert.ok(flips > 0.45 * samples && flips < 0.55 * samples, `${flips} flips`);
  assert.deepEqual(sampleAugmentation(7, 3, 5, { cropPadding: 0, horizontalFlip: false }), { dy: 0, dx: 0, flip: false });
  assert.deepEqual(sampleAugmentation(7, 3, 5, CIFAR_AUGMENT), sampleAugmentation(7, 3, 5, CIFAR_AUGMENT));
});

test('normalization presets give exactly (pixel/255 - mean) / std in float32', () => {
  const apot = resolveNormalization('apot', 3);
  const ewgs = resolveNormalization('ewgs', 3);
  assert.deepEqual(apot, { mean: [0.491, 0.482, 0.447], std: [0.247, 0.243, 0.262] });
  assert.deepEqual(ewgs, { mean: [0.4914, 0.4822, 0.4465], std: [0.2023, 0.1994, 0.201] });
  for (const norm of [apot, ewgs, resolveNormalization('mnist', 1)]) {
    const table = normalizationTable(norm);
    norm.mean.forEach((m, c) => {
      for (const v of [0, 1, 128, 254, 255]) assert.equal(table[c * 256 + v], Math.fround((v / 255 - m) / norm.std[c]));
    });
  }
  const none = normalizationTable(resolveNormalization('none', 2));
  assert.equal(none[256 + 255], 1);
  assert.equal(none[51], Math.fround(0.2));
  assert.throws(() => resolveNormalization('apot', 1), /normalization 'apot' has 3 means and 3 stds, the data has 1 channels/);
  assert.throws(() => resolveNormalization('nope' as 'apot', 3), /unknown normalization preset 'nope'/);
  assert.throws(() => resolveNormalization({ mean: [0], std: [0] }, 1), /std of channel 0 must be positive/);
});

/** torchvision's order of operations, written plainly: zero-pad, crop at (p+dy, p+dx), flip, normalize. */
function reference(src: Uint8Array, c: number, h: number, w: number, p: number, a: SampleAugmentation, mean: number[], std: number[]): Float32Array {
  const out = new Float32Array(c * h * w);
  const ph = h + 2 * p;
  const pw = w + 2 * p;
  for (let ch = 0; ch < c; ch++) {
    const padded = new Uint8Array(ph * pw);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) padded[(y + p) * pw + x + p] = src[(ch * h + y) * w + x];
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const cx = a.flip ? w - 1 - x : x;
        const v = padded[(y + p + a.dy) * pw + cx + p + a.dx];
        out[(ch * h + y) * w + x] = (v / 255 - mean[ch]) / std[ch];
      }
    }
  }
  return out;
}

test('crop + flip + normalize equals zero padding then cropping (torchvision RandomCrop(padding=4)) exactly', () => {
  const [c, h, w] = [3, 32, 32];
  const rng = new Rng(11);
  const src = Uint8Array.from({ length: c * h * w }, () => rng.int(256));
  const norm = resolveNormalization('ewgs', 3);
  const table = normalizationTable(norm);
  const cases: SampleAugmentation[] = [
    { dy: 0, dx: 0, flip: false },
    { dy: -4, dx: 4, flip: false },
    { dy: 4, dx: -4, flip: true },
    { dy: 2, dx: 3, flip: true },
    ...Array.from({ length: 20 }, (_, i) => sampleAugmentation(1, 0, i, CIFAR_AUGMENT)),
  ];
  for (const a of cases) {
    const out = new Float32Array(c * h * w + 5);
    transformImage(src, 0, { channels: c, height: h, width: w }, table, a, out, 5);
    assert.deepEqual(out.subarray(5), reference(src, c, h, w, 4, a, [...norm.mean], [...norm.std]), JSON.stringify(a));
  }
  // A shift of dx = +1 without flip moves the image one pixel left; the last column is padding.
  const out = new Float32Array(c * h * w);
  transformImage(src, 0, { channels: c, height: h, width: w }, table, { dy: 0, dx: 1, flip: false }, out, 0);
  assert.equal(out[0], table[src[1]]);
  assert.equal(out[w - 1], table[0]);
  assert.equal(table[0], Math.fround(-0.4914 / 0.2023));
});
