/**
 * What the coordinator (`tinyquant run --queue`) and the workers (`tinyquant worker`) of a grid on
 * BullMQ share: the queue's address and its checks (reachable, a Redis BullMQ can use), the
 * connections (ioredis, reconnecting forever, outages said once), a job per run (its payload, its
 * result, its progress messages and a stable id), the grids a queue holds (so that two grids of one
 * name are told apart and workers can check their results directories before taking a job), and
 * the check that a results directory is on storage this machine reaches.
 */
import { createHash } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { RedisConnection, isRedisVersionLowerThan } from 'bullmq';
import { Redis } from 'ioredis';
import { processAlive } from '../io/lock.js';
import { InputError } from '../util/errors.js';
import type { Plan, RunSpec, Scale } from './grid.js';
import type { RunProgress } from './fork.js';
import type { QueueAddress } from './queue-address.js';
import type { WorkerRequest } from './protocol.js';
import { type RunOutcome, readResultsIndex } from './results.js';

/** The BullMQ queue every grid's runs go to (one per Redis database). */
export const QUEUE_NAME = 'tinyquant-runs';
/** The grids on the queue: a hash of `NAME/SCALE` to GridEntry JSON. */
export const GRIDS_KEY = 'tinyquant:grids';
const LEASE_PREFIX = 'tinyquant:lease:';
/** How long a coordinator's claim on a grid outlives its last renewal. */
export const LEASE_MS = 30_000;
/** How long the first connection may take before the queue is called unreachable. */
const CONNECT_TIMEOUT_MS = 5000;

/** The queue cannot be used: Redis unreachable or too old, a grid followed by another coordinator. */
export class QueueError extends Error {
  override name = 'QueueError';
}

/** What the command was given does not fit the queue: a grid name taken, a results directory not shared. */
export class QueueInputError extends InputError {
  override name = 'QueueInputError';
}

/** `host pid` of this process: who ran a run, who follows a grid. */
export function processName(): string {
  return `${hostname()} ${process.pid}`;
}

/** The Redis version in `INFO server`'s text; refused when BullMQ cannot use it. */
export function checkRedisVersion(info: string, label: string): string {
  const version = /^redis_version:(\S+)/m.exec(info)?.[1];
  if (!version) throw new QueueError(`${label} did not say its Redis version (INFO server has no redis_version): is it a Redis server?`);
  const needed = RedisConnection.minimumVersion;
  if (isRedisVersionLowerThan(version, needed, 'redis')) {
    throw new QueueError(`${label} runs Redis ${version}; BullMQ needs Redis ${needed} or newer (Debian's redis-server, or the redis container image)`);
  }
  return version;
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

function isConnectionError(e: Error): boolean {
  const code = (e as { code?: unknown }).code;
  return (typeof code === 'string' && CONNECTION_CODES.has(code)) || /Connection is closed|connect ETIMEDOUT|Stream isn't writeable/.test(e.message);
}

/**
 * The clients of one process to one queue: each reconnects forever; an outage is logged once when
 * it starts and once when a client is back, and `onReconnect` listeners are told.
 */
export class QueueConnection {
  readonly #clients: Redis[] = [];
  readonly #reconnect: (() => void)[] = [];
  readonly #said = new Set<string>();
  #down = false;
  /** For the commands of tinyquant itself (the grids, leases). */
  readonly command: Redis;

  private constructor(
    readonly address: QueueAddress,
    readonly version: string,
    readonly log: (line: string) => void,
  ) {
    this.command = this.client();
  }

  /** Check the queue (reachable, a Redis BullMQ can use), then open it. */
  static async open(address: QueueAddress, log: (line: string) => void): Promise<QueueConnection> {
    const probe = new Redis(address.url, { lazyConnect: true, connectTimeout: CONNECT_TIMEOUT_MS, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    // connect() rejects with "Connection is closed"; the socket's own error says why.
    let cause: Error | null = null;
    probe.on('error', (e: Error) => (cause = e));
    try {
      await probe.connect();
      return new QueueConnection(address, checkRedisVersion(await probe.info('server'), address.label), log);
    } catch (e) {
      if (e instanceof QueueError) throw e;
      const err = cause ?? (e as Error);
      const hint = /NOAUTH|WRONGPASS|invalid password/i.test(err.message) ? 'give the password in the URL: redis://:PASSWORD@HOST:PORT' : 'is redis-server running there, and does its bind/protected-mode let this machine in?';
      throw new QueueError(`cannot reach the queue ${address.label}: ${err.message} (${hint})`);
    } finally {
      probe.disconnect();
    }
  }

  /** A new client (BullMQ wants one per Queue, Worker and QueueEvents). */
  client(): Redis {
    const c = new Redis(this.address.url, { maxRetriesPerRequest: null, retryStrategy: (times) => Math.min(250 * times, 2000) });
    c.on('error', (e: Error) => this.report(e));
    c.on('ready', () => {
      if (!this.#down) return;
      this.#down = false;
      this.log(`reconnected to ${this.address.label}`);
      for (const f of this.#reconnect) f();
    });
    this.#clients.push(c);
    return c;
  }

  onReconnect(f: () => void): void {
    this.#reconnect.push(f);
  }

  /** An error of a client or a BullMQ object: a lost connection is said once per outage, others once each. */
  report(e: Error): void {
    if (isConnectionError(e)) {
      if (!this.#down) this.log(`lost the connection to ${this.address.label} (${e.message}); reconnecting`);
      this.#down = true;
      return;
    }
    if (this.#said.has(e.message)) return;
    this.#said.add(e.message);
    this.log(`queue: ${e.message}`);
  }

  close(): void {
    for (const c of this.#clients) c.disconnect();
  }
}

// ---- jobs -----------------------------------------------------------------------------------------

/** A job's payload: one run of a grid, with everything a worker needs to run it. */
export interface RunJob {
  readonly grid: string;
  readonly scale: Scale;
  /** Absolute, on storage every machine reaches at this path. */
  readonly resultsDir: string;
  readonly runId: string;
  /** What its weights start from (`checkpoint:PATH`, `run:ID`, `scratch`). */
  readonly startsFrom: string;
  /** Paths in it are relative to `resultsDir`, as for the local executor's workers. */
  readonly request: WorkerRequest;
}

/** A job's result (the run ended; interrupted runs go back to the queue instead). */
export interface RunJobResult {
  readonly status: 'finished' | 'failed' | 'diverged';
  readonly outcome?: RunOutcome;
  readonly error?: string;
  readonly log?: string;
  readonly seconds: number;
  readonly worker: string;
}

/** A job's progress messages: its start on a worker, then its worker process's own. */
export type RunJobProgress = { readonly type: 'start'; readonly resuming: boolean; readonly worker: string } | RunProgress;

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The job of a run: its id and a hash of where it goes and what it is, so a re-submission adds nothing. */
export function jobIdOf(run: RunSpec, resultsDir: string): string {
  return `${run.id}.${sha256(JSON.stringify({ resultsDir, kind: run.kind, config: run.config })).slice(0, 16)}`;
}

export function runJob(plan: Plan, run: RunSpec, resultsDir: string, outDir: string): RunJob {
  return { grid: plan.grid.name, scale: plan.scale, resultsDir, runId: run.id, startsFrom: run.startsFrom, request: { kind: run.kind, config: run.config, outDir } };
}

// ---- the grids on a queue -------------------------------------------------------------------------

export interface GridEntry {
  readonly name: string;
  readonly scale: Scale;
  readonly resultsDir: string;
  /** A hash of the plan's runs: the same grid submitted again, or another one of the same name. */
  readonly plan: string;
  readonly submittedBy: string;
  readonly submitted: string;
}

export function gridField(name: string, scale: Scale): string {
  return `${name}/${scale}`;
}

export function planHash(plan: Plan, resultsDir: string): string {
  return sha256(JSON.stringify(plan.runs.map((r) => jobIdOf(r, resultsDir))));
}

/**
 * Record the grid on the queue; a grid of the same name and scale already there with another
 * results directory or other runs is refused (the same one again is followed).
 */
export async function registerGrid(conn: QueueConnection, plan: Plan, resultsDir: string): Promise<GridEntry> {
  const entry: GridEntry = { name: plan.grid.name, scale: plan.scale, resultsDir, plan: planHash(plan, resultsDir), submittedBy: processName(), submitted: new Date().toISOString() };
  const field = gridField(entry.name, entry.scale);
  if (await conn.command.hsetnx(GRIDS_KEY, field, JSON.stringify(entry))) return entry;
  const held = JSON.parse((await conn.command.hget(GRIDS_KEY, field)) ?? 'null') as GridEntry | null;
  if (held === null) return registerGrid(conn, plan, resultsDir); // released meanwhile
  if (held.resultsDir === resultsDir && held.plan === entry.plan) return held;
  const what = held.resultsDir !== resultsDir ? `writing to ${held.resultsDir}` : `with other runs (another grid file, scale or --start) in ${resultsDir}`;
  throw new QueueInputError(
    `the queue ${conn.address.label} already holds a grid named ${entry.name} (${entry.scale} scale) ${what}, submitted by ${held.submittedBy} at ${held.submitted}; ` +
      'give this grid another name, or wait for that one to finish',
  );
}

/** Forget a grid whose runs all ended. */
export async function releaseGrid(conn: QueueConnection, plan: Plan): Promise<void> {
  await conn.command.hdel(GRIDS_KEY, gridField(plan.grid.name, plan.scale));
}

export async function listGrids(conn: QueueConnection): Promise<GridEntry[]> {
  return (await conn.command.hvals(GRIDS_KEY)).map((v) => JSON.parse(v) as GridEntry);
}

/**
 * Claim the following of a grid for this process (a key that lapses LEASE_MS after its last
 * renewal): two coordinators, on any machines, never write one grid's results at once. Returns the
 * release; the claim is renewed until then.
 */
export async function claimGrid(conn: QueueConnection, plan: Plan): Promise<() => Promise<void>> {
  const key = LEASE_PREFIX + gridField(plan.grid.name, plan.scale);
  const me = processName();
  if ((await conn.command.set(key, me, 'PX', LEASE_MS, 'NX')) === null) {
    const holder = await conn.command.get(key);
    if (holder !== me && !heldByDeadProcessHere(holder)) {
      throw new QueueError(
        `${plan.grid.name} (${plan.scale} scale) on ${conn.address.label} is followed by another tinyquant run (host and pid: ${holder ?? 'unknown'}); ` +
          `wait for it, or stop it (its claim lapses ${LEASE_MS / 1000} s after it ends)`,
      );
    }
    await conn.command.set(key, me, 'PX', LEASE_MS);
  }
  const renew = setInterval(() => void conn.command.set(key, me, 'PX', LEASE_MS).catch(() => {}), LEASE_MS / 3);
  renew.unref();
  return async () => {
    clearInterval(renew);
    if ((await conn.command.get(key)) === me) await conn.command.del(key);
  };
}

/** A claim of a process of this machine that no longer runs (killed): taken over at once. */
function heldByDeadProcessHere(holder: string | null): boolean {
  const [host, pid] = (holder ?? '').split(' ');
  return host === hostname() && Number.isInteger(Number(pid)) && !processAlive(Number(pid));
}

/**
 * Why this machine cannot work on a grid's runs, or null: its results directory must be there,
 * hold that grid's index, and be writable.
 */
export function sharedDirProblem(resultsDir: string, grid: string): string | null {
  const fix = 'every machine must reach the results directory at the same path (NFS, a cluster volume)';
  try {
    const index = readResultsIndex(resultsDir);
    if (index === null) return `the results directory ${resultsDir} of grid ${grid} is not on this machine (no results.json there): ${fix}`;
    if (index.grid.name !== grid) return `${resultsDir} holds results of ${index.grid.name}, not of grid ${grid}: ${fix}`;
    const probe = join(resultsDir, `.probe-${hostname()}-${process.pid}`);
    writeFileSync(probe, '');
    rmSync(probe);
    return null;
  } catch (e) {
    return `the results directory ${resultsDir} of grid ${grid} cannot be used from this machine (${(e as Error).message}): ${fix}`;
  }
}
