/** One optimization step and one evaluation pass over a batch: the innermost loop of training. */
import type { Module } from '../nn/module.js';
import * as ops from '../tensor/ops.js';
import { Tensor, backward, noGrad, tidy } from '../tensor/tensor.js';
import type { Optimizer } from '../optim/optimizer.js';
import { argmaxRows } from '../export/int-ops.js';

export interface Batch {
  /** NCHW float32 pixels, already normalized. */
  readonly images: Float32Array;
  readonly labels: Int32Array;
  readonly shape: readonly [number, number, number, number];
}

export interface StepResult {
  readonly loss: number;
  readonly correct: number;
  readonly count: number;
}

export interface TrainStepOptions {
  /** The model's forward for training (default model.call; the trainer passes graph/run.ts trainingForward). */
  readonly forward?: (x: Tensor) => Tensor;
  readonly labelSmoothing?: number;
  /** Called after backward, before the update (e.g. to check gradients or quantizer parameters). */
  readonly beforeUpdate?: () => void;
}

/** Forward, loss, backward and update on one batch; frees everything the step allocated. */
export function trainStep(model: Module, optimizer: Optimizer, batch: Batch, opts: TrainStepOptions = {}): StepResult {
  return tidy(() => {
    const x = Tensor.fromArray(batch.images, batch.shape);
    const logits = opts.forward ? opts.forward(x) : model.call(x);
    const { loss, lossValue, correct } = ops.crossEntropy(logits, batch.labels, opts.labelSmoothing ?? 0);
    backward(loss);
    opts.beforeUpdate?.();
    optimizer.step();
    optimizer.zeroGrad();
    return { loss: lossValue, correct, count: batch.labels.length };
  });
}

export interface EvalResult extends StepResult {
  readonly top5: number;
  /** Arg-max class of each image, in batch order. */
  readonly predictions: Int32Array;
}

/** Loss, top-1/top-5 hits and predictions of one batch, without recording gradients. */
export function evalBatch(model: Module, batch: Batch, forward: (x: Tensor) => Tensor = (x) => model.call(x)): EvalResult {
  return tidy(() =>
    noGrad(() => {
      const x = Tensor.fromArray(batch.images, batch.shape);
      const logits = forward(x);
      const { lossValue, correct } = ops.crossEntropy(logits, batch.labels);
      const values = logits.toArray();
      const classes = logits.shape[1];
      return {
        loss: lossValue,
        correct,
        count: batch.labels.length,
        top5: topKCorrect(values, classes, batch.labels, Math.min(5, classes)),
        predictions: argmaxRows(values, classes),
      };
    }),
  );
}

/** Rows (of `classes` logits each) whose label is among the k largest (ties: lower index first). */
export function topKCorrect(values: Float32Array, classes: number, labels: Int32Array, k: number): number {
  let hits = 0;
  for (let n = 0; n < labels.length; n++) {
    const row = values.subarray(n * classes, (n + 1) * classes);
    const label = labels[n];
    let ahead = 0;
    for (let c = 0; c < classes; c++) if (row[c] > row[label] || (row[c] === row[label] && c < label)) ahead++;
    if (ahead < k) hits++;
  }
  return hits;
}
