/**
 * Fetching a dataset file from its official address or its mirrors, tried in order, into the cache,
 * checked against a known md5 and written atomically: a failed or corrupt download leaves nothing
 * behind.
 */

import { createHash } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { tempPathFor } from './files.js';

/** Base URL replacing the official hosts; files are fetched as `<mirror>/<relativePath>`. */
export const DATA_MIRROR_ENV = 'TINYQUANT_DATA_MIRROR';

export interface RemoteFile {
  /** Where it goes below the cache directory, and below a mirror's base URL. */
  relativePath: string;
  /** The official address first, then mirrors: tried in this order. */
  urls: readonly string[];
  /** md5 of the file as published (hex). */
  md5: string;
}

/** The URLs to fetch `file` from, in order: the mirror alone when TINYQUANT_DATA_MIRROR is set, else the file's own. */
export function remoteUrls(file: RemoteFile, env: NodeJS.ProcessEnv = process.env): readonly string[] {
  const mirror = env[DATA_MIRROR_ENV];
  return mirror ? [`${mirror.replace(/\/+$/, '')}/${file.relativePath}`] : file.urls;
}

/**
 * Download from the first of `urls` that answers with the file: an HTTP error, a broken transfer
 * or a checksum mismatch moves on to the next. When none gives it, the error lists each failure.
 */
export async function downloadFirstVerified(
  urls: readonly string[],
  destination: string,
  md5: string,
  log?: (message: string) => void,
): Promise<void> {
  const failures: string[] = [];
  for (const url of urls) {
    log?.(`downloading ${url} to ${destination}`);
    try {
      return await downloadVerified(url, destination, md5);
    } catch (err) {
      failures.push((err as Error).message);
      if (failures.length < urls.length) log?.(`${(err as Error).message}; trying the next source`);
    }
  }
  throw new Error(failures.length === 1 ? failures[0] : `every source failed: ${failures.join('; ')}`);
}

/**
 * Download `url` to `destination`, verifying its md5. The bytes go to a temp file next to the
 * destination, renamed into place only when the checksum matches.
 */
export async function downloadVerified(url: string, destination: string, md5: string): Promise<void> {
  mkdirSync(dirname(destination), { recursive: true });
  const temp = tempPathFor(destination);
  try {
    const response = await fetchOrExplain(url);
    const actual = await saveBody(url, response, temp);
    if (actual !== md5.toLowerCase()) {
      throw new Error(`download of ${url}: checksum mismatch (md5 ${actual}, expected ${md5}); the file was not kept`);
    }
    await rename(temp, destination);
  } catch (err) {
    rmSync(temp, { force: true });
    throw err;
  }
}

/** Stream the body to `path`, returning its md5. */
async function saveBody(url: string, response: Response, path: string): Promise<string> {
  const hash = createHash('md5');
  const out = await open(path, 'w');
  let received = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      await out.write(chunk);
      received += chunk.length;
    }
    await out.sync();
  } catch (err) {
    throw new Error(`download of ${url} broke off after ${received} bytes: ${causeOf(err)}`);
  } finally {
    await out.close();
  }
  return hash.digest('hex');
}

function causeOf(err: unknown): string {
  const e = err as Error & { cause?: Error };
  return e.cause?.message ? `${e.message} (${e.cause.message})` : e.message;
}

async function fetchOrExplain(url: string): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new Error(`download of ${url} failed: ${causeOf(err)}`);
  }
  if (!response.ok || !response.body) throw new Error(`download of ${url} failed: HTTP ${response.status} ${response.statusText}`);
  return response;
}
