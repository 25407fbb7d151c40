/**
 * What the deployed evaluation adds to a run (issue 12), measured side by side in one process on a
 * finished run directory:
 *
 *   node dist/bench/deploy.js RUN... [--data-dir DIR] [--rounds R]
 *
 * For each run: the final evaluation as it was (the fake-quantized model's own forward on the run's
 * test images) against the deployed one (a plan calibrated on the run's calibration images, the
 * lowering, the evaluation with the deployment simulated, the integer model on the same images),
 * medians over rounds; the added seconds as a share of the run's wall time (its train.log, first
 * to last line).
 *
 * What is counted is what the final evaluation adds to the run: the simulated evaluation in place of
 * the plain one, the lowering and the integer model, and the plan only for a run without a final
 * phase. A run with a final phase makes its plan when the phase starts (it trains under it) and the
 * final evaluation reuses that plan (trainer.ts finalEvaluation), so the plan is the phase's cost,
 * not the evaluation's; it is still measured and printed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { resolveNormalization } from '../src/data/augment.js';
import { createEvalLoader, fixedSubset } from '../src/data/index.js';
import { pickImages } from '../src/export/calibrate.js';
import { loadTrainedModel } from '../src/export/checkpoint-model.js';
import { evaluateOnDevice, lowerForEvaluation } from '../src/export/deployed.js';
import { planDeployment } from '../src/export/plan.js';
import { simulatedForward } from '../src/export/simulate.js';
import { trace } from '../src/graph/index.js';
import { loadConfigDataset } from '../src/train/dataset.js';
import { evaluate } from '../src/train/evaluate.js';
import { median } from './common.js';

const { values, positionals: runs } = parseArgs({
  allowPositionals: true,
  options: { 'data-dir': { type: 'string' }, rounds: { type: 'string', default: '3' } },
});

/** Seconds between the first and the last timestamped line of a run's train.log. */
function runWallSeconds(run: string): number {
  const stamps = readFileSync(join(run, 'train.log'), 'utf8')
    .split('\n')
    .map((l) => Date.parse(l.slice(0, 24)))
    .filter((t) => Number.isFinite(t));
  return (stamps[stamps.length - 1] - stamps[0]) / 1000;
}

async function seconds(work: () => unknown): Promise<number> {
  const t0 = performance.now();
  await work();
  return (performance.now() - t0) / 1000;
}

for (const run of runs) {
  const trained = loadTrainedModel(run);
  const { config, model, inputShape } = trained;
  const dataDir = values['data-dir'] ?? config.dataDir;
  const [train, test] = await Promise.all((['train', 'test'] as const).map((split) => loadConfigDataset(config, split, { dataDir })));
  const testData = fixedSubset(test, config.testSubset);
  const loader = createEvalLoader(testData, { batchSize: config.evalBatch, normalization: config.normalization, workers: config.workers });
  const normalization = resolveNormalization(config.normalization, inputShape[0]);
  const meta = { model: config.model, method: config.method, wbits: config.wbits, abits: config.abits, firstLast: trained.firstLast, classes: train.classes };
  const rows: { asTrained: number; plan: number; lower: number; simulated: number; device: number }[] = [];
  try {
    for (let r = 0; r < Number(values.rounds); r++) {
      const asTrained = await seconds(() => evaluate(model, loader));
      let plan = trained.plan!;
      const planS = await seconds(() => {
        plan = planDeployment(trace(model, [...inputShape]), { normalization, calibration: pickImages(train, config.deploy.calibrationImages, config.seed), residualBits: config.deploy.residualBits, inputBits: config.deploy.inputBits });
      });
      let ir = lowerForEvaluation(trace(model, [...inputShape]), plan, normalization, meta);
      const lower = await seconds(() => (ir = lowerForEvaluation(trace(model, [...inputShape]), plan, normalization, meta)));
      let predictions: Int32Array = new Int32Array(0);
      const simulated = await seconds(async () => (predictions = (await evaluate(model, loader, { forward: simulatedForward(model, inputShape, plan, ir) })).predictions));
      const device = await seconds(() => evaluateOnDevice(ir, testData, predictions));
      rows.push({ asTrained, plan: planS, lower, simulated, device });
    }
  } finally {
    await loader.close();
  }
  const m = (k: keyof (typeof rows)[0]): number => median(rows.map((row) => row[k]));
  const planCounted = config.deploy.finalEpochs > 0 ? 0 : m('plan');
  const added = planCounted + m('lower') + m('simulated') + m('device') - m('asTrained');
  const wall = runWallSeconds(run);
  console.log(
    `${run}: ${testData.count} test images; final evaluation as trained ${m('asTrained').toFixed(2)} s; deployed: plan ${m('plan').toFixed(2)} s${planCounted ? '' : ' (made for the final phase: not counted)'}, ` +
      `lowering ${m('lower').toFixed(2)} s, simulated evaluation ${m('simulated').toFixed(2)} s, integer model ${m('device').toFixed(2)} s; ` +
      `adds ${added.toFixed(2)} s = ${((100 * added) / wall).toFixed(1)} % of the run's ${wall.toFixed(0)} s`,
  );
}
