/**
 * `tinyquant run GRID`: run an experiment grid (a file or a preset) into a results directory, then
 * write its report. Re-running skips finished runs and resumes interrupted ones. With --queue the
 * runs go to the workers of a BullMQ queue (`tinyquant worker`) instead of worker processes here.
 */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { gridDisplay } from '../experiments/display.js';
import { type ExecuteSummary, executePlan } from '../experiments/executor.js';
import { type Plan, type Scale, expandGrid, readGrid } from '../experiments/grid.js';
import { defaultDataDir } from '../experiments/paths.js';
import { type WrittenReport, writeReport } from '../experiments/report/index.js';
import { didNotFinish } from '../experiments/results.js';
import { type QueueAddress, parseQueueUrl } from '../experiments/queue-address.js';
import { checkStarts } from '../experiments/starts.js';
import { type CommandSpec, type ParsedArgs, UsageError, flag, optionalInt, parseOrHelp, str } from './args.js';
import { readingInput } from './errors.js';

export const RUN: CommandSpec = {
  name: 'run',
  summary: 'run an experiment grid (a preset name or a YAML/JSON file); skips finished runs',
  synopsis: 'GRID [--quick | --scale NAME] [--out DIR] [options]',
  about: 'GRID is a grid file (YAML or JSON) or a preset: kiots2023, apot-reference, ewgs-reference, float-resnet20.',
  options: {
    quick: { type: 'boolean', description: 'the grid\'s quick scale (fewer epochs, subsets; labelled quick in the results): --scale quick' },
    scale: { type: 'string', value: 'NAME', description: 'one of the grid\'s scales (its `scales:`; default full, the grid itself)' },
    out: { type: 'string', value: 'DIR', description: 'results directory (default results/NAME, or results/NAME-SCALE)' },
    jobs: { type: 'string', value: 'N', description: 'runs at once (default: cores / --threads)' },
    threads: { type: 'string', value: 'T', description: 'backend threads per run (default 1, with one run per core)' },
    'data-dir': { type: 'string', value: 'DIR', description: 'where the datasets are (default: TINYQUANT_DATA, the cache, ../shared/data)' },
    start: { type: 'string', value: 'FILE', description: 'the checkpoint every checkpoint start of the grid begins from' },
    'retry-failed': { type: 'boolean', description: 'run failed and diverged runs again' },
    'dry-run': { type: 'boolean', description: 'list the runs and exit (after checking that the checkpoints they start from exist)' },
    'no-report': { type: 'boolean', description: 'do not write the report at the end' },
    json: { type: 'boolean', description: 'print the outcome (or with --dry-run the plan) as JSON; the progress display stays on stderr' },
    queue: { type: 'string', value: 'URL', description: 'run on the workers of a BullMQ queue, redis://HOST:PORT[/DB] (`tinyquant worker`); --out must be on storage they share' },
  },
};

/**
 * Runs at once and threads per run: one single-threaded run per core by default (two runs with one
 * thread each train faster in total than one after the other with two; see the report of issue 5).
 */
export function defaultExecution(cores: number, requested: { jobs?: number; threads?: number }, jobsFlag = '--jobs'): { jobs: number; threads: number } {
  const threads = requested.threads ?? (requested.jobs !== undefined ? Math.max(1, Math.floor(cores / requested.jobs)) : 1);
  const jobs = requested.jobs ?? Math.max(1, Math.floor(cores / threads));
  if (jobs * threads > cores) throw new UsageError(`${jobsFlag} ${jobs} x --threads ${threads} is more than the ${cores} cores of this machine`);
  return { jobs, threads };
}

export interface RunGridOptions {
  readonly grid: string;
  readonly scale: Scale;
  readonly out?: string;
  readonly jobs?: number;
  readonly threads?: number;
  readonly dataDir?: string;
  readonly start?: string;
  readonly retryFailed?: boolean;
  readonly report?: boolean;
  readonly stream?: NodeJS.WriteStream;
  /** Run on the workers of this queue instead of here. */
  readonly queue?: QueueAddress;
}

export interface RunGridResult {
  readonly plan: Plan;
  readonly resultsDir: string;
  readonly summary: ExecuteSummary;
  readonly report: WrittenReport | null;
}

/** Plan a grid (checked, starts present) without running anything. */
export function planGrid(opts: Pick<RunGridOptions, 'grid' | 'scale' | 'dataDir' | 'start'>): Plan {
  return readingInput(() => {
    const grid = readGrid(opts.grid);
    const dataDir = opts.dataDir !== undefined ? resolve(opts.dataDir) : defaultDataDir();
    const plan = expandGrid(grid, { scale: opts.scale, dataDir, startCheckpoint: opts.start === undefined ? undefined : resolve(opts.start) });
    checkStarts(plan);
    return plan;
  });
}

export function defaultResultsDir(plan: Plan): string {
  return resolve('results', `${plan.grid.name}${plan.scale === 'full' ? '' : `-${plan.scale}`}`);
}

export async function runGrid(opts: RunGridOptions): Promise<RunGridResult> {
  const plan = planGrid(opts);
  const resultsDir = opts.out !== undefined ? resolve(opts.out) : defaultResultsDir(plan);
  const stream = opts.stream ?? process.stderr;
  const display = gridDisplay(stream);
  let summary: ExecuteSummary;
  try {
    if (opts.queue) {
      if (opts.jobs !== undefined || opts.threads !== undefined) throw new UsageError('run: --jobs and --threads are set on each worker with --queue (tinyquant worker --concurrency N --threads T)');
      // Loaded only here: BullMQ and its Redis client add a third of a second to every command's start.
      const { executeOnQueue } = await import('../experiments/queue-coordinator.js');
      summary = await executeOnQueue(plan, { resultsDir, queue: opts.queue, retryFailed: opts.retryFailed, observer: display });
    } else {
      const { jobs, threads } = defaultExecution(availableParallelism(), { jobs: opts.jobs, threads: opts.threads });
      summary = await executePlan(plan, { resultsDir, jobs, threads, retryFailed: opts.retryFailed, observer: display });
    }
  } finally {
    display.close();
  }
  let report = null;
  if (opts.report !== false && !summary.interrupted) {
    stream.write('writing the report...\n');
    report = await writeReport(resultsDir, { log: (m) => stream.write(`  ${m}\n`) });
  }
  return { plan, resultsDir, summary, report };
}

function describePlan(plan: Plan): string {
  const lines = plan.runs.map((r) => `  ${r.id}${r.kind === 'evaluate' ? ' (float baseline: evaluate the start)' : ''}${r.dependsOn.length ? `  <- ${r.dependsOn.join(', ')}` : ''}`);
  return `${plan.grid.name} (${plan.scale} scale): ${plan.runs.length} runs\n${lines.join('\n')}`;
}

function scaleOption(args: ParsedArgs): Scale {
  const named = str(args, 'scale');
  if (flag(args, 'quick') && named !== undefined && named !== 'quick') throw new UsageError(`run: --quick and --scale ${named} name two scales; give one`);
  return flag(args, 'quick') ? 'quick' : (named ?? 'full');
}

export async function runCommand(argv: string[]): Promise<void> {
  const args = parseOrHelp(RUN, argv);
  if (!args) return;
  if (args.positionals.length !== 1) throw new UsageError(`run: give one grid file or preset (usage: tinyquant run ${RUN.synopsis})`);
  const common = { grid: args.positionals[0], scale: scaleOption(args), dataDir: str(args, 'data-dir'), start: str(args, 'start') };
  const json = flag(args, 'json');
  if (flag(args, 'dry-run')) {
    const plan = planGrid(common);
    checkStarts(plan);
    console.log(json ? JSON.stringify(planJson(plan)) : describePlan(plan));
    return;
  }
  const result = await runGrid({
    ...common,
    out: str(args, 'out'),
    jobs: optionalInt(args, 'jobs'),
    threads: optionalInt(args, 'threads'),
    retryFailed: flag(args, 'retry-failed'),
    report: !flag(args, 'no-report'),
    queue: queueOption(args),
  });
  if (json) {
    console.log(JSON.stringify(outcomeJson(result)));
    process.exitCode = outcomeExitCode(result);
  } else {
    printOutcome(result);
  }
}

/** The queue of `--queue URL`, or undefined when the option is absent. */
export function queueOption(args: ParsedArgs): QueueAddress | undefined {
  const url = str(args, 'queue');
  return url === undefined ? undefined : parseQueueUrl(url);
}

/** The plan as `run --dry-run --json` prints it. */
export function planJson(plan: Plan): { grid: string; scale: Scale; runs: { id: string; kind: string; dependsOn: readonly string[] }[] } {
  return { grid: plan.grid.name, scale: plan.scale, runs: plan.runs.map((r) => ({ id: r.id, kind: r.kind, dependsOn: r.dependsOn })) };
}

/** The outcome as `run --json` prints it: where things are and every run's status and result. */
export function outcomeJson(result: RunGridResult): Record<string, unknown> {
  const { index, interrupted, ran, skipped } = result.summary;
  return {
    grid: result.plan.grid.name,
    scale: result.plan.scale,
    resultsDir: result.resultsDir,
    interrupted,
    ran,
    skipped,
    runs: index.runs.map((r) => ({ id: r.id, status: r.status, dir: r.dir, outcome: r.outcome ?? null, error: r.error ?? null })),
    report: result.report ? { html: result.report.html, markdown: result.report.markdown, findings: result.report.findings } : null,
  };
}

/** 130 when stopped, 1 when a run did not finish, else 0. */
/** Failed, diverged and blocked runs, and those whose worker was killed (interrupted) or that wait for them (pending). */
function unfinishedRuns(result: RunGridResult): RunGridResult['summary']['index']['runs'] {
  return result.summary.index.runs.filter((r) => didNotFinish(r.status) || r.status === 'interrupted' || r.status === 'pending');
}

function outcomeExitCode(result: RunGridResult): number {
  if (result.summary.interrupted) return 130;
  return unfinishedRuns(result).length > 0 ? 1 : 0;
}

/** Where the results and the report are, and what did not finish; sets the exit code. */
export function printOutcome(result: RunGridResult): void {
  const runs = result.summary.index.runs;
  const failed = unfinishedRuns(result);
  process.exitCode = outcomeExitCode(result);
  if (result.summary.interrupted && result.summary.index.execution.queue) {
    console.log(`stopped following; the workers go on with the runs on ${result.summary.index.execution.queue}: run the same command again to follow them`);
    return;
  }
  if (result.summary.interrupted) {
    console.log(`stopped; ${result.resultsDir} keeps every checkpoint: run the same command again to resume`);
    return;
  }
  console.log(`results: ${result.resultsDir}`);
  if (result.report) console.log(`report: ${result.report.html}\n        ${result.report.markdown}`);
  if (failed.length > 0) {
    console.log(`${failed.length} of ${runs.length} runs did not finish: ${failed.map((r) => `${r.id} (${r.status})`).join(', ')}; see results.json (the same command again resumes interrupted ones, --retry-failed runs failed ones again)`);
  }
}
