/**
 * Faults (issue 17), short versions of `npm run faults`: kill -9 of training and of grids (executor
 * and workers) at random moments and inside checkpoint writes, then resumed to the same weights bit
 * for bit; grid workers that save and stop when their executor dies, and a rerun that waits for them;
 * stop requests honoured within a training step; a full disk while saving a checkpoint; an output
 * directory that cannot be made (/proc); two grid invocations on one results directory.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createEvalLoader, loadDataset } from '../src/data/index.js';
import { createModel } from '../src/models/index.js';
import { readCheckpoint } from '../src/train/checkpoint.js';
import { type TrainConfig, resolveConfig } from '../src/train/config.js';
import { evaluate } from '../src/train/evaluate.js';
import { train } from '../src/train/trainer.js';
import { Rng } from '../src/util/rng.js';
import { StopRequested } from '../src/util/stop.js';
import { CLI, formatTally, gridRound, makeFaultData, newTally, running, startCli, trainRound, until, writeFaultGrid } from './fault-harness.js';
import { cifar10Folder, cifarRecords, tempDir } from './fixtures/data/make.js';

// One backend thread in this process too: the runs here are tiny, and 2 threads on 2 shared cores only contend.
process.env.TINYQUANT_THREADS ??= '1';

let root: { dir: string; cleanup: () => void };
let dataDir: string;

before(() => {
  root = tempDir('tq-faults-');
  dataDir = makeFaultData(join(root.dir, 'data'));
});
after(() => root.cleanup());


function config(overrides: Record<string, unknown> = {}): TrainConfig {
  return resolveConfig({ model: 'resnet8', dataset: 'cifar10', dataDir, method: 'lsq', wbits: 4, batch: 4, evalBatch: 8, epochs: 2, workers: 0, lr: 0.02, ...overrides });
}

function weightsOf(dir: string): Map<string, Float32Array> {
  return new Map([...readCheckpoint(join(dir, 'last.json')).state].map(([k, v]) => [k, v.data]));
}

const progressOf = (dir: string): { epoch: number; step: number } => JSON.parse(readFileSync(join(dir, 'last.json'), 'utf8')).progress;

describe('kill -9', () => {
  test('training killed three times (inside a write of last.json, after a rename, at random), then resumed: the weights of an uninterrupted run', async () => {
    const tally = newTally();
    const campaign = { root: join(root.dir, 'kill-train'), dataDir, rng: new Rng(3), tally, epochs: 3 };
    mkdirSync(campaign.root);
    // Writes of a fresh run: config.json, then in epoch 1 metrics.jsonl, best (2 files), last (3 files).
    const kills = await trainRound(campaign, 'run', 3, 2, ['7:partial', '6:renamed']);
    assert.deepEqual(tally.problems, [], formatTally(tally));
    assert.ok(kills >= 2, formatTally(tally));
    assert.equal(tally.killsInWritesByHook, 2);
    assert.deepEqual([tally.resumes, tally.bitExact, tally.corrupt, tally.lost, tally.leftovers], [1, 1, 0, 0, 0], formatTally(tally));
  });

  test('a grid whose executor and workers are killed, then run again: every run ends with the weights of an uninterrupted grid', async () => {
    const tally = newTally();
    const campaignRoot = join(root.dir, 'kill-grid');
    mkdirSync(campaignRoot);
    const campaign = { root: campaignRoot, dataDir, rng: new Rng(5), tally, grid: writeFaultGrid(campaignRoot, 3) };
    await gridRound(campaign, 'grid', 2);
    assert.deepEqual(tally.problems, [], formatTally(tally));
    assert.deepEqual([tally.resumes, tally.bitExact, tally.corrupt, tally.lost, tally.leftovers, tally.orphansLeft], [2, 2, 0, 0, 0, 0], formatTally(tally));
  });
});

describe('grid workers and locks', () => {
  test('kill -9 of `tinyquant run`: a second invocation is refused while it runs; its workers save and stop by themselves; the rerun finishes', async () => {
    const dir = join(root.dir, 'orphans');
    const grid = writeFaultGrid(root.dir, 15);
    const args = ['run', grid, '--out', dir, '--data-dir', dataDir, '--jobs', '2', '--threads', '1', '--no-report'];
    const first = startCli(args);
    const runs = ['resnet8-cifar10-lsq-w4a4-s0', 'resnet8-cifar10-uniform-w4a4-s0'].map((id) => join(dir, 'runs', id));
    const lockPid = (d: string): number => (existsSync(join(d, '.lock')) ? Number(readFileSync(join(d, '.lock'), 'utf8')) : 0);
    await until(() => runs.every((d) => lockPid(d) > 0 && existsSync(join(d, 'last.json'))), 'both workers training');
    const workers = runs.map(lockPid);

    const second = await startCli(args).exit;
    assert.equal(second.code, 1);
    assert.match(second.stderr, new RegExp(`${dir} is in use by another tinyquant run \\(pid ${first.child.pid}\\)`));

    first.child.kill('SIGKILL');
    await first.exit;
    await until(() => !workers.some(running), 'the orphaned workers to stop', 30_000);
    for (const d of runs) {
      assert.equal(existsSync(join(d, '.lock')), false, `${d}: the worker unlocked its directory`);
      const { epoch, step } = progressOf(d);
      assert.ok(epoch < 15 && readCheckpoint(join(d, 'last.json')).state.size > 0, `${d}: a loadable checkpoint inside the run (epoch ${epoch}, step ${step})`);
      assert.match(readFileSync(join(d, 'train.log'), 'utf8'), /stopped at epoch \d+, step \d+; checkpoint saved/);
    }
    const rerun = await startCli(args).exit;
    assert.equal(rerun.code, 0, rerun.stderr);
    const index = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as { runs: { status: string }[] };
    assert.deepEqual(index.runs.map((r) => r.status), ['finished', 'finished']);
  });

  test('SIGTERM to `tinyquant run` reaches its workers: each saves inside its run and the grid exits 130', async () => {
    const dir = join(root.dir, 'grid-sigterm');
    const { child, exit } = startCli(['run', writeFaultGrid(root.dir, 15), '--out', dir, '--data-dir', dataDir, '--jobs', '2', '--threads', '1', '--no-report']);
    const runs = ['resnet8-cifar10-lsq-w4a4-s0', 'resnet8-cifar10-uniform-w4a4-s0'].map((id) => join(dir, 'runs', id));
    await until(() => runs.every((d) => existsSync(join(d, 'last.json'))), 'both workers training');
    child.kill('SIGTERM');
    const end = await exit;
    assert.equal(end.code, 130, end.stderr);
    for (const d of runs) {
      assert.ok(progressOf(d).epoch < 15, `${d} stopped inside the run`);
      assert.match(readFileSync(join(d, 'train.log'), 'utf8'), /stopped at epoch \d+, step \d+; checkpoint saved/);
    }
  });

  test('a run directory still locked by a live trainer: the grid worker waits for it, then trains', async () => {
    const dir = join(root.dir, 'wait');
    const runDir = join(dir, 'runs', 'resnet8-cifar10-lsq-w4a4-s0');
    mkdirSync(runDir, { recursive: true });
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      writeFileSync(join(runDir, '.lock'), `${holder.pid}\n`);
      const grid = startCli(['run', writeFaultGrid(root.dir, 2), '--out', dir, '--data-dir', dataDir, '--jobs', '2', '--threads', '1', '--no-report']);
      const log = join(runDir, 'train.log');
      await until(() => existsSync(log) && readFileSync(log, 'utf8').includes(`waiting for pid ${holder.pid} to stop`), 'the worker to wait');
      assert.equal(existsSync(join(runDir, 'last.json')), false, 'nothing trained while the directory is held');
      holder.kill('SIGKILL');
      const done = await grid.exit;
      assert.equal(done.code, 0, done.stderr);
      assert.equal(progressOf(runDir).epoch, 2);
    } finally {
      holder.kill('SIGKILL');
    }
  });
});

describe('stop requests', () => {
  test('SIGTERM at step 3 stops after that step; a stop after an epoch\'s last step saves it before evaluation; both resume to the uninterrupted weights', async () => {
    const c = config({ epochs: 1 });
    const whole = join(root.dir, 'stop-whole');
    await train({ config: c, outDir: whole, handleSignals: false });

    // 40 images / 4 = 10 steps an epoch; batches made on the calling thread (workers 0), where a signal used to wait for the epoch's end.
    const signalled = join(root.dir, 'stop-signal');
    const atStep3 = {
      step: (p: { epoch: number; step: number }) => {
        if (p.epoch === 0 && p.step === 3) process.kill(process.pid, 'SIGTERM');
      },
      line() {},
    };
    const a = await train({ config: c, outDir: signalled, progress: atStep3 });
    assert.equal(a.status, 'interrupted');
    const stopped = progressOf(signalled);
    assert.equal(stopped.epoch, 0);
    assert.ok(stopped.step === 3 || stopped.step === 4, `stopped at step ${stopped.step}, at most one step after the signal`);

    const atEpochEnd = join(root.dir, 'stop-epoch-end');
    const stop = new AbortController();
    const b = await train({ config: c, outDir: atEpochEnd, handleSignals: false, signal: stop.signal, progress: { step: (p) => void (p.step === p.steps && stop.abort()), line() {} } });
    assert.equal(b.status, 'interrupted');
    assert.deepEqual(progressOf(atEpochEnd), { ...progressOf(atEpochEnd), epoch: 0, step: 10 });
    assert.equal(existsSync(join(atEpochEnd, 'metrics.jsonl')), false, 'the epoch is not evaluated yet');

    const expected = weightsOf(whole);
    for (const dir of [signalled, atEpochEnd]) {
      const resumed = await train({ config: c, outDir: dir, resume: true, handleSignals: false });
      assert.equal(resumed.status, 'finished');
      assert.deepEqual(weightsOf(dir), expected, `${dir} resumed to other weights`);
      assert.equal(readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 1, 'the epoch evaluated once');
    }
    // Tensor files of saves killed before their sidecar, or after it before the superseded files went,
    // in a run that has nothing left to save: swept when it resumes.
    for (const orphan of ['last-e0000-s000009.safetensors', 'best-e0007-s000000.safetensors']) writeFileSync(join(signalled, orphan), 'x');
    assert.equal((await train({ config: c, outDir: signalled, resume: true, handleSignals: false })).status, 'finished');
    const sidecar = (kind: string) => JSON.parse(readFileSync(join(signalled, `${kind}.json`), 'utf8'));
    assert.deepEqual(
      readdirSync(signalled).filter((f) => f.endsWith('.safetensors')).sort(),
      [sidecar('best').weights.file, sidecar('last').weights.file, sidecar('last').optimizer.file].sort(),
      'only the files the sidecars refer to',
    );
  });

  test('evaluation stops after the batch in progress when its signal is aborted', async () => {
    const data = await loadDataset({ name: 'cifar10', split: 'test', dataDir });
    const loader = createEvalLoader(data, { batchSize: 4, normalization: 'apot', workers: 0 });
    let batches = 0;
    const afterTwo = { get aborted() { return ++batches >= 2; } } as AbortSignal;
    try {
      await assert.rejects(evaluate(createModel('resnet8'), loader, { signal: afterTwo }), StopRequested);
      assert.equal(batches, 2, 'two of the four batches evaluated');
    } finally {
      await loader.close();
    }
  });

  test('`tinyquant train` given SIGTERM during a 250-step first epoch exits within it with a checkpoint (with and without loader workers)', async () => {
    const data = cifar10Folder(join(root.dir, 'data-2000'), (i) => cifarRecords(Array.from({ length: 400 }, (_, r) => [(r + i) % 10]), i * 1000), cifarRecords(Array.from({ length: 16 }, (_, r) => [r % 10]), 7));
    for (const workers of ['0', '1']) {
      const out = join(root.dir, `sigterm-${workers}`);
      const { child, exit } = startCli(['train', '--model', 'resnet8', '--dataset', 'cifar10', '--data-dir', data, '--epochs', '2', '--batch', '8', '--workers', workers, '--out', out]);
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      await until(() => /epoch 1\/2 \[/.test(stderr), 'the first progress line');
      child.kill('SIGTERM');
      const end = await exit;
      assert.equal(end.code, 130, end.stderr);
      const { epoch, step } = progressOf(out);
      assert.equal(epoch, 0, `workers ${workers}: stopped in the first epoch`);
      assert.ok(step > 0 && step < 250, `workers ${workers}: stopped at step ${step} of 250`);
      assert.match(end.stderr, new RegExp(`stopped at epoch 1, step ${step}; checkpoint saved`));
    }
  });
});

describe('output directories and full disks', () => {
  test('--out under /proc fails at once with an error naming the path (train and run)', () => {
    for (const args of [
      ['train', '--model', 'resnet8', '--dataset', 'cifar10', '--data-dir', dataDir, '--epochs', '1', '--out', '/proc/tinyquant-x/run'],
      ['run', writeFaultGrid(root.dir, 2), '--data-dir', dataDir, '--out', '/proc/tinyquant-x'],
    ]) {
      const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(r.status, 1, `${args[0]}: ${r.stderr}`);
      assert.match(r.stderr, /^tinyquant: cannot create the (run|results) directory \/proc\/tinyquant-x(\/run)?: ENOENT/);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    }
  });

  test('disk full while saving a checkpoint: a clear error, the previous checkpoint intact and resumable, nothing half-written left', async (t) => {
    const mount = join(root.dir, 'small-disk');
    mkdirSync(mount);
    const mounted = process.getuid?.() === 0 && spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mount]).status === 0;
    if (!mounted) {
      t.skip('needs root and `mount -t tmpfs` (to make a small disk)');
      return;
    }
    try {
      const c = config({ batch: 8, epochs: 3 });
      const out = join(mount, 'run');
      const fillDisk = (): void => {
        const { bavail, bsize } = statfsSync(mount);
        writeFileSync(join(mount, 'filler'), Buffer.alloc(bavail * bsize - 64 * 1024)); // room for metrics, not for weights
      };
      const progress = { step() {}, line: (text: string) => void (text.startsWith('epoch 2/3:') && fillDisk()) };
      await assert.rejects(train({ config: c, outDir: out, handleSignals: false, progress }), (e: Error) => {
        assert.match(e.message, new RegExp(`saving the (best|last) checkpoint in ${out} failed \\(cannot write ${out}/.*: ENOSPC: no space left on device.*\\); the previous one \\(${out}/(best|last)\\.json\\) is kept`));
        return true;
      });
      assert.deepEqual(progressOf(out), { ...progressOf(out), epoch: 1, step: 0 }, 'last.json is the checkpoint of epoch 1');
      const referenced = ['last', 'best'].flatMap((k) => {
        const meta = JSON.parse(readFileSync(join(out, `${k}.json`), 'utf8'));
        return [meta.weights.file, meta.optimizer?.file].filter(Boolean);
      });
      assert.deepEqual(readdirSync(out).filter((f) => f.endsWith('.tmp') || (f.endsWith('.safetensors') && !referenced.includes(f))), [], 'no temp or partial files');

      rmSync(join(mount, 'filler'));
      const resumed = await train({ config: c, outDir: out, resume: true, handleSignals: false });
      assert.equal(resumed.status, 'finished');
      const whole = join(root.dir, 'disk-whole');
      await train({ config: c, outDir: whole, handleSignals: false });
      assert.deepEqual(weightsOf(out), weightsOf(whole));
    } finally {
      spawnSync('umount', [mount]);
    }
  });
});
