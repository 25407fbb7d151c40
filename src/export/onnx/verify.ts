/**
 * Check an exported ONNX model against the model it came from: onnxruntime (npm onnxruntime-node,
 * an optional dependency, loaded only when this runs) and tinyquant's eval forward classify every image of a loader, and
 * the share of identical top-1 predictions, both accuracies and onnxruntime's speed are reported.
 */
import type { DataLoader } from '../../data/index.js';
import type { Module } from '../../nn/module.js';
import { Tensor, noGrad, tidy } from '../../tensor/tensor.js';
import { ONNX_INPUT, ONNX_OUTPUT } from './index.js';
import { argmaxRows } from '../int-ops.js';

export interface OnnxAgreement {
  readonly images: number;
  /** Images where both give the same top-1 class, in percent. */
  readonly sameTop1: number;
  readonly top1Model: number;
  readonly top1Onnx: number;
  /** Largest |logit difference| over all images and classes. */
  readonly maxLogitDiff: number;
  /** onnxruntime inference throughput (session.run time only). */
  readonly onnxImagesPerSecond: number;
}

export interface VerifyOptions {
  /** onnxruntime intra-op threads (default 1). */
  readonly threads?: number;
}

export const ONNXRUNTIME_MISSING = 'running an ONNX model needs onnxruntime-node, an optional dependency of tinyquant: npm install onnxruntime-node';

/** An optional dependency's module (`load` imports it), or an error saying `missing` where it is not installed. */
export async function importOptional<T>(load: () => Promise<T>, missing: string): Promise<T> {
  try {
    return await load();
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') throw new Error(missing, { cause: e });
    throw e;
  }
}

export async function compareWithOnnxRuntime(model: Module, onnx: Uint8Array, loader: DataLoader, opts: VerifyOptions = {}): Promise<OnnxAgreement> {
  if (model.training) throw new Error('compareWithOnnxRuntime: put the model in eval mode first');
  const ort = await importOptional(() => import('onnxruntime-node'), ONNXRUNTIME_MISSING);
  const threads = opts.threads ?? 1;
  const session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: threads, interOpNumThreads: 1 });
  let [images, same, correctModel, correctOnnx, maxDiff, onnxMs] = [0, 0, 0, 0, 0, 0];
  try {
    for await (const b of loader.epoch(0)) {
      const shape = [b.size, b.channels, b.height, b.width];
      const ours = tidy(() => noGrad(() => model.call(Tensor.fromArray(b.images, shape)).toArray()));
      const start = performance.now();
      const result = await session.run({ [ONNX_INPUT]: new ort.Tensor('float32', b.images, shape) });
      onnxMs += performance.now() - start;
      const theirs = result[ONNX_OUTPUT].data as Float32Array;
      for (let i = 0; i < ours.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ours[i] - theirs[i]));
      const [predModel, predOnnx] = [argmaxRows(ours, ours.length / b.size), argmaxRows(theirs, theirs.length / b.size)];
      for (let i = 0; i < b.size; i++) {
        same += Number(predModel[i] === predOnnx[i]);
        correctModel += Number(predModel[i] === b.labels[i]);
        correctOnnx += Number(predOnnx[i] === b.labels[i]);
      }
      images += b.size;
    }
  } finally {
    await session.release();
  }
  const percent = (count: number) => (100 * count) / images;
  return {
    images,
    sameTop1: percent(same),
    top1Model: percent(correctModel),
    top1Onnx: percent(correctOnnx),
    maxLogitDiff: maxDiff,
    onnxImagesPerSecond: images / (onnxMs / 1000),
  };
}
