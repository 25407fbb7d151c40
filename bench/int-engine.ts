/**
 * Integer-engine measurements (issue 6):
 *
 *   node dist/bench/int-engine.js agreement RUN... [--limit N] [--residual-bits 16|8]
 *        [--calibration-images N] [--data-dir DIR] [--tqm-dir DIR] [--out FILE.json]
 *        [--c-images N] [--ts-images N] [--no-onnx] [--no-host] [--noise-floor]
 *     Per trained run (a run directory, or its best.json / last.json): lower (with the deployment
 *     plan the run recorded, else calibrating on training images) and check the agreement targets
 *     (export/agreement.ts agreementTargets) on the test set (all of it, or the first `--limit`
 *     images): the TypeScript integer engine against the fake-quantized model with the same plan's
 *     deployment simulated (same top-1 >= 99.5 % at 4 bits, 99 % below; top-1 within 0.2 points); onnxruntime on the ONNX export against the
 *     integer engine (same top-1 >= 99.5 %) and the fake-quantized model; the generated C on the
 *     host's gcc (first `--c-images`, default 200; 0 skips) against the integer engine, logits
 *     bit-identical. The integer logits of all images come from the host int8 path when the native
 *     addon has it (bit-identical, ~100x faster; `--no-host` avoids it), and the TypeScript engine
 *     then runs the first `--ts-images` (default 500) and must give the same logits bit for bit.
 *     `--noise-floor` adds the fake-quantized model against itself under input noise of 1e-5, 1e-4
 *     and 1e-3: low-bit models are discontinuous, so this is the agreement any implementation that
 *     is not bit-exact float arithmetic can expect. `--as-trained` adds the integer engine against
 *     the fake-quantized model as it trained, without the deployment simulated: what the integer
 *     model was compared with before the plan existed.
 *
 *   node dist/bench/int-engine.js sizes [--out FILE.json]
 *     Stored sizes of ResNet-20 (option B with APoT, option A with EWGS; 8 bits: LSQ and EWGS)
 *     per bit-width: packed weights, int8 first/last layers, tables, whole tqm file.
 *
 *   node dist/bench/int-engine.js speed RUN_DIR [--images N] [--data-dir DIR]
 *     Images per second of the multiply and the shift-add paths, and their operation counts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadDataset } from '../src/data/load.js';
import { type Normalization } from '../src/data/augment.js';
import type { ImageDataset } from '../src/data/dataset.js';
import { agreementTargets, compareLogits, fakeQuantLogits, measureAgreement, perturbedTop1, top1Accuracy } from '../src/export/agreement.js';
import { generateC } from '../src/export/c/generate.js';
import { runOnHost } from '../src/export/c/toolchain.js';
import { normalizeImages } from '../src/export/calibrate.js';
import { loadTrainedModel, lowerTrainedModel, lowerUntrainedModel } from '../src/export/checkpoint-model.js';
import { pickImages } from '../src/export/calibrate.js';
import { IntegerEngine } from '../src/export/engine.js';
import type { Module } from '../src/nn/module.js';
import { HostIntegerEngine, hostEngineAvailability } from '../src/export/host/engine.js';
import type { IntegerModel } from '../src/export/ir.js';
import { ONNX_INPUT, ONNX_OUTPUT, exportOnnx } from '../src/export/onnx/index.js';
import { modelReport } from '../src/export/report.js';
import { encodeTqm } from '../src/export/tqm.js';
import { writeTqm } from '../src/export/tqm-file.js';
import { createModel } from '../src/models/index.js';
import { quantize } from '../src/quant/quantize.js';
import type { MethodName } from '../src/quant/quantizer.js';
import { Rng } from '../src/util/rng.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    limit: { type: 'string' },
    'residual-bits': { type: 'string' },
    'input-bits': { type: 'string' },
    'calibration-images': { type: 'string', default: '256' },
    'data-dir': { type: 'string' },
    'tqm-dir': { type: 'string' },
    out: { type: 'string' },
    images: { type: 'string', default: '200' },
    'c-images': { type: 'string', default: '200' },
    'ts-images': { type: 'string', default: '500' },
    'no-onnx': { type: 'boolean', default: false },
    'no-host': { type: 'boolean', default: false },
    'noise-floor': { type: 'boolean', default: false },
    'as-trained': { type: 'boolean', default: false },
  },
});

const [mode, ...runs] = positionals;

function save(result: unknown): void {
  if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
}

/** A row's name: the run directory, plus the sidecar when one was named (`run/best.json`). */
function runLabel(path: string): string {
  const parts = path.split('/').filter(Boolean);
  return parts.at(-1)?.endsWith('.json') ? parts.slice(-2).join('/') : (parts.at(-1) ?? path);
}

/** onnxruntime's logits for the first `count` images of `data`, normalized as for evaluation. */
async function onnxLogits(onnx: Uint8Array, data: ImageDataset, count: number, normalization: Normalization, classes: number): Promise<Float32Array> {
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const shape = [data.channels, data.height, data.width] as const;
  const size = shape[0] * shape[1] * shape[2];
  const out = new Float32Array(count * classes);
  try {
    for (let start = 0; start < count; start += 200) {
      const n = Math.min(200, count - start);
      const x = normalizeImages(data.images.subarray(start * size, (start + n) * size), n, shape[0], normalization);
      const result = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', x, [n, ...shape]) });
      out.set(result[ONNX_OUTPUT].data as Float32Array, start * classes);
    }
  } finally {
    await session.release();
  }
  return out;
}

/** Input noise (normalized units) under which `--noise-floor` measures the fake-quantized model against itself. */
const NOISE_LEVELS = [1e-5, 1e-4, 1e-3];

/** Issue 6's agreement targets, in percent of images / points of accuracy. */

interface ImplementationCheck {
  readonly images: number;
  readonly top1: number;
  /** Same top-1 as the TypeScript integer engine, percent. */
  readonly sameTop1VsInteger: number;
  readonly identicalToInteger: number;
}

/** Another implementation's logits (first images of the test set) against the integer engine's. */
function checkAgainstInteger(logits: ArrayLike<number>, integer: Int32Array, labels: Int32Array, classes: number): ImplementationCheck {
  const c = compareLogits(logits, integer, classes);
  return { images: c.images, top1: top1Accuracy(logits, labels, classes), sameTop1VsInteger: c.sameTop1, identicalToInteger: c.identicalImages };
}

/** The integer logits against the fake-quantized model's as it trained (no deployment simulated). */
function asTrainedAgreement(model: Module, test: ImageDataset, count: number, normalization: Normalization, integer: Int32Array, classes: number): { sameTop1: number; top1: number } {
  const logits = fakeQuantLogits(model, test.images, count, [test.channels, test.height, test.width], normalization);
  return { sameTop1: compareLogits(logits, integer, classes, count).sameTop1, top1: top1Accuracy(logits, test.labels.subarray(0, count), classes) };
}

async function agreement(): Promise<void> {
  const rows = [];
  const host = hostEngineAvailability();
  if (!host.available) process.stderr.write(`host int8 path skipped: ${host.reason}\n`);
  for (const run of runs) {
    const t0 = performance.now();
    const trained = loadTrainedModel(run);
    // Bit options only where given: a run records the deployment plan its final evaluation used.
    const bitsOption = (name: 'residual-bits' | 'input-bits'): 8 | 16 | undefined => (values[name] === undefined ? undefined : (Number(values[name]) as 8 | 16));
    const { ir, plan } = await lowerTrainedModel(trained, { dataDir: values['data-dir'], calibrationImages: Number(values['calibration-images']), residualBits: bitsOption('residual-bits'), inputBits: bitsOption('input-bits') });
    const [inputBits, residualBits] = [plan.input.bits, plan.residualBits];
    let tqmBytes = encodeTqm(ir).length;
    if (values['tqm-dir']) {
      mkdirSync(values['tqm-dir'], { recursive: true });
      tqmBytes = writeTqm(join(values['tqm-dir'], `${runLabel(run).replace('/', '-')}-i${inputBits}-r${residualBits}.tqm`), ir);
    }
    const test = await loadDataset({ name: trained.config.dataset, split: 'test', dataDir: values['data-dir'] ?? trained.config.dataDir });
    const limit = values.limit ? Number(values.limit) : undefined;
    // The host int8 path is bit-identical to the TypeScript engine and far faster: with it, it
    // computes the integer logits of every image and the TypeScript engine checks the first ones.
    const hostEngine = host.available && !values['no-host'] ? new HostIntegerEngine(ir) : null;
    const r = measureAgreement(trained.model, ir, test, {
      limit,
      plan,
      keepLogits: true,
      engine: hostEngine ?? undefined,
      progress: (done, total) => process.stderr.write(`\r${runLabel(run)}: fake-quant and ${hostEngine ? 'host int8' : 'integer engine'} ${done}/${total}`),
    });
    process.stderr.write('\n');
    const { logits, ...integerVsFakeQuant } = r;
    if (!logits) throw new Error('measureAgreement returned no logits');
    const classes = ir.tensors[ir.output].shape[0];
    const labels = test.labels.subarray(0, r.images);
    const normalization = ir.meta.normalization;
    const imageSize = test.channels * test.height * test.width;

    let onnx = null;
    if (!values['no-onnx']) {
      const onnxBytes = exportOnnx(trained.model, { normalization, inputSize: [test.height, test.width] });
      const theirs = await onnxLogits(onnxBytes, test, r.images, normalization, classes);
      const maxLogitDiffVsFakeQuant = theirs.reduce((m, v, i) => Math.max(m, Math.abs(v - logits.fakeQuant[i])), 0);
      onnx = { ...checkAgainstInteger(theirs, logits.integer, labels, classes), sameTop1VsFakeQuant: compareLogits(theirs, logits.fakeQuant, classes).sameTop1, maxLogitDiffVsFakeQuant };
    }
    const tsImages = Math.min(Number(values['ts-images']), r.images);
    const tsEngine = hostEngine && tsImages > 0 ? checkAgainstInteger(new IntegerEngine(ir).inferBatch(test.images.subarray(0, tsImages * imageSize), tsImages), logits.integer, labels, classes) : null;
    const cImages = Math.min(Number(values['c-images']), r.images);
    let cHost = null;
    if (cImages > 0) {
      const c = runOnHost(generateC(ir, { headerName: 'model.h' }), test.images.subarray(0, cImages * imageSize), cImages);
      cHost = checkAgainstInteger(c.logits, logits.integer, labels, classes);
    }
    const asTrained = values['as-trained'] ? asTrainedAgreement(trained.model, test, r.images, normalization, logits.integer, classes) : null;
    const noiseFloor = values['noise-floor'] ? Object.fromEntries(NOISE_LEVELS.map((eps) => [eps.toExponential(), perturbedTop1(trained.model, test, normalization, eps, limit)])) : null;
    const c = trained.config;
    const wanted = agreementTargets(c);
    const targets = {
      integerSameTop1: integerVsFakeQuant.sameTop1 >= wanted.sameTop1,
      integerAccuracy: Math.abs(integerVsFakeQuant.integerTop1 - integerVsFakeQuant.fakeQuantTop1) <= wanted.top1Gap,
      onnxSameTop1: onnx ? onnx.sameTop1VsInteger >= wanted.sameTop1 : null,
      hostIdentical: tsEngine ? tsEngine.identicalToInteger === tsEngine.images : null,
      cIdentical: cHost ? cHost.identicalToInteger === cHost.images : null,
    };
    const row = { run, model: c.model, method: c.method, wbits: c.wbits, abits: c.abits, firstLast: trained.firstLast, inputBits, residualBits, tqmBytes, integerLogitsFrom: hostEngine ? 'host int8' : 'typescript engine', ...integerVsFakeQuant, asTrained, onnx, tsEngine, cHost, noiseFloor, targets, seconds: (performance.now() - t0) / 1000 };
    console.log(JSON.stringify(row));
    rows.push(row);
    save(rows);
  }
  const pct = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(2));
  const count = (x: ImplementationCheck | null): string => (x ? `${x.identicalToInteger}/${x.images}` : '-');
  const verdict = (t: Record<string, boolean | null>): string => {
    const missed = Object.entries(t).filter(([, ok]) => ok === false).map(([name]) => name);
    return missed.length === 0 ? 'all met' : `missed: ${missed.join(', ')}`;
  };
  console.log('\n| run | W/A | images | fake-quant top-1 % | integer top-1 % | diff | same top-1 integer/fake-quant % | as trained: top-1 % / same top-1 % | onnx top-1 % | same top-1 onnx/integer % | same top-1 onnx/fake-quant % | TS engine identical to host int8 | C (gcc) identical | targets |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${runLabel(r.run)} | ${r.wbits}/${r.abits} | ${r.images} | ${pct(r.fakeQuantTop1)} | ${pct(r.integerTop1)} | ${(r.integerTop1 - r.fakeQuantTop1).toFixed(2)} | ${pct(r.sameTop1)} | ${r.asTrained ? `${pct(r.asTrained.top1)} / ${pct(r.asTrained.sameTop1)}` : '-'} | ` +
        `${pct(r.onnx?.top1)} | ${pct(r.onnx?.sameTop1VsInteger)} | ${pct(r.onnx?.sameTop1VsFakeQuant)} | ${count(r.tsEngine)} | ${count(r.cHost)} | ${verdict(r.targets)} |`,
    );
  }
  if (rows.some((r) => r.noiseFloor)) {
    console.log(`\nfake-quant model against itself under input noise ${NOISE_LEVELS.map((e) => e.toExponential()).join(' / ')} (same top-1 %):`);
    for (const r of rows) if (r.noiseFloor) console.log(`  ${runLabel(r.run)}: ${Object.values(r.noiseFloor).map(pct).join(' / ')}`);
  }
}

/** A randomly initialized ResNet quantized as given, quantizers initialized on random images, lowered. */
function untrainedLowered(model: string, method: MethodName, bits: number): IntegerModel {
  const net = createModel(model);
  quantize(net, { method, wbits: bits, abits: bits, firstLast: 'int8' });
  const rng = new Rng(1);
  const count = 8;
  const images = Uint8Array.from({ length: count * 3 * 32 * 32 }, () => rng.int(256));
  return lowerUntrainedModel(net, {
    normalization: { mean: [0.491, 0.482, 0.447], std: [0.247, 0.243, 0.262] },
    calibration: { images, count, channels: 3, height: 32, width: 32 },
    meta: { model, method, wbits: bits, abits: bits, firstLast: 'int8', classes: Array.from({ length: 10 }, (_, i) => `class${i}`) },
  });
}

function sizes(): void {
  const configs: [string, string, MethodName, number][] = [
    ...[2, 3, 4, 5].map((b) => ['resnet20-apot', 'option B (APoT)', 'apot', b] as [string, string, MethodName, number]),
    ['resnet20-apot', 'option B (LSQ)', 'lsq', 8],
    ...[2, 3, 4, 5, 8].map((b) => ['resnet20', 'option A (EWGS)', 'ewgs', b] as [string, string, MethodName, number]),
  ];
  const rows = configs.map(([model, label, method, bits]) => {
    const ir = untrainedLowered(model, method, bits);
    const report = modelReport(ir);
    const quantized = report.layers.filter((l) => l.weightBits === bits && l.name !== 'conv1' && l.name !== 'linear');
    const edges = report.layers.filter((l) => !quantized.includes(l));
    const row = {
      model,
      label,
      method,
      bits,
      quantizedWeights: quantized.reduce((a, l) => a + l.params, 0),
      packedBytes: quantized.reduce((a, l) => a + l.weightBytes, 0),
      int8EdgeBytes: edges.reduce((a, l) => a + l.weightBytes, 0),
      storedBytes: report.totals.storedBytes,
      fileBytes: encodeTqm(ir).length,
      peakActivationBytes: report.totals.peakActivationBytes,
    };
    console.log(JSON.stringify(row));
    return row;
  });
  console.log('\n| model | bits | quantized weights | packed weights B | int8 first/last B | weights KiB | tqm file B | tqm file KiB | peak act. B |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const weights = r.packedBytes + r.int8EdgeBytes;
    console.log(`| ${r.label} | ${r.bits} | ${r.quantizedWeights} | ${r.packedBytes} | ${r.int8EdgeBytes} | ${(weights / 1024).toFixed(1)} | ${r.fileBytes} | ${(r.fileBytes / 1024).toFixed(1)} | ${r.peakActivationBytes} |`);
  }
  save(rows);
}

async function speed(): Promise<void> {
  const trained = loadTrainedModel(runs[0]);
  const { ir } = await lowerTrainedModel(trained, { dataDir: values['data-dir'], calibrationImages: 64 });
  const test = await loadDataset({ name: trained.config.dataset, split: 'test', dataDir: values['data-dir'] ?? trained.config.dataDir });
  const sample = pickImages(test, Number(values.images));
  const result: Record<string, number> = {};
  const outputs: Int32Array[] = [];
  for (const arithmetic of ['multiply', 'shift-add'] as const) {
    const engine = new IntegerEngine(ir, { arithmetic });
    engine.infer(sample.images.subarray(0, engine.imageSize)); // warm up the JIT
    const t0 = performance.now();
    outputs.push(engine.inferBatch(sample.images, sample.count));
    result[`${arithmetic} images/s`] = sample.count / ((performance.now() - t0) / 1000);
  }
  const t = modelReport(ir).totals;
  Object.assign(result, { identical: outputs[0].every((v, i) => v === outputs[1][i]) ? 1 : 0, macs: t.macs, multiplies: t.multiplies, shifts: t.shifts, adds: t.adds, requantizations: t.requantizations });
  console.log(JSON.stringify(result));
  save(result);
}

const modes: Record<string, () => void | Promise<void>> = { agreement, sizes, speed };
const run = modes[mode];
if (!run) {
  console.error('usage: int-engine.js agreement RUN_DIR... | sizes | speed RUN_DIR   (see the comment at the top of bench/int-engine.ts)');
  process.exitCode = 2;
} else {
  await run();
}
