/**
 * Every parser fuzzed with a short budget (see test/fuzz/: the targets, the harness): generated and
 * mutated inputs give a valid result or the parser's own named error, within a time limit per input
 * and with bounded memory; a hang stops the worker and fails the test with its input. The seed is
 * fixed (TINYQUANT_FUZZ_SEED picks another); `npm run fuzz -- --minutes N` runs the same longer.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { FuzzHost, HANG_TARGET, type FuzzTarget, runTarget } from './fuzz/harness.js';
import { FUZZ_TARGETS } from './fuzz/targets.js';

const SEED = Number(process.env.TINYQUANT_FUZZ_SEED ?? 17);
/** Inputs per target: the whole suite takes a few seconds on two cores. */
const RUNS = 400;

const host = new FuzzHost();
after(() => host.close());

for (const target of FUZZ_TARGETS) {
  test(`fuzz: ${target.name}`, async () => {
    const report = await host.run(target.name, { seed: SEED, numRuns: RUNS });
    assert.deepEqual(report.failures, [], `${target.name}: ${JSON.stringify(report.failures, null, 2)}`);
    assert.ok(report.inputs >= RUNS, `${report.inputs} inputs run`);
    assert.ok(report.slowestMs > 0 && report.slowestMs <= 2000, `slowest input ${report.slowestMs} ms`);
  });
}

test('the harness fails a property on an internal error, a message of two lines, a memory bomb, a slow input and a hang; it reports the slowest input', async () => {
  const limits = { perInputMs: 200, memoryBytes: 64 * 2 ** 20 };
  const failure = async (run: () => unknown): Promise<string> => {
    const target: FuzzTarget<number> = { name: 'self-test', inputs: fc.constant(0), errors: [Error], run };
    const report = await runTarget(target, { seed: 1, numRuns: 1, limits });
    assert.equal(report.failures.length, 1);
    return report.failures[0].error;
  };
  assert.match(await failure(() => (null as unknown as { x: number }).x), /wraps an internal TypeError: Cannot read properties of null/);
  assert.match(await failure(() => {
    throw new Error('two\nlines');
  }), /the message is not one line/);
  assert.match(await failure(() => new Float32Array(2 ** 25).fill(1)), /memory grew by 128 MiB on one input \(limit 64 MiB\)/);
  assert.match(await failure(() => {
    const start = Date.now();
    while (Date.now() - start < 300);
  }), /took \d+ ms \(limit 200 ms\)/);
  const timed: FuzzTarget<number> = { name: 'self-test', inputs: fc.integer({ min: 20, max: 40 }), errors: [], run: (ms) => new Promise((done) => setTimeout(done, ms)) };
  const timing = await runTarget(timed, { seed: 1, numRuns: 5, limits });
  assert.ok(timing.failures.length === 0 && timing.slowestMs >= 19 && timing.slowestMs < 200, `slowest ${timing.slowestMs} ms of inputs sleeping 20-40 ms`);
  const hang = await new FuzzHost(2000).run(HANG_TARGET.name, { seed: 1, numRuns: 1 });
  assert.deepEqual(hang.failures.map((f) => [f.error, f.counterexample]), [['no result after 2000 ms: a hang', '7']]);
});
