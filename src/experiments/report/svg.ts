/**
 * Small inline-SVG charts for the report (no scripts, no external resources): line charts with
 * optional error bars and reference lines (also used as scatter plots), and histograms with
 * quantization levels and clipping bounds drawn over them.
 */

export const METHOD_COLORS: Readonly<Record<string, string>> = {
  float: '#444444',
  apot: '#1f77b4',
  ewgs: '#d62728',
  uniform: '#8c6d31',
  pact: '#2ca02c',
  lsq: '#9467bd',
};

export function methodColor(method: string): string {
  return METHOD_COLORS[method] ?? '#17becf';
}

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const FONT = 'font-family="system-ui, sans-serif"';

/** About `count` round tick values covering [min, max]. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) return [min];
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function formatTick(v: number): string {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

interface Frame {
  readonly width: number;
  readonly height: number;
  readonly left: number;
  readonly right: number;
  readonly top: number;
  readonly bottom: number;
}

function frame(width: number, height: number, legendRows = 0): Frame {
  return { width, height, left: 52, right: 12, top: 26 + legendRows * 16, bottom: 40 };
}

function scale(domain: [number, number], range: [number, number]): (v: number) => number {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  return (v) => r0 + ((v - d0) / (d1 - d0 || 1)) * (r1 - r0);
}

function svgOpen(f: Frame, title: string): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${f.width} ${f.height}" width="${f.width}" height="${f.height}" role="img" aria-label="${escapeXml(title)}">` +
    `<title>${escapeXml(title)}</title><rect width="100%" height="100%" fill="#fff"/>` +
    `<text x="${f.width / 2}" y="14" text-anchor="middle" font-size="12" font-weight="600" ${FONT}>${escapeXml(title)}</text>`
  );
}

function axes(f: Frame, x: (v: number) => number, y: (v: number) => number, xTicks: { value: number; label: string }[], yTicks: number[], xLabel: string, yLabel: string): string {
  const parts: string[] = [];
  const [x0, x1, y0, y1] = [f.left, f.width - f.right, f.height - f.bottom, f.top];
  for (const t of yTicks) {
    parts.push(`<line x1="${x0}" x2="${x1}" y1="${y(t)}" y2="${y(t)}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${x0 - 4}" y="${y(t) + 3}" text-anchor="end" font-size="10" ${FONT}>${escapeXml(formatTick(t))}</text>`);
  }
  for (const t of xTicks) {
    parts.push(`<line x1="${x(t.value)}" x2="${x(t.value)}" y1="${y0}" y2="${y0 + 4}" stroke="#333"/>`);
    parts.push(`<text x="${x(t.value)}" y="${y0 + 15}" text-anchor="middle" font-size="10" ${FONT}>${escapeXml(t.label)}</text>`);
  }
  parts.push(`<line x1="${x0}" x2="${x1}" y1="${y0}" y2="${y0}" stroke="#333"/><line x1="${x0}" x2="${x0}" y1="${y0}" y2="${y1}" stroke="#333"/>`);
  parts.push(`<text x="${(x0 + x1) / 2}" y="${f.height - 6}" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(xLabel)}</text>`);
  parts.push(`<text transform="translate(12 ${(y0 + y1) / 2}) rotate(-90)" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(yLabel)}</text>`);
  return parts.join('');
}

function legend(f: Frame, items: { name: string; color: string; dashed?: boolean }[]): string {
  const perRow = Math.max(1, Math.floor((f.width - f.left) / 110));
  return items
    .map((item, i) => {
      const lx = f.left + (i % perRow) * 110;
      const ly = 24 + Math.floor(i / perRow) * 16;
      return (
        `<line x1="${lx}" x2="${lx + 16}" y1="${ly}" y2="${ly}" stroke="${item.color}" stroke-width="2.5"${item.dashed ? ' stroke-dasharray="5 3"' : ''}/>` +
        `<text x="${lx + 20}" y="${ly + 4}" font-size="10" ${FONT}>${escapeXml(item.name)}</text>`
      );
    })
    .join('');
}

export interface LinePoint {
  readonly x: number;
  readonly y: number;
  /** Half-height of an error bar (e.g. the standard deviation over seeds). */
  readonly err?: number | null;
}

export interface LineSeries {
  readonly name: string;
  readonly color: string;
  readonly points: readonly LinePoint[];
  readonly dashed?: boolean;
}

export interface LineChartOptions {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly LineSeries[];
  /** Categorical or custom x ticks (default: round numbers). */
  readonly xTicks?: readonly { value: number; label: string }[];
  /** Horizontal reference lines (e.g. the float baseline). */
  readonly refLines?: readonly { y: number; label: string; color: string }[];
  /** Markers only (a scatter plot). */
  readonly markersOnly?: boolean;
  /** Only whole numbers on the x axis (epochs). */
  readonly integerX?: boolean;
  readonly width?: number;
  readonly height?: number;
}

export function lineChart(o: LineChartOptions): string {
  const items = [...o.series.filter((s) => s.points.length > 0).map((s) => ({ name: s.name, color: s.color, dashed: s.dashed })), ...(o.refLines ?? []).map((r) => ({ name: r.label, color: r.color, dashed: true }))];
  const width = o.width ?? 420;
  const f = frame(width, o.height ?? 260, Math.ceil(items.length / Math.max(1, Math.floor((width - 52) / 110))));
  const points = o.series.flatMap((s) => s.points);
  const ys = [...points.flatMap((p) => [p.y - (p.err ?? 0), p.y + (p.err ?? 0)]), ...(o.refLines ?? []).map((r) => r.y)].filter(Number.isFinite);
  const xs = [...points.map((p) => p.x), ...(o.xTicks ?? []).map((t) => t.value)].filter(Number.isFinite);
  if (ys.length === 0 || xs.length === 0) return `${svgOpen(f, o.title)}<text x="${f.width / 2}" y="${f.height / 2}" text-anchor="middle" font-size="11" ${FONT}>no data</text></svg>`;
  let [yMin, yMax] = [Math.min(...ys), Math.max(...ys)];
  const yPad = (yMax - yMin) * 0.08 || Math.max(1, Math.abs(yMax) * 0.05);
  [yMin, yMax] = [yMin - yPad, yMax + yPad];
  let [xMin, xMax] = [Math.min(...xs), Math.max(...xs)];
  const xPad = (xMax - xMin) * 0.06 || 0.5;
  [xMin, xMax] = [xMin - xPad, xMax + xPad];
  const x = scale([xMin, xMax], [f.left, f.width - f.right]);
  const y = scale([yMin, yMax], [f.height - f.bottom, f.top]);
  const xTicks = o.xTicks ? [...o.xTicks] : niceTicks(xMin, xMax).filter((v) => !o.integerX || Number.isInteger(v)).map((v) => ({ value: v, label: formatTick(v) }));
  const parts = [svgOpen(f, o.title), axes(f, x, y, xTicks, niceTicks(yMin, yMax), o.xLabel, o.yLabel), legend(f, items)];
  for (const r of o.refLines ?? []) {
    parts.push(`<line x1="${f.left}" x2="${f.width - f.right}" y1="${y(r.y)}" y2="${y(r.y)}" stroke="${r.color}" stroke-width="1.5" stroke-dasharray="5 3"/>`);
  }
  for (const s of o.series) {
    const pts = [...s.points].filter((p) => Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    if (!o.markersOnly && pts.length > 1) {
      parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''} points="${pts.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(' ')}"/>`);
    }
    for (const p of pts) {
      if (p.err) parts.push(`<line x1="${x(p.x)}" x2="${x(p.x)}" y1="${y(p.y - p.err)}" y2="${y(p.y + p.err)}" stroke="${s.color}" stroke-width="1.5"/>`);
      parts.push(`<circle cx="${x(p.x).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="3" fill="${s.color}"><title>${escapeXml(`${s.name}: ${p.y.toFixed(2)}${p.err ? ` ± ${p.err.toFixed(2)}` : ''}`)}</title></circle>`);
    }
  }
  parts.push('</svg>');
  return parts.join('');
}

export interface HistogramChartOptions {
  readonly title: string;
  readonly xLabel: string;
  readonly lo: number;
  readonly hi: number;
  readonly counts: readonly number[];
  readonly levels: readonly number[];
  readonly clip: readonly [number | null, number | null];
  readonly color: string;
  readonly width?: number;
  readonly height?: number;
}

/** Counts on a log scale (log10(1 + count)) so that a spike at zero does not hide the rest. */
export function histogramChart(o: HistogramChartOptions): string {
  const f = { ...frame(o.width ?? 232, o.height ?? 170), left: 34, top: 22 };
  const x = scale([o.lo, o.hi], [f.left, f.width - f.right]);
  const heights = o.counts.map((c) => Math.log10(1 + c));
  const top = Math.max(1e-9, ...heights);
  const y = scale([0, top], [f.height - f.bottom, f.top]);
  const binWidth = (o.hi - o.lo) / o.counts.length;
  const parts = [svgOpen(f, o.title), axes(f, x, y, niceTicks(o.lo, o.hi, 4).map((v) => ({ value: v, label: formatTick(v) })), [], o.xLabel, 'log count')];
  heights.forEach((h, i) => {
    if (h <= 0) return;
    const x0 = x(o.lo + i * binWidth);
    parts.push(`<rect x="${x0.toFixed(1)}" y="${y(h).toFixed(1)}" width="${Math.max(0.5, x(o.lo + (i + 1) * binWidth) - x0 - 0.3).toFixed(1)}" height="${(y(0) - y(h)).toFixed(1)}" fill="#b9c4d0"/>`);
  });
  for (const level of o.levels.slice(0, 256)) {
    parts.push(`<line x1="${x(level).toFixed(1)}" x2="${x(level).toFixed(1)}" y1="${f.top}" y2="${f.height - f.bottom}" stroke="${o.color}" stroke-width="1.2" opacity="0.85"/>`);
  }
  for (const bound of o.clip) {
    if (bound !== null && bound >= o.lo && bound <= o.hi) {
      parts.push(`<line x1="${x(bound).toFixed(1)}" x2="${x(bound).toFixed(1)}" y1="${f.top}" y2="${f.height - f.bottom}" stroke="#000" stroke-width="1" stroke-dasharray="3 2"/>`);
    }
  }
  parts.push('</svg>');
  return parts.join('');
}
