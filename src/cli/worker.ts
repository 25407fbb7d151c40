/**
 * `tinyquant worker --queue URL`: take the runs of grids submitted with `tinyquant run --queue URL`
 * and run them here, until stopped (Ctrl-C or SIGTERM: the running runs save and go back to the
 * queue; exit 130).
 */
import { availableParallelism } from 'node:os';
import { type CommandSpec, UsageError, num, optionalInt, parseOrHelp, unexpectedArgument } from './args.js';
import { defaultExecution, queueOption } from './run.js';

export const WORKER: CommandSpec = {
  name: 'worker',
  summary: 'run the runs of grids submitted with `run --queue` (on this or any machine that shares the results directory)',
  synopsis: '--queue URL [--threads T] [--concurrency N]',
  about:
    'URL: the Redis of the queue, redis://HOST:PORT[/DB]. The grids\' results directories must be reachable here at the paths ' +
    'they were submitted with (shared storage: NFS, a cluster volume); the worker checks them, and the Redis version, before taking a run.',
  options: {
    queue: { type: 'string', value: 'URL', description: 'the queue: redis://HOST:PORT[/DB] (required)' },
    threads: { type: 'string', value: 'T', description: 'backend threads per run (default 1, with one run per core)' },
    concurrency: { type: 'string', value: 'N', description: 'runs at once (default: cores / --threads)' },
    'stalled-after': {
      type: 'string',
      value: 'S',
      default: '30',
      description: 'seconds after which a run whose worker stopped answering (killed, cut off) goes to another worker',
    },
  },
};

export async function workerCommand(argv: string[]): Promise<void> {
  const args = parseOrHelp(WORKER, argv);
  if (!args) return;
  if (args.positionals.length > 0) throw unexpectedArgument(WORKER, args.positionals[0]);
  const queue = queueOption(args);
  if (!queue) throw new UsageError(`worker: --queue URL is required (usage: tinyquant worker ${WORKER.synopsis})`);
  const { jobs, threads } = defaultExecution(availableParallelism(), { jobs: optionalInt(args, 'concurrency'), threads: optionalInt(args, 'threads') }, '--concurrency');
  const stalledAfterSeconds = num(args, 'stalled-after', { min: 1 });
  const { serveQueue } = await import('../experiments/queue-worker.js'); // BullMQ: only for this command
  const summary = await serveQueue({ queue, threads, concurrency: jobs, stalledAfterSeconds, log: (line) => console.error(line) });
  console.error(`worker: stopped after ${summary.ran} run(s)`);
  process.exitCode = 130;
}
