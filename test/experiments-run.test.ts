import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { getBackend } from '../src/backend/index.js';
import type { RunEvent } from '../src/experiments/executor.js';
import { executePlan } from '../src/experiments/executor.js';
import { type Plan, expandGrid, parseGrid } from '../src/experiments/grid.js';
import { RESULTS_VERSION, type ResultsIndex, readResultsIndex } from '../src/experiments/results.js';
import { evaluateStart, runTask } from '../src/experiments/tasks.js';
import { resolveConfig } from '../src/train/config.js';
import { silentProgress } from '../src/train/progress.js';
import { train } from '../src/train/trainer.js';
import { cifar10Folder, cifarRecords, tempDir } from './fixtures/data/make.js';

let root: { dir: string; cleanup: () => void };
let dataDir: string;

before(() => {
  root = tempDir('tq-experiments-');
  dataDir = cifar10Folder(join(root.dir, 'data'), (i) => cifarRecords(Array.from({ length: 8 }, (_, r) => [(r * 3 + i) % 10]), i * 100), cifarRecords(Array.from({ length: 12 }, (_, r) => [r % 10]), 7));
});
after(() => root.cleanup());

/** A grid of tiny runs: resnet8 on 40 images, batch 8 (5 steps an epoch), from a float run of the grid. */
function plan(over: Record<string, unknown> = {}): Plan {
  const grid = parseGrid(
    {
      name: 'tiny',
      models: ['resnet8'],
      datasets: ['cifar10'],
      methods: ['ewgs', 'lsq'],
      bits: [4],
      seeds: [0],
      recipe: { epochs: 2, batch: 8, evalBatch: 12, lr: 0.02, workers: 1 },
      start: [{ model: 'resnet8', dataset: 'cifar10', float: true }],
      ...over,
    },
    'tiny.yaml',
    root.dir,
  );
  return expandGrid(grid, { scale: 'full', dataDir });
}

function run(p: Plan, resultsDir: string, extra: { signal?: AbortSignal; events?: RunEvent[]; retryFailed?: boolean } = {}) {
  return executePlan(p, {
    resultsDir,
    jobs: 2,
    threads: 1,
    handleSignals: false,
    signal: extra.signal,
    retryFailed: extra.retryFailed,
    observer: { event: (e) => extra.events?.push(e) },
  });
}

function statuses(index: ResultsIndex): Record<string, string> {
  return Object.fromEntries(index.runs.map((r) => [r.id, r.status]));
}

function finalOf(resultsDir: string, id: string): { top1: number; loss: number; fingerprint: unknown } {
  return JSON.parse(readFileSync(join(resultsDir, 'runs', id, 'final.json'), 'utf8'));
}

describe('running a grid', () => {
  test('a diverging run is recorded with its error and its checkpoint, the others finish, and a re-run redoes nothing', async () => {
    // PACT's learning rate jumps to 1e27 after the first epoch: it diverges in the second one.
    const p = plan({
      methods: ['ewgs', 'pact'],
      overrides: [{ when: { method: 'pact' }, set: { lr: 1e-3, schedule: { kind: 'multistep', milestones: [1], gamma: 1e30 } } }],
    });
    const dir = join(root.dir, 'diverge');
    const first = await run(p, dir);
    assert.deepEqual(statuses(first.index), {
      'resnet8-cifar10-float-s0': 'finished',
      'resnet8-cifar10-ewgs-w4a4-s0': 'finished',
      'resnet8-cifar10-pact-w4a4-s0': 'diverged',
    });
    // Every finished run records the backend it ran on (the workers pick it as this process does).
    const ewgs = first.index.runs.find((r) => r.method === 'ewgs')!;
    assert.equal((finalOf(dir, ewgs.id) as { backend?: string }).backend, getBackend().name, 'final.json records the backend');
    assert.equal(ewgs.outcome?.backend, getBackend().name, 'results.json too');
    const pact = first.index.runs.find((r) => r.method === 'pact')!;
    assert.match(pact.error!, /training diverged at epoch 2/);
    assert.match(pact.log!, /epoch 1\/2: train loss/, 'the output tail is kept');
    const kept = JSON.parse(readFileSync(join(dir, pact.dir, 'last.json'), 'utf8'));
    assert.equal(kept.progress.epoch, 1, 'the last good checkpoint (after epoch 1) is kept');
    assert.deepEqual(statuses(readResultsIndex(dir)!), statuses(first.index), 'results.json holds the same');

    const mtime = statSync(join(dir, 'runs', 'resnet8-cifar10-ewgs-w4a4-s0', 'final.json')).mtimeMs;
    const events: RunEvent[] = [];
    const again = await run(p, dir, { events });
    assert.deepEqual(again.ran, []);
    assert.equal(events.filter((e) => e.type === 'start').length, 0, 'nothing started again');
    assert.deepEqual(statuses(again.index), statuses(first.index));
    assert.equal(statSync(join(dir, 'runs', 'resnet8-cifar10-ewgs-w4a4-s0', 'final.json')).mtimeMs, mtime);
  });

  test('an interrupted grid resumes without redoing finished runs, and ends as an uninterrupted one does', async () => {
    const p = plan({ recipe: { epochs: 3, batch: 8, evalBatch: 12, lr: 0.02, workers: 1 } });
    const dir = join(root.dir, 'interrupted');
    const stop = new AbortController();
    const events: RunEvent[] = [];
    const first = await executePlan(p, {
      resultsDir: dir,
      jobs: 1,
      threads: 1,
      handleSignals: false,
      signal: stop.signal,
      observer: {
        event: (e) => {
          // Stop while the last run (lsq) is training.
          if (e.type === 'step' && e.id === 'resnet8-cifar10-lsq-w4a4-s0') stop.abort();
        },
      },
    });
    assert.equal(first.interrupted, true);
    assert.deepEqual(statuses(first.index), {
      'resnet8-cifar10-float-s0': 'finished',
      'resnet8-cifar10-ewgs-w4a4-s0': 'finished',
      'resnet8-cifar10-lsq-w4a4-s0': 'interrupted',
    });
    const saved = JSON.parse(readFileSync(join(dir, 'runs', 'resnet8-cifar10-lsq-w4a4-s0', 'last.json'), 'utf8'));
    assert.ok(saved.progress.epoch * 5 + saved.progress.step < 15, 'stopped before the end, with a checkpoint');

    const second = await run(p, dir, { events });
    assert.deepEqual(second.ran, ['resnet8-cifar10-lsq-w4a4-s0']);
    assert.deepEqual(
      events.filter((e) => e.type === 'start'),
      [{ type: 'start', id: 'resnet8-cifar10-lsq-w4a4-s0', resuming: true }],
    );
    assert.ok(Object.values(statuses(second.index)).every((s) => s === 'finished'));

    // Two runs of the same config and seed give the same numbers, interrupted or not.
    const fresh = join(root.dir, 'uninterrupted');
    await run(p, fresh);
    for (const r of p.runs) {
      assert.deepEqual(finalOf(fresh, r.id), finalOf(dir, r.id), `${r.id} differs`);
      assert.equal(readFileSync(join(fresh, 'runs', r.id, 'metrics.jsonl'), 'utf8').replace(/"(imgPerSec|stepMs|dataMs|seconds)":[\d.e+-]+/g, ''),
        readFileSync(join(dir, 'runs', r.id, 'metrics.jsonl'), 'utf8').replace(/"(imgPerSec|stepMs|dataMs|seconds)":[\d.e+-]+/g, ''));
    }
  });

  test('a results directory from another format version, or of another grid, is refused with a clear message', async () => {
    const dir = join(root.dir, 'other-version');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'results.json'), JSON.stringify({ format: 'tinyquant-results', version: RESULTS_VERSION + 1, tinyquant: '9.0.0', grid: {}, runs: [] }));
    await assert.rejects(run(plan(), dir), new RegExp(`results format version ${RESULTS_VERSION + 1} \\(written by tinyquant 9\\.0\\.0\\); this tinyquant .* reads version ${RESULTS_VERSION}\\. Use a new results directory`));
    const other = join(root.dir, 'diverge');
    await assert.rejects(run(plan({ name: 'another' }), other), /holds results of tiny \(full scale\), not another \(full scale\); use another results directory/);
    await assert.rejects(run(plan({ recipe: { epochs: 2, batch: 8, evalBatch: 12, lr: 0.5, workers: 1 } }), other), /were started with a different config: resnet8-cifar10-float-s0 \(lr\)/);
  });

  test('the float baseline of a checkpoint start is evaluated on the test images the runs use', async () => {
    const dir = join(root.dir, 'baseline');
    const config = resolveConfig({ model: 'resnet8', dataset: 'cifar10', dataDir, batch: 8, evalBatch: 4, epochs: 1, testSubset: 10, workers: 0 });
    const trained = await train({ config, outDir: dir, handleSignals: false });
    const evaluated = await evaluateStart({ ...config, init: join(dir, 'last.json') }, join(root.dir, 'baseline-eval'), silentProgress);
    assert.equal(evaluated.n, 10);
    assert.equal(evaluated.top1, trained.final!.top1);
    assert.equal(evaluated.loss, trained.final!.loss);
  });

  test('a run whose directory goes away mid-run ends failed with the message naming what it could not write (its storage gone: no log to write it to)', async () => {
    const outDir = join(root.dir, 'vanishing');
    const config = resolveConfig({ model: 'resnet8', dataset: 'cifar10', dataDir, batch: 8, evalBatch: 4, epochs: 3, testSubset: 10, workers: 0 });
    const removeAfterEpoch1 = (m: { type: string; text?: string }): void => void (m.type === 'line' && m.text!.startsWith('epoch 1/3:') && rmSync(outDir, { recursive: true }));
    const result = await runTask({ kind: 'train', config, outDir }, removeAfterEpoch1);
    assert.equal(result.type, 'failed');
    assert.match(result.type === 'failed' ? result.message : '', new RegExp(`cannot write ${outDir}/.*: ENOENT`));
  });
});
