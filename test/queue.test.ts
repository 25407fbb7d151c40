/**
 * Grids on a BullMQ queue (issue 13) with a real Redis: redis-server started here on 127.0.0.1 on a
 * free port without persistence, one database per test, stopped after. Tiny grids through the real
 * CLI (`run --queue`, `worker`): two worker processes do every run once, with the local executor's
 * weights bit for bit; a worker killed with -9 mid-run hands its run to the other, which resumes it
 * from its checkpoint; a finished grid submitted again runs nothing; Redis restarted mid-grid (its
 * data gone); the results directory moved away mid-run (the job waits, resumed once it is back); bad
 * queues, a grid name already on the queue, a results directory a worker cannot see.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Queue } from 'bullmq';
import { QUEUE_NAME, checkRedisVersion } from '../src/experiments/queue.js';
import { CLI, leftoversOf, makeFaultData, outcomeOf, running, sleep, tempFilesOf, until } from './fault-harness.js';
import { tempDir } from './fixtures/data/make.js';
import { type RedisServer, freePort, haveRedisServer, startRedis } from './redis-server.js';

const haveRedis = haveRedisServer();
const skip = haveRedis ? false : 'redis-server is not installed (apt-get install redis-server): the queue tests need a real Redis';

let root: { dir: string; cleanup: () => void };
let dataDir: string;
let redis: RedisServer;

before(async () => {
  root = tempDir('tq-queue-');
  dataDir = makeFaultData(join(root.dir, 'data'));
  if (haveRedis) redis = await startRedis(await freePort(), root.dir);
});
after(async () => {
  await redis?.stop();
  root.cleanup();
});


interface Cli {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  readonly exit: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** The CLI in a child process, one backend thread; stderr readable while it runs. */
function cli(args: readonly string[], env: NodeJS.ProcessEnv = {}): Cli {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, TINYQUANT_THREADS: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<{ code: number | null; stdout: string; stderr: string }>((r) => child.on('close', (code) => r({ code, stdout, stderr })));
  return { child, stderr: () => stderr, exit };
}

const queueUrl = (db: number): string => `redis://127.0.0.1:${redis.port}/${db}`;

/** A worker taking one run at a time, whose runs go to another worker 2 s after it stops answering. */
async function startWorker(db: number, env: NodeJS.ProcessEnv = {}): Promise<Cli> {
  const w = cli(['worker', '--queue', queueUrl(db), '--concurrency', '1', '--threads', '1', '--stalled-after', '2'], env);
  await until(() => w.stderr().includes('waiting for runs'), `worker ${w.child.pid} to be ready`);
  return w;
}

async function stopWorkers(workers: readonly Cli[]): Promise<void> {
  for (const w of workers) w.child.kill('SIGTERM');
  for (const w of workers) assert.equal((await w.exit).code, 130, w.stderr());
}

function writeGrid(name: string, over: Record<string, unknown>): string {
  const file = join(root.dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({
    name,
    models: ['resnet8'],
    datasets: ['cifar10'],
    bits: [4],
    seeds: [0],
    start: [{ model: 'resnet8', dataset: 'cifar10', scratch: true }],
    ...over,
  }));
  return file;
}

const recipe = (epochs: number) => ({ epochs, batch: 8, evalBatch: 16, lr: 0.02, workers: 0 });

interface Index {
  runs: { id: string; status: string; worker?: string; error?: string }[];
}

const indexOf = (dir: string): Index => JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as Index;
const logOf = (dir: string, id: string): string => readFileSync(join(dir, 'runs', id, 'train.log'), 'utf8');
/** Attempts of a run: each worker process logs its backend once. */
const attempts = (dir: string, id: string): number => logOf(dir, id).split('\n').filter((l) => / backend \w+, \d+ thread/.test(l)).length;

/** The grid run here by the local executor, for the outcomes every queue run must equal. */
async function localReference(grid: string, name: string): Promise<string> {
  const dir = join(root.dir, `${name}-local`);
  const r = await cli(['run', grid, '--out', dir, '--data-dir', dataDir, '--jobs', '2', '--threads', '1', '--no-report']).exit;
  assert.equal(r.code, 0, r.stderr);
  return dir;
}

function assertSameOutcomes(dir: string, reference: string): void {
  for (const r of indexOf(reference).runs) assert.deepEqual(outcomeOf(join(dir, 'runs', r.id)), outcomeOf(join(reference, 'runs', r.id)), `${r.id}: other weights than the local executor's`);
}

/** The trainer `pid` held still (SIGSTOP) inside one of its atomic writes in `dir`: its temp file is there while it is stopped. */
async function stopInsideWrite(pid: number, dir: string): Promise<void> {
  for (;;) {
    await until(() => tempFilesOf(dir, pid).length > 0, `process ${pid} to write in ${dir}`);
    process.kill(pid, 'SIGSTOP');
    if (tempFilesOf(dir, pid).length > 0) return;
    process.kill(pid, 'SIGCONT');
  }
}

/** The jobs of a queue database by state. */
async function jobCounts(db: number): Promise<Record<string, number>> {
  const queue = new Queue(QUEUE_NAME, { connection: { host: '127.0.0.1', port: redis.port, db } });
  try {
    return await queue.getJobCounts('waiting', 'active', 'completed', 'failed');
  } finally {
    await queue.close();
  }
}

describe('grids on a BullMQ queue', { skip }, () => {
  test('two workers run a grid, every run once, with the local executor\'s weights bit for bit; submitted again, it runs nothing', async () => {
    const grid = writeGrid('tiny', { methods: ['ewgs', 'lsq'], recipe: recipe(2), start: [{ model: 'resnet8', dataset: 'cifar10', float: true }] });
    const workers = [await startWorker(1), await startWorker(1)];
    const dir = join(root.dir, 'tiny-queue');
    const args = ['run', grid, '--queue', queueUrl(1), '--out', dir, '--data-dir', dataDir, '--json'];
    try {
      const r = await cli([...args, '--no-report']).exit;
      assert.equal(r.code, 0, r.stderr);
      const ids = ['resnet8-cifar10-float-s0', 'resnet8-cifar10-ewgs-w4a4-s0', 'resnet8-cifar10-lsq-w4a4-s0'];
      assert.deepEqual((JSON.parse(r.stdout) as { ran: string[] }).ran.sort(), [...ids].sort());
      const index = indexOf(dir);
      assert.deepEqual(index.runs.map((x) => x.status), ['finished', 'finished', 'finished']);
      const pids = workers.map((w) => `${hostname()} ${w.child.pid}`);
      assert.equal(new Set(index.runs.map((x) => x.worker)).size, 2, `both workers ran runs: ${index.runs.map((x) => x.worker).join(', ')} (workers ${pids.join(', ')})`);
      for (const id of ids) {
        assert.equal(attempts(dir, id), 1, `${id} ran once`);
        assert.equal(workers.map((w) => w.stderr().split('\n').filter((l) => l.startsWith(`start  ${id} `)).length).reduce((a, b) => a + b), 1, `${id} started once`);
      }
      assertSameOutcomes(dir, await localReference(grid, 'tiny'));

      const again = await cli(args).exit;
      assert.equal(again.code, 0, again.stderr);
      const out = JSON.parse(again.stdout) as { ran: string[]; skipped: string[]; report: { markdown: string } };
      assert.deepEqual(out.ran, []);
      assert.deepEqual(out.skipped, ids);
      assert.ok(existsSync(out.report.markdown), 'the report is written as by the local executor');
      assert.match(readFileSync(out.report.markdown, 'utf8'), /run by the workers of the queue redis:\/\/127\.0\.0\.1:\d+\/1/);
      for (const id of ids) assert.equal(attempts(dir, id), 1, `${id} did not run again`);
    } finally {
      await stopWorkers(workers);
    }
  });

  test('kill -9 of a worker mid-run: the other worker resumes the run from its checkpoint and ends with the uninterrupted weights', async () => {
    const grid = writeGrid('solo', { methods: ['lsq'], recipe: recipe(12) });
    const id = 'resnet8-cifar10-lsq-w4a4-s0';
    const reference = await localReference(grid, 'solo');
    const workers = [await startWorker(2), await startWorker(2)];
    const dir = join(root.dir, 'solo-queue');
    try {
      const run = cli(['run', grid, '--queue', queueUrl(2), '--out', dir, '--data-dir', dataDir, '--no-report']);
      const runDir = join(dir, 'runs', id);
      await until(() => existsSync(join(runDir, 'last.json')) && existsSync(join(runDir, '.lock')), 'the run to save its first checkpoint');
      // The run's process holds the lock; its parent is the worker that took the job.
      const trainer = Number(readFileSync(join(runDir, '.lock'), 'utf8'));
      const parent = Number(readFileSync(`/proc/${trainer}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1]);
      const victim = workers.find((w) => w.child.pid === parent);
      assert.ok(victim, `the run's process ${trainer} belongs to a worker (its parent is ${parent})`);
      victim.child.kill('SIGKILL');
      const end = await run.exit;
      assert.equal(end.code, 0, end.stderr);
      const other = workers.find((w) => w !== victim)!;
      const record = indexOf(dir).runs[0];
      assert.equal(record.status, 'finished');
      assert.equal(record.worker, `${hostname()} ${other.child.pid}`, 'the other worker finished it');
      const resumed = [...logOf(dir, id).matchAll(/resuming runs\/\S+ at epoch (\d+), step (\d+)/g)];
      assert.equal(resumed.length, 1, logOf(dir, id));
      const [epoch, step] = [Number(resumed[0][1]), Number(resumed[0][2])];
      // Killed after its first checkpoint (epoch 1 done), so it resumes in epoch 2 or later, before the last one ends.
      assert.ok(epoch >= 2 && epoch <= 12, `resumed inside the run, from its checkpoint (epoch ${epoch}, step ${step})`);
      assert.equal(attempts(dir, id), 2);
      assert.match(end.stderr, /its worker stopped answering: the job goes back to the queue/);
      assertSameOutcomes(dir, reference);
      await stopWorkers([other]);
    } finally {
      for (const w of workers) w.child.kill('SIGKILL');
    }
  });

  test('Redis restarted mid-grid without its data: workers and the grid reconnect, and every run ends with the uninterrupted weights', async () => {
    const grid = writeGrid('pair', { methods: ['lsq', 'uniform'], recipe: recipe(8) });
    const reference = await localReference(grid, 'pair');
    const workers = [await startWorker(3), await startWorker(3)];
    const dir = join(root.dir, 'pair-queue');
    try {
      const run = cli(['run', grid, '--queue', queueUrl(3), '--out', dir, '--data-dir', dataDir, '--no-report']);
      const ids = ['resnet8-cifar10-lsq-w4a4-s0', 'resnet8-cifar10-uniform-w4a4-s0'];
      await until(() => ids.every((id) => existsSync(join(dir, 'runs', id, 'last.json'))), 'both runs training');
      await redis.stop('SIGKILL');
      await sleep(1000);
      redis = await startRedis(redis.port, root.dir);
      const end = await run.exit;
      assert.equal(end.code, 0, end.stderr);
      assert.deepEqual(indexOf(dir).runs.map((r) => r.status), ['finished', 'finished']);
      // A worker may say it reconnected after the grid ended: its last run's end is written to Redis once a client is back.
      const reconnected = /reconnected to redis:\/\/127\.0\.0\.1:\d+\/3/;
      for (const w of workers) await until(() => reconnected.test(w.stderr()), `worker ${w.child.pid} to say it reconnected`, 20_000);
      for (const text of [end.stderr, ...workers.map((w) => w.stderr())]) {
        assert.match(text, /lost the connection to redis:\/\/127\.0\.0\.1:\d+\/3 \(.*\); reconnecting/);
        assert.match(text, reconnected);
      }
      assertSameOutcomes(dir, reference);
    } finally {
      await stopWorkers(workers);
    }
  });

  test('Redis gone while a worker stops: SIGTERM still ends it; its run, saved, resumes on another worker once Redis is back, to the uninterrupted weights', async () => {
    const grid = writeGrid('gone', { methods: ['lsq'], recipe: recipe(12) });
    const id = 'resnet8-cifar10-lsq-w4a4-s0';
    const reference = await localReference(grid, 'gone');
    const first = await startWorker(6);
    const dir = join(root.dir, 'gone-queue');
    const runDir = join(dir, 'runs', id);
    let second: Cli | undefined;
    const run = cli(['run', grid, '--queue', queueUrl(6), '--out', dir, '--data-dir', dataDir, '--no-report']);
    try {
      await until(() => existsSync(join(runDir, 'last.json')) && existsSync(join(runDir, '.lock')), 'the run to save its first checkpoint');
      await redis.stop('SIGKILL');
      first.child.kill('SIGTERM');
      await until(() => first.child.exitCode !== null, 'the worker to stop without its queue', 30_000);
      const stopped = await first.exit;
      assert.equal(stopped.code, 130, stopped.stderr);
      assert.match(stopped.stderr, new RegExp(`${id}: the queue did not take its job back; it returns once its lock lapses`));
      redis = await startRedis(redis.port, root.dir);
      second = await startWorker(6);
      const end = await run.exit;
      assert.equal(end.code, 0, end.stderr);
      assert.equal(indexOf(dir).runs[0].status, 'finished');
      const resumed = [...logOf(dir, id).matchAll(/resuming runs\/\S+ at epoch (\d+), step (\d+)/g)];
      assert.equal(resumed.length, 1, logOf(dir, id));
      assertSameOutcomes(dir, reference);
      await stopWorkers([second]);
    } finally {
      for (const c of [first, second, run]) c?.child.kill('SIGKILL');
    }
  });

  test('the results directory moved away mid-run: the job goes back to the queue and the worker stops naming it; back in place, the next worker resumes the run to the uninterrupted weights', async () => {
    const grid = writeGrid('moved', { methods: ['lsq'], recipe: recipe(20) });
    const id = 'resnet8-cifar10-lsq-w4a4-s0';
    const reference = await localReference(grid, 'moved');
    const dir = join(root.dir, 'moved-queue');
    const away = `${dir}-away`;
    const runDir = join(dir, 'runs', id);
    // Every atomic write pauses with half of its data written: the run lasts seconds and is easily caught inside a checkpoint write.
    const first = await startWorker(5, { TINYQUANT_TEST_WRITE_PAUSE_MS: '100' });
    const run = cli(['run', grid, '--queue', queueUrl(5), '--out', dir, '--data-dir', dataDir, '--no-report']);
    let trainer = 0;
    let second: Cli | undefined;
    try {
      // The grid's process, on this machine too, records the run's start before the directory goes away for both.
      await until(() => existsSync(join(runDir, 'last.json')) && existsSync(join(runDir, '.lock')) && indexOf(dir).runs[0].status === 'running', 'the run to save its first checkpoint');
      trainer = Number(readFileSync(join(runDir, '.lock'), 'utf8'));
      await stopInsideWrite(trainer, runDir);
      renameSync(dir, away);
      await until(() => first.stderr().includes(`stopping ${id}: `), 'the worker to see its results directory gone');
      process.kill(trainer, 'SIGCONT');
      const stopped = await first.exit;
      assert.equal(stopped.code, 3, stopped.stderr);
      assert.match(stopped.stderr, new RegExp(`\\ntinyquant: worker: the results directory ${dir} of grid moved is not on this machine \\(no results.json there\\): .*; its run ${id} went back to the queue, to resume from its checkpoint once the directory is back\\n$`));
      assert.deepEqual(await jobCounts(5), { waiting: 1, active: 0, completed: 0, failed: 0 }, 'the job is back on the queue');

      renameSync(away, dir);
      assert.deepEqual(indexOf(dir).runs.map((r) => r.status), ['running'], 'no run recorded as failed');
      second = await startWorker(5);
      const end = await run.exit;
      assert.equal(end.code, 0, end.stderr);
      const record = indexOf(dir).runs[0];
      assert.equal(record.status, 'finished');
      assert.equal(record.worker, `${hostname()} ${second.child.pid}`);
      assert.match(second.stderr(), new RegExp(`start  ${id} of moved \\(resuming from its checkpoint\\)`));
      const resumed = [...logOf(dir, id).matchAll(/resuming runs\/\S+ at epoch (\d+), step (\d+)/g)];
      assert.equal(resumed.length, 1, logOf(dir, id));
      // Stopped after its first checkpoint (epoch 1 done): it resumes in epoch 2 or later, before the last one ends.
      const epoch = Number(resumed[0][1]);
      assert.ok(epoch >= 2 && epoch <= 20, `resumed from its checkpoint, not from scratch (epoch ${epoch})`);
      assert.equal(attempts(dir, id), 2);
      assertSameOutcomes(dir, reference);
      assert.deepEqual(leftoversOf(runDir), [], 'no temp or unreferenced checkpoint files left');
      await stopWorkers([second]);
    } finally {
      if (running(trainer)) process.kill(trainer, 'SIGCONT');
      if (existsSync(away)) renameSync(away, dir);
      for (const c of [first, second, run]) c?.child.kill('SIGKILL');
    }
  });

  test('bad queues, a grid name already on the queue, a results directory a worker cannot reach: one clear line each, no job lost', async () => {
    const malformed = await cli(['run', 'kiots2023', '--queue', 'http://localhost:6379']).exit;
    assert.equal(malformed.code, 2);
    assert.equal(malformed.stderr, 'tinyquant: --queue must be a Redis URL, redis://HOST:PORT[/DB] (the scheme must be redis: or rediss:, not http:); got "http://localhost:6379"\n');
    const closed = await freePort();
    const unreachable = await cli(['worker', '--queue', `redis://127.0.0.1:${closed}`]).exit;
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, new RegExp(`^tinyquant: cannot reach the queue redis://127\\.0\\.0\\.1:${closed}: connect ECONNREFUSED .*is redis-server running there.*\\n$`));
    assert.throws(() => checkRedisVersion('# Server\r\nredis_version:4.0.9\r\n', 'redis://old:6379'), /^QueueError: redis:\/\/old:6379 runs Redis 4\.0\.9; BullMQ needs Redis 5\.0\.0 or newer/);
    assert.equal(checkRedisVersion('redis_version:7.0.15\r\n', 'redis://new:6379'), '7.0.15');

    const grid = writeGrid('named', { methods: ['lsq'], recipe: recipe(1) });
    const dir = join(root.dir, 'named-queue');
    const first = cli(['run', grid, '--queue', queueUrl(4), '--out', dir, '--data-dir', dataDir, '--no-report']);
    await until(() => first.stderr().includes('named: 1 runs'), 'the grid on the queue');
    const second = await cli(['run', grid, '--queue', queueUrl(4), '--out', join(root.dir, 'named-other'), '--data-dir', dataDir]).exit;
    assert.equal(second.code, 3);
    assert.match(second.stderr, new RegExp(`^tinyquant: the queue redis://127\\.0\\.0\\.1:\\d+/4 already holds a grid named named \\(full scale\\) writing to ${dir}, submitted by .* at .*; give this grid another name, or wait for that one to finish\\n$`));

    // A machine without the shared storage: the directory is not at its path there.
    renameSync(dir, `${dir}-elsewhere`);
    const blind = await cli(['worker', '--queue', queueUrl(4)]).exit;
    renameSync(`${dir}-elsewhere`, dir);
    assert.equal(blind.code, 3);
    assert.match(blind.stderr, new RegExp(`tinyquant: worker: the results directory ${dir} of grid named is not on this machine \\(no results.json there\\): every machine must reach the results directory at the same path \\(NFS, a cluster volume\\) \\(a grid given up on leaves the queue with: redis-cli -n DB hdel tinyquant:grids named/full\\)\\n$`));
    const worker = await startWorker(4);
    try {
      const end = await first.exit;
      assert.equal(end.code, 0, end.stderr);
      assert.deepEqual(indexOf(dir).runs.map((r) => r.status), ['finished'], 'the job waited for a worker that can reach it');
    } finally {
      await stopWorkers([worker]);
    }
  });
});
