/**
 * Optimizer updates with PyTorch's semantics, element by element in float64 and stored as float32.
 *
 * SGD (torch.optim.SGD): d = g + wd * p; with momentum mu > 0: v = mu * v + (1 - dampening) * d and
 * d = nesterov ? d + mu * v : v; then p -= lr * d. PyTorch sets v = d on the first step; the
 * caller gets the same result by passing a zero buffer and dampening 0 on that step.
 *
 * Adam (torch.optim.Adam / AdamW): L2 variant d = g + wd * p; decoupled variant p *= 1 - lr * wd;
 * m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2;
 * p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 */
import type { AdamParams, SgdParams } from '../backend.js';

export function sgdUpdate(param: Float32Array, grad: Float32Array, velocity: Float32Array | null, p: SgdParams): void {
  const { lr, momentum, dampening, weightDecay, nesterov } = p;
  for (let i = 0; i < param.length; i++) {
    let d = grad[i] + weightDecay * param[i];
    if (momentum !== 0 && velocity !== null) {
      const v = momentum * velocity[i] + (1 - dampening) * d;
      velocity[i] = v;
      d = nesterov ? d + momentum * v : v;
    }
    param[i] = param[i] - lr * d;
  }
}

export function adamUpdate(param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, p: AdamParams): void {
  const { lr, beta1, beta2, eps, weightDecay, decoupled, step } = p;
  const stepSize = lr / (1 - beta1 ** step);
  const sqrtCorrection2 = Math.sqrt(1 - beta2 ** step);
  const l2 = decoupled ? 0 : weightDecay;
  const shrink = decoupled ? 1 - lr * weightDecay : 1;
  for (let i = 0; i < param.length; i++) {
    const d = grad[i] + l2 * param[i];
    const mi = beta1 * m[i] + (1 - beta1) * d;
    const vi = beta2 * v[i] + (1 - beta2) * d * d;
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i] * shrink - (stepSize * mi) / (Math.sqrt(vi) / sqrtCorrection2 + eps);
  }
}
