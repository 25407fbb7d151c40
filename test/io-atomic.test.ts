import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeStaleTempFiles } from '../src/io/atomic.js';
import { readJsonFile, writeFileAtomic, writeJsonAtomic } from '../src/io/index.js';

const ATOMIC_MODULE = new URL('../src/io/atomic.js', import.meta.url).href;

async function withTempDir(run: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tinyquant-io-atomic-'));
  try {
    await run(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const tempFilesOf = (dir: string, target: string): string[] =>
  fs.readdirSync(dir).filter((name) => name.startsWith(`.${target}.`) && name.endsWith('.tmp'));

test('writes, replaces and leaves no temp file behind', () =>
  withTempDir((dir) => {
    const file = path.join(dir, 'model.bin');
    writeFileAtomic(file, Uint8Array.from([1, 2, 3]));
    assert.deepEqual([...fs.readFileSync(file)], [1, 2, 3]);
    writeFileAtomic(file, 'text ✓');
    assert.equal(fs.readFileSync(file, 'utf8'), 'text ✓');
    assert.deepEqual(fs.readdirSync(dir), ['model.bin']);
  }));

test('a failed write removes its temp file, keeps the previous target and names it', () =>
  withTempDir((dir) => {
    const target = path.join(dir, 'occupied');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'inside'), 'keep');
    assert.throws(() => writeFileAtomic(target, 'data'), new RegExp(`cannot write ${target}: .*(EISDIR|ENOTEMPTY|EEXIST)`));
    assert.equal(fs.readFileSync(path.join(target, 'inside'), 'utf8'), 'keep');
    assert.deepEqual(fs.readdirSync(dir), ['occupied']);

    const orphan = path.join(dir, 'no-such-dir', 'file.json');
    assert.throws(() => writeFileAtomic(orphan, 'data'), new RegExp(`cannot write ${orphan}: ENOENT`));
  }));

test('temp files of dead writers are removed by the next write; live writers and other files are left alone', () =>
  withTempDir((dir) => {
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
    assert.ok(deadPid);
    const stale = `.ckpt.json.${deadPid}.0123456789ab.tmp`;
    const live = `.ckpt.json.${process.ppid}.0123456789ab.tmp`;
    const otherTarget = `.other.json.${deadPid}.0123456789ab.tmp`;
    for (const name of [stale, live, otherTarget, 'notes.txt']) fs.writeFileSync(path.join(dir, name), 'x');
    writeJsonAtomic(path.join(dir, 'ckpt.json'), { epoch: 3 });
    assert.deepEqual(fs.readdirSync(dir).sort(), [live, otherTarget, 'ckpt.json', 'notes.txt'].sort());
  }));

test('removeStaleTempFiles over a directory: the temp files of dead writers of any target, nothing else', () =>
  withTempDir((dir) => {
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
    const stale = [`.last.json.${deadPid}.0123456789ab.tmp`, `.last-e0003-s000000.safetensors.${deadPid}.00ff00ff00ff.tmp`];
    const kept = [`.last.json.${process.ppid}.0123456789ab.tmp`, 'last.json', '.lock', 'notes.tmp'];
    for (const name of [...stale, ...kept]) fs.writeFileSync(path.join(dir, name), 'x');
    assert.equal(removeStaleTempFiles(dir), 2);
    assert.deepEqual(fs.readdirSync(dir).sort(), [...kept].sort());
  }));

test('JSON helpers round-trip and name the file in errors', () =>
  withTempDir((dir) => {
    const file = path.join(dir, 'run.json');
    writeJsonAtomic(file, { method: 'apot', bits: [2, 4], nested: { ok: true } });
    assert.deepEqual(readJsonFile(file), { method: 'apot', bits: [2, 4], nested: { ok: true } });
    assert.ok(fs.readFileSync(file, 'utf8').endsWith('}\n'));
    fs.writeFileSync(file, '{"method": ');
    assert.throws(() => readJsonFile(file), new RegExp(`${file} is not valid JSON`));
    assert.throws(() => readJsonFile(path.join(dir, 'missing.json')), /cannot read .*missing\.json: ENOENT/);
  }));

const BIG = 8 * 1024 * 1024;

/**
 * A child that rewrites `target` forever with BIG bytes of one value (1, 2, 3, ...); it prints a
 * line once it is under way (after its first write).
 */
function startRewriter(target: string) {
  const script = `
    import { writeFileAtomic } from ${JSON.stringify(ATOMIC_MODULE)};
    for (let value = 1; ; value = (value % 250) + 1) {
      writeFileAtomic(${JSON.stringify(target)}, Buffer.alloc(${BIG}, value));
      if (value === 1) process.stdout.write('writing\\n');
    }
  `;
  return spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
}

/** True when the file is one complete write of the child: BIG copies of one non-zero byte. */
function isCompleteRewrite(bytes: Buffer): boolean {
  return bytes.length === BIG && bytes[0] !== 0 && bytes.every((b) => b === bytes[0]);
}

test('a writer killed mid-write leaves the previous or the new file, whole', async () =>
  withTempDir(async (dir) => {
    const target = path.join(dir, 'ckpt.bin');
    const initial = Buffer.from('previous checkpoint');
    writeFileAtomic(target, initial);
    for (let round = 0; round < 4; round++) {
      const child = startRewriter(target);
      const exited = once(child, 'exit');
      await once(child.stdout, 'data');
      await sleep(1 + round * 5); // kill at different moments of a write (one takes ~5-20 ms)
      child.kill('SIGKILL');
      await exited;
      const content = fs.readFileSync(target);
      assert.ok(content.equals(initial) || isCompleteRewrite(content), `round ${round}: target is whole`);
      assert.ok(tempFilesOf(dir, 'ckpt.bin').length <= 1, 'at most the killed write is left over');
    }
    writeFileAtomic(target, initial);
    assert.deepEqual(fs.readdirSync(dir), ['ckpt.bin'], 'the next write removed the leftover');
  }));
