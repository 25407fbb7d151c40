/** Evaluation of a model over a whole loader: top-1, top-5, mean loss, per-image predictions. */
import type { DataLoader } from '../data/index.js';
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';
import { stopPoint } from '../util/stop.js';
import { evalBatch } from './step.js';

export interface EvalSummary {
  readonly top1: number;
  readonly top5: number;
  readonly loss: number;
  readonly n: number;
  /** Predicted class of each image, in dataset order. */
  readonly predictions: Int32Array;
}

export interface EvaluateOptions {
  /** The forward to evaluate (e.g. the graph with the deployment simulated); default the model's own. */
  readonly forward?: (x: Tensor) => Tensor;
  /** Aborting stops the evaluation after the batch in progress (StopRequested, util/stop.ts). */
  readonly signal?: AbortSignal;
}

/** Evaluate in eval mode. */
export async function evaluate(model: Module, loader: DataLoader, opts: EvaluateOptions = {}): Promise<EvalSummary> {
  const wasTraining = model.training;
  model.eval();
  const predictions = new Int32Array(loader.dataset.count);
  let [lossSum, correct, top5, n] = [0, 0, 0, 0];
  try {
    for await (const b of loader.epoch(0)) {
      const r = evalBatch(model, { images: b.images, labels: b.labels, shape: [b.size, b.channels, b.height, b.width] }, opts.forward);
      lossSum += r.loss * r.count;
      correct += r.correct;
      top5 += r.top5;
      n += r.count;
      b.indices.forEach((index, i) => (predictions[index] = r.predictions[i]));
      await stopPoint(opts.signal);
    }
  } finally {
    model.train(wasTraining);
  }
  return { top1: (100 * correct) / n, top5: (100 * top5) / n, loss: lossSum / n, n, predictions };
}
