/**
 * `tinyquant export` and `tinyquant inspect` end to end on a tiny quantized ResNet-8 checkpoint
 * and a tiny CIFAR-10 folder made here: output files, verification, reports, and bad input
 * (float checkpoint, unknown format, missing data, damaged file) failing without leaving files.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setBackend } from '../src/backend/index.js';
import { errorClass } from '../src/cli/errors.js';
import { ONNXRUNTIME_MISSING, importOptional } from '../src/export/onnx/verify.js';
import type { ErrorClass } from '../src/util/errors.js';
import { exportCommand, writeAll } from '../src/cli/export.js';
import { inspectCommand } from '../src/cli/inspect.js';
import { CIFAR10_CLASSES } from '../src/data/cifar.js';
import { readTqm } from '../src/export/tqm-file.js';
import { calibratedRun } from './export-fixtures.js';
import { cifar10Folder, cifarRecords } from './fixtures/data/make.js';

let dir: string;

/** Run a command, returning what it printed. */
async function capture(run: () => Promise<void>): Promise<string> {
  const lines: string[] = [];
  const [log, error] = [console.log, console.error];
  console.log = (...a: unknown[]) => lines.push(a.join(' '));
  console.error = (...a: unknown[]) => lines.push(a.join(' '));
  try {
    await run();
  } finally {
    [console.log, console.error] = [log, error];
  }
  return lines.join('\n');
}

let apotRun: string;

before(() => {
  setBackend('js');
  dir = mkdtempSync(join(tmpdir(), 'tq-export-cli-'));
  cifar10Folder(dir, (i) => cifarRecords(Array.from({ length: 6 }, (_, r) => [(r * 3 + i) % 10]), i * 100), cifarRecords(Array.from({ length: 8 }, (_, r) => [(r * 3 + 9) % 10]), 9));
  apotRun = calibratedRun(dir, 'apot', { method: 'apot', wbits: 3 });
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('export', () => {
  test('tqm from a checkpoint, verified on test images, then inspected', async () => {
    const out = join(dir, 'apot.tqm');
    const text = await capture(() => exportCommand(['--checkpoint', apotRun, '--format', 'tqm', '--out', out, '--data-dir', dir, '--calibration-images', '12', '--verify', '8']));
    const bytes = readFileSync(out).length;
    assert.match(text, new RegExp(`${out.replace(/[.]/g, '\\.')}: ${bytes} bytes, \\d+ ops`));
    assert.match(text, /verify on 8 test images: same top-1 \d+\.\d\d%, fake-quant \d+\.\d\d%, integer \d+\.\d\d%/);
    const model = readTqm(out);
    assert.deepEqual([model.meta.model, model.meta.method, model.meta.wbits, model.meta.firstLast], ['resnet8', 'apot', 3, 'int8']);
    assert.deepEqual(model.meta.classes, CIFAR10_CLASSES);

    const report = await capture(() => inspectCommand([out]));
    for (const layer of ['conv1', 'layer1.0.conv1', 'layer3.0.conv2', 'linear', 'total']) assert.match(report, new RegExp(`^${layer.replace(/[.]/g, '\\.')} `, 'm'));
    assert.match(report, /resnet8, apot W3A3, first\/last int8, int8 input, int16 residual stream, 10 classes/);
    assert.match(report, new RegExp(`file ${bytes} bytes`));
    const json = JSON.parse(await capture(() => inspectCommand([out, '--json'])));
    assert.equal(json.fileBytes, bytes);
    const weighted = json.layers.filter((l: { params: number }) => l.params > 0);
    assert.deepEqual(weighted.map((l: { name: string }) => l.name), ['conv1', 'layer1.0.conv1', 'layer1.0.conv2', 'layer2.0.conv1', 'layer2.0.conv2', 'layer3.0.conv1', 'layer3.0.conv2', 'linear']);
    assert.deepEqual(weighted.map((l: { weightBits: number }) => l.weightBits), [8, 3, 3, 3, 3, 3, 3, 8]);
    assert.deepEqual(json.layers.map((l: { name: string }) => l.name), readTqm(out).ops.map((op) => (op.kind === 'input' ? 'input' : op.name)));
    assert.ok(json.totals.peakActivationBytes > 0 && json.totals.macs > 0);
  });

  test('--json summary and int8 residual stream', async () => {
    const out = join(dir, 'apot8.tqm');
    const json = JSON.parse(await capture(() => exportCommand(['--checkpoint', apotRun, '--out', out, '--data-dir', dir, '--calibration-images', '8', '--residual-bits', '8', '--json'])));
    assert.equal(json.format, 'tqm');
    assert.deepEqual(json.files, [{ path: out, bytes: readFileSync(out).length }]);
    assert.equal(readTqm(out).meta.residualBits, 8);
  });

  test('onnx: a QDQ model whose metadata names its source', async () => {
    const out = join(dir, 'apot.onnx');
    const json = JSON.parse(await capture(() => exportCommand(['--checkpoint', apotRun, '--format', 'onnx', '--out', out, '--data-dir', dir, '--calibration-images', '4', '--json'])));
    assert.equal(json.format, 'onnx');
    assert.deepEqual(json.files, [{ path: out, bytes: readFileSync(out).length }]);
    assert.match(json.summary[0], /ONNX opset \d+ in QDQ form/);
    const text = readFileSync(out).toString('latin1');
    for (const op of ['QuantizeLinear', 'DequantizeLinear', 'tinyquant.source', 'apot W3A3']) assert.ok(text.includes(op), op);
  });

  test('onnx --verify runs the written file under onnxruntime against the fake-quantized model', async () => {
    const out = join(dir, 'verified.onnx');
    const json = JSON.parse(await capture(() => exportCommand(['--checkpoint', apotRun, '--format', 'onnx', '--out', out, '--data-dir', dir, '--verify', '6', '--json'])));
    assert.equal(json.verifiedWith, 'onnxruntime');
    assert.equal(json.agreement.images, 6);
    assert.ok(json.agreement.sameTop1 >= 100 - 100 / 6, `onnxruntime and the fake-quantized model agree on ${json.agreement.sameTop1}% of the images`);
  });

  test('without onnxruntime-node, running an ONNX model says how to install it', async () => {
    const absent = () => import('onnxruntime-node-not-installed' as string);
    await assert.rejects(importOptional(absent, ONNXRUNTIME_MISSING), (e: Error) => e.message === 'running an ONNX model needs onnxruntime-node, an optional dependency of tinyquant: npm install onnxruntime-node');
    const broken = () => Promise.reject(new Error('its binding failed'));
    await assert.rejects(importOptional(broken, ONNXRUNTIME_MISSING), /its binding failed/, 'other failures are not hidden');
  });

  test('bad input is a clear error and leaves no file', async () => {
    const floatRun = calibratedRun(dir, 'float', { method: 'float' });
    const cases: [string[], RegExp, ErrorClass][] = [
      [['--checkpoint', floatRun], /no quantizers \(method float\)/, 'input'],
      [['--checkpoint', apotRun, '--format', 'xyz'], /--format must be one of tqm, onnx, c, tflite; got "xyz"/, 'usage'],
      [['--checkpoint', apotRun, '--residual-bits', '12'], /--residual-bits must be 16 or 8, got 12/, 'usage'],
      [['--checkpoint', join(dir, 'nothing-here')], /does not exist/, 'input'],
    ];
    for (const [args, pattern, kind] of cases) {
      const out = join(dir, 'bad.tqm');
      await assert.rejects(exportCommand([...args, '--out', out, '--data-dir', dir]), (e: Error) => errorClass(e) === kind && pattern.test(e.message), pattern.source);
      assert.equal(existsSync(out), false);
    }
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    const out = join(dir, 'nodata.tqm');
    await assert.rejects(exportCommand(['--checkpoint', apotRun, '--out', out, '--data-dir', empty]), (e: Error) => errorClass(e) === 'input' && /calibration images: CIFAR-10 train split not found/.test(e.message));
    assert.equal(existsSync(out), false);
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), []);
  });

  test('a failed multi-file write removes the files it already wrote', () => {
    const first = join(dir, 'first.bin');
    assert.throws(() => writeAll([{ path: first, bytes: Uint8Array.of(1) }, { path: join(dir, 'missing', 'second.bin'), bytes: Uint8Array.of(2) }]), /cannot write/);
    assert.equal(existsSync(first), false);
  });
});

describe('inspect', () => {
  test('a damaged or missing file is a clear error', async () => {
    const out = join(dir, 'damaged.tqm');
    await capture(() => exportCommand(['--checkpoint', apotRun, '--out', out, '--data-dir', dir, '--calibration-images', '4']));
    const bytes = readFileSync(out);
    bytes[bytes.length - 10] ^= 1;
    writeFileSync(out, bytes);
    await assert.rejects(inspectCommand([out]), (e: Error) => errorClass(e) === 'input' && /damaged\.tqm: checksum mismatch/.test(e.message));
    writeFileSync(out, bytes.subarray(0, 30));
    await assert.rejects(inspectCommand([out]), /damaged\.tqm: truncated/);
    await assert.rejects(inspectCommand([]), /expected one file/);
    assert.match(await capture(() => inspectCommand(['--help'])), /^usage: tinyquant inspect/);
    assert.match(await capture(() => exportCommand(['--help'])), /^usage: tinyquant export --checkpoint FILE --format FORMAT --out PATH/);
  });
});
