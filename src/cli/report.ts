/** `tinyquant report RESULTS_DIR`: write report.md and report.html for a results directory. */
import { writeReport } from '../experiments/report/index.js';
import { ResultsError } from '../experiments/results.js';
import { UsageError, flag, parse, str } from './args.js';

export const REPORT_USAGE = `usage: tinyquant report RESULTS_DIR [--out DIR] [--no-analysis]

Writes report.md and report.html (one self-contained page) into RESULTS_DIR (or --out DIR).
  --no-analysis   leave out what needs the checkpoints (histograms, model size and bit-operations)`;

const REPORT_OPTIONS = {
  out: { type: 'string' },
  'no-analysis': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function reportCommand(argv: string[]): Promise<void> {
  const args = parse('report', argv, REPORT_OPTIONS);
  if (flag(args, 'help')) {
    console.log(REPORT_USAGE);
    return;
  }
  if (args.positionals.length !== 1) throw new UsageError(`report: give one results directory\n${REPORT_USAGE}`);
  try {
    const written = await writeReport(args.positionals[0], {
      outDir: str(args, 'out'),
      analysis: !flag(args, 'no-analysis'),
      log: (m) => process.stderr.write(`${m}\n`),
    });
    console.log(`report: ${written.html}\n        ${written.markdown}`);
  } catch (e) {
    if (e instanceof ResultsError) throw new UsageError(e.message);
    throw e;
  }
}
