import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { downloadVerified, loadDataset } from '../src/data/index.js';
import { cifarRecords, gzip, tarArchive, tempDir } from './fixtures/data/make.js';

const ARCHIVE = gzip(tarArchive([{ name: 'cifar-10-batches-bin/test_batch.bin', data: cifarRecords([[4], [2]]) }]));
const md5 = (bytes: Uint8Array) => createHash('md5').update(bytes).digest('hex');

/** Serves the archive at /cifar-10-binary.tar.gz, a broken transfer at /cut, 404 elsewhere. */
async function startServer(): Promise<{ server: Server; base: string }> {
  const server = createServer((req, res) => {
    if (req.url === '/cifar-10-binary.tar.gz') {
      res.writeHead(200, { 'content-length': ARCHIVE.length });
      res.end(ARCHIVE);
    } else if (req.url === '/cut') {
      res.writeHead(200, { 'content-length': ARCHIVE.length });
      res.write(ARCHIVE.subarray(0, 100), () => res.destroy());
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

test('download: a good checksum lands the file; bad checksum, HTTP errors and cut transfers leave nothing', async () => {
  const { server, base } = await startServer();
  const { dir, cleanup } = tempDir();
  try {
    const good = join(dir, 'cache', 'good.tar.gz');
    await downloadVerified(`${base}/cifar-10-binary.tar.gz`, good, md5(ARCHIVE));
    assert.deepEqual(readFileSync(good), ARCHIVE);

    const bad = join(dir, 'cache', 'bad.tar.gz');
    await assert.rejects(
      downloadVerified(`${base}/cifar-10-binary.tar.gz`, bad, '0'.repeat(32)),
      new RegExp(`download of ${base}/cifar-10-binary.tar.gz: checksum mismatch \\(md5 ${md5(ARCHIVE)}, expected 0{32}\\); the file was not kept`),
    );
    await assert.rejects(downloadVerified(`${base}/missing`, bad, md5(ARCHIVE)), /download of .*\/missing failed: HTTP 404/);
    await assert.rejects(downloadVerified(`${base}/cut`, bad, md5(ARCHIVE)), /download of .*\/cut broke off after \d+ bytes: terminated/);
    assert.deepEqual(readdirSync(join(dir, 'cache')), ['good.tar.gz'], 'no partial or temp files');
  } finally {
    server.close();
    cleanup();
  }
});

test('loadDataset downloads from the mirror into the cache and refuses a file whose md5 is not the official one', async () => {
  const { server, base } = await startServer();
  const { dir, cleanup } = tempDir();
  try {
    const cache = join(dir, 'cache');
    const env = { TINYQUANT_CACHE: cache, TINYQUANT_DATA_MIRROR: `${base}/` };
    // The generated archive is not the official one, so its md5 cannot match.
    await assert.rejects(
      loadDataset({ name: 'cifar10', split: 'test', download: true, env }),
      new RegExp(`download of ${base}/cifar-10-binary.tar.gz: checksum mismatch .*expected c32a1d4ab5d03f1284b67883e8d87530`),
    );
    assert.ok(!existsSync(cache) || readdirSync(cache).length === 0, 'nothing left in the cache');

    // A verified download in the cache is found there afterwards.
    await downloadVerified(`${base}/cifar-10-binary.tar.gz`, join(cache, 'cifar-10-binary.tar.gz'), md5(ARCHIVE));
    const d = await loadDataset({ name: 'cifar10', split: 'test', env });
    assert.deepEqual(Array.from(d.labels), [4, 2]);
    assert.match(d.source, /cache\/cifar-10-binary\.tar\.gz:cifar-10-batches-bin\/test_batch\.bin/);
  } finally {
    server.close();
    cleanup();
  }
});

test('absent and offline: the error says where to put which files', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const env = { TINYQUANT_CACHE: join(dir, 'cache'), TINYQUANT_DATA: join(dir, 'a') };
    await assert.rejects(loadDataset({ name: 'cifar10', split: 'train', dataDir: join(dir, 'x'), env }), (err: Error) => {
      assert.match(err.message, /CIFAR-10 train split not found; looked in .*\/x, .*\/a, .*\/cache/);
      assert.match(err.message, /cifar-10-batches-bin\/ with data_batch_1\.bin, .*data_batch_5\.bin \(plain or \.gz\)/);
      assert.match(err.message, /cifar-10-binary\.tar\.gz; or cifar-10-jpeg\.tar\.gz/);
      assert.match(err.message, /allow downloading https:\/\/www\.cs\.toronto\.edu\/~kriz\/cifar-10-binary\.tar\.gz/);
      return true;
    });
    await assert.rejects(
      loadDataset({ name: 'mnist', split: 'test', env }),
      /MNIST test split not found; .*Put t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte \(plain or \.gz\) in a 'mnist' folder/,
    );
  } finally {
    cleanup();
  }
});
