/**
 * Softmax cross-entropy with label smoothing, PyTorch's CrossEntropyLoss(label_smoothing = s,
 * reduction = 'mean'): per row, loss = (1 - s) * (-log p[label]) + (s / C) * sum_c (-log p[c]),
 * averaged over the rows. Log-softmax in float64 with the max subtracted.
 */

export interface SoftmaxCrossEntropy {
  readonly loss: number;
  readonly probs: Float32Array;
  readonly correct: number;
}

export function softmaxCrossEntropyForward(
  logits: Float32Array,
  labels: Int32Array,
  rows: number,
  classes: number,
  smoothing: number,
): SoftmaxCrossEntropy {
  const probs = new Float32Array(rows * classes);
  let total = 0;
  let correct = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * classes;
    let argmax = 0;
    for (let c = 1; c < classes; c++) if (logits[base + c] > logits[base + argmax]) argmax = c;
    if (argmax === labels[r]) correct++;
    const max = logits[base + argmax];
    let sumExp = 0;
    let sumShifted = 0;
    for (let c = 0; c < classes; c++) {
      const shifted = logits[base + c] - max;
      sumExp += Math.exp(shifted);
      sumShifted += shifted;
    }
    const logSum = Math.log(sumExp);
    for (let c = 0; c < classes; c++) probs[base + c] = Math.exp(logits[base + c] - max - logSum);
    const nllLabel = logSum - (logits[base + labels[r]] - max);
    // mean over classes of -log p[c] = logSum - mean(shifted)
    const nllUniform = logSum - sumShifted / classes;
    total += (1 - smoothing) * nllLabel + smoothing * nllUniform;
  }
  return { loss: total / rows, probs, correct };
}

/** scale / N * (p - target), target = (1 - s) one-hot + s / C. */
export function softmaxCrossEntropyBackward(
  probs: Float32Array,
  labels: Int32Array,
  rows: number,
  classes: number,
  smoothing: number,
  scale: number,
): Float32Array {
  const g = new Float32Array(rows * classes);
  const factor = scale / rows;
  const uniform = smoothing / classes;
  for (let r = 0; r < rows; r++) {
    const base = r * classes;
    for (let c = 0; c < classes; c++) {
      const target = (c === labels[r] ? 1 - smoothing : 0) + uniform;
      g[base + c] = factor * (probs[base + c] - target);
    }
  }
  return g;
}
