/**
 * Checks of checkpoint starts before anything runs: the file exists (else how to make it), and
 * when it has a JSON sidecar naming its config, the model, dataset and input normalization agree
 * with the runs that start from it (quantization-aware training of a float model fed differently
 * normalized images would start far below its accuracy).
 */
import { existsSync } from 'node:fs';
import { relative } from 'node:path';
import { readJsonFile } from '../io/index.js';
import type { TrainConfig } from '../train/config.js';
import { type Plan, scaleArguments } from './grid.js';
import { MODELS_PACKAGE } from './paths.js';
import { packageRoot } from '../package.js';

export class StartError extends Error {}

const CHECKED_FIELDS = ['model', 'dataset', 'normalization'] as const;

/** `models/x.safetensors` -> `models/x.json`. */
export function sidecarOf(checkpoint: string): string {
  return checkpoint.replace(/\.(safetensors|pth|pth\.tar|pt)$/, '') + '.json';
}

function missingMessage(path: string, plan: Plan): string {
  const shipped = !relative(packageRoot(), path).startsWith('..');
  const how = shipped
    ? `It ships in the npm package ${MODELS_PACKAGE} (\`npm install ${MODELS_PACKAGE}\`; in a checkout of tinyquant: ${relative(packageRoot(), path)}); to make it yourself, train the float model with ` +
      '`tinyquant run float-resnet20` and start from its best checkpoint: `tinyquant run ' +
      `${plan.grid.name}${scaleArguments(plan.scale)} --start results/float-resnet20/runs/resnet20-cifar10-float-s0/best.json\` ` +
      '(or copy that run\'s best-*.safetensors to the path above).'
    : 'Train it first, or name another with --start.';
  return `the starting checkpoint ${path} of ${plan.grid.name} does not exist. ${how}`;
}

export function checkStarts(plan: Plan): void {
  const checked = new Set<string>();
  for (const run of plan.runs) {
    if (!run.startsFrom.startsWith('checkpoint:') || run.method !== 'float' || checked.has(run.startsFrom)) continue;
    checked.add(run.startsFrom);
    const path = run.startsFrom.slice('checkpoint:'.length);
    if (!existsSync(path)) throw new StartError(missingMessage(path, plan));
    checkSidecar(path, run.config);
  }
}

function checkSidecar(path: string, config: TrainConfig): void {
  const sidecar = sidecarOf(path);
  if (sidecar === path || !existsSync(sidecar)) return;
  const saved = (readJsonFile(sidecar) as { config?: Partial<TrainConfig> } | null)?.config;
  if (!saved) return;
  for (const field of CHECKED_FIELDS) {
    if (saved[field] !== undefined && saved[field] !== config[field]) {
      throw new StartError(`${path} was trained with ${field} ${JSON.stringify(saved[field])} (${sidecar}), but the runs starting from it use ${JSON.stringify(config[field])}`);
    }
  }
}
