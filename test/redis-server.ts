/**
 * A throwaway redis-server for the queue tests (test/queue.test.ts) and the queue benchmark
 * (bench/queue.ts): on 127.0.0.1 on a free port, no snapshots, no append-only file (a restart loses
 * everything), its working files in a directory of the caller's.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';

export const REDIS_SERVER = 'redis-server';

/** Whether `redis-server` can be started on this machine. */
export function haveRedisServer(): boolean {
  return spawnSync(REDIS_SERVER, ['--version']).status === 0;
}

export interface RedisServer {
  readonly port: number;
  readonly child: ChildProcess;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** A TCP port on 127.0.0.1 that nothing listened on a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/** redis-server on 127.0.0.1:`port` with its working directory `dir`; resolves once it accepts connections. */
export async function startRedis(port: number, dir: string): Promise<RedisServer> {
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<void>((r) => child.on('close', () => r()));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Ready to accept connections')) resolve();
    });
    child.on('close', (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
  });
  return {
    port,
    child,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
