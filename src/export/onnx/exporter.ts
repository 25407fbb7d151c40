/**
 * The `onnx` format of `tinyquant export` (listed in src/export/formats.ts). The caller writes the
 * returned bytes atomically.
 */
import { resolveNormalization } from '../../data/augment.js';
import type { ExportContext, ExportResult } from '../formats.js';
import { ONNX_OPSET, exportOnnx } from './index.js';

export async function onnxExporter(ctx: ExportContext): Promise<ExportResult> {
  const { model, config, firstLast, source, inputShape } = ctx.trained;
  const bytes = exportOnnx(model, {
    inputShape,
    normalization: resolveNormalization(config.normalization, inputShape[0]),
    metadata: {
      'tinyquant.source': source,
      'tinyquant.method': `${config.method} W${config.wbits}A${config.abits}, first/last ${firstLast}`,
    },
  });
  return {
    files: [{ path: ctx.out, bytes }],
    summary: [`${ctx.out}: ${bytes.length} bytes, ONNX opset ${ONNX_OPSET} in QDQ form; input float32 NCHW normalized with the '${config.normalization}' preset`],
  };
}
