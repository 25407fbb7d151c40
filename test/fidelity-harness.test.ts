/**
 * The fidelity harness (bench/fidelity) refuses bad checkouts before it loads any data: a missing
 * directory or one that is not the reference's checkout is one line naming the repository it
 * expected and where, exit 3. (The comparisons themselves need the references' code and run by
 * hand: docs/fidelity.md.)
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const HARNESS = fileURLToPath(new URL('../bench/fidelity/fidelity.js', import.meta.url));
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'tq-fidelity-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function harness(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.TINYQUANT_APOT_REF;
  delete env.TINYQUANT_EWGS_REF;
  return spawnSync(process.execPath, [HARNESS, ...args, '--work', join(dir, 'work')], { encoding: 'utf8', env });
}

function refused(args: string[], line: string): void {
  const r = harness(args);
  assert.deepEqual({ status: r.status, stdout: r.stdout, stderr: r.stderr }, { status: 3, stdout: '', stderr: `fidelity: ${line}\n` });
}

test('a checkout directory that does not exist is named with the repository expected there', () => {
  const missing = join(dir, 'no-such-checkout');
  const line = `expected a checkout of github.com/yhhhli/APoT_Quantization at ${missing} (flag or environment variable), found nothing there`;
  refused(['agreement', '--apot', missing], line);
  refused(['finetune', '--only', 'apot-w2a2', '--apot', missing], line);
});

test('a directory that is not the checkout names the first file it lacks', () => {
  const wrong = join(dir, 'wrong');
  mkdirSync(join(wrong, 'CIFAR10'), { recursive: true });
  writeFileSync(join(wrong, 'CIFAR10', 'custom_models.py'), '');
  refused(['agreement', '--ewgs', wrong], `expected a checkout of github.com/cvlab-yonsei/EWGS at ${wrong}: ${join(wrong, 'CIFAR10', 'custom_modules.py')} is missing`);
  refused(['finetune', '--only', 'apot-w4a4', '--apot', wrong], `expected a checkout of github.com/yhhhli/APoT_Quantization at ${wrong}: ${join(wrong, 'CIFAR10', 'models', 'quant_layer.py')} is missing`);
});

test('no checkout given, or a fine-tune configuration it does not have, is refused the same way', () => {
  refused(['agreement'], 'give --apot DIR and/or --ewgs DIR (or TINYQUANT_APOT_REF / TINYQUANT_EWGS_REF): checkouts of github.com/yhhhli/APoT_Quantization and github.com/cvlab-yonsei/EWGS');
  refused(['finetune', '--only', 'ewgs-w2a2'], 'give --ewgs DIR (or TINYQUANT_EWGS_REF): a checkout of github.com/cvlab-yonsei/EWGS');
  refused(['finetune', '--only', 'apot-w9a9'], '--only: no fine-tune configuration apot-w9a9 (ewgs-w4a4, ewgs-w2a2, ewgs-w2a2-delta0, apot-w4a4, apot-w3a3, apot-w2a2)');
});
