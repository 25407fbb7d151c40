/** `tinyquant report RESULTS_DIR`: write report.md and report.html for a results directory (--json: what it wrote). */
import { mkdirSync } from 'node:fs';
import { writeReport } from '../experiments/report/index.js';
import { type CommandSpec, UsageError, flag, parseOrHelp, str } from './args.js';
import { readingInput } from './errors.js';

export const REPORT: CommandSpec = {
  name: 'report',
  summary: 'render a results directory as Markdown and one self-contained HTML page',
  synopsis: 'RESULTS_DIR [--out DIR] [--no-analysis] [--json]',
  about: 'Writes report.md and report.html (one self-contained page) into RESULTS_DIR (or --out DIR).',
  options: {
    out: { type: 'string', value: 'DIR', description: 'where to write the report (default: RESULTS_DIR)' },
    'no-analysis': { type: 'boolean', description: 'leave out what needs the checkpoints (histograms, model size and bit-operations)' },
    json: { type: 'boolean', description: 'print the written files and the findings as JSON' },
  },
};

export async function reportCommand(argv: string[]): Promise<void> {
  const args = parseOrHelp(REPORT, argv);
  if (!args) return;
  if (args.positionals.length !== 1) throw new UsageError(`report: give one results directory (usage: tinyquant report ${REPORT.synopsis})`);
  const outDir = str(args, 'out');
  if (outDir !== undefined) mkdirSync(outDir, { recursive: true });
  // Everything a report does is reading the results directory (and its checkpoints).
  const written = await readingInput(() => writeReport(args.positionals[0], {
    outDir,
    analysis: !flag(args, 'no-analysis'),
    log: (m) => process.stderr.write(`${m}\n`),
  }));
  if (flag(args, 'json')) console.log(JSON.stringify(written));
  else console.log(`report: ${written.html}\n        ${written.markdown}`);
}
