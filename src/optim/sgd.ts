/** SGD with momentum, dampening, Nesterov and L2 weight decay, with PyTorch's semantics. */
import type { Buf } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import type { Parameter } from '../nn/module.js';
import { type ParamGroup, Optimizer } from './optimizer.js';

export interface SgdOptions {
  readonly momentum?: number;
  readonly dampening?: number;
  readonly nesterov?: boolean;
}

export class Sgd extends Optimizer {
  protected readonly slotNames = ['momentum'] as const;
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;
  readonly #started = new WeakSet<Parameter>();

  constructor(groups: ParamGroup[], opts: SgdOptions = {}) {
    super(groups);
    this.momentum = opts.momentum ?? 0;
    this.dampening = opts.dampening ?? 0;
    this.nesterov = opts.nesterov ?? false;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) {
      throw new Error('SGD: Nesterov momentum requires momentum > 0 and dampening 0');
    }
  }

  protected update(p: Parameter, grad: Buf, [buf]: Buf[], group: ParamGroup): void {
    // PyTorch starts the momentum buffer at the first gradient (undamped); from a zero buffer
    // that is exactly one update with dampening 0.
    const first = !this.#started.has(p) && this.stepCount <= 1;
    this.#started.add(p);
    getBackend().sgdStep(p.buf, grad, this.momentum > 0 ? buf : null, {
      lr: group.lr,
      momentum: this.momentum,
      dampening: first ? 0 : this.dampening,
      weightDecay: group.weightDecay,
      nesterov: this.nesterov,
    });
  }
}
