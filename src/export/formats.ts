/**
 * Export formats by name. An exporter turns a trained model into output files (bytes only: the
 * caller writes them, atomically, after the exporter succeeded, so a failure never leaves a
 * partial output). `tqm` lives here; ONNX (src/export/onnx), C (src/export/c) and TFLite (src/export/tflite) have their own folders
 * and an entry in `exporters`.
 */
import type { IntegerModel } from './ir.js';
import type { TrainedModel } from './checkpoint-model.js';
import { encodeTqm } from './tqm.js';
import { onnxExporter } from './onnx/exporter.js';
import { type CExportOptions, cExporter } from './c/exporter.js';
import { tfliteExporter } from './tflite/exporter.js';

export interface ExportContext {
  /** The trained fake-quantized model, its config and checkpoint. */
  readonly trained: TrainedModel;
  /** The lowered integer model (lowered and calibrated on the first call, the same object afterwards). */
  integerModel(): Promise<IntegerModel>;
  /** Where the user asked the output to go (`--out`). */
  readonly out: string;
  readonly warn: (message: string) => void;
  /** Options of the `c` format (the C exporter's own flags). */
  readonly c?: CExportOptions;
}

export interface ExportedFile {
  readonly path: string;
  readonly bytes: Uint8Array;
}

export interface ExportResult {
  readonly files: readonly ExportedFile[];
  /** One line per fact worth printing (sizes, deviations). */
  readonly summary: readonly string[];
}

export type Exporter = (ctx: ExportContext) => Promise<ExportResult>;

async function exportTqm(ctx: ExportContext): Promise<ExportResult> {
  const model = await ctx.integerModel();
  const bytes = encodeTqm(model);
  return { files: [{ path: ctx.out, bytes }], summary: [`${ctx.out}: ${bytes.length} bytes, ${model.ops.length} ops`, ...model.meta.notes] };
}

export const exporters: Record<string, Exporter> = { tqm: exportTqm, onnx: onnxExporter, c: cExporter, tflite: tfliteExporter };
