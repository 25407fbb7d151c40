/**
 * One writer per directory (src/io/lock.ts): a second lock in this process or another is refused
 * with the owner's pid, a lock left by a killed process is taken over, and two `tinyquant train`
 * processes given the same --out never train at once.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DirectoryLockedError, lockDirectory } from '../src/io/lock.js';
import { cifar10Folder, cifarRecords, tempDir } from './fixtures/data/make.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

test('lockDirectory: exclusive in this process and against a live process; a dead owner\'s lock is taken over', () => {
  const { dir, cleanup } = tempDir('tq-lock-');
  try {
    const unlock = lockDirectory(dir, 'test run');
    assert.equal(readFileSync(join(dir, '.lock'), 'utf8').trim(), String(process.pid));
    assert.throws(() => lockDirectory(dir, 'test run'), (e: Error) => e instanceof DirectoryLockedError && /in use by another test run in this process/.test(e.message));
    unlock();
    assert.equal(existsSync(join(dir, '.lock')), false);

    const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)']);
    try {
      writeFileSync(join(dir, '.lock'), `${live.pid}\n`);
      assert.throws(() => lockDirectory(dir, 'test run'), new RegExp(`in use by another test run \\(pid ${live.pid}\\)`));
    } finally {
      live.kill('SIGKILL');
    }
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    writeFileSync(join(dir, '.lock'), `${dead}\n`);
    lockDirectory(dir, 'test run')();
  } finally {
    cleanup();
  }
});

test('two `tinyquant train --out D` at once: the second is refused; after kill -9 of the first, its lock is taken over', async () => {
  const { dir, cleanup } = tempDir('tq-lock-train-');
  try {
    cifar10Folder(dir, (i) => cifarRecords(Array.from({ length: 64 }, (_, r) => [(r + i) % 10]), i), cifarRecords(Array.from({ length: 16 }, (_, r) => [r % 10]), 9));
    const out = join(dir, 'run');
    const args = ['train', '--model', 'resnet8', '--dataset', 'cifar10', '--data-dir', dir, '--epochs', '50', '--batch', '16', '--out', out, '--quiet'];
    const first = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, TINYQUANT_THREADS: '1' }, stdio: 'ignore' });
    try {
      for (let i = 0; i < 300 && !existsSync(join(out, 'last.json')); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(existsSync(join(out, 'last.json')), 'the first run saved a checkpoint');
      const second = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
      assert.equal(second.status, 1);
      assert.match(second.stderr, new RegExp(`run is in use by another training run \\(pid ${first.pid}\\)`));
    } finally {
      first.kill('SIGKILL');
      await new Promise((r) => first.once('exit', r));
    }
    // The killed run's lock is stale now: the next writer (a --resume) takes it over.
    assert.equal(readFileSync(join(out, '.lock'), 'utf8').trim(), String(first.pid));
    lockDirectory(out, 'training run')();
  } finally {
    cleanup();
  }
});
