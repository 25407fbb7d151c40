/**
 * `tinyquant export --checkpoint FILE --format tqm --out PATH`: a trained fake-quantized model to a
 * deployable format (formats: src/export/formats.ts). Output files are written only after the
 * exporter succeeded, each atomically; `--verify N` then checks the integer model against the
 * fake-quantized one on N test images.
 */
import { writeFileAtomic } from '../io/atomic.js';
import { rmSync } from 'node:fs';
import { loadConfigDataset } from '../train/dataset.js';
import { type AgreementResult, type IntegerInference, measureAgreement, missedTargets } from '../export/agreement.js';
import { HostIntegerEngine, hostEngineAvailability } from '../export/host/engine.js';
import { ExportInputError, type LoweredTrainedModel, type TrainedModel, loadTrainedModel, lowerTrainedModel } from '../export/checkpoint-model.js';
import { type ExportContext, type ExportedFile, exporters } from '../export/formats.js';
import type { IntegerModel } from '../export/ir.js';
import { LoweringError } from '../export/lower.js';
import { TqmError } from '../export/tqm.js';
import { IntegerModelError } from '../export/validate.js';
import { ConfigError } from '../train/config.js';
import { UsageError, flag, num, parse, str } from './args.js';
import { quantizationOptions } from './quant-flags.js';
import { DATA_OPTIONS, applyBackendFlags, configFromFlags } from './train.js';

export const EXPORT_USAGE = `usage: tinyquant export --checkpoint FILE --format FORMAT --out PATH [options]

  --format F               ${Object.keys(exporters).join(', ')}
  --out PATH               the output file; format c writes a C99 source and its header:
                           NAME.c or NAME gives NAME.c + NAME.h, a directory gives DIR/model.c + DIR/model.h
  --data-dir DIR           where the dataset is (training images calibrate the fixed-point scales)
  --data-path PATH         an image folder or archive (dataset imagefolder), if not the one it was trained on
  --calibration-images N   training images for calibration (default 256)
  --residual-bits 16|8     precision of the residual stream (default 16)
  --input-bits 8|16        precision of the image after the normalization lookup table (default 8)
  --verify N               afterwards, compare the integer model with the fake-quantized one (its deployment
                           simulated by the same plan) on N test images
  --strict                 with --verify: fail (exit 1) when the agreement or accuracy targets are missed
                           (same top-1 >= 99.5 % at 4 bits and more, >= 99 % below; integer top-1 within
                           0.2 points of the fake-quantized top-1)
  --replan                 calibrate a new deployment plan even if the checkpoint records the one it was
                           trained or evaluated with
  --json                   print the summary as JSON
  --model M --method M --wbits W --abits A --first-last P --normalization N --dataset D
                           for weight files without a tinyquant sidecar (or to override it)
  --backend js|native --threads T`;

const EXPORT_OPTIONS = {
  checkpoint: { type: 'string' },
  format: { type: 'string' },
  out: { type: 'string' },
  ...DATA_OPTIONS,
  'calibration-images': { type: 'string' },
  'residual-bits': { type: 'string' },
  'input-bits': { type: 'string' },
  verify: { type: 'string' },
  strict: { type: 'boolean' },
  replan: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  model: { type: 'string' },
  normalization: { type: 'string' },
  dataset: { type: 'string' },
  backend: { type: 'string' },
  threads: { type: 'string' },
  ...quantizationOptions,
} as const;

/** Errors about the input (checkpoint, model, file) are reported without a stack trace. */
export function asInputError(e: unknown): unknown {
  const input = [LoweringError, TqmError, IntegerModelError, ConfigError, ExportInputError].some((type) => e instanceof type);
  return input ? new UsageError((e as Error).message) : e;
}

/** Write every file atomically; if one fails, remove the ones this call already wrote. */
export function writeAll(files: readonly ExportedFile[]): void {
  const written: string[] = [];
  try {
    for (const f of files) {
      writeFileAtomic(f.path, f.bytes);
      written.push(f.path);
    }
  } catch (e) {
    for (const path of written) rmSync(path, { force: true });
    throw e;
  }
}

async function verify(trained: TrainedModel, lowered: LoweredTrainedModel, images: number, dataDir: string | undefined): Promise<AgreementResult> {
  const test = await loadConfigDataset(trained.config, 'test', { dataDir });
  return measureAgreement(trained.model, lowered.ir, test, { limit: images, plan: lowered.plan, engine: fastestEngine(lowered.ir) });
}

export async function exportCommand(argv: string[]): Promise<void> {
  const args = parse('export', argv, EXPORT_OPTIONS);
  if (flag(args, 'help')) {
    console.log(EXPORT_USAGE);
    return;
  }
  if (args.positionals.length > 0) throw new UsageError(`export: unexpected argument "${args.positionals[0]}"\n${EXPORT_USAGE}`);
  const checkpoint = str(args, 'checkpoint');
  const out = str(args, 'out');
  const format = str(args, 'format') ?? 'tqm';
  if (!checkpoint || !out) throw new UsageError(`export: --checkpoint and --out are required\n${EXPORT_USAGE}`);
  const exporter = exporters[format];
  if (!exporter) throw new UsageError(`export: unknown format "${format}"; available: ${Object.keys(exporters).join(', ')}`);
  const calibrationImages = num(args, 'calibration-images', 256, { integer: true, min: 1 });
  const verifyImages = num(args, 'verify', 0, { integer: true, min: 0 });
  const dataDir = str(args, 'data-dir');
  applyBackendFlags(args);
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    if (!flag(args, 'json')) console.error(`warning: ${m}`);
  };
  try {
    const trained = loadTrainedModel(checkpoint, configFromFlags(args));
    const lowering = { dataDir, calibrationImages, residualBits: bitsFlag(args, 'residual-bits'), inputBits: bitsFlag(args, 'input-bits'), replan: flag(args, 'replan'), warn };
    let lowered: Promise<LoweredTrainedModel> | null = null;
    const lower = (): Promise<LoweredTrainedModel> => (lowered ??= lowerTrainedModel(trained, lowering));
    const ctx: ExportContext = { trained, out, warn, integerModel: async () => (await lower()).ir };
    const result = await exporter(ctx);
    writeAll(result.files);
    const agreement = verifyImages > 0 ? await verify(trained, await lower(), verifyImages, dataDir) : null;
    const missed = agreement ? missedTargets(agreement, trained.config) : [];
    if (flag(args, 'json')) {
      console.log(JSON.stringify({ format, files: result.files.map((f) => ({ path: f.path, bytes: f.bytes.length })), summary: result.summary, warnings, agreement, missedTargets: missed }));
    } else {
      printSummary(result.summary, agreement, missed);
    }
    if (flag(args, 'strict') && missed.length > 0) throw new Error(`export --strict: ${missed.join('; ')} (the files were written)`);
  } catch (e) {
    throw asInputError(e);
  }
}

function printSummary(summary: readonly string[], agreement: AgreementResult | null, missed: readonly string[]): void {
  for (const line of summary) console.log(line);
  if (agreement) {
    console.log(
      `verify on ${agreement.images} test images: same top-1 ${agreement.sameTop1.toFixed(2)}%, ` +
        `fake-quant ${agreement.fakeQuantTop1.toFixed(2)}%, integer ${agreement.integerTop1.toFixed(2)}%`,
    );
  }
  for (const m of missed) console.log(`target missed: ${m}`);
}

/** A bit option given on the command line, or undefined (the plan's, or the default). */
function bitsFlag(args: ReturnType<typeof parse>, name: 'residual-bits' | 'input-bits'): 8 | 16 | undefined {
  if (str(args, name) === undefined) return undefined;
  const bits = num(args, name, 16, { integer: true });
  if (bits !== 8 && bits !== 16) throw new UsageError(`--${name} must be 16 or 8, got ${bits}`);
  return bits;
}

/** The host int8 path where the native addon has it (same logits, much faster), else the TypeScript engine. */
function fastestEngine(ir: IntegerModel): IntegerInference | undefined {
  return hostEngineAvailability().available ? new HostIntegerEngine(ir) : undefined;
}

