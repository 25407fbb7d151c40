/**
 * Modules: named trees of parameters, buffers and sub-modules with PyTorch-style state dicts
 * (`layer1.0.bn1.running_mean`).
 */
import { type Shape, sameShape, shapeStr } from '../backend/backend.js';
import { Tensor } from '../tensor/tensor.js';
import { InputError } from '../util/errors.js';

/**
 * What a parameter is, so optimizers can give each kind its own learning rate and weight decay:
 * quantizer parameters (clipping ranges, step sizes, output scales) usually need their own.
 */
export type ParamKind = 'weight' | 'bias' | 'norm' | 'quant';

export class Parameter extends Tensor {
  readonly kind: ParamKind;

  constructor(values: Float32Array, shape: Shape, kind: ParamKind) {
    super(Tensor.fromArray(values, shape).buf, true);
    this.kind = kind;
  }
}

/** A state-dict entry: logical row-major float32 values. */
export interface StateTensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;
}

export type StateDict = Map<string, StateTensor>;

export interface LoadOptions {
  /** Fail on keys of the state dict that the model does not have (default true). */
  readonly strict?: boolean;
  /** Where the state dict came from, for error messages. */
  readonly source?: string;
  /** Load NaN or infinite values, and negative batch-norm variances, instead of refusing them (default false). */
  readonly allowNonFinite?: boolean;
}

/** A state dict that does not fit the model or holds values no trained model has (an input error: the file is wrong). */
export class StateDictError extends InputError {
  override name = 'StateDictError';
}

export interface LoadReport {
  readonly loaded: string[];
  /** Model entries the state dict did not provide (kept at their current values). */
  readonly missing: string[];
  /** State dict entries the model does not have. */
  readonly unexpected: string[];
}

/** Entries that PyTorch stores but tinyquant does not keep. */
const IGNORED_KEYS = /(^|\.)num_batches_tracked$/;

export abstract class Module {
  training = true;
  #params = new Map<string, Parameter>();
  #buffers = new Map<string, Tensor>();
  #children = new Map<string, Module>();
  #parent: { module: Module; name: string } | null = null;

  abstract forward(x: Tensor): Tensor;

  protected registerParameter(name: string, p: Parameter): Parameter {
    this.#params.set(name, p);
    return p;
  }

  protected registerBuffer(name: string, t: Tensor): Tensor {
    this.#buffers.set(name, t);
    return t;
  }

  protected registerModule<M extends Module>(name: string, m: M): M {
    this.#children.set(name, m);
    m.#parent = { module: this, name };
    return m;
  }

  /** Replace a registered sub-module (used to swap layers for their quantized versions). */
  replaceModule(name: string, m: Module): void {
    const old = this.#children.get(name);
    if (!old) throw new Error(`replaceModule: no sub-module "${name}"`);
    this.registerModule(name, m);
    // Fields that referred to the old layer (this.conv1 = this.registerModule(...)) now refer to the new one.
    const fields = this as unknown as Record<string, unknown>;
    for (const key of Object.keys(fields)) if (fields[key] === old) fields[key] = m;
    this.onModuleReplaced(name, m);
  }

  /** Dotted path from the root module ('' for the root). */
  get path(): string {
    return this.#parent ? join(this.#parent.module.path, this.#parent.name) : '';
  }

  /** Subclasses that keep children in other structures (arrays) update them here. */
  protected onModuleReplaced(_name: string, _m: Module): void {}

  children(): [string, Module][] {
    return [...this.#children];
  }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [name, child] of this.#children) yield* child.namedModules(join(prefix, name));
  }

  *namedParameters(prefix = ''): Generator<[string, Parameter]> {
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [name, p] of m.#params) yield [join(path, name), p];
    }
  }

  *namedBuffers(prefix = ''): Generator<[string, Tensor]> {
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [name, b] of m.#buffers) yield [join(path, name), b];
    }
  }

  parameters(): Parameter[] {
    return [...this.namedParameters()].map(([, p]) => p);
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Parameters and buffers by their dotted names, module by module (as PyTorch orders them). */
  stateEntries(): [string, Tensor][] {
    const entries: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules()) {
      for (const [name, t] of [...m.#params, ...m.#buffers]) entries.push([join(path, name), t]);
    }
    return entries;
  }

  stateDict(): StateDict {
    return new Map(this.stateEntries().map(([k, t]) => [k, { shape: [...t.shape], data: t.toArray() }]));
  }

  /** Copy values in by name; shapes must match exactly. */
  loadStateDict(state: StateDict, opts: LoadOptions = {}): LoadReport {
    const source = opts.source ? ` from ${opts.source}` : '';
    const own = new Map(this.stateEntries());
    const loaded: string[] = [];
    const unexpected: string[] = [];
    for (const [key, value] of state) {
      const target = own.get(key);
      if (!target) {
        if (!IGNORED_KEYS.test(key)) unexpected.push(key);
        continue;
      }
      if (!sameShape(target.shape, value.shape)) {
        throw new StateDictError(
          `loadStateDict${source}: "${key}" has shape ${shapeStr(value.shape)} but the model expects ${shapeStr(target.shape)}`,
        );
      }
      if (!opts.allowNonFinite) checkValues(key, value.data, source);
      target.assign(value.data);
      loaded.push(key);
    }
    const missing = [...own.keys()].filter((k) => !state.has(k));
    if (opts.strict !== false && (missing.length > 0 || unexpected.length > 0)) {
      const parts = [];
      if (missing.length) parts.push(`missing ${missing.join(', ')}`);
      if (unexpected.length) parts.push(`unexpected ${unexpected.join(', ')}`);
      throw new StateDictError(`loadStateDict${source}: ${parts.join('; ')}`);
    }
    return { loaded, missing, unexpected };
  }

  /** Run the forward pass; an error is prefixed with the path of the innermost failing layer. */
  call(x: Tensor): Tensor {
    return this.inContext(() => (callObserver ? callObserver(this, x, () => this.forward(x)) : this.forward(x)));
  }

  /** Run fn with an error prefixed with this layer's path, as `call` does for `forward`. */
  inContext<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw withLayerContext(e, `${this.path || 'model'} (${this.constructor.name})`);
    }
  }
}

/** Sees every module call (the graph tracer): must run `forward` and return its result. */
export type CallObserver = (module: Module, x: Tensor, forward: () => Tensor) => Tensor;
let callObserver: CallObserver | null = null;

/** Run fn with `observer` around every module call it makes. */
export function observeCalls<T>(observer: CallObserver, fn: () => T): T {
  const before = callObserver;
  callObserver = observer;
  try {
    return fn();
  } finally {
    callObserver = before;
  }
}

/** A loaded tensor must hold finite values, and a batch norm's running variance no negative one. */
function checkValues(key: string, data: Float32Array, source: string): void {
  const bad = data.findIndex((v) => !Number.isFinite(v));
  const anyway = '(a diverged or corrupt checkpoint; allowNonFinite, eval --allow-non-finite, loads it anyway)';
  if (bad >= 0) throw new StateDictError(`loadStateDict${source}: "${key}" holds ${data[bad]} at index ${bad} ${anyway}`);
  if (/(^|\.)running_var$/.test(key)) {
    const negative = data.findIndex((v) => v < 0);
    if (negative >= 0) throw new StateDictError(`loadStateDict${source}: "${key}" holds the negative variance ${data[negative]} at index ${negative} ${anyway}`);
  }
}

function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

const TAGGED = Symbol('tinyquant.layerContext');

/** Prefix an error message with a layer name, once: the innermost layer names the failure. */
export function withLayerContext(e: unknown, name: string): Error {
  const err = e instanceof Error ? e : new Error(String(e));
  const tagged = err as Error & { [TAGGED]?: true };
  if (!tagged[TAGGED]) {
    err.message = `${name}: ${err.message}`;
    tagged[TAGGED] = true;
  }
  return err;
}
