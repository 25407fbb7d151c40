/**
 * TFLite export: the lowered integer model (src/export/ir.ts) as a TFLite int8 flatbuffer for
 * TFLite and TFLite Micro (convert.ts says what maps to what, what is refused and where TFLite's
 * rounding can differ from the engine's; schema.ts writes the tables).
 *
 * Interface: input int8 [1, H, W, C], the image after the model's normalization table (the IR's
 * input op: `tfliteInput` computes it from a uint8 CHW image); output int8 [1, 1, 1, classes],
 * the logits in units of 2^logitShift engine logit units (`logitScale` reals).
 */
import { writeFileAtomic } from '../../io/index.js';
import { type IntegerModel, inputShape } from '../ir.js';
import { type TfliteConvertOptions, type TfliteGraph, convertToTflite } from './convert.js';
import { writeModel } from './schema.js';

export { TfliteExportError, type TfliteConvertOptions } from './convert.js';

export interface TfliteExport extends Omit<TfliteGraph, 'def'> {
  readonly bytes: Uint8Array;
}

/** The serialized TFLite model; throws TfliteExportError naming the layer for what TFLite int8 cannot express. */
export function exportTflite(model: IntegerModel, opts: TfliteConvertOptions = {}): TfliteExport {
  const { def, ...rest } = convertToTflite(model, opts);
  return { bytes: writeModel(def), ...rest };
}

/** Export and write atomically (nothing is written when the export fails). */
export function writeTfliteFile(path: string, model: IntegerModel, opts: TfliteConvertOptions = {}): TfliteExport {
  const result = exportTflite(model, opts);
  writeFileAtomic(path, result.bytes);
  return result;
}

/** The TFLite input of one uint8 CHW image: the model's normalization table applied, as int8 NHWC. */
export function tfliteInput(model: IntegerModel, image: Uint8Array): Int8Array {
  const op = model.ops[0];
  const [c, h, w] = inputShape(model);
  if (op.kind !== 'input' || image.length !== c * h * w) throw new Error(`tfliteInput: an image must be ${c * h * w} bytes (uint8 [${c}, ${h}, ${w}])`);
  const out = new Int8Array(c * h * w);
  for (let ch = 0; ch < c; ch++) {
    for (let p = 0; p < h * w; p++) out[p * c + ch] = op.lut[ch * 256 + image[ch * h * w + p]];
  }
  return out;
}
