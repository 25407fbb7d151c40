/**
 * `writeReport(resultsDir)`: report.md and report.html (one self-contained page) in the results
 * directory, from its results.json and run directories.
 */
import { join, resolve } from 'node:path';
import { writeFileAtomic } from '../../io/index.js';
import { type StudyAnalysis, analyze } from './analysis.js';
import { renderHtml } from './html.js';
import { renderMarkdown } from './markdown.js';
import { buildReportModel } from './model.js';

export interface ReportOptions {
  /** Where report.md and report.html go (default: the results directory). */
  readonly outDir?: string;
  /** Load checkpoints for histograms and costs (default true). */
  readonly analysis?: boolean;
  readonly log?: (message: string) => void;
}

export interface WrittenReport {
  readonly markdown: string;
  readonly html: string;
  /** The generated findings (also in both files). */
  readonly findings: readonly string[];
}

export async function writeReport(resultsDir: string, opts: ReportOptions = {}): Promise<WrittenReport> {
  const dir = resolve(resultsDir);
  const report = buildReportModel(dir);
  const analyses: Map<string, StudyAnalysis> = opts.analysis === false ? new Map() : await analyze(report, opts.log);
  const outDir = resolve(opts.outDir ?? dir);
  const markdown = join(outDir, 'report.md');
  const html = join(outDir, 'report.html');
  writeFileAtomic(markdown, renderMarkdown(report, analyses));
  writeFileAtomic(html, renderHtml(report, analyses));
  return { markdown, html, findings: report.findings };
}
