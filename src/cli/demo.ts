/**
 * `tinyquant demo` (what `npm start` runs): the kiots2023 study at its quick scale on CIFAR-10, from
 * the float ResNet-20 shipped with tinyquant; progress throughout, then the findings and where the
 * report is. Opens nothing. Running it again reuses what is done.
 */
import { type CommandSpec, optionalInt, parseOrHelp, str, unexpectedArgument } from './args.js';
import { printOutcome, runGrid } from './run.js';

export const DEMO: CommandSpec = {
  name: 'demo',
  summary: 'the kiots2023 study at --quick scale from the shipped float model, with its report',
  synopsis: '[--out DIR] [--jobs N] [--threads T] [--data-dir DIR]',
  about:
    'Runs the kiots2023 preset at its quick scale (CIFAR-10, one seed, 2 epochs on a subset) from the\n' +
    'float model shipped with tinyquant (presets/kiots2023.yaml, "scales: quick:"), writes the report and prints where it is.',
  options: {
    out: { type: 'string', value: 'DIR', default: 'results/kiots2023-quick', description: 'results directory' },
    jobs: { type: 'string', value: 'N', description: 'runs at once (default: cores / --threads)' },
    threads: { type: 'string', value: 'T', description: 'backend threads per run (default 1, with one run per core)' },
    'data-dir': { type: 'string', value: 'DIR', description: 'where CIFAR-10 is (default: TINYQUANT_DATA, the cache, ../shared/data)' },
  },
};

export async function demoCommand(argv: string[]): Promise<void> {
  const args = parseOrHelp(DEMO, argv);
  if (!args) return;
  if (args.positionals.length > 0) throw unexpectedArgument(DEMO, args.positionals[0]);
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
