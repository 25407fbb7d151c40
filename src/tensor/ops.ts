/**
 * Differentiable operations: each runs the backend forward and records how to run it backward.
 * Backward closures capture exactly what they need; saved backend state is released with the tape.
 */
import type { BatchNormParams, Buf, Conv2dParams, Pool2dParams, Shape } from '../backend/backend.js';
import { numel, shapeStr } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import { Tensor, record } from './tensor.js';

export type { Conv2dParams, Pool2dParams } from '../backend/backend.js';

export function conv2d(x: Tensor, w: Tensor, bias: Tensor | null, p: Conv2dParams): Tensor {
  const be = getBackend();
  const out = be.conv2d(x.buf, w.buf, bias?.buf ?? null, p);
  const inputs = bias ? [x, w, bias] : [x, w];
  return record('conv2d', out, inputs, (g) => {
    const gx = x.requiresGrad ? be.conv2dBackwardData(g, w.buf, x.shape, p) : null;
    if (!w.requiresGrad && !bias?.requiresGrad) return [gx, null, null];
    const { gw, gb } = be.conv2dBackwardWeights(g, x.buf, w.shape, bias !== null, p);
    return [gx, gw, gb];
  });
}

export interface BatchNormOptions extends BatchNormParams {
  readonly training: boolean;
}

/**
 * Batch normalization over dimension 1 of (N, C) or (N, C, H, W), with an optional fused ReLU.
 * Training mode normalizes with batch statistics and updates the running ones in place.
 */
export function batchNorm(
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  opts: BatchNormOptions,
): Tensor {
  const be = getBackend();
  if (!opts.training) {
    const y = be.batchNormInfer(x.buf, gamma.buf, beta.buf, runningMean.buf, runningVar.buf, opts);
    // Eval-mode BN is a per-channel affine map (y = gamma * (x - mean) / sqrt(var + eps) + beta) with
    // the statistics fixed: fine-tuning with frozen statistics still learns gamma and beta.
    return record('batchNormInfer', y, [x, gamma, beta], (g) => batchNormInferBackward(g, x, y, gamma, beta, runningMean, runningVar, opts));
  }
  const { y, saved } = be.batchNormTrain(x.buf, gamma.buf, beta.buf, runningMean.buf, runningVar.buf, opts);
  return record(
    'batchNorm',
    y,
    [x, gamma, beta],
    (g) => {
      const r = be.batchNormBackward(g, x.buf, y, gamma.buf, saved, opts);
      return [r.gx, r.gGamma, r.gBeta];
    },
    () => be.freeSaved(saved),
  );
}

/**
 * Gradients through eval-mode batch norm, in one pass over the elements (it runs only when
 * fine-tuning with frozen statistics): gx = g * gamma / sigma, gBeta = sum g, gGamma = sum g * (x - mean) / sigma,
 * with g masked by a fused ReLU.
 */
function batchNormInferBackward(g: Buf, x: Tensor, y: Buf, gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor, p: BatchNormParams): (Buf | null)[] {
  const be = getBackend();
  const [gv, xv, yv] = [be.download(g), x.toArray(), p.relu ? be.download(y) : null];
  const [gm, mu, rv] = [gamma.toArray(), mean.toArray(), variance.toArray()];
  const channels = gm.length;
  const inner = numel(g.shape.slice(2));
  const gx = new Float32Array(gv.length);
  const gGamma = new Float64Array(channels);
  const gBeta = new Float64Array(channels);
  for (let i = 0; i < gv.length; i += inner) {
    const c = (i / inner) % channels;
    const inv = 1 / Math.sqrt(rv[c] + p.eps);
    const scale = gm[c] * inv;
    let [sumG, sumGX] = [0, 0];
    for (let j = i; j < i + inner; j++) {
      const gj = yv && yv[j] <= 0 ? 0 : gv[j];
      gx[j] = gj * scale;
      sumG += gj;
      sumGX += gj * (xv[j] - mu[c]);
    }
    gBeta[c] += sumG;
    gGamma[c] += sumGX * inv;
  }
  return [
    x.requiresGrad ? be.upload(gx, g.shape) : null,
    gamma.requiresGrad ? be.upload(Float32Array.from(gGamma), gamma.shape) : null,
    beta.requiresGrad ? be.upload(Float32Array.from(gBeta), beta.shape) : null,
  ];
}

export function relu(x: Tensor): Tensor {
  const be = getBackend();
  const y = be.relu(x.buf);
  return record('relu', y, [x], (g) => [be.reluBackward(g, y)]);
}

/** min(max(x, 0), ceiling): ReLU6 for ceiling 6. */
export function clippedRelu(x: Tensor, ceiling: number): Tensor {
  const be = getBackend();
  const y = be.clippedRelu(x.buf, ceiling);
  return record('clippedRelu', y, [x], (g) => [be.clippedReluBackward(g, y, ceiling)]);
}

export function add(a: Tensor, b: Tensor): Tensor {
  const be = getBackend();
  return record('add', be.add(a.buf, b.buf), [a, b], (g) => [be.clone(g), be.clone(g)]);
}

/** relu(a + b): the residual join. */
export function addRelu(a: Tensor, b: Tensor): Tensor {
  return recordAddRelu(a, b, getBackend().addRelu(a.buf, b.buf));
}

/** Record y = relu(a + b), computed by the caller (possibly fused with more), on the tape. */
export function recordAddRelu(a: Tensor, b: Tensor, y: Buf): Tensor {
  const be = getBackend();
  return record('addRelu', y, [a, b], (g) => {
    const gx = be.reluBackward(g, y);
    return [gx, be.clone(gx)];
  });
}

/** alpha * x + beta with constant alpha and beta. */
export function affine(x: Tensor, alpha: number, beta: number): Tensor {
  const be = getBackend();
  return record('affine', be.affine(x.buf, alpha, beta), [x], (g) => [be.affine(g, alpha, 0)]);
}

export function tanh(x: Tensor): Tensor {
  const be = getBackend();
  const y = be.tanh(x.buf);
  return record('tanh', y, [x], (g) => [be.tanhBackward(g, y)]);
}

/**
 * |s| * x with a learnable one-element scale s (EWGS's output scale):
 * dL/dx = |s| g, dL/ds = sign(s) * sum(g * x).
 */
export function scaleByAbs(x: Tensor, s: Tensor): Tensor {
  const be = getBackend();
  const value = s.item();
  return record('scaleByAbs', be.affine(x.buf, Math.abs(value), 0), [x, s], (g) => [
    x.requiresGrad ? be.affine(g, Math.abs(value), 0) : null,
    s.requiresGrad ? be.upload(Float32Array.of(Math.sign(value) * be.dot(g, x.buf)), s.shape) : null,
  ]);
}

export function avgPool2d(x: Tensor, p: Pool2dParams): Tensor {
  const be = getBackend();
  return record('avgPool2d', be.avgPool2d(x.buf, p), [x], (g) => [be.avgPool2dBackward(g, x.shape, p)]);
}

/** Max over each window; padding never wins (see Backend.maxPool2d for ties and NaN). */
export function maxPool2d(x: Tensor, p: Pool2dParams): Tensor {
  const be = getBackend();
  return record('maxPool2d', be.maxPool2d(x.buf, p), [x], (g) => [be.maxPool2dBackward(g, x.buf, p)]);
}

/** (N, C, H, W) -> (N, C). */
export function globalAvgPool(x: Tensor): Tensor {
  const be = getBackend();
  return record('globalAvgPool', be.globalAvgPool(x.buf), [x], (g) => [be.globalAvgPoolBackward(g, x.shape)]);
}

export function reshape(x: Tensor, shape: Shape): Tensor {
  if (numel(shape) !== x.size) throw new Error(`reshape: cannot view ${shapeStr(x.shape)} as ${shapeStr(shape)}`);
  const be = getBackend();
  return record('reshape', be.reshape(x.buf, shape), [x], (g) => [be.reshape(g, x.shape)]);
}

/** (N, ...) -> (N, prod(...)). */
export function flatten(x: Tensor): Tensor {
  return reshape(x, [x.shape[0], numel(x.shape.slice(1))]);
}

export function linear(x: Tensor, w: Tensor, bias: Tensor | null): Tensor {
  const be = getBackend();
  const out = be.linear(x.buf, w.buf, bias?.buf ?? null);
  const inputs = bias ? [x, w, bias] : [x, w];
  return record('linear', out, inputs, (g) => {
    const gx = x.requiresGrad ? be.linearBackwardData(g, w.buf) : null;
    if (!w.requiresGrad && !bias?.requiresGrad) return [gx, null, null];
    const { gw, gb } = be.linearBackwardWeights(g, x.buf, bias !== null);
    return [gx, gw, gb];
  });
}

/** ResNet option-A shortcut: stride-subsample the pixels and zero-pad the channels. */
export function shortcutPad(x: Tensor, stride: number, padBefore: number, padAfter: number): Tensor {
  const be = getBackend();
  const out = be.shortcutPad(x.buf, stride, padBefore, padAfter);
  return record('shortcutPad', out, [x], (g) => [be.shortcutPadBackward(g, x.shape, stride, padBefore)]);
}

export interface CrossEntropyOutput {
  /** Scalar mean loss; differentiable w.r.t. the logits. */
  readonly loss: Tensor;
  readonly lossValue: number;
  /** Rows whose arg-max equals the label. */
  readonly correct: number;
}

/** Mean softmax cross-entropy, optionally with label smoothing. Throws on a non-finite loss. */
export function crossEntropy(logits: Tensor, labels: Int32Array, smoothing = 0): CrossEntropyOutput {
  const be = getBackend();
  if (logits.shape.length !== 2 || logits.shape[0] !== labels.length) {
    throw new Error(`crossEntropy: logits ${shapeStr(logits.shape)} do not match ${labels.length} labels`);
  }
  const r = be.softmaxCrossEntropy(logits.buf, labels, smoothing);
  if (!Number.isFinite(r.loss)) {
    be.free(r.probs);
    throw new Error(`crossEntropy: the loss is ${r.loss} (non-finite logits ${shapeStr(logits.shape)})`);
  }
  const loss = record(
    'crossEntropy',
    be.upload(Float32Array.of(r.loss), [1]),
    [logits],
    (g) => [be.softmaxCrossEntropyBackward(r.probs, labels, smoothing, be.download(g)[0])],
    () => be.free(r.probs),
  );
  return { loss, lossValue: r.loss, correct: r.correct };
}
