/** The HTML report: one self-contained page (inline CSS and SVG; no scripts, nothing fetched). */
import type { GridMethod } from '../grid.js';
import { executionText } from '../results.js';
import type { HistogramPanel, StudyAnalysis } from './analysis.js';
import { fairnessText } from './markdown.js';
import type { ConfigSummary, ReportModel, Study } from './model.js';
import { type LinePoint, escapeXml as esc, histogramChart, lineChart, methodColor } from './svg.js';
import { type Table, accuracyTable, costTable, fairnessSummaryTable, fingerprintTable, pivotTable, recipeLines, runsTable } from './tables.js';

const CSS = `
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 20px 40px; color: #1d1d1f; line-height: 1.45; }
h1 { margin: 18px 0 6px; font-size: 26px; } h2 { margin-top: 34px; border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { margin-top: 22px; }
.scale { background: #fff3c4; border: 2px solid #e0a800; padding: 10px 14px; border-radius: 6px; font-weight: 600; margin: 10px 0; }
.meta { color: #555; font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
th, td { border: 1px solid #d6d6d6; padding: 3px 8px; vertical-align: top; }
th { background: #f3f4f6; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.status-failed td, tr.status-diverged td, tr.status-blocked td { background: #fde8e8; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; } .charts svg { border: 1px solid #eee; }
.hist { display: grid; gap: 4px; overflow-x: auto; } .hist .label { font-size: 12px; font-weight: 600; align-self: center; }
nav a { margin-right: 12px; font-size: 14px; } code { background: #f3f4f6; padding: 0 3px; }
ul.findings li { margin: 4px 0; }
`;

function htmlTable(t: Table, rowClass?: (row: readonly string[]) => string): string {
  const head = `<tr>${t.header.map((h) => `<th>${esc(h)}</th>`).join('')}</tr>`;
  const body = t.rows
    .map((row) => `<tr${rowClass ? ` class="${rowClass(row)}"` : ''}>${row.map((c, i) => `<td${t.numeric?.includes(i) ? ' class="num"' : ''}>${esc(c)}</td>`).join('')}</tr>`)
    .join('');
  return `<table>${head}${body}</table>`;
}

function ascendingBits(s: Study): string[] {
  return [...s.bitLabels].reverse();
}

function accuracyVsBits(s: Study): string {
  const labels = ascendingBits(s);
  const xTicks = labels.map((label, i) => ({ value: i, label }));
  /** A method's final top-1 per bit-width, shifted by `minus` (0, or the float baseline for drops). */
  const finalPoints = (m: GridMethod, minus: number): LinePoint[] =>
    s.configs.filter((c) => c.method === m && c.final.n > 0).map((c) => ({ x: labels.indexOf(c.bits), y: c.final.mean - minus, err: c.final.std }));
  const series = s.methods.map((m) => ({ name: m, color: methodColor(m), points: finalPoints(m, 0) }));
  const refLines = s.float ? [{ y: s.float.top1, label: `float ${s.float.top1.toFixed(2)}`, color: methodColor('float') }] : [];
  const absolute = lineChart({ title: `${s.model} / ${s.dataset}: final top-1 vs bit-width (mean ± std)`, xLabel: 'bit-width (weights/activations)', yLabel: 'test top-1 %', series, xTicks, refLines, width: 480 });
  if (!s.float) return absolute;
  const float = s.float.top1;
  const drops = s.methods.flatMap((m) => {
    const ours = { name: `${m} (ours)`, color: methodColor(m), points: finalPoints(m, float) };
    const theirs = s.configs
      .filter((c) => c.method === m)
      .flatMap((c) => c.published.map((p) => ({ source: p.result.source, x: labels.indexOf(c.bits), y: p.top1 - p.result.float })));
    const sources = [...new Set(theirs.map((t) => t.source))];
    return [ours, ...sources.map((src) => ({ name: `${m}: ${src}`, color: methodColor(m), dashed: true, points: theirs.filter((t) => t.source === src) }))];
  });
  const relative = lineChart({
    title: 'drop from each one\'s own float baseline',
    xLabel: 'bit-width',
    yLabel: 'top-1 minus float (points)',
    series: drops.filter((d) => d.points.length > 0),
    xTicks,
    refLines: [{ y: 0, label: 'float', color: methodColor('float') }],
    width: 560,
  });
  return absolute + relative;
}

/** Mean over seeds of a per-epoch metric. */
function epochMeans(c: ConfigSummary, pick: (m: { testTop1: number | null; testLoss: number | null; trainLoss: number }) => number | null): { x: number; y: number }[] {
  const byEpoch = new Map<number, number[]>();
  for (const r of c.runs) {
    for (const m of r.metrics) {
      const v = pick(m);
      if (v !== null && Number.isFinite(v)) byEpoch.set(m.epoch, [...(byEpoch.get(m.epoch) ?? []), v]);
    }
  }
  return [...byEpoch].map(([e, vs]) => ({ x: e + 1, y: vs.reduce((a, b) => a + b, 0) / vs.length }));
}

function trainingCurves(s: Study): string {
  return s.bitLabels
    .map((bits) => {
      const configs = s.configs.filter((c) => c.bits === bits);
      const acc = lineChart({
        title: `${bits}: test top-1 per epoch`,
        xLabel: 'epoch',
        integerX: true,
        yLabel: 'top-1 %',
        series: configs.map((c) => ({ name: c.method, color: methodColor(c.method), points: epochMeans(c, (m) => m.testTop1) })),
        refLines: s.float ? [{ y: s.float.top1, label: 'float', color: methodColor('float') }] : [],
        width: 400,
      });
      const loss = lineChart({
        title: `${bits}: loss per epoch (solid test, dashed train)`,
        xLabel: 'epoch',
        integerX: true,
        yLabel: 'cross-entropy',
        series: configs.flatMap((c) => [
          { name: `${c.method} test`, color: methodColor(c.method), points: epochMeans(c, (m) => m.testLoss) },
          { name: `${c.method} train`, color: methodColor(c.method), dashed: true, points: epochMeans(c, (m) => m.trainLoss) },
        ]),
        width: 400,
      });
      return `<div class="charts">${acc}${loss}</div>`;
    })
    .join('');
}

function histogramGrid(s: Study, panels: readonly HistogramPanel[], role: HistogramPanel['role']): string {
  const mine = panels.filter((p) => p.role === role);
  if (mine.length === 0) return '';
  const methods = s.methods.filter((m) => mine.some((p) => p.method === m));
  const cells = s.bitLabels.flatMap((bits) => [
    `<div class="label">${esc(bits)}</div>`,
    ...methods.map((m) => {
      const p = mine.find((x) => x.method === m && x.bits === bits);
      if (!p) return '<div></div>';
      return histogramChart({
        title: `${m} ${bits}: ${p.levelCount} levels, ${(100 * p.clipped).toFixed(1)}% clip`,
        xLabel: p.domain,
        lo: p.lo,
        hi: p.hi,
        counts: p.counts,
        levels: p.levels,
        clip: p.clip,
        color: methodColor(m),
      });
    }),
  ]);
  const layer = mine[0].layer;
  return (
    `<h4>${role === 'weight' ? 'Weights' : 'Input activations'} of ${esc(layer)} (final checkpoint of the first seed; coloured lines: quantization levels, dashed: clipping bounds; clip: share of non-zero values beyond them)</h4>` +
    `<div class="hist" style="grid-template-columns: 60px repeat(${methods.length}, 234px)"><div></div>${methods.map((m) => `<div class="label">${esc(m)}</div>`).join('')}${cells.join('')}</div>`
  );
}

function costSection(s: Study, a: StudyAnalysis): string {
  if (a.costs.length === 0) return '';
  const series = s.methods.map((m) => ({
    name: m,
    color: methodColor(m),
    points: s.configs
      .filter((c) => c.method === m && c.final.n > 0)
      .map((c) => ({ x: (a.costs.find((r) => r.method === m && r.bits === c.bits)?.storedBytes ?? NaN) / 1024, y: c.final.mean, err: c.final.std }))
      .filter((p) => Number.isFinite(p.x)),
  }));
  const floatCost = a.costs.find((r) => r.method === 'float');
  if (s.float && floatCost) series.push({ name: 'float', color: methodColor('float'), points: [{ x: floatCost.storedBytes / 1024, y: s.float.top1, err: null }] });
  const chart = lineChart({ title: 'final top-1 vs stored model size', xLabel: 'stored model (KiB)', yLabel: 'test top-1 %', series, markersOnly: true, width: 480 });
  return `<h3>Model size and bit-operations</h3><div class="charts">${chart}</div>${htmlTable(costTable(a.costs))}<p class="meta">Packed weights at each layer's bit-width (first/last layers at theirs), everything else (batch norm, biases, quantizer scalars) as float32; bit-operations = MACs x weight bits x input bits.</p>`;
}

function studySection(s: Study, a: StudyAnalysis | undefined, i: number): string {
  const parts = [
    `<h2 id="study-${i}">${esc(s.model)} on ${esc(s.dataset)}</h2>`,
    `<ul>${recipeLines(s).map((l) => `<li>${esc(l)}</li>`).join('')}</ul>`,
    ...(s.configs.some((c) => c.device.n > 0) ? [`<h3>On device: the integer model's top-1 by method and bit-width (mean ± std over seeds)</h3>${htmlTable(pivotTable(s, 'device'))}`] : []),
    `<h3>Final top-1 of the fake-quantized model by method and bit-width (mean ± std over seeds)</h3>${htmlTable(pivotTable(s))}`,
    `<div class="charts">${accuracyVsBits(s)}</div>`,
    `<h3>Accuracy: final and best epoch, against our float and the published numbers</h3>${htmlTable(accuracyTable(s))}`,
    '<p class="meta">Published numbers come with their own float baselines and training setups (spec §4.1): compare the drop from float (Δ), not absolute accuracy. ' +
      'On a JPEG-compressed copy of CIFAR-10, absolute accuracy is several points lower than on the exact images.</p>',
    `<h3>Training curves (mean over seeds)</h3>${trainingCurves(s)}`,
  ];
  if (a) {
    parts.push(`<h3>What the quantizers see</h3>${histogramGrid(s, a.histograms, 'weight')}${histogramGrid(s, a.histograms, 'activation')}`);
    parts.push(costSection(s, a));
    if (a.notes.length) parts.push(`<ul class="meta">${a.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>`);
  }
  return parts.join('\n');
}

export function renderHtml(report: ReportModel, analyses: ReadonlyMap<string, StudyAnalysis>): string {
  const { index } = report;
  const title = `${index.grid.title}${report.scale ? ` — ${report.scale.label} scale` : ''}`;
  const nav = [
    '<a href="#findings">Findings</a>',
    ...report.studies.map((s, i) => `<a href="#study-${i}">${esc(s.model)} / ${esc(s.dataset)}</a>`),
    '<a href="#fairness">Fairness</a>',
    '<a href="#runs">Runs</a>',
  ].join('');
  const body = [
    `<h1>${esc(title)}</h1>`,
    report.scale ? `<div class="scale">${esc(report.scale.label)} scale — ${esc(report.scale.note)}.</div>` : '',
    index.grid.description ? `<p>${esc(index.grid.description.trim())}</p>` : '',
    `<p class="meta">Grid <code>${esc(index.grid.name)}</code> (${esc(index.grid.scale)} scale) from ${esc(index.grid.source || 'code')}; ${index.runs.length} runs, ` +
      `${executionText(index.execution)}. Report by tinyquant ${esc(report.tinyquant)}, ${esc(report.generated)}.</p>`,
    `<nav>${nav}</nav>`,
    `<h2 id="findings">Findings</h2><ul class="findings">${report.findings.map((f) => `<li>${esc(f)}</li>`).join('')}</ul>`,
    ...report.studies.map((s, i) => studySection(s, analyses.get(`${s.model}|${s.dataset}`), i)),
    `<h2 id="fairness">Fairness</h2><p>${esc(fairnessText(report))}</p>${htmlTable(fairnessSummaryTable(report.fairness))}${htmlTable(fingerprintTable(report))}`,
    `<h2 id="runs">Runs</h2>${htmlTable(runsTable(report), (row) => `status-${row[1]}`)}`,
  ];
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">` +
    `<title>${esc(title)}</title><style>${CSS}</style></head><body>\n${body.join('\n')}\n</body></html>\n`;
}
