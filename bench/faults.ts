/**
 * `npm run faults`: the long kill -9 campaign (test/fault-harness.ts): tiny training runs and tiny
 * grids killed at random moments and inside checkpoint writes, several times in a row, then resumed
 * to the end and compared bit for bit with uninterrupted runs. Prints kills, kills during writes,
 * bit-exact resumes and corrupt/lost checkpoints; exits 1 on any problem.
 *
 * Options: --kills N (at least this many kills in all, default 60), --grid-share F (fraction of the
 * kills made in grids, default 0.4), --per-round K (kills in a row before the final resume, default 4),
 * --seed S, --keep (keep the work directory, printed).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Rng } from '../src/util/rng.js';
import { formatTally, gridRound, makeFaultData, newTally, trainRound, writeFaultGrid } from '../test/fault-harness.js';

const { values } = parseArgs({
  options: {
    kills: { type: 'string', default: '60' },
    'grid-share': { type: 'string', default: '0.4' },
    'per-round': { type: 'string', default: '4' },
    seed: { type: 'string', default: '1' },
    keep: { type: 'boolean' },
  },
});

const kills = Number(values.kills);
const gridShare = Number(values['grid-share']);
const perRound = Number(values['per-round']);
if (!Number.isInteger(kills) || kills < 1 || !(gridShare >= 0 && gridShare <= 1) || !Number.isInteger(perRound) || perRound < 1) {
  console.error('usage: npm run faults -- [--kills N] [--grid-share 0..1] [--per-round K] [--seed S] [--keep]');
  process.exit(2);
}

const root = mkdtempSync(join(tmpdir(), 'tq-faults-'));
const started = Date.now();
const tally = newTally();
const log = (line: string): void => console.error(`[${((Date.now() - started) / 1000).toFixed(0)} s] ${line}`);
try {
  const campaign = { root, dataDir: makeFaultData(join(root, 'data')), rng: new Rng(Number(values.seed)), tally, log };
  const gridKills = Math.round(kills * gridShare);
  const grid = { ...campaign, grid: writeFaultGrid(root) };
  for (let round = 0; tally.killsOfTrainers < kills - gridKills; round++) {
    // One kill in each round by the write hook; the others at random moments (writes paused 12 ms).
    await trainRound(campaign, `train-${round}`, perRound, 1);
  }
  for (let round = 0; tally.killsOfGridParents + tally.killsOfGridWorkers < gridKills; round++) {
    await gridRound(grid, `grid-${round}`, perRound);
  }
  console.log(formatTally(tally));
  console.log(`${((Date.now() - started) / 1000).toFixed(0)} s; work directory ${values.keep ? root : '(removed)'}`);
} finally {
  if (!values.keep) rmSync(root, { recursive: true, force: true });
}
process.exitCode = tally.problems.length > 0 || tally.bitExact !== tally.resumes ? 1 : 0;
