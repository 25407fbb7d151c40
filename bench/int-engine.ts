/**
 * Integer-engine measurements (issue 6):
 *
 *   node dist/bench/int-engine.js agreement RUN_DIR... [--limit N] [--residual-bits 16|8]
 *        [--calibration-images N] [--data-dir DIR] [--tqm-dir DIR] [--out FILE.json]
 *     Per trained run: lower (calibrating on training images), write the tqm, and compare the
 *     integer engine with the fake-quantized model on the test set (same top-1, both accuracies).
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
import { measureAgreement, perturbedTop1 } from '../src/export/agreement.js';
import { resolveNormalization } from '../src/data/augment.js';
import { normalizeImages } from '../src/export/calibrate.js';
import { loadTrainedModel, lowerTrainedModel, pickImages } from '../src/export/checkpoint-model.js';
import { IntegerEngine } from '../src/export/engine.js';
import type { IntegerModel } from '../src/export/ir.js';
import { lowerResNet } from '../src/export/lower.js';
import { modelReport } from '../src/export/report.js';
import { encodeTqm } from '../src/export/tqm.js';
import { writeTqm } from '../src/export/tqm-file.js';
import { createModel } from '../src/models/index.js';
import { calibrate, quantize } from '../src/quant/quantize.js';
import type { MethodName } from '../src/quant/quantizer.js';
import { Rng } from '../src/util/rng.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    limit: { type: 'string' },
    'residual-bits': { type: 'string', default: '16' },
    'input-bits': { type: 'string', default: '8' },
    'calibration-images': { type: 'string', default: '256' },
    'data-dir': { type: 'string' },
    'tqm-dir': { type: 'string' },
    out: { type: 'string' },
    images: { type: 'string', default: '200' },
  },
});

const [mode, ...runs] = positionals;

function save(result: unknown): void {
  if (values.out) writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
}

async function agreement(): Promise<void> {
  const rows = [];
  for (const run of runs) {
    const t0 = performance.now();
    const trained = loadTrainedModel(run);
    const residualBits = Number(values['residual-bits']) as 8 | 16;
    const inputBits = Number(values['input-bits']) as 8 | 16;
    const ir = await lowerTrainedModel(trained, { dataDir: values['data-dir'], calibrationImages: Number(values['calibration-images']), residualBits, inputBits });
    let tqmBytes = encodeTqm(ir).length;
    if (values['tqm-dir']) {
      mkdirSync(values['tqm-dir'], { recursive: true });
      tqmBytes = writeTqm(join(values['tqm-dir'], `${run.split('/').filter(Boolean).at(-1)}-i${inputBits}-r${residualBits}.tqm`), ir);
    }
    const test = await loadDataset({ name: trained.config.dataset, split: 'test', dataDir: values['data-dir'] ?? trained.config.dataDir });
    const r = measureAgreement(trained.model, ir, test, {
      limit: values.limit ? Number(values.limit) : undefined,
      progress: (done, total) => process.stderr.write(`\r${run}: ${done}/${total}`),
    });
    process.stderr.write('\n');
    const normalization = resolveNormalization(trained.config.normalization, test.channels);
    const limit = values.limit ? Number(values.limit) : undefined;
    const noiseFloor = { eps1e5: perturbedTop1(trained.model, test, normalization, 1e-5, limit), eps1e4: perturbedTop1(trained.model, test, normalization, 1e-4, limit) };
    const c = trained.config;
    const row = { run, model: c.model, method: c.method, wbits: c.wbits, abits: c.abits, firstLast: trained.firstLast, inputBits, residualBits, tqmBytes, ...r, noiseFloor, seconds: (performance.now() - t0) / 1000 };
    console.log(JSON.stringify(row));
    rows.push(row);
    save(rows);
  }
  console.log('\n| run | method | W/A | first/last | input/residual | same top-1 % | fake-quant top-1 % | integer top-1 % | diff | fake-quant vs itself, noise 1e-5 / 1e-4 % | tqm bytes |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.run.split('/').filter(Boolean).at(-1)} | ${r.method} | ${r.wbits}/${r.abits} | ${r.firstLast} | int${r.inputBits}/int${r.residualBits} | ${r.sameTop1.toFixed(2)} | ` +
        `${r.fakeQuantTop1.toFixed(2)} | ${r.integerTop1.toFixed(2)} | ${(r.integerTop1 - r.fakeQuantTop1).toFixed(2)} | ` +
        `${r.noiseFloor.eps1e5.toFixed(2)} / ${r.noiseFloor.eps1e4.toFixed(2)} | ${r.tqmBytes} |`,
    );
  }
}

/** A randomly initialized ResNet quantized as given, quantizers initialized on random images, lowered. */
function untrainedLowered(model: string, method: MethodName, bits: number): IntegerModel {
  const net = createModel(model);
  quantize(net, { method, wbits: bits, abits: bits, firstLast: 'int8' });
  const rng = new Rng(1);
  const count = 8;
  const images = Uint8Array.from({ length: count * 3 * 32 * 32 }, () => rng.int(256));
  const normalization = { mean: [0.491, 0.482, 0.447], std: [0.247, 0.243, 0.262] };
  calibrate(net, normalizeImages(images, count, 3, normalization), [count, 3, 32, 32]);
  net.eval();
  return lowerResNet(net as ReturnType<typeof createModel>, {
    normalization,
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
  const ir = await lowerTrainedModel(trained, { dataDir: values['data-dir'], calibrationImages: 64 });
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
