/**
 * Experiments as data: a grid file names methods x bit-widths x models x datasets x seeds, one
 * shared recipe (a partial training config), overrides for some runs (a method's own recipe),
 * where each model/dataset starts (a shipped checkpoint, a float run of the grid, or scratch),
 * which methods initialize progressively (APoT: 4-bit from the start, 3-bit from 4-bit's best,
 * ...), and smaller scales by name (quick: fewer epochs, subsets) defined in the same file.
 *
 * `readGrid` checks a file against the schema of grid-schema.ts, then what involves several
 * sections, and each recipe with the training config's schema (errors name the file, the field and
 * the allowed values); `expandGrid` turns it into the list of runs, each with its complete, checked
 * config.
 */
import { dirname, join } from 'node:path';
import type { DatasetName } from '../data/index.js';
import type { ModelName } from '../models/index.js';
import { APOT_ACT_BITS, APOT_WEIGHT_BITS } from '../quant/apot.js';
import { EWGS_BITS } from '../quant/ewgs.js';
import { LSQ_BITS } from '../quant/lsq.js';
import { PACT_BITS } from '../quant/pact.js';
import type { MethodName } from '../quant/quantizer.js';
import { UNIFORM_BITS } from '../quant/uniform.js';
import { ConfigError, type TrainConfig, readConfigFile, resolveConfig, resolveConfigPaths } from '../train/config.js';
import { checked } from '../util/schema.js';
import { type BitWidth, type FairnessRules, GRID_SCHEMA, type GridFile, type GridMethod, type RunSelector } from './grid-schema.js';
import { gridFile, resolveGridPath } from './paths.js';

export { type BitWidth, type FairnessRules, GRID_METHODS, GRID_VERSION, type GridMethod, type RunSelector } from './grid-schema.js';

/** Bit-widths each method supports, for weights and activations. */
export const SUPPORTED_BITS: Readonly<Record<MethodName, { readonly weight: readonly number[]; readonly activation: readonly number[] }>> = {
  apot: { weight: APOT_WEIGHT_BITS, activation: APOT_ACT_BITS },
  ewgs: { weight: EWGS_BITS, activation: EWGS_BITS },
  uniform: { weight: UNIFORM_BITS, activation: UNIFORM_BITS },
  pact: { weight: UNIFORM_BITS, activation: PACT_BITS },
  lsq: { weight: LSQ_BITS, activation: LSQ_BITS },
};

/** A partial training config, checked field by field when runs are expanded. */
export type RawRecipe = Readonly<Record<string, unknown>>;

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

/** A named scale: restrictions of the grid and a recipe applied over everything else. */
export interface NamedScale {
  readonly name: string;
  readonly note: string;
  readonly recipe: RawRecipe;
  readonly overrides: readonly Override[];
  readonly models?: readonly ModelName[];
  readonly datasets?: readonly DatasetName[];
  readonly methods?: readonly GridMethod[];
  readonly bits?: readonly BitWidth[];
  readonly seeds?: readonly number[];
  readonly progressive?: readonly GridMethod[];
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
  /** By name (the grid file's `scales`). */
  readonly scales: Readonly<Record<string, NamedScale>>;
}

/** `full` (the grid itself) or the name of one of its scales. */
export type Scale = string;

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

type Raw = Record<string, unknown>;
type Fail = (field: string, message: string) => never;

export function bitsLabel(b: BitWidth): string {
  return `W${b.wbits}A${b.abits}`;
}

function checkSupportedBits(fail: Fail, methods: readonly GridMethod[], bits: readonly BitWidth[], field: string): void {
  for (const method of methods) {
    if (method === 'float') continue;
    const supported = SUPPORTED_BITS[method];
    for (const b of bits) {
      if (!supported.weight.includes(b.wbits) || !supported.activation.includes(b.abits)) {
        fail(field, `${bitsLabel(b)} is not supported by ${method} (weights: ${supported.weight.join(', ')}; activations: ${supported.activation.join(', ')})`);
      }
    }
  }
}

/** `values[i]`, or `values` when the file gives a single value (read as a list of one). */
function itemName(field: string, written: unknown, i: number): string {
  return Array.isArray(written) ? `${field}[${i}]` : field;
}

/** The checks that involve several sections of a grid file, and what its paths and recipes resolve to. */
class GridReader {
  constructor(
    readonly source: string,
    /** The directory relative paths in the file resolve against. */
    readonly fileDir: string,
  ) {}

  readonly fail: Fail = (field, message) => {
    throw new ConfigError(`${this.source}: ${field} ${message}`);
  };

  /** A recipe's values, checked with the training schema (over its defaults, so a partial recipe passes); paths resolved. */
  recipe(raw: RawRecipe, field: string): RawRecipe {
    resolveConfig(raw, `${this.source}: ${field}`);
    return resolveConfigPaths(raw, this.fileDir, resolveGridPath);
  }

  overrides(list: GridFile['overrides'], field: string): Override[] {
    return list.map((o, i) => ({ when: o.when, set: this.recipe(o.set, `${field}[${i}].set`) }));
  }

  starts(list: GridFile['start'], grid: Pick<GridSpec, 'models' | 'datasets'>): StartEntry[] {
    const seen = new Set<string>();
    return list.map((s, i) => {
      const field = `start[${i}]`;
      const given = (['checkpoint', 'float', 'scratch'] as const).filter((k) => s[k] !== undefined);
      if (given.length !== 1) {
        this.fail(field, `must give exactly one of checkpoint: PATH, float: true | best | last (train one in the grid; start from its best or last epoch), scratch: true; got ${given.join(', ') || 'none'}`);
      }
      if (seen.has(`${s.model}/${s.dataset}`)) this.fail(field, `repeats the start of ${s.model}/${s.dataset}`);
      seen.add(`${s.model}/${s.dataset}`);
      if (!grid.models.includes(s.model) || !grid.datasets.includes(s.dataset)) this.fail(field, `names ${s.model}/${s.dataset}, which is not in the grid's models x datasets`);
      return { model: s.model, dataset: s.dataset, start: this.#startPoint(s) };
    });
  }

  #startPoint(s: GridFile['start'][number]): StartPoint {
    if (s.checkpoint !== undefined) return { kind: 'checkpoint', path: resolveGridPath(s.checkpoint, this.fileDir), written: s.checkpoint };
    if (s.float !== undefined) return { kind: 'float-run', use: s.float === true ? 'best' : s.float };
    return { kind: 'scratch' };
  }

  /** A scale's list, each value checked to be in the grid's own list. */
  subset<T>(values: readonly T[] | undefined, all: readonly T[], field: string, list = field.slice(field.lastIndexOf('.') + 1)): readonly T[] | undefined {
    values?.forEach((x, i) => {
      if (!all.some((a) => JSON.stringify(a) === JSON.stringify(x))) this.fail(`${field}[${i}]`, `${JSON.stringify(x)} is not in the grid's ${list}`);
    });
    return values;
  }

  scales(scales: GridFile['scales'], grid: Omit<GridSpec, 'scales'>): Record<string, NamedScale> {
    return Object.fromEntries(Object.entries(scales).map(([name, q]) => [name, this.#scale(name, q, grid)]));
  }

  #scale(name: string, q: GridFile['scales'][string], grid: Omit<GridSpec, 'scales'>): NamedScale {
    const at = `scales.${name}`;
    return {
      name,
      note: q.note,
      recipe: this.recipe(q.recipe, `${at}.recipe`),
      overrides: this.overrides(q.overrides, `${at}.overrides`),
      models: this.subset(q.models, grid.models, `${at}.models`),
      datasets: this.subset(q.datasets, grid.datasets, `${at}.datasets`),
      methods: this.subset(q.methods, grid.methods, `${at}.methods`),
      bits: this.subset(q.bits, grid.bits, `${at}.bits`),
      seeds: this.subset(q.seeds, grid.seeds, `${at}.seeds`),
      progressive: this.subset(q.progressive, grid.methods, `${at}.progressive`, 'methods'),
    };
  }
}

/** Check a grid (parsed YAML/JSON). `source` names it in errors; relative paths resolve against `fileDir`. */
export function parseGrid(raw: unknown, source: string, fileDir: string): GridSpec {
  const r = new GridReader(source, fileDir);
  const g = checked(GRID_SCHEMA, raw, source, (message) => {
    throw new ConfigError(message);
  }, 'grid');
  const quantized = g.methods.filter((m): m is MethodName => m !== 'float');
  if (quantized.length > 0 && g.bits === undefined) r.fail('bits', `must be given for ${quantized.join(', ')}: a bit-width (a number, "W<w>A<a>" or {wbits, abits}) or a list of them`);
  const bits = g.bits ?? [];
  checkSupportedBits(r.fail, g.methods, bits, 'bits');
  g.progressive.forEach((m, i) => {
    if (!quantized.includes(m)) r.fail(itemName('progressive', (raw as Raw).progressive, i), `must be one of ${quantized.join(', ')}; got ${JSON.stringify(m)}`);
  });
  const base = {
    name: g.name,
    title: g.title ?? g.name,
    description: g.description ?? '',
    source,
    models: g.models,
    datasets: g.datasets,
    methods: g.methods,
    bits,
    seeds: g.seeds,
    recipe: r.recipe(g.recipe, 'recipe'),
    overrides: r.overrides(g.overrides, 'overrides'),
    progressive: g.progressive,
    fairness: g.fairness,
  };
  const starts = r.starts(g.start, base);
  return { ...base, starts, scales: r.scales(g.scales, { ...base, starts }) };
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
    readonly scale: NamedScale | null,
    readonly dataDir: string | undefined,
  ) {
    this.#source = grid.source || grid.name;
  }

  /** Recipe, then the matching overrides, then the scale's recipe and its overrides, then the cell. */
  #config(cell: Cell, init: string | undefined, id: string): TrainConfig {
    const { grid, scale } = this;
    const layers = [grid.recipe, ...grid.overrides.filter((o) => matches(o.when, cell)).map((o) => o.set)];
    if (scale) layers.push(scale.recipe, ...scale.overrides.filter((o) => matches(o.when, cell)).map((o) => o.set));
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
    const progressive = this.scale?.progressive ?? this.grid.progressive;
    const previous = progressive.includes(cell.method) ? nextHigher(bits, cell) : undefined;
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
  const scale = namedScale(grid, opts.scale);
  const methods = scale?.methods ?? grid.methods;
  const seeds = scale?.seeds ?? grid.seeds;
  const bits = scale?.bits ?? grid.bits;
  const expansion = new Expansion(grid, scale, opts.dataDir);
  for (const model of scale?.models ?? grid.models) {
    for (const dataset of scale?.datasets ?? grid.datasets) {
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

/** The command-line arguments that select a scale ('' for the full grid). */
export function scaleArguments(scale: Scale): string {
  if (scale === 'full') return '';
  return scale === 'quick' ? ' --quick' : ` --scale ${scale}`;
}

/** The scale a plan is expanded at (null: the full grid). */
function namedScale(grid: GridSpec, name: Scale): NamedScale | null {
  if (name === 'full') return null;
  const scale = grid.scales[name];
  if (scale) return scale;
  const names = Object.keys(grid.scales);
  throw new ConfigError(`${grid.source || grid.name}: has no ${name} scale (${names.length ? `its scales: full, ${names.join(', ')}` : `add scales: { ${name}: ... }`})`);
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

