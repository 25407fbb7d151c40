/**
 * `tinyquant train` and `tinyquant eval` as a user runs them (the CLI in a child process, on a tiny
 * CIFAR-10 folder made here): the JSON line and the predictions file of eval, bare weights evaluated
 * with architecture flags, weights that are not finite refused by eval and train --init (evaluated
 * with --allow-non-finite), Fashion-MNIST trained with the defaults, and SIGTERM during training saving a checkpoint that --resume continues.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { loadStateDict, writeSafetensorsFile } from '../src/io/index.js';
import { cifar10Folder, cifarRecords, idxFile } from './fixtures/data/make.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const TEST_IMAGES = 40;
let dir: string;

interface Finished {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function start(args: string[]): { child: ChildProcess; done: Promise<Finished> } {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, TINYQUANT_THREADS: '1' } });
  let [stdout, stderr] = ['', ''];
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<Finished>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
  return { child, done };
}

async function cli(args: string[]): Promise<Finished> {
  const result = await start(args).done;
  assert.equal(result.code, 0, `tinyquant ${args.join(' ')} failed:\n${result.stderr}`);
  return result;
}

const trainArgs = (out: string, epochs: number): string[] =>
  ['train', '--model', 'resnet8', '--dataset', 'cifar10', '--data-dir', dir, '--epochs', String(epochs), '--batch', '8', '--lr', '0.05', '--out', out, '--quiet'];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tq-cli-train-eval-'));
  cifar10Folder(dir, (i) => cifarRecords(Array.from({ length: 16 }, (_, r) => [(r * 3 + i) % 10]), i * 100), cifarRecords(Array.from({ length: TEST_IMAGES }, (_, r) => [(r * 3 + 9) % 10]), 9));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('train then eval', () => {
  test('eval prints one JSON line and writes one prediction per image, in dataset order', async () => {
    const run = join(dir, 'run');
    const trained = JSON.parse((await cli(trainArgs(run, 1))).stdout.trim()) as { top1: number };
    const predictions = join(dir, 'predictions.txt');
    const { stdout } = await cli(['eval', '--checkpoint', join(run, 'last.json'), '--data-dir', dir, '--json', '--predictions', predictions]);
    const summary = JSON.parse(stdout.trim()) as { top1: number; top5: number; n: number; loss: number };
    assert.equal(summary.n, TEST_IMAGES);
    assert.ok(Number.isFinite(summary.loss) && summary.top5 >= summary.top1);
    assert.equal(summary.top1, trained.top1, 'eval of the last checkpoint repeats the final evaluation of training');

    const predicted = readFileSync(predictions, 'utf8').trim().split('\n').map(Number);
    assert.equal(predicted.length, TEST_IMAGES);
    assert.ok(predicted.every((c) => Number.isInteger(c) && c >= 0 && c < 10));
    const labels = readFileSync(join(dir, 'cifar-10-batches-bin', 'test_batch.bin')).filter((_, i) => i % (3 * 32 * 32 + 1) === 0);
    const correct = predicted.filter((c, i) => c === labels[i]).length;
    assert.equal(summary.top1, (100 * correct) / TEST_IMAGES);
  });

  test('bare weights (no sidecar) are evaluated with the architecture given as flags', async () => {
    const run = join(dir, 'run');
    const meta = JSON.parse(readFileSync(join(run, 'last.json'), 'utf8')) as { weights: { file: string } };
    const weights = join(run, meta.weights.file);
    const withSidecar = JSON.parse((await cli(['eval', '--checkpoint', join(run, 'last.json'), '--data-dir', dir, '--json'])).stdout.trim());
    const bare = JSON.parse((await cli(['eval', '--checkpoint', weights, '--model', 'resnet8', '--dataset', 'cifar10', '--data-dir', dir, '--json'])).stdout.trim());
    assert.deepEqual([bare.top1, bare.loss], [withSidecar.top1, withSidecar.loss]);
    const wrong = await start(['eval', '--checkpoint', weights, '--model', 'resnet20', '--dataset', 'cifar10', '--data-dir', dir]).done;
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /layer2\.1|shape|missing/);
  });
});

describe('weights that are not finite', () => {
  /** The run's weights with one value of `key` replaced by `value`, as safetensors. */
  function damaged(key: string, value: number): string {
    const run = join(dir, 'run');
    const meta = JSON.parse(readFileSync(join(run, 'last.json'), 'utf8')) as { weights: { file: string } };
    const tensors = loadStateDict(join(run, meta.weights.file));
    const tensor = tensors.get(key);
    assert.ok(tensor && tensor.dtype === 'F32', `the run has ${key}`);
    const data = Float32Array.from(tensor.data as Float32Array);
    data[1] = value;
    tensors.set(key, { ...tensor, data });
    const file = join(dir, `${key}-${value}.safetensors`);
    writeSafetensorsFile(file, tensors);
    return file;
  }

  test('NaN or infinite weights and NaN or negative batch-norm variances are refused by eval and as --init, naming the tensor; eval --allow-non-finite evaluates them', async () => {
    const cases: [string, number, RegExp][] = [
      ['conv1.weight', NaN, /"conv1\.weight" holds NaN at index 1/],
      ['linear.weight', Infinity, /"linear\.weight" holds Infinity at index 1/],
      ['bn1.running_var', NaN, /"bn1\.running_var" holds NaN at index 1/],
      ['bn1.running_var', -0.5, /"bn1\.running_var" holds the negative variance -0\.5 at index 1/],
    ];
    const evalArgs = (file: string) => ['eval', '--checkpoint', file, '--model', 'resnet8', '--dataset', 'cifar10', '--data-dir', dir, '--json'];
    for (const [key, value, message] of cases) {
      const file = damaged(key, value);
      const out = join(dir, `init-${key}-${value}`);
      for (const args of [evalArgs(file), [...trainArgs(out, 1), '--init', file]]) {
        const r = await start(args).done;
        assert.equal(r.code, 3, `${args.join(' ')}: ${r.stderr}`);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, r.stderr);
        assert.match(lines[0], message);
        assert.ok(lines[0].includes(file), lines[0]);
      }
      assert.ok(!existsSync(join(out, 'last.json')), 'no run started from them');
    }
    // the file refused above, evaluated when asked (cli() asserts exit 0)
    const allowed = JSON.parse((await cli([...evalArgs(damaged('bn1.running_var', NaN)), '--allow-non-finite'])).stdout.trim()) as { n: number };
    assert.equal(allowed.n, TEST_IMAGES);
  });
});

describe('Fashion-MNIST with the defaults', () => {
  test('train --dataset fashion-mnist, no other data flags: the default model on 1-channel 28x28 images with the dataset\'s normalization', async () => {
    const data = join(dir, 'idx');
    mkdirSync(join(data, 'fashion-mnist'), { recursive: true });
    for (const [prefix, count] of [['train', 16], ['t10k', 8]] as const) {
      const pixels = Uint8Array.from({ length: count * 784 }, (_, i) => (i * 7) % 256);
      writeFileSync(join(data, 'fashion-mnist', `${prefix}-images-idx3-ubyte`), idxFile([count, 28, 28], pixels));
      writeFileSync(join(data, 'fashion-mnist', `${prefix}-labels-idx1-ubyte`), idxFile([count], Uint8Array.from({ length: count }, (_, i) => i % 10)));
    }
    const run = join(dir, 'fashion');
    await cli(['train', '--dataset', 'fashion-mnist', '--data-dir', data, '--epochs', '1', '--batch', '8', '--out', run, '--quiet']);
    const saved = JSON.parse(readFileSync(join(run, 'config.json'), 'utf8')) as { model: string; normalization: string };
    assert.deepEqual([saved.model, saved.normalization], ['resnet20', 'fashion-mnist']);
    const meta = JSON.parse(readFileSync(join(run, 'last.json'), 'utf8')) as { inputShape: number[] };
    assert.deepEqual(meta.inputShape, [1, 28, 28]);
  });
});

describe('resuming from the run directory\'s own config.json', () => {
  test('train --config RUN/config.json --out RUN --resume accepts the config the run wrote, relative paths included', async () => {
    const float = join(dir, 'float');
    await cli(trainArgs(float, 1));
    // A quantized run started from the float run by a relative path (resolved against the working directory).
    const run = join(dir, 'qat');
    const relativeInit = relative(process.cwd(), join(float, 'last.json'));
    await cli([...trainArgs(run, 1), '--method', 'uniform', '--wbits', '4', '--init', relativeInit]);
    const saved = JSON.parse(readFileSync(join(run, 'config.json'), 'utf8'));
    assert.equal(saved.init, join(float, 'last.json'), 'config.json keeps paths absolute');
    const resumed = await cli(['train', '--config', join(run, 'config.json'), '--out', run, '--resume', '--quiet']);
    assert.match(resumed.stdout, /"out":/);
  });
});

describe('help', () => {
  test('every command prints its usage with --help', async () => {
    for (const command of [['train'], ['eval'], ['run'], ['report'], ['export'], ['inspect'], ['demo'], ['bench', 'train'], ['bench', 'int']]) {
      const { stdout } = await cli([...command, '--help']);
      assert.match(stdout, new RegExp(`^usage: tinyquant ${command.join(' ')}`), command.join(' '));
    }
  });
});

describe('signals', () => {
  test('SIGTERM saves a checkpoint before exit, and --resume finishes the run', async () => {
    const run = join(dir, 'interrupted');
    const { child, done } = start([...trainArgs(run, 12).filter((a) => a !== '--quiet')]);
    // Wait until training is under way (a progress line), then ask it to stop.
    await new Promise<void>((resolve) => {
      const onData = (d: Buffer): void => {
        if (/epoch 1\/12/.test(d.toString())) {
          child.stderr!.off('data', onData);
          resolve();
        }
      };
      child.stderr!.on('data', onData);
    });
    child.kill('SIGTERM');
    const stopped = await done;
    assert.equal(stopped.code, 130, stopped.stderr);
    assert.ok(existsSync(join(run, 'last.json')), 'a checkpoint was saved on SIGTERM');
    const saved = JSON.parse(readFileSync(join(run, 'last.json'), 'utf8')) as { progress: { epoch: number } };
    assert.ok(saved.progress.epoch < 12);

    await cli([...trainArgs(run, 12), '--resume']);
    const epochs = readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { epoch: number }).epoch);
    assert.deepEqual(epochs, Array.from({ length: 12 }, (_, i) => i), 'each epoch trained once: the resumed run continued, it did not restart');
    const final = JSON.parse(readFileSync(join(run, 'last.json'), 'utf8')) as { progress: { epoch: number } };
    assert.equal(final.progress.epoch, 12);
  });
});
