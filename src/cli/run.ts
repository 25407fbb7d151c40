/**
 * `tinyquant run GRID`: run an experiment grid (a file or a preset) into a results directory, then
 * write its report. Re-running skips finished runs and resumes interrupted ones.
 */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { gridDisplay } from '../experiments/display.js';
import { DataPreparationError, type ExecuteSummary, executePlan } from '../experiments/executor.js';
import { type Plan, type Scale, expandGrid, readGrid } from '../experiments/grid.js';
import { defaultDataDir } from '../experiments/paths.js';
import { type WrittenReport, writeReport } from '../experiments/report/index.js';
import { ResultsError, didNotFinish } from '../experiments/results.js';
import { StartError, checkStarts } from '../experiments/starts.js';
import { ConfigError } from '../train/config.js';
import { type ParsedArgs, UsageError, flag, num, parse, str } from './args.js';

export const RUN_USAGE = `usage: tinyquant run GRID [--quick] [--out DIR] [options]

GRID is a grid file (YAML or JSON) or a preset: kiots2023, apot-reference, ewgs-reference, float-resnet20.

options:
  --quick            the grid's quick scale (fewer epochs, subsets; labelled quick in the results)
  --out DIR          results directory (default results/NAME, or results/NAME-quick)
  --jobs N           runs at once (default: see --threads)
  --threads T        backend threads per run (default 1, with one run per core)
  --data-dir DIR     where the datasets are (default: TINYQUANT_DATA, the cache, ../shared/data)
  --start FILE       the checkpoint every checkpoint start of the grid begins from
  --retry-failed     run failed and diverged runs again
  --dry-run          list the runs and exit
  --no-report        do not write the report at the end`;

const RUN_OPTIONS = {
  quick: { type: 'boolean' },
  out: { type: 'string' },
  jobs: { type: 'string' },
  threads: { type: 'string' },
  'data-dir': { type: 'string' },
  start: { type: 'string' },
  'retry-failed': { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  'no-report': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * Runs at once and threads per run: one single-threaded run per core by default (two runs with one
 * thread each train faster in total than one after the other with two; see the report of issue 5).
 */
export function defaultExecution(cores: number, requested: { jobs?: number; threads?: number }): { jobs: number; threads: number } {
  const threads = requested.threads ?? (requested.jobs !== undefined ? Math.max(1, Math.floor(cores / requested.jobs)) : 1);
  const jobs = requested.jobs ?? Math.max(1, Math.floor(cores / threads));
  if (jobs * threads > cores) throw new UsageError(`--jobs ${jobs} x --threads ${threads} is more than the ${cores} cores of this machine`);
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
}

export interface RunGridResult {
  readonly plan: Plan;
  readonly resultsDir: string;
  readonly summary: ExecuteSummary;
  readonly report: WrittenReport | null;
}

/** Plan a grid (checked, starts present) without running anything. */
export function planGrid(opts: Pick<RunGridOptions, 'grid' | 'scale' | 'dataDir' | 'start'>): Plan {
  try {
    const grid = readGrid(opts.grid);
    const dataDir = opts.dataDir !== undefined ? resolve(opts.dataDir) : defaultDataDir();
    const plan = expandGrid(grid, { scale: opts.scale, dataDir, startCheckpoint: opts.start === undefined ? undefined : resolve(opts.start) });
    checkStarts(plan);
    return plan;
  } catch (e) {
    if (e instanceof ConfigError || e instanceof StartError) throw new UsageError(e.message);
    throw e;
  }
}

export function defaultResultsDir(plan: Plan): string {
  return resolve('results', `${plan.grid.name}${plan.scale === 'quick' ? '-quick' : ''}`);
}

export async function runGrid(opts: RunGridOptions): Promise<RunGridResult> {
  const plan = planGrid(opts);
  const resultsDir = opts.out !== undefined ? resolve(opts.out) : defaultResultsDir(plan);
  const { jobs, threads } = defaultExecution(availableParallelism(), { jobs: opts.jobs, threads: opts.threads });
  const stream = opts.stream ?? process.stderr;
  const display = gridDisplay(stream);
  let summary: ExecuteSummary;
  try {
    summary = await executePlan(plan, { resultsDir, jobs, threads, retryFailed: opts.retryFailed, observer: display });
  } catch (e) {
    if (e instanceof ResultsError || e instanceof DataPreparationError) throw new UsageError(e.message);
    throw e;
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

/** A positive integer option, or undefined when it is not given. */
export function optionalInt(args: ParsedArgs, name: string): number | undefined {
  return str(args, name) === undefined ? undefined : num(args, name, 1, { integer: true, min: 1 });
}

export async function runCommand(argv: string[]): Promise<void> {
  const args = parse('run', argv, RUN_OPTIONS);
  if (flag(args, 'help')) {
    console.log(RUN_USAGE);
    return;
  }
  if (args.positionals.length !== 1) throw new UsageError(`run: give one grid file or preset\n${RUN_USAGE}`);
  const common = { grid: args.positionals[0], scale: (flag(args, 'quick') ? 'quick' : 'full') as Scale, dataDir: str(args, 'data-dir'), start: str(args, 'start') };
  if (flag(args, 'dry-run')) {
    console.log(describePlan(planGrid(common)));
    return;
  }
  const result = await runGrid({
    ...common,
    out: str(args, 'out'),
    jobs: optionalInt(args, 'jobs'),
    threads: optionalInt(args, 'threads'),
    retryFailed: flag(args, 'retry-failed'),
    report: !flag(args, 'no-report'),
  });
  printOutcome(result);
}

/** Where the results and the report are, and what did not finish; sets the exit code. */
export function printOutcome(result: RunGridResult): void {
  const runs = result.summary.index.runs;
  // Failed, diverged and blocked runs, and those whose worker was killed (interrupted) or that wait for them (pending).
  const failed = runs.filter((r) => didNotFinish(r.status) || r.status === 'interrupted' || r.status === 'pending');
  if (result.summary.interrupted) {
    console.log(`stopped; ${result.resultsDir} keeps every checkpoint: run the same command again to resume`);
    process.exitCode = 130;
    return;
  }
  console.log(`results: ${result.resultsDir}`);
  if (result.report) console.log(`report: ${result.report.html}\n        ${result.report.markdown}`);
  if (failed.length > 0) {
    console.log(`${failed.length} of ${runs.length} runs did not finish: ${failed.map((r) => `${r.id} (${r.status})`).join(', ')}; see results.json (the same command again resumes interrupted ones, --retry-failed runs failed ones again)`);
    process.exitCode = 1;
  }
}
