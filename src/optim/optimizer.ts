/**
 * Optimizers with parameter groups (each with its own learning rate and weight decay: quantizer
 * parameters usually need theirs). Updates run in the backend, in place.
 */
import type { Buf } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import type { Module, ParamKind, Parameter, StateDict, StateTensor } from '../nn/module.js';
import { Tensor, keep } from '../tensor/tensor.js';

export interface ParamGroupSpec {
  /** Name of the group, e.g. "weights" or "quantizer". */
  readonly name: string;
  /** Which parameters belong here; the first group that matches a parameter takes it. */
  readonly match: (name: string, p: Parameter) => boolean;
  readonly lr: number;
  readonly weightDecay: number;
}

export interface ParamGroup {
  readonly name: string;
  readonly params: readonly (readonly [string, Parameter])[];
  /** Learning rate before the schedule. */
  readonly baseLr: number;
  lr: number;
  readonly weightDecay: number;
}

/** Match parameters by kind. */
export function byKind(...kinds: ParamKind[]): (name: string, p: Parameter) => boolean {
  return (_name, p) => kinds.includes(p.kind);
}

/** Split a model's parameters into groups; parameters no spec matches go to a last "default" group. */
export function groupParameters(model: Module, specs: readonly ParamGroupSpec[], defaults: { lr: number; weightDecay: number }): ParamGroup[] {
  const members: [string, Parameter][][] = specs.map(() => []);
  const rest: [string, Parameter][] = [];
  for (const [name, p] of model.namedParameters()) {
    const i = specs.findIndex((s) => s.match(name, p));
    (i >= 0 ? members[i] : rest).push([name, p]);
  }
  const groups: ParamGroup[] = specs.map((s, i) => ({ name: s.name, params: members[i], baseLr: s.lr, lr: s.lr, weightDecay: s.weightDecay }));
  if (rest.length > 0) groups.push({ name: 'default', params: rest, baseLr: defaults.lr, lr: defaults.lr, weightDecay: defaults.weightDecay });
  return groups.filter((g) => g.params.length > 0);
}

export interface OptimizerState {
  readonly step: number;
  /** Per-parameter state tensors, keyed `<param name>.<slot>` (e.g. `conv1.weight.momentum`). */
  readonly tensors: StateDict;
}

export abstract class Optimizer {
  readonly groups: ParamGroup[];
  /** Completed update steps. */
  stepCount = 0;
  readonly #slots = new Map<string, Tensor>();

  constructor(groups: ParamGroup[]) {
    if (groups.length === 0) throw new Error('optimizer: no parameters to optimize');
    this.groups = groups;
  }

  /** Names of the state slots this optimizer keeps per parameter, e.g. ["momentum"]. */
  protected abstract readonly slotNames: readonly string[];

  protected abstract update(p: Parameter, grad: Buf, slots: Buf[], group: ParamGroup): void;

  /** Apply one update to every parameter that has a gradient. */
  step(): void {
    this.stepCount++;
    for (const group of this.groups) {
      for (const [name, p] of group.params) {
        if (!p.grad) continue;
        this.update(p, p.grad.buf, this.slotNames.map((s) => this.#slot(name, s, p).buf), group);
      }
    }
  }

  zeroGrad(): void {
    for (const group of this.groups) {
      for (const [, p] of group.params) {
        p.grad?.dispose();
        p.grad = null;
      }
    }
  }

  /** Scale every group's learning rate relative to its base (for schedules). */
  setLrFactor(factor: number): void {
    for (const g of this.groups) g.lr = g.baseLr * factor;
  }

  state(): OptimizerState {
    const tensors: StateDict = new Map();
    for (const [key, t] of this.#slots) tensors.set(key, { shape: [...t.shape], data: t.toArray() });
    return { step: this.stepCount, tensors };
  }

  loadState(state: OptimizerState, source = 'optimizer state'): void {
    this.stepCount = state.step;
    const params = new Map(this.groups.flatMap((g) => g.params));
    for (const [key, value] of state.tensors) {
      const slot = this.slotNames.find((s) => key.endsWith(`.${s}`));
      const paramName = slot ? key.slice(0, -slot.length - 1) : undefined;
      const p = paramName === undefined ? undefined : params.get(paramName);
      if (!slot || !p || paramName === undefined) throw new Error(`${source}: "${key}" matches no parameter of this model`);
      this.#slot(paramName, slot, p).assign(checkSlot(key, value, p, source));
    }
  }

  #slot(name: string, slot: string, p: Parameter): Tensor {
    const key = `${name}.${slot}`;
    let t = this.#slots.get(key);
    if (!t) {
      t = keep(new Tensor(getBackend().zeros(p.shape)));
      this.#slots.set(key, t);
    }
    return t;
  }

  /** Free the state tensors (the optimizer can't be used afterwards). */
  dispose(): void {
    for (const t of this.#slots.values()) t.dispose();
    this.#slots.clear();
  }
}

function checkSlot(key: string, value: StateTensor, p: Parameter, source: string): Float32Array {
  if (value.data.length !== p.size) {
    throw new Error(`${source}: "${key}" has ${value.data.length} values, the parameter has ${p.size}`);
  }
  return value.data;
}
