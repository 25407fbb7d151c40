/** Adam (L2 weight decay added to the gradient) and AdamW (decoupled decay), PyTorch semantics. */
import type { Buf } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import type { Parameter } from '../nn/module.js';
import { type ParamGroup, Optimizer } from './optimizer.js';

export interface AdamOptions {
  readonly beta1?: number;
  readonly beta2?: number;
  readonly eps?: number;
  /** AdamW: weight decay applied to the parameter, not added to the gradient. */
  readonly decoupled?: boolean;
}

export class Adam extends Optimizer {
  protected readonly slotNames = ['exp_avg', 'exp_avg_sq'] as const;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly decoupled: boolean;

  constructor(groups: ParamGroup[], opts: AdamOptions = {}) {
    super(groups);
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.decoupled = opts.decoupled ?? false;
  }

  protected update(p: Parameter, grad: Buf, [m, v]: Buf[], group: ParamGroup): void {
    getBackend().adamStep(p.buf, grad, m, v, {
      lr: group.lr,
      beta1: this.beta1,
      beta2: this.beta2,
      eps: this.eps,
      weightDecay: group.weightDecay,
      decoupled: this.decoupled,
      step: this.stepCount,
    });
  }
}
