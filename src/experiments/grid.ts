/**
 * Experiments as data: a grid file names methods x bit-widths x models x datasets x seeds, one
 * shared recipe (a partial training config), overrides for some runs (a method's own recipe),
 * where each model/dataset starts (a shipped checkpoint, a float run of the grid, or scratch),
 * which methods initialize progressively (APoT: 4-bit from the start, 3-bit from 4-bit's best,
 * ...), and a quick scale (fewer epochs, subsets) defined in the same file.
 *
 * `readGrid` checks a file against the schema (errors name the file, the field and the allowed
 * values); `expandGrid` turns it into the list of runs, each with its complete, checked config.
 */
import { dirname, join } from 'node:path';
import { DATASET_NAMES, type DatasetName } from '../data/index.js';
import { type ModelName, modelNames } from '../models/index.js';
import { APOT_ACT_BITS, APOT_WEIGHT_BITS } from '../quant/apot.js';
import { EWGS_BITS } from '../quant/ewgs.js';
import { LSQ_BITS } from '../quant/lsq.js';
import { PACT_BITS } from '../quant/pact.js';
import { type MethodName, methodNames } from '../quant/quantizer.js';
import { UNIFORM_BITS } from '../quant/uniform.js';
import { CONFIG_FIELDS, ConfigError, type TrainConfig, readConfigFile, resolveConfig, resolveConfigPaths } from '../train/config.js';
import { gridFile, resolveGridPath } from './paths.js';

export type GridMethod = MethodName | 'float';
export const GRID_METHODS: readonly GridMethod[] = [...methodNames, 'float'];

/** Bit-widths each method supports, for weights and activations. */
export const SUPPORTED_BITS: Readonly<Record<MethodName, { readonly weight: readonly number[]; readonly activation: readonly number[] }>> = {
  apot: { weight: APOT_WEIGHT_BITS, activation: APOT_ACT_BITS },
  ewgs: { weight: EWGS_BITS, activation: EWGS_BITS },
  uniform: { weight: UNIFORM_BITS, activation: UNIFORM_BITS },
  pact: { weight: UNIFORM_BITS, activation: PACT_BITS },
  lsq: { weight: LSQ_BITS, activation: LSQ_BITS },
};

export interface BitWidth {
  readonly wbits: number;
  readonly abits: number;
}

/** A partial training config, checked field by field when runs are expanded. */
export type RawRecipe = Readonly<Record<string, unknown>>;

/** Which runs an override applies to: every listed key must match (a key absent matches all). */
export interface RunSelector {
  readonly method?: readonly GridMethod[];
  readonly model?: readonly ModelName[];
  readonly dataset?: readonly DatasetName[];
  readonly bits?: readonly BitWidth[];
  readonly wbits?: readonly number[];
  readonly abits?: readonly number[];
}

export interface Override {
  readonly when: RunSelector;
  readonly set: RawRecipe;
}

/**
 * Where the quantized runs of one model/dataset start: a checkpoint file (its float baseline is
 * measured by an evaluation job), a float run trained by the grid itself (its best checkpoint), or
 * the model's random initialization.
 */
export type StartPoint =
  | { readonly kind: 'checkpoint'; readonly path: string; readonly written: string }
  | { readonly kind: 'float-run'; readonly use: 'best' | 'last' }
  | { readonly kind: 'scratch' };

export interface StartEntry {
  readonly model: ModelName;
  readonly dataset: DatasetName;
  readonly start: StartPoint;
}

/** The quick scale: restrictions of the grid and a recipe applied over everything else. */
export interface QuickScale {
  readonly note: string;
  readonly recipe: RawRecipe;
  readonly overrides: readonly Override[];
  readonly models?: readonly ModelName[];
  readonly datasets?: readonly DatasetName[];
  readonly methods?: readonly GridMethod[];
  readonly bits?: readonly BitWidth[];
  readonly seeds?: readonly number[];
}

/** What the report checks: runs of one model/dataset/seed share start weights and data order. */
export interface FairnessRules {
  readonly sameStart: boolean;
  readonly sameDataOrder: boolean;
}

export interface GridSpec {
  readonly name: string;
  readonly title: string;
  readonly description: string;
  /** The file it was read from ('' when built in code). */
  readonly source: string;
  readonly models: readonly ModelName[];
  readonly datasets: readonly DatasetName[];
  readonly methods: readonly GridMethod[];
  readonly bits: readonly BitWidth[];
  readonly seeds: readonly number[];
  readonly recipe: RawRecipe;
  readonly overrides: readonly Override[];
  readonly starts: readonly StartEntry[];
  readonly progressive: readonly GridMethod[];
  readonly fairness: FairnessRules;
  readonly quick: QuickScale | null;
}

export type Scale = 'full' | 'quick';

/** 'train': a training run; 'evaluate': the float baseline of a checkpoint start, on the same test images. */
export type RunKind = 'train' | 'evaluate';

export interface RunSpec {
  readonly id: string;
  readonly kind: RunKind;
  readonly method: GridMethod;
  readonly wbits: number;
  readonly abits: number;
  readonly model: ModelName;
  readonly dataset: DatasetName;
  readonly seed: number;
  /** Complete, checked config; `init` of a dependency is relative to the results directory. */
  readonly config: TrainConfig;
  readonly dependsOn: readonly string[];
  /** What the weights start from: `checkpoint:PATH`, `run:ID` or `scratch`. */
  readonly startsFrom: string;
}

export interface Plan {
  readonly grid: GridSpec;
  readonly scale: Scale;
  readonly runs: readonly RunSpec[];
}

/** Fields a recipe may not set: the grid sets them per run. */
const GRID_FIELDS = ['model', 'dataset', 'method', 'wbits', 'abits', 'seed', 'init'] as const;

type Raw = Record<string, unknown>;

class Checker {
  /** `fileDir`: the directory relative paths in the file resolve against. */
  constructor(readonly source: string, readonly fileDir: string) {}

  fail(field: string, message: string): never {
    throw new ConfigError(`${this.source}: ${field} ${message}`);
  }

  object(v: unknown, field: string): Raw {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, `must be a mapping of fields; got ${JSON.stringify(v)}`);
    return v as Raw;
  }

  keys(v: Raw, allowed: readonly string[], field: string): void {
    for (const key of Object.keys(v)) {
      if (!allowed.includes(key)) this.fail(field ? `${field}.${key}` : key, `is not a known field (known: ${allowed.join(', ')})`);
    }
  }

  string(v: unknown, field: string): string {
    if (typeof v !== 'string' || v === '') this.fail(field, `must be a non-empty string; got ${JSON.stringify(v)}`);
    return v;
  }

  optionalString(v: unknown, field: string, fallback: string): string {
    return v === undefined ? fallback : this.string(v, field);
  }

  bool(v: unknown, field: string, fallback: boolean): boolean {
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') this.fail(field, `must be true or false; got ${JSON.stringify(v)}`);
    return v;
  }

  oneOf<T extends string>(v: unknown, allowed: readonly T[], field: string): T {
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(field, `must be one of ${allowed.join(', ')}; got ${JSON.stringify(v)}`);
    }
    return v as T;
  }

  /** A list (or a single value, read as a list of one), each element checked by `item`. */
  list<T>(v: unknown, field: string, item: (x: unknown, field: string) => T): T[] {
    const values = Array.isArray(v) ? v : [v];
    if (values.length === 0) this.fail(field, 'must not be empty');
    const out = values.map((x, i) => item(x, Array.isArray(v) ? `${field}[${i}]` : field));
    const seen = new Set<string>();
    out.forEach((x, i) => {
      const key = JSON.stringify(x);
      if (seen.has(key)) this.fail(`${field}[${i}]`, `repeats ${key}`);
      seen.add(key);
    });
    return out;
  }

  seed(v: unknown, field: string): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.fail(field, `must be an integer >= 0; got ${JSON.stringify(v)}`);
    return v;
  }

  /** `4` (W4A4), `W2A4` (case-insensitive), or {wbits, abits}. */
  bits(v: unknown, field: string): BitWidth {
    const hint = 'must be a bit-width: a number (weights = activations), "W<w>A<a>" or {wbits, abits}';
    let pair: [unknown, unknown];
    if (typeof v === 'number') pair = [v, v];
    else if (typeof v === 'string') {
      const m = /^w(\d+)a(\d+)$/i.exec(v);
      if (!m) this.fail(field, `${hint}; got ${JSON.stringify(v)}`);
      pair = [Number(m[1]), Number(m[2])];
    } else if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
      this.keys(v as Raw, ['wbits', 'abits'], field);
      pair = [(v as Raw).wbits, (v as Raw).abits];
    } else this.fail(field, `${hint}; got ${JSON.stringify(v)}`);
    const [wbits, abits] = pair.map((b) => {
      if (typeof b !== 'number' || !Number.isInteger(b) || b < 1 || b > 8) this.fail(field, `${hint} with bits from 1 to 8; got ${JSON.stringify(v)}`);
      return b;
    });
    return { wbits, abits };
  }

  /** A partial training config: known fields only, none the grid sets itself; values checked later per run. */
  recipe(v: unknown, field: string): RawRecipe {
    if (v === undefined) return {};
    const raw = this.object(v, field);
    for (const key of Object.keys(raw)) {
      if ((GRID_FIELDS as readonly string[]).includes(key)) {
        this.fail(`${field}.${key}`, `is set by the grid for each run (models, datasets, methods, bits, seeds, start); remove it from the recipe`);
      }
      if (!(CONFIG_FIELDS as readonly string[]).includes(key)) {
        this.fail(`${field}.${key}`, `is not a training config field (known: ${CONFIG_FIELDS.filter((k) => !(GRID_FIELDS as readonly string[]).includes(k)).join(', ')})`);
      }
    }
    // Value checks with the training schema (over its defaults, so a partial recipe passes).
    resolveConfig(raw, `${this.source}: ${field}`);
    return resolveConfigPaths(raw, this.fileDir, resolveGridPath);
  }
}

export function bitsLabel(b: BitWidth): string {
  return `W${b.wbits}A${b.abits}`;
}

function checkSupportedBits(c: Checker, methods: readonly GridMethod[], bits: readonly BitWidth[], field: string): void {
  for (const method of methods) {
    if (method === 'float') continue;
    const supported = SUPPORTED_BITS[method];
    for (const b of bits) {
      if (!supported.weight.includes(b.wbits) || !supported.activation.includes(b.abits)) {
        c.fail(field, `${bitsLabel(b)} is not supported by ${method} (weights: ${supported.weight.join(', ')}; activations: ${supported.activation.join(', ')})`);
      }
    }
  }
}

function selector(c: Checker, v: unknown, field: string): RunSelector {
  const raw = c.object(v, field);
  c.keys(raw, ['method', 'model', 'dataset', 'bits', 'wbits', 'abits'], field);
  const bitsOf = (x: unknown, f: string): number => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 1 || x > 32) c.fail(f, `must be a bit count from 1 to 32; got ${JSON.stringify(x)}`);
    return x;
  };
  return {
    ...(raw.method !== undefined && { method: c.list(raw.method, `${field}.method`, (x, f) => c.oneOf(x, GRID_METHODS, f)) }),
    ...(raw.model !== undefined && { model: c.list(raw.model, `${field}.model`, (x, f) => c.oneOf(x, modelNames, f)) }),
    ...(raw.dataset !== undefined && { dataset: c.list(raw.dataset, `${field}.dataset`, (x, f) => c.oneOf(x, DATASET_NAMES, f)) }),
    ...(raw.bits !== undefined && { bits: c.list(raw.bits, `${field}.bits`, (x, f) => c.bits(x, f)) }),
    ...(raw.wbits !== undefined && { wbits: c.list(raw.wbits, `${field}.wbits`, bitsOf) }),
    ...(raw.abits !== undefined && { abits: c.list(raw.abits, `${field}.abits`, bitsOf) }),
  };
}

function overrides(c: Checker, v: unknown, field: string): Override[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) c.fail(field, 'must be a list of {when, set}');
  return v.map((o, i) => {
    const f = `${field}[${i}]`;
    const raw = c.object(o, f);
    c.keys(raw, ['when', 'set'], f);
    return { when: selector(c, raw.when ?? {}, `${f}.when`), set: c.recipe(raw.set, `${f}.set`) };
  });
}

function startPoint(c: Checker, raw: Raw, field: string, fileDir: string): StartPoint {
  const given = ['checkpoint', 'float', 'scratch'].filter((k) => raw[k] !== undefined);
  if (given.length !== 1) c.fail(field, `must give exactly one of checkpoint: PATH, float: true | best | last (train one in the grid; start from its best or last epoch), scratch: true; got ${given.join(', ') || 'none'}`);
  if (raw.checkpoint !== undefined) {
    const written = c.string(raw.checkpoint, `${field}.checkpoint`);
    return { kind: 'checkpoint', path: resolveGridPath(written, fileDir), written };
  }
  if (raw.float !== undefined) {
    if (raw.float === true) return { kind: 'float-run', use: 'best' };
    return { kind: 'float-run', use: c.oneOf(raw.float, ['best', 'last'] as const, `${field}.float`) };
  }
  if (raw.scratch !== true) c.fail(`${field}.scratch`, `must be true; got ${JSON.stringify(raw.scratch)}`);
  return { kind: 'scratch' };
}

function starts(c: Checker, v: unknown, field: string, fileDir: string): StartEntry[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) c.fail(field, 'must be a list of {model, dataset, checkpoint | float | scratch}');
  const seen = new Set<string>();
  return v.map((s, i) => {
    const f = `${field}[${i}]`;
    const raw = c.object(s, f);
    c.keys(raw, ['model', 'dataset', 'checkpoint', 'float', 'scratch'], f);
    const model = c.oneOf(raw.model, modelNames, `${f}.model`);
    const dataset = c.oneOf(raw.dataset, DATASET_NAMES, `${f}.dataset`);
    if (seen.has(`${model}/${dataset}`)) c.fail(f, `repeats the start of ${model}/${dataset}`);
    seen.add(`${model}/${dataset}`);
    return { model, dataset, start: startPoint(c, raw, f, fileDir) };
  });
}

function subsetOf<T>(c: Checker, values: T[] | undefined, all: readonly T[], field: string, whole: string): T[] | undefined {
  if (values === undefined) return undefined;
  values.forEach((x, i) => {
    if (!all.some((a) => JSON.stringify(a) === JSON.stringify(x))) c.fail(`${field}[${i}]`, `${JSON.stringify(x)} is not in the grid's ${whole}`);
  });
  return values;
}

function quickScale(c: Checker, v: unknown, grid: Omit<GridSpec, 'quick'>): QuickScale | null {
  if (v === undefined) return null;
  const raw = c.object(v, 'quick');
  c.keys(raw, ['note', 'recipe', 'overrides', 'models', 'datasets', 'methods', 'bits', 'seeds'], 'quick');
  const pick = <T>(key: string, item: (x: unknown, f: string) => T, all: readonly T[]): T[] | undefined =>
    raw[key] === undefined ? undefined : subsetOf(c, c.list(raw[key], `quick.${key}`, item), all, `quick.${key}`, key);
  return {
    note: c.optionalString(raw.note, 'quick.note', 'quick scale: fewer epochs and a subset of the data; numbers are not comparable with full runs'),
    recipe: c.recipe(raw.recipe, 'quick.recipe'),
    overrides: overrides(c, raw.overrides, 'quick.overrides'),
    models: pick('models', (x, f) => c.oneOf(x, modelNames, f), grid.models),
    datasets: pick('datasets', (x, f) => c.oneOf(x, DATASET_NAMES, f), grid.datasets),
    methods: pick('methods', (x, f) => c.oneOf(x, GRID_METHODS, f), grid.methods),
    bits: pick('bits', (x, f) => c.bits(x, f), grid.bits),
    seeds: pick('seeds', (x, f) => c.seed(x, f), grid.seeds),
  };
}

export const GRID_VERSION = 1;

const GRID_KEYS = [
  'version', 'name', 'title', 'description', 'models', 'datasets', 'methods', 'bits', 'seeds',
  'recipe', 'overrides', 'start', 'progressive', 'fairness', 'quick',
];

/** Check a grid (parsed YAML/JSON). `source` names it in errors; relative paths resolve against `fileDir`. */
export function parseGrid(raw: unknown, source: string, fileDir: string): GridSpec {
  const c = new Checker(source, fileDir);
  const g = c.object(raw, 'grid');
  c.keys(g, GRID_KEYS, '');
  if (g.version !== undefined && g.version !== GRID_VERSION) c.fail('version', `must be ${GRID_VERSION} (this tinyquant reads grid version ${GRID_VERSION}); got ${JSON.stringify(g.version)}`);
  const methods = c.list(g.methods, 'methods', (x, f) => c.oneOf(x, GRID_METHODS, f));
  const quantized = methods.some((m) => m !== 'float');
  const bits = g.bits === undefined && !quantized ? [] : c.list(g.bits, 'bits', (x, f) => c.bits(x, f));
  checkSupportedBits(c, methods, bits, 'bits');
  const name = c.string(g.name, 'name');
  if (!/^[a-z0-9][a-z0-9._-]*$/i.test(name)) c.fail('name', `must be letters, digits, '.', '_' or '-'; got ${JSON.stringify(name)}`);
  const base = {
    name,
    title: c.optionalString(g.title, 'title', name),
    description: c.optionalString(g.description, 'description', ''),
    source,
    models: c.list(g.models, 'models', (x, f) => c.oneOf(x, modelNames, f)),
    datasets: c.list(g.datasets, 'datasets', (x, f) => c.oneOf(x, DATASET_NAMES, f)),
    methods,
    bits,
    seeds: c.list(g.seeds ?? [0], 'seeds', (x, f) => c.seed(x, f)),
    recipe: c.recipe(g.recipe, 'recipe'),
    overrides: overrides(c, g.overrides, 'overrides'),
    starts: starts(c, g.start, 'start', fileDir),
    progressive: g.progressive === undefined ? [] : c.list(g.progressive, 'progressive', (x, f) => c.oneOf(x, methods.filter((m) => m !== 'float'), f)),
    fairness: fairness(c, g.fairness),
  };
  for (const [i, s] of base.starts.entries()) {
    if (!base.models.includes(s.model) || !base.datasets.includes(s.dataset)) c.fail(`start[${i}]`, `names ${s.model}/${s.dataset}, which is not in the grid's models x datasets`);
  }
  return { ...base, quick: quickScale(c, g.quick, base) };
}

function fairness(c: Checker, v: unknown): FairnessRules {
  if (v === undefined) return { sameStart: true, sameDataOrder: true };
  const raw = c.object(v, 'fairness');
  c.keys(raw, ['sameStart', 'sameDataOrder'], 'fairness');
  return { sameStart: c.bool(raw.sameStart, 'fairness.sameStart', true), sameDataOrder: c.bool(raw.sameDataOrder, 'fairness.sameDataOrder', true) };
}

/** Read a grid file, or a preset by name (`kiots2023` -> presets/kiots2023.yaml). */
export function readGrid(nameOrPath: string): GridSpec {
  const file = gridFile(nameOrPath);
  return parseGrid(readConfigFile(file), file, dirname(file));
}

// ---- expansion ------------------------------------------------------------------------------------

function matches(s: RunSelector, run: Omit<Cell, 'seed'>): boolean {
  return (
    (!s.method || s.method.includes(run.method)) &&
    (!s.model || s.model.includes(run.model)) &&
    (!s.dataset || s.dataset.includes(run.dataset)) &&
    (!s.bits || s.bits.some((b) => b.wbits === run.wbits && b.abits === run.abits)) &&
    (!s.wbits || s.wbits.includes(run.wbits)) &&
    (!s.abits || s.abits.includes(run.abits))
  );
}

export function runDirName(id: string): string {
  return join('runs', id);
}

/** The checkpoint a dependent run starts from, relative to the results directory. */
function checkpointOf(id: string, use: 'best' | 'last' = 'best'): string {
  return join(runDirName(id), `${use}.json`);
}

interface Cell {
  readonly method: GridMethod;
  readonly model: ModelName;
  readonly dataset: DatasetName;
  readonly wbits: number;
  readonly abits: number;
  readonly seed: number;
}

function runId(cell: Cell): string {
  const bits = cell.method === 'float' ? '' : `-w${cell.wbits}a${cell.abits}`;
  return `${cell.model}-${cell.dataset}-${cell.method}${bits}-s${cell.seed}`;
}

export interface ExpandOptions {
  readonly scale: Scale;
  /** Data folder written into every run's config (omit to rely on TINYQUANT_DATA and the cache). */
  readonly dataDir?: string;
  /** Replace the checkpoint of every checkpoint start (e.g. a float model trained elsewhere). */
  readonly startCheckpoint?: string;
}

/** Where a model/dataset's quantized runs get their weights (before progressive chains). */
interface Origin {
  readonly init?: string;
  readonly dependsOn: readonly string[];
  readonly startsFrom: string;
}

/** Collects the runs of one expansion, each with its config resolved from the recipe layers. */
class Expansion {
  readonly runs = new Map<string, RunSpec>();
  readonly #source: string;

  constructor(
    readonly grid: GridSpec,
    readonly quick: QuickScale | null,
    readonly dataDir: string | undefined,
  ) {
    this.#source = grid.source || grid.name;
  }

  /** Recipe, then the matching overrides, then (quick) the quick recipe and its overrides, then the cell. */
  #config(cell: Cell, init: string | undefined, id: string): TrainConfig {
    const { grid, quick } = this;
    const layers = [grid.recipe, ...grid.overrides.filter((o) => matches(o.when, cell)).map((o) => o.set)];
    if (quick) layers.push(quick.recipe, ...quick.overrides.filter((o) => matches(o.when, cell)).map((o) => o.set));
    const { method, model, dataset, wbits, abits, seed } = cell;
    const raw: Raw = Object.assign({}, ...layers, {
      model,
      dataset,
      method,
      wbits,
      abits,
      seed,
      ...(init !== undefined && { init }),
      ...(this.dataDir !== undefined && { dataDir: this.dataDir }),
    });
    return resolveConfig(raw, `${this.#source}: run ${id}`);
  }

  add(spec: Omit<RunSpec, 'config'>, init: string | undefined): RunSpec {
    const run = { ...spec, config: this.#config(spec, init, spec.id) };
    const existing = this.runs.get(run.id);
    if (existing && JSON.stringify(existing.config) !== JSON.stringify(run.config)) {
      throw new ConfigError(`${this.#source}: run ${run.id} is planned twice with different configs`);
    }
    this.runs.set(run.id, run);
    return run;
  }

  /** The start's own job (the float baseline evaluation, or the float run to train) and what it gives the runs. */
  origin(start: StartPoint, model: ModelName, dataset: DatasetName, firstSeed: number): Origin {
    const cell = floatCell(model, dataset, firstSeed);
    if (start.kind === 'checkpoint') {
      const startsFrom = `checkpoint:${start.path}`;
      this.add({ ...cell, id: `${model}-${dataset}-float-start`, kind: 'evaluate', dependsOn: [], startsFrom }, start.path);
      return { init: start.path, dependsOn: [], startsFrom };
    }
    if (start.kind === 'float-run') {
      const float = this.add({ ...cell, id: runId(cell), kind: 'train', dependsOn: [], startsFrom: 'scratch' }, undefined);
      return { init: checkpointOf(float.id, start.use), dependsOn: [float.id], startsFrom: `run:${float.id}` };
    }
    return { dependsOn: [], startsFrom: 'scratch' };
  }

  /**
   * A float run of the grid's `float` method: it fine-tunes a checkpoint start, else trains from
   * scratch (with a float-run start, the first seed's float run is that run itself).
   */
  addFloat(start: StartPoint, origin: Origin, model: ModelName, dataset: DatasetName, seed: number): void {
    const cell = floatCell(model, dataset, seed);
    if (this.runs.has(runId(cell))) return;
    const fromCheckpoint = start.kind === 'checkpoint';
    this.add({ ...cell, id: runId(cell), kind: 'train', dependsOn: [], startsFrom: fromCheckpoint ? origin.startsFrom : 'scratch' }, fromCheckpoint ? origin.init : undefined);
  }

  /** A quantized run: from the origin, or (progressive methods) from the next higher bit-width's best. */
  addQuantized(cell: Cell, origin: Origin, bits: readonly BitWidth[]): void {
    const previous = this.grid.progressive.includes(cell.method) ? nextHigher(bits, cell) : undefined;
    const fromId = previous && runId({ ...cell, ...previous });
    const from: Origin = fromId ? { init: checkpointOf(fromId), dependsOn: [fromId], startsFrom: `run:${fromId}` } : origin;
    this.add({ ...cell, id: runId(cell), kind: 'train', dependsOn: from.dependsOn, startsFrom: from.startsFrom }, from.init);
  }
}

function floatCell(model: ModelName, dataset: DatasetName, seed: number): Cell {
  return { method: 'float', model, dataset, wbits: 32, abits: 32, seed };
}

/** The runs of a grid at a scale, dependencies first. */
export function expandGrid(grid: GridSpec, opts: ExpandOptions): Plan {
  if (opts.scale === 'quick' && !grid.quick) throw new ConfigError(`${grid.source || grid.name}: has no quick scale (add a quick: section)`);
  const quick = opts.scale === 'quick' ? grid.quick : null;
  const methods = quick?.methods ?? grid.methods;
  const seeds = quick?.seeds ?? grid.seeds;
  const bits = quick?.bits ?? grid.bits;
  const expansion = new Expansion(grid, quick, opts.dataDir);
  for (const model of quick?.models ?? grid.models) {
    for (const dataset of quick?.datasets ?? grid.datasets) {
      const start = startFor(grid, model, dataset, opts.startCheckpoint);
      const origin = expansion.origin(start, model, dataset, seeds[0]);
      for (const seed of seeds) {
        if (methods.includes('float')) expansion.addFloat(start, origin, model, dataset, seed);
        for (const b of bits) {
          for (const method of methods) {
            if (method !== 'float') expansion.addQuantized({ method, model, dataset, ...b, seed }, origin, bits);
          }
        }
      }
    }
  }
  return { grid, scale: opts.scale, runs: orderByDependencies([...expansion.runs.values()]) };
}

function startFor(grid: GridSpec, model: ModelName, dataset: DatasetName, override: string | undefined): StartPoint {
  const start = grid.starts.find((s) => s.model === model && s.dataset === dataset)?.start ?? { kind: 'scratch' };
  if (override !== undefined && start.kind === 'checkpoint') return { kind: 'checkpoint', path: override, written: override };
  return start;
}

/** The bit-width a progressive run starts from: the next higher one of the grid (by weights, then activations). */
function nextHigher(bits: readonly BitWidth[], b: BitWidth): BitWidth | undefined {
  const higher = bits.filter((x) => x.wbits > b.wbits || (x.wbits === b.wbits && x.abits > b.abits));
  higher.sort((x, y) => x.wbits - y.wbits || x.abits - y.abits);
  return higher[0];
}

/** Stable order in which every run comes after its dependencies. */
function orderByDependencies(runs: RunSpec[]): RunSpec[] {
  const byId = new Map(runs.map((r) => [r.id, r]));
  const done = new Set<string>();
  const out: RunSpec[] = [];
  const visit = (r: RunSpec): void => {
    if (done.has(r.id)) return;
    done.add(r.id);
    for (const d of r.dependsOn) visit(byId.get(d)!);
    out.push(r);
  };
  runs.forEach(visit);
  return out;
}

