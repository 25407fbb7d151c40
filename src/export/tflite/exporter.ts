/**
 * The `tflite` format of `tinyquant export` (listed in src/export/formats.ts): the lowered integer
 * model as a TFLite int8 flatbuffer. The caller writes the returned bytes atomically.
 */
import type { ExportContext, ExportResult } from '../formats.js';
import { exportTflite } from './index.js';

export async function tfliteExporter(ctx: ExportContext): Promise<ExportResult> {
  const model = await ctx.integerModel();
  const unit = model.tensors[model.output].scale;
  const maxAbs = ctx.trained.plan?.logitsMaxAbs;
  const { bytes, logitScale, notes } = exportTflite(model, { logitsMaxAbs: maxAbs && unit > 0 ? maxAbs / unit : undefined });
  return {
    files: [{ path: ctx.out, bytes }],
    summary: [
      `${ctx.out}: ${bytes.length} bytes, TFLite int8 (schema 3); input int8 NHWC after the normalization table, output int8 logits of scale ${logitScale}`,
      ...notes,
    ],
  };
}
