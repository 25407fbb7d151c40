import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { executePlan } from '../src/experiments/executor.js';
import { expandGrid, parseGrid } from '../src/experiments/grid.js';
import { packageRoot } from '../src/package.js';
import { reportCommand } from '../src/cli/report.js';
import { writeReport } from '../src/experiments/report/index.js';
import { buildReportModel } from '../src/experiments/report/model.js';
import { resolveConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { cifar10Folder, cifarRecords, tempDir } from './fixtures/data/make.js';

const CHROMIUM = '/usr/bin/chromium';

let root: { dir: string; cleanup: () => void };
let resultsDir: string;

/**
 * The fixture: a float resnet8 trained on 40 tiny images, then a quick grid of two methods at two
 * bit-widths and two seeds starting from it (plus the evaluation of the start), as `run` makes it.
 */
before(async () => {
  root = tempDir('tq-report-');
  const dataDir = cifar10Folder(join(root.dir, 'data'), (i) => cifarRecords(Array.from({ length: 8 }, (_, r) => [(r * 7 + i) % 10]), i * 50), cifarRecords(Array.from({ length: 16 }, (_, r) => [r % 10]), 3));
  const floatDir = join(root.dir, 'float');
  await train({ config: resolveConfig({ model: 'resnet8', dataset: 'cifar10', dataDir, batch: 8, epochs: 1, workers: 0 }), outDir: floatDir, handleSignals: false });
  const grid = parseGrid(
    {
      name: 'report-fixture',
      title: 'Report fixture',
      models: ['resnet8'],
      datasets: ['cifar10'],
      methods: ['ewgs', 'lsq'],
      bits: [4, 2],
      seeds: [0, 1],
      recipe: { epochs: 3, batch: 8, evalBatch: 16, lr: 0.02, workers: 1 },
      start: [{ model: 'resnet8', dataset: 'cifar10', checkpoint: join(floatDir, 'last.json') }],
      scales: { quick: { recipe: { epochs: 2 }, note: 'two epochs on 40 images' } },
    },
    'fixture.yaml',
    root.dir,
  );
  resultsDir = join(root.dir, 'results');
  await executePlan(expandGrid(grid, { scale: 'quick', dataDir }), { resultsDir, jobs: 2, threads: 1, handleSignals: false });
});
after(() => root.cleanup());

describe('report', () => {
  test('the model: float baseline, mean ± std over seeds, fairness hashes equal across methods', () => {
    const report = buildReportModel(resultsDir);
    assert.deepEqual(report.scale, { label: 'QUICK', note: 'two epochs on 40 images' });
    const [study] = report.studies;
    assert.equal(study.float?.runId, 'resnet8-cifar10-float-start');
    assert.equal(study.float?.n, 16);
    assert.deepEqual(study.bitLabels, ['W4A4', 'W2A2']);
    const lsq4 = study.configs.find((c) => c.method === 'lsq' && c.bits === 'W4A4')!;
    assert.equal(lsq4.final.n, 2);
    const finals = lsq4.runs.map((r) => r.outcome!.top1);
    assert.equal(lsq4.final.mean, (finals[0] + finals[1]) / 2);
    // The sample std of two values; the report sums squares, so equal up to float rounding.
    assert.ok(Math.abs(lsq4.final.std! - Math.abs(finals[0] - finals[1]) / Math.SQRT2) < 1e-12, `std ${lsq4.final.std}`);
    assert.equal(report.fairness.length, 2, 'one group per seed');
    for (const g of report.fairness) {
      assert.equal(g.runs.length, 4);
      assert.equal(g.sameStart, true, `seed ${g.seed}: every method starts from the same weights`);
      assert.equal(g.sameDataOrder, true);
    }
    assert.ok(report.findings.some((f) => /^QUICK scale: two epochs on 40 images/.test(f)));
    assert.ok(report.findings.some((f) => /resnet8 \/ cifar10, W4A4: (ewgs|lsq) leads with [\d.]+ ± [\d.]+% on device \(2 seeds\)/.test(f)));
    assert.ok(report.findings.some((f) => /ewgs W4A4 ends [\d.]+ points (below|above) float .*: (NOT )?within 2 points of float/.test(f)));
    // Every quantized run evaluated its integer model on the same test images.
    assert.equal(lsq4.device.n, 2);
    assert.ok(lsq4.agreement.mean >= 0 && lsq4.agreement.mean <= 100);
    // The simulated evaluation computes the integer model's values exactly: one agreement figure, no gap.
    assert.ok(report.findings.some((f) => /resnet8 \/ cifar10: on device \(the integer model\) against the fake-quantized model .*: the same top-1 class on 100\.00 % of the test images, the same top-1, over 8 runs\./.test(f)), report.findings.join('\n'));
  });

  test('Markdown and one self-contained HTML page, rendered by headless Chromium without errors', async (t) => {
    const written = await writeReport(resultsDir);
    const md = readFileSync(written.markdown, 'utf8');
    assert.match(md, /^# Report fixture — QUICK scale/);
    assert.match(md, /\| ewgs \| W4A4 \| 2 \| [\d.]+ ± [\d.]+ \|/);
    assert.match(md, /\| float baseline \| W32A32 \|/);
    assert.match(md, /\| resnet8 \| cifar10 \| 0 \| 4 \| same ✓ \| same ✓ \|/);
    assert.match(md, /packed conv\/linear weights/);
    const html = readFileSync(written.html, 'utf8');
    assert.doesNotMatch(html, /<script|<link rel="stylesheet"|<img |@import|url\(/i, 'nothing loaded from elsewhere');
    assert.deepEqual([...html.matchAll(/(?:src|href)="([^"#][^"]*)"/g)].map((m) => m[1]), ['data:,']);
    const svgs = html.match(/<svg /g)?.length ?? 0;
    // 2 accuracy-vs-bits, 2 x 2 training curves, 2 x 2 x 2 histograms, 1 size plot.
    assert.ok(svgs >= 15, `${svgs} plots`);
    assert.match(html, /<div class="scale">QUICK scale — two epochs on 40 images\.<\/div>/);

    if (!existsSync(CHROMIUM)) {
      t.skip(`${CHROMIUM} is not installed: the browser check is skipped`);
      return;
    }
    const { chromium } = await import('playwright-core');
    const profile = mkdtempSync(join(tmpdir(), 'tq-chromium-'));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 900 },
    });
    try {
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('request', (r) => {
        if (!r.url().startsWith('file:') && !r.url().startsWith('data:')) problems.push(`request: ${r.url()}`);
      });
      await page.goto(`file://${written.html}`, { waitUntil: 'load' });
      assert.equal(await page.title(), 'Report fixture — QUICK scale');
      assert.ok((await page.locator('svg').count()) >= 15);
      const box = await page.locator('svg').first().boundingBox();
      assert.ok(box && box.width > 100 && box.height > 100, 'plots have a size');
      assert.match(await page.locator('body').innerText(), /Findings[\s\S]*Fairness[\s\S]*Runs/);
      const artifacts = join(packageRoot(), 'test-artifacts');
      mkdirSync(artifacts, { recursive: true });
      await page.screenshot({ path: join(artifacts, 'report.png'), fullPage: true });
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  });

  test('tinyquant report --json prints the files it wrote and the findings', async () => {
    const out = join(root.dir, 'json-report');
    const lines: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => void lines.push(a.join(' '));
    try {
      await reportCommand([resultsDir, '--out', out, '--no-analysis', '--json']);
    } finally {
      console.log = log;
    }
    assert.equal(lines.length, 1);
    const printed = JSON.parse(lines[0]) as { html: string; markdown: string; findings: string[] };
    assert.deepEqual([printed.html, printed.markdown], [join(out, 'report.html'), join(out, 'report.md')]);
    assert.ok(existsSync(printed.html) && existsSync(printed.markdown));
    assert.ok(printed.findings.some((f) => /^QUICK scale/.test(f)));
  });
});
