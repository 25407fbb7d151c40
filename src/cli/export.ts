/**
 * `tinyquant export --checkpoint FILE --format tqm --out PATH`: a trained fake-quantized model to a
 * deployable format (formats: src/export/formats.ts). Output files are written only after the
 * exporter succeeded, each atomically; `--verify N` then checks the integer model against the
 * fake-quantized one on N test images.
 */
import { writeFileAtomic } from '../io/atomic.js';
import { rmSync } from 'node:fs';
import { loadConfigDataset } from '../train/dataset.js';
import { type AgreementResult, measureAgreement } from '../export/agreement.js';
import { ExportInputError, type TrainedModel, loadTrainedModel, lowerTrainedModel } from '../export/checkpoint-model.js';
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
  --verify N               afterwards, compare the integer model with the fake-quantized one on N test images
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

async function verify(trained: TrainedModel, ir: IntegerModel, images: number, dataDir: string | undefined): Promise<AgreementResult> {
  const test = await loadConfigDataset(trained.config, 'test', { dataDir });
  return measureAgreement(trained.model, ir, test, { limit: images });
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
  const residualBits = num(args, 'residual-bits', 16, { integer: true });
  if (residualBits !== 8 && residualBits !== 16) throw new UsageError(`--residual-bits must be 16 or 8, got ${residualBits}`);
  const inputBits = num(args, 'input-bits', 8, { integer: true });
  if (inputBits !== 8 && inputBits !== 16) throw new UsageError(`--input-bits must be 8 or 16, got ${inputBits}`);
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
    let lowered: Promise<IntegerModel> | null = null;
    const ctx: ExportContext = {
      trained,
      out,
      warn,
      integerModel: () => (lowered ??= lowerTrainedModel(trained, { dataDir, calibrationImages, residualBits, inputBits, warn })),
    };
    const result = await exporter(ctx);
    writeAll(result.files);
    const agreement = verifyImages > 0 ? await verify(trained, await ctx.integerModel(), verifyImages, dataDir) : null;
    if (flag(args, 'json')) {
      console.log(JSON.stringify({ format, files: result.files.map((f) => ({ path: f.path, bytes: f.bytes.length })), summary: result.summary, warnings, agreement }));
      return;
    }
    for (const line of result.summary) console.log(line);
    if (agreement) {
      console.log(
        `verify on ${agreement.images} test images: same top-1 ${agreement.sameTop1.toFixed(2)}%, ` +
          `fake-quant ${agreement.fakeQuantTop1.toFixed(2)}%, integer ${agreement.integerTop1.toFixed(2)}%`,
      );
    }
  } catch (e) {
    throw asInputError(e);
  }
}
