/**
 * `tinyquant export --checkpoint FILE --format tqm --out PATH`: a trained fake-quantized model to a
 * deployable format (formats: src/export/formats.ts). Output files are written only after the
 * exporter succeeded, each atomically; `--verify N` then checks the integer model against the
 * fake-quantized one, its deployment simulated by the same plan, on N test images (`--strict`: and
 * fails when the agreement targets are missed).
 */
import { writeFileAtomic } from '../io/atomic.js';
import { rmSync } from 'node:fs';
import { loadConfigDataset } from '../train/dataset.js';
import { createEvalLoader, fixedSubset } from '../data/index.js';
import { type AgreementResult, measureAgreement, missedTargets } from '../export/agreement.js';
import { type LoweredTrainedModel, loadTrainedModel, lowerTrainedModel } from '../export/checkpoint-model.js';
import type { CExportOptions } from '../export/c/exporter.js';
import { IMAGE_LAYOUTS } from '../export/c/generate.js';
import { ARENA_PLACEMENTS, dropInProblem } from '../export/c/names.js';
import { fastestIntegerEngine } from '../export/deployed.js';
import { type ExportContext, type ExportedFile, exporters } from '../export/formats.js';
import { type OnnxAgreement, compareWithOnnxRuntime } from '../export/onnx/verify.js';
import { type CommandSpec, type ParsedArgs, UsageError, flag, num, oneOf, optionalInt, parseOrHelp, str, unexpectedArgument } from './args.js';
import { readingInput } from './errors.js';
import { quantizationOptions } from './quant-flags.js';
import { BACKEND_OPTIONS, DATA_OPTIONS, applyBackendFlags, configFromFlags } from './train.js';

export const EXPORT: CommandSpec = {
  name: 'export',
  summary: 'export a trained checkpoint (tqm, c, onnx)',
  synopsis: '--checkpoint FILE --format FORMAT --out PATH [options]',
  about:
    'The deployment plan the run recorded gives the fixed-point scales (what its final evaluation measured); without one, training images calibrate them. ' +
    'Output files are written only when the export succeeded.',
  options: {
    checkpoint: { type: 'string', value: 'FILE', description: 'the trained checkpoint (tinyquant sidecar or weights)' },
    format: { type: 'string', value: Object.keys(exporters).join('|'), default: 'tqm', description: 'the output format' },
    out: {
      type: 'string',
      value: 'PATH',
      description: 'the output file; format c writes NAME.c + NAME.h (from NAME.c or NAME), or DIR/model.c + DIR/model.h for a directory',
    },
    name: {
      type: 'string',
      value: 'ID',
      description: 'format c: prefix of every external symbol, macro and table (kws: kws_infer, kws_class_names, KWS_CLASSES, guard KWS_H), so several models link into one program (default tq)',
    },
    arena: { type: 'string', value: 'static|caller', description: "format c: the arena is a static array in the source, or the caller's memory passed as NAME_infer's third argument (default static)" },
    section: { type: 'string', value: 'SECTION', description: 'format c: the linker section of the static arena, e.g. .bss.tq (default: the compiler\'s .bss)' },
    'image-layout': { type: 'string', value: 'chw|hwc', description: 'format c: the image NAME_infer reads: channel planes or interleaved pixels (default chw)' },
    'pack-activations': {
      type: 'boolean',
      description: 'format c: store 4-bit activation codes two per byte where that lowers the arena (less RAM, more instructions; the summary says what it saved)',
    },
    'arena-budget': {
      type: 'string',
      value: 'BYTES',
      description: 'format c: arena bytes the layout may use for faster kernels (larger dual-MAC blocks; with --pack-activations only the packing it takes to fit)',
    },
    'build-files': {
      type: 'boolean',
      description: 'format c: also write CMakeLists.txt (a library target), NAME.mk (a Makefile fragment) and main.c (an example that classifies test image 0 or a file)',
    },
    ...DATA_OPTIONS,
    'calibration-images': { type: 'string', value: 'N', default: '256', description: 'training images for calibration' },
    'residual-bits': { type: 'string', value: '16|8', description: "precision of the residual stream (default: the run's plan, else 16)" },
    'input-bits': { type: 'string', value: '8|16', description: "precision of the image after the normalization lookup table (default: the run's plan, else 8)" },
    replan: { type: 'boolean', description: 'calibrate a new deployment plan even where the checkpoint records one' },
    verify: {
      type: 'string',
      value: 'N',
      default: '0',
      description: 'then compare with the fake-quantized model on N test images: the integer model (tqm, c), onnxruntime on the file (onnx)',
    },
    strict: {
      type: 'boolean',
      description: 'with --verify: fail when the integer model misses the targets (same top-1 >= 99.5 % at 4 bits and more, 99 % below; top-1 within 0.2 points)',
    },
    json: { type: 'boolean', description: 'print the summary as JSON' },
    model: { type: 'string', value: 'M', description: 'the architecture of weights without a tinyquant sidecar (or an override)' },
    normalization: { type: 'string', value: 'N', description: 'input normalization (default: the run\'s)' },
    dataset: { type: 'string', value: 'D', description: 'the dataset (default: the run\'s)' },
    ...quantizationOptions,
    ...BACKEND_OPTIONS,
  },
};

const C_FLAGS = ['name', 'arena', 'section', 'image-layout', 'pack-activations', 'arena-budget', 'build-files'] as const;

/** The `c` format's flags, checked before anything is lowered or written (and refused with another format). */
function cOptions(args: ParsedArgs, format: string, exampleImage: CExportOptions['exampleImage']): CExportOptions | undefined {
  const given = C_FLAGS.filter((f) => args.values[f] !== undefined);
  if (format !== 'c') {
    if (given.length > 0) throw new UsageError(`--${given[0]} applies to --format c only`);
    return undefined;
  }
  const optional = <T extends string>(name: string, allowed: readonly T[]): T | undefined => (str(args, name) === undefined ? undefined : oneOf(args, name, allowed));
  const o: CExportOptions = {
    name: str(args, 'name'),
    arena: optional('arena', ARENA_PLACEMENTS),
    section: str(args, 'section'),
    imageLayout: optional('image-layout', IMAGE_LAYOUTS),
    packActivations: flag(args, 'pack-activations'),
    arenaBudget: optionalInt(args, 'arena-budget'),
    buildFiles: flag(args, 'build-files'),
    exampleImage,
  };
  const problem = dropInProblem(o);
  if (problem) throw new UsageError(problem);
  return o;
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

type Verification = { readonly kind: 'integer'; readonly result: AgreementResult } | { readonly kind: 'onnxruntime'; readonly result: OnnxAgreement };

/** --verify: the written ONNX file under onnxruntime, or the integer model, against the fake-quantized model. */
async function verify(ctx: ExportContext, lower: () => Promise<LoweredTrainedModel>, files: readonly ExportedFile[], format: string, images: number, dataDir: string | undefined): Promise<Verification> {
  const { model, config } = ctx.trained;
  const test = await readingInput(() => loadConfigDataset(config, 'test', { dataDir }));
  if (format !== 'onnx') {
    const { ir, plan } = await lower();
    const { engine } = await fastestIntegerEngine(ir);
    return { kind: 'integer', result: measureAgreement(model, ir, test, { limit: images, plan, engine }) };
  }
  const loader = createEvalLoader(fixedSubset(test, images), { batchSize: config.evalBatch, normalization: config.normalization, workers: config.workers });
  try {
    return { kind: 'onnxruntime', result: await compareWithOnnxRuntime(model, files[0].bytes, loader) };
  } finally {
    await loader.close();
  }
}

/** A bit option given on the command line, or undefined (the run's plan, else the default). */
function bitsOption(args: Parameters<typeof str>[0], name: 'residual-bits' | 'input-bits'): 8 | 16 | undefined {
  if (str(args, name) === undefined) return undefined;
  const bits = num(args, name, { integer: true });
  if (bits !== 8 && bits !== 16) throw new UsageError(`--${name} must be 16 or 8, got ${bits}`);
  return bits;
}

function verificationLine(v: Verification): string {
  if (v.kind === 'integer') {
    const a = v.result;
    return `verify on ${a.images} test images: same top-1 ${a.sameTop1.toFixed(2)}%, fake-quant ${a.fakeQuantTop1.toFixed(2)}%, integer ${a.integerTop1.toFixed(2)}%`;
  }
  const o = v.result;
  return `verify on ${o.images} test images under onnxruntime: same top-1 ${o.sameTop1.toFixed(2)}%, fake-quant ${o.top1Model.toFixed(2)}%, onnxruntime ${o.top1Onnx.toFixed(2)}%`;
}

export async function exportCommand(argv: string[]): Promise<void> {
  const args = parseOrHelp(EXPORT, argv);
  if (!args) return;
  if (args.positionals.length > 0) throw unexpectedArgument(EXPORT, args.positionals[0]);
  const checkpoint = str(args, 'checkpoint');
  const out = str(args, 'out');
  if (!checkpoint || !out) throw new UsageError('export: --checkpoint and --out are required');
  const format = oneOf(args, 'format', Object.keys(exporters));
  const exporter = exporters[format];
  const residualBits = bitsOption(args, 'residual-bits');
  const inputBits = bitsOption(args, 'input-bits');
  const calibrationImages = num(args, 'calibration-images', { integer: true, min: 1 });
  const verifyImages = num(args, 'verify', { integer: true, min: 0 });
  const dataDir = str(args, 'data-dir');
  const c = cOptions(args, format, async () => {
    const test = await loadConfigDataset(trained.config, 'test', { dataDir });
    const size = test.channels * test.height * test.width;
    return { image: test.images.slice(0, size), what: `test image 0 of ${test.name}, label ${test.classes[test.labels[0]]}` };
  });
  applyBackendFlags(args);
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    if (!flag(args, 'json')) console.error(`warning: ${m}`);
  };
  const trained = readingInput(() => loadTrainedModel(checkpoint, configFromFlags(args)));
  let lowered: Promise<LoweredTrainedModel> | null = null;
  const lower = (): Promise<LoweredTrainedModel> => (lowered ??= lowerTrainedModel(trained, { dataDir, calibrationImages, residualBits, inputBits, replan: flag(args, 'replan'), warn }));
  const ctx: ExportContext = { trained, out, warn, integerModel: async () => (await lower()).ir, c };
  const result = await exporter(ctx);
  writeAll(result.files);
  const verification = verifyImages > 0 ? await verify(ctx, lower, result.files, format, verifyImages, dataDir) : null;
  const missed = verification?.kind === 'integer' ? missedTargets(verification.result, trained.config) : [];
  if (flag(args, 'json')) {
    const files = result.files.map((f) => ({ path: f.path, bytes: f.bytes.length }));
    console.log(JSON.stringify({ format, files, summary: result.summary, warnings, agreement: verification?.result ?? null, verifiedWith: verification?.kind ?? null, missedTargets: missed }));
  } else {
    for (const line of result.summary) console.log(line);
    if (verification) console.log(verificationLine(verification));
    for (const m of missed) console.log(`target missed: ${m}`);
  }
  if (flag(args, 'strict') && missed.length > 0) throw new Error(`export --strict: ${missed.join('; ')} (the files were written)`);
}
