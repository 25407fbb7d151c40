/**
 * `tinyquant demo` (what `npm start` runs): the kiots2023 study at its quick scale on CIFAR-10, from
 * the float ResNet-20 shipped with tinyquant; progress throughout, then the findings and where the
 * report is. Opens nothing. Running it again reuses what is done.
 */
import { UsageError, flag, parse, str } from './args.js';
import { optionalInt, printOutcome, runGrid } from './run.js';

export const DEMO_USAGE = `usage: tinyquant demo [--out DIR] [--jobs N] [--threads T] [--data-dir DIR]

Runs the kiots2023 preset at its quick scale (CIFAR-10, one seed, 2 epochs on a subset) from the
float model shipped with tinyquant (presets/kiots2023.yaml, "quick:"), writes the report and prints
where it is.
  --out DIR    results directory (default results/kiots2023-quick)`;

const DEMO_OPTIONS = {
  out: { type: 'string' },
  jobs: { type: 'string' },
  threads: { type: 'string' },
  'data-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function demoCommand(argv: string[]): Promise<void> {
  const args = parse('demo', argv, DEMO_OPTIONS);
  if (flag(args, 'help')) {
    console.log(DEMO_USAGE);
    return;
  }
  if (args.positionals.length > 0) throw new UsageError(`demo: unexpected argument "${args.positionals[0]}"\n${DEMO_USAGE}`);
  process.stderr.write(
    'tinyquant demo: APoT and EWGS against uniform, PACT and LSQ at W/A 2, 3 and 4 bits on CIFAR-10,\n' +
      'all from the shipped float ResNet-20 with one recipe (kiots2023 preset, QUICK scale: minutes, not the study).\n',
  );
  const result = await runGrid({
    grid: 'kiots2023',
    scale: 'quick',
    out: str(args, 'out'),
    jobs: optionalInt(args, 'jobs'),
    threads: optionalInt(args, 'threads'),
    dataDir: str(args, 'data-dir'),
  });
  if (result.report) {
    console.log('\nfindings:');
    for (const line of result.report.findings) console.log(`  - ${line}`);
    console.log('');
  }
  printOutcome(result);
}
