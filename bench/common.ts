/** What the benchmark scripts share: running a measurement in a fresh process, PyTorch's side, medians, a model's MACs. */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type IntegerModel, tensorSize } from '../src/export/ir.js';

/** The tinyquant CLI (compiled), for measurements in a fresh process. */
export const TINYQUANT_CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** Debian's python3 has python3-torch; a python3 earlier on PATH (pyenv) may not. */
export const PYTHON = process.env.TINYQUANT_PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');

/** The PyTorch side of the comparisons (same model, batch, loss and optimizer as `tinyquant bench train`). */
export const TORCH_BENCH = fileURLToPath(new URL('../../bench/torch_bench.py', import.meta.url));

/** The last line a measurement printed, parsed as JSON (the lines before it are progress). */
export function lastJsonLine<T>(stdout: string): T {
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as T;
}

/** Run a command to completion (stderr passes through) and parse the last line it printed. */
export function runJson<T>(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): T {
  return lastJsonLine<T>(execFileSync(cmd, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }));
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Multiply-accumulates of one inference: every conv's output elements times its window (input channels per group x kernel). */
export function convMacs(model: IntegerModel): number {
  return model.ops.reduce((s, op) => (op.kind === 'conv' ? s + tensorSize(model.tensors[op.output]) * (op.inChannels / op.groups) * op.kernel[0] * op.kernel[1] : s), 0);
}
