/**
 * `npm run fuzz -- --minutes N [--seed S] [--only NAME]`: the parser fuzz properties of
 * test/fuzz/ (the same as `npm test` runs briefly) for N minutes in all, shared evenly between the
 * parsers, with fresh seeds. Prints, per parser, the inputs tried, the slowest input that passed and
 * the failures, each with its seed, replay path and counterexample, then the process's peak resident
 * memory (the parsers run on its worker thread); exits 1 when anything failed.
 */
import { parseArgs } from 'node:util';
import { FuzzHost, type FuzzFailure } from '../test/fuzz/harness.js';
import { FUZZ_TARGETS } from '../test/fuzz/targets.js';

const { values } = parseArgs({
  options: { minutes: { type: 'string', default: '1' }, seed: { type: 'string' }, only: { type: 'string' } },
});
const minutes = Number(values.minutes);
if (!(minutes > 0)) throw new Error(`--minutes must be a number > 0, got ${values.minutes}`);
const targets = FUZZ_TARGETS.filter((t) => !values.only || t.name.toLowerCase().includes(values.only.toLowerCase()));
if (targets.length === 0) throw new Error(`no fuzz target matches --only ${values.only} (targets: ${FUZZ_TARGETS.map((t) => t.name).join(', ')})`);

/** fast-check's runs per call: each call stops at its time share or its first failure, whichever comes first. */
const RUNS_PER_CALL = 1_000_000_000;
/** A target stops after this many failing runs (usually one defect found again and again). */
const MAX_FAILURES = 3;

let nextSeed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const host = new FuzzHost();
const share = (minutes * 60_000) / targets.length;
console.log(`fuzzing ${targets.length} parsers for ${minutes} min (${(share / 1000).toFixed(0)} s each), first seed ${nextSeed}`);
const rows: { name: string; inputs: number; slowestMs: number; failures: FuzzFailure[] }[] = [];
for (const target of targets) {
  const row = { name: target.name, inputs: 0, slowestMs: 0, failures: [] as FuzzFailure[] };
  const end = Date.now() + share;
  // after a failure, go on with the next seed for the rest of the target's time
  while (Date.now() < end && row.failures.length < MAX_FAILURES) {
    const report = await host.run(target.name, { seed: nextSeed++, numRuns: RUNS_PER_CALL, timeLimitMs: end - Date.now() });
    row.inputs += report.inputs;
    row.slowestMs = Math.max(row.slowestMs, report.slowestMs);
    row.failures.push(...report.failures);
  }
  console.log(`${row.name.padEnd(24)} ${String(row.inputs).padStart(9)} inputs  slowest ${row.slowestMs.toFixed(0).padStart(4)} ms  ${row.failures.length} failures`);
  rows.push(row);
}
await host.close();

const failed = rows.filter((r) => r.failures.length > 0);
for (const row of failed) {
  for (const f of row.failures) {
    const example = f.counterexample.length > 800 ? `${f.counterexample.slice(0, 800)}...` : f.counterexample;
    console.log(`\n${row.name}: ${f.error}\n  seed ${f.seed}${f.path ? `, path ${f.path}` : ''}\n  counterexample ${example}`);
  }
}
const total = rows.reduce((n, r) => n + r.inputs, 0);
const slowest = rows.reduce((a, b) => (b.slowestMs > a.slowestMs ? b : a));
console.log(`\n${total} inputs, ${rows.reduce((n, r) => n + r.failures.length, 0)} failures; slowest input ${slowest.slowestMs.toFixed(0)} ms (${slowest.name}); peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB`);
process.exitCode = failed.length > 0 ? 1 : 0;
