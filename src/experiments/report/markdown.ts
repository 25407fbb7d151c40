/** The Markdown report: the same content as the HTML page, without the plots. */
import type { StudyAnalysis } from './analysis.js';
import { executionText } from '../results.js';
import type { ReportModel } from './model.js';
import { type Table, accuracyTable, costTable, fairnessSummaryTable, fingerprintTable, pivotTable, recipeLines, runsTable } from './tables.js';

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function markdownTable(t: Table): string {
  const align = t.header.map((_, i) => (t.numeric?.includes(i) ? '---:' : '---'));
  return [t.header, align, ...t.rows].map((row) => `| ${row.map(cell).join(' | ')} |`).join('\n');
}

export function renderMarkdown(report: ReportModel, analyses: ReadonlyMap<string, StudyAnalysis>): string {
  const { index } = report;
  const out: string[] = [`# ${index.grid.title}${report.scale ? ` — ${report.scale.label} scale` : ''}`, ''];
  if (report.scale) out.push(`> **${report.scale.label} scale** — ${report.scale.note}.`, '');
  if (index.grid.description) out.push(index.grid.description.trim(), '');
  out.push(
    `Grid \`${index.grid.name}\` (${index.grid.scale} scale) from ${index.grid.source || 'code'}; ${index.runs.length} runs, ` +
      `${executionText(index.execution)}. ` +
      `Report by tinyquant ${report.tinyquant}, ${report.generated}. Plots: report.html.`,
    '',
    '## Findings',
    '',
    ...report.findings.map((f) => `- ${f}`),
    '',
  );
  for (const s of report.studies) {
    const a = analyses.get(`${s.model}|${s.dataset}`);
    out.push(`## ${s.model} on ${s.dataset}`, '', ...recipeLines(s).map((l) => `- ${l}`), '');
    if (s.configs.some((c) => c.device.n > 0)) {
      out.push('### On device: the integer model\'s top-1 by method and bit-width (mean ± std over seeds)', '', markdownTable(pivotTable(s, 'device')), '');
    }
    out.push('### Final top-1 of the fake-quantized model by method and bit-width (mean ± std over seeds)', '', markdownTable(pivotTable(s)), '');
    out.push('### Accuracy', '', markdownTable(accuracyTable(s)), '');
    out.push(
      'Published numbers come with their own float baselines and training setups (spec §4.1); compare the drop from float (Δ), not absolute accuracy.',
      '',
    );
    if (a && a.costs.length) out.push('### Model size and bit-operations', '', markdownTable(costTable(a.costs)), '');
    if (a?.notes.length) out.push(...a.notes.map((n) => `- note: ${n}`), '');
  }
  out.push('## Fairness', '', fairnessText(report), '', markdownTable(fairnessSummaryTable(report.fairness)), '', markdownTable(fingerprintTable(report)), '');
  out.push('## Runs', '', markdownTable(runsTable(report)), '');
  return out.join('\n');
}

export function fairnessText(report: ReportModel): string {
  const rules = report.index.grid.fairness;
  const wanted = [rules.sameStart && 'the same starting weights (runs from the shared start)', rules.sameDataOrder && 'the same data order and augmentation'].filter(Boolean);
  return (
    `Hashes (sha256, first 12 hex digits) of each run's starting weights (float weights and batch-norm statistics before quantizer calibration), data order (every epoch's order and augmentation seed) and complete config. ` +
    (wanted.length ? `This grid requires, for every model/dataset/seed, ${wanted.join(' and ')} across methods.` : 'This grid does not require equal hashes across methods.')
  );
}
