/**
 * The schema (zod) of grid files: the shape of every section, with messages that name the field and
 * the allowed values, and the JSON Schema editors check presets/*.yaml with
 * (schemas/grid.schema.json). What depends on several sections (bit-widths a method supports, starts
 * inside the grid, the scales' subsets) and the recipes' values are checked by grid.ts.
 */
import * as z from 'zod';
import { DATASET_NAMES } from '../data/index.js';
import { modelNames } from '../models/index.js';
import { type MethodName, methodNames } from '../quant/quantizer.js';
import { CONFIG_FIELDS, CONFIG_INPUT, withConfigDefaults } from '../train/config-schema.js';
import { type Checked, boolean, fields, got, nonEmptyString, oneOf } from '../util/schema.js';

export type GridMethod = MethodName | 'float';
export const GRID_METHODS: readonly GridMethod[] = [...methodNames, 'float'];

export const GRID_VERSION = 1;

/** Fields a recipe may not set: the grid sets them per run. */
export const GRID_FIELDS = ['model', 'dataset', 'method', 'wbits', 'abits', 'seed', 'init'] as const;

const RECIPE_FIELDS = CONFIG_FIELDS.filter((k) => !(GRID_FIELDS as readonly string[]).includes(k));

const MAPPING = got('must be a mapping of fields');

export interface BitWidth {
  readonly wbits: number;
  readonly abits: number;
}

/** One value, or a non-empty list of distinct values (read as a list of one value). */
function listOf<T extends z.ZodType>(item: T) {
  return z
    .union([z.array(item).min(1, 'must not be empty').meta({ uniqueItems: true }), item], {
      // neither fits and neither got past the top: the value is not one item (and not a list)
      error: (issue) => (issue.code === 'invalid_union' ? issue.errors[1]?.[0]?.message : undefined),
    })
    .transform((v): z.output<T>[] => (Array.isArray(v) ? v : [v]))
    .superRefine((values, ctx) => {
      const seen = new Set<string>();
      values.forEach((x, i) => {
        const key = JSON.stringify(x);
        if (seen.has(key)) ctx.addIssue({ code: 'custom', path: [i], input: x, message: `repeats ${key}` });
        seen.add(key);
      });
    });
}

const BITS_HINT = 'must be a bit-width: a number (weights = activations), "W<w>A<a>" or {wbits, abits}';
const BITS_RANGE = `${BITS_HINT} with bits from 1 to 8`;

const bitCount = (most: number) => z.int({ error: got(`must be a bit count from 1 to ${most}`) }).min(1).max(most);

/** `4` (W4A4), `W2A4` (case-insensitive), or {wbits, abits}. */
const BIT_WIDTH = z
  .union(
    [
      z.int({ error: got(BITS_RANGE) }).min(1).max(8),
      z.string().regex(/^[wW][1-8][aA][1-8]$/, { error: (issue) => got(/^w\d+a\d+$/i.test(String(issue.input)) ? BITS_RANGE : BITS_HINT)(issue) }),
      fields({ wbits: bitCount(8), abits: bitCount(8) }),
    ],
    { error: (issue) => got(typeof issue.input === 'number' ? BITS_RANGE : BITS_HINT)(issue) },
  )
  .transform((v): BitWidth => {
    if (typeof v === 'number') return { wbits: v, abits: v };
    if (typeof v === 'string') return { wbits: Number(v[1]), abits: Number(v[3]) };
    return v;
  })
  .describe('A bit-width: a number (weights = activations, e.g. 4), "W<w>A<a>" (e.g. W2A4) or {wbits, abits}; bits from 1 to 8.');

const model = () => oneOf(modelNames);
const dataset = () => oneOf(DATASET_NAMES);
const method = () => oneOf(GRID_METHODS);
const seed = () => z.int({ error: got('must be an integer >= 0') }).min(0);

/** At run time a recipe's values are checked by resolveConfig, per recipe (its errors say "recipe: lr ..."). */
const RECIPE_KEYS = fields(
  Object.fromEntries(RECIPE_FIELDS.map((k) => [k, z.unknown().optional()])),
  MAPPING,
  (key) =>
    (GRID_FIELDS as readonly string[]).includes(key)
      ? 'is set by the grid for each run (models, datasets, methods, bits, seeds, start); remove it from the recipe'
      : `is not a training config field (known: ${RECIPE_FIELDS.join(', ')})`,
);

/** For editors: the training config's fields with their types, less those the grid sets. */
const RECIPE_FOR_EDITORS = CONFIG_INPUT.omit(Object.fromEntries(GRID_FIELDS.map((k) => [k, true])) as { [K in (typeof GRID_FIELDS)[number]]: true }).meta({
  id: 'recipe',
  description: 'Training config fields (tinyquant train --config), less those the grid sets for each run.',
});

type Recipe = z.ZodType<Readonly<Record<string, unknown>>>;

const SELECTOR = fields(
  {
    method: listOf(method()).optional(),
    model: listOf(model()).optional(),
    dataset: listOf(dataset()).optional(),
    bits: listOf(BIT_WIDTH).optional(),
    wbits: listOf(bitCount(32)).optional(),
    abits: listOf(bitCount(32)).optional(),
  },
  MAPPING,
).describe('Which runs an override applies to: every key given must match (a key absent matches all).');

const FAIRNESS = fields(
  {
    sameStart: boolean().default(true).describe('Runs of one model/dataset/seed start from the same weights.'),
    sameDataOrder: boolean().default(true).describe('Runs of one model/dataset/seed see the data in the same order.'),
  },
  MAPPING,
);

const SCALE_NOTE = 'fewer epochs and a subset of the data; numbers are not comparable with full runs';

/** A scale's name: what `tinyquant run GRID --scale NAME` selects (`full` is the grid itself). */
const SCALE_NAME = z
  .string()
  .regex(/^[a-z][a-z0-9-]*$/, { error: got("must be lower-case letters, digits or '-', starting with a letter") })
  .refine((name) => name !== 'full', { error: "is reserved: full is the grid itself; name the scale otherwise" });

/** The grid file's schema, with `recipe` the schema of its recipes. */
function gridSchema(recipe: Recipe) {
  const override = fields({ when: SELECTOR.default({}), set: recipe.default({}).describe('Config fields for the selected runs, over the recipe.') }, MAPPING);
  const overrides = z.array(override, { error: 'must be a list of {when, set}' }).describe('Recipe changes for some runs, applied in order.');
  const start = fields(
    {
      model: model(),
      dataset: dataset(),
      checkpoint: nonEmptyString().optional().describe('Start from this checkpoint (relative to the grid file; package:PATH: shipped with tinyquant).'),
      float: z
        .literal([true, 'best', 'last'], { error: got('must be true, best or last') })
        .optional()
        .describe("Train a float run in the grid and start from its best (true, best) or last epoch's weights."),
      scratch: z.literal(true, { error: got('must be true') }).optional().describe("Start from the model's random initialization."),
    },
    MAPPING,
  ).describe('Where the runs of one model/dataset start: exactly one of checkpoint, float, scratch.');
  const scale = fields(
    {
      note: nonEmptyString().default(SCALE_NOTE).describe('What the report says about the scale.'),
      recipe: recipe.default({}).describe('Config fields over the recipe and the overrides.'),
      overrides: overrides.default([]),
      models: listOf(model()).optional(),
      datasets: listOf(dataset()).optional(),
      methods: listOf(method()).optional(),
      bits: listOf(BIT_WIDTH).optional(),
      seeds: listOf(seed()).optional(),
      progressive: listOf(oneOf(methodNames)).optional().describe("The scale's progressive methods, in place of the grid's."),
    },
    MAPPING,
  ).describe('A scale (tinyquant run GRID --scale NAME): subsets of the grid and a recipe over everything else.');
  return fields(
    {
      version: z
        .literal(GRID_VERSION, { error: got(`must be ${GRID_VERSION} (this tinyquant reads grid version ${GRID_VERSION})`) })
        .optional()
        .describe('The grid format version.'),
      name: nonEmptyString()
        .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, { error: got("must be letters, digits, '.', '_' or '-'") })
        .describe('The grid\'s name (its results directory by default).'),
      title: nonEmptyString().optional().describe('The report\'s title (default: the name).'),
      description: nonEmptyString().optional().describe('What the grid is for (the report shows it).'),
      models: listOf(model()).describe('The architectures: each runs every method, bit-width, dataset and seed.'),
      datasets: listOf(dataset()).describe('The datasets.'),
      methods: listOf(method()).describe('Training methods; float: a float run.'),
      bits: listOf(BIT_WIDTH).optional().describe('The bit-widths of the quantized methods.'),
      seeds: listOf(seed()).default([0]).describe('Seeds of the weights, data order and augmentation (default: 0).'),
      recipe: recipe.default({}).describe('The config fields every run shares.'),
      overrides: overrides.default([]),
      start: z
        .array(start, { error: 'must be a list of {model, dataset, checkpoint | float | scratch}' })
        .default([])
        .describe('Where the quantized runs of each model/dataset start (default: scratch).'),
      progressive: listOf(oneOf(methodNames))
        .default([])
        .describe('Methods whose runs start from the next higher bit-width\'s best checkpoint (APoT: 4 bits from the start, 3 from 4, ...).'),
      fairness: FAIRNESS.default(FAIRNESS.parse({})).describe('What the report checks.'),
      scales: z
        .record(SCALE_NAME, scale, { error: (issue) => (issue.code === 'invalid_type' ? got('must be a mapping of scale names to scales')(issue) : undefined) })
        .default({})
        .describe('Smaller versions of the grid by name (quick: what `tinyquant run GRID --quick` runs).'),
    },
    MAPPING,
  );
}

/** Grid files as tinyquant reads them. */
export const GRID_SCHEMA = gridSchema(RECIPE_KEYS);

export type GridFile = z.output<typeof GRID_SCHEMA>;
export type RunSelector = Checked<typeof SELECTOR>;
export type FairnessRules = Checked<typeof FAIRNESS>;

/** The JSON Schema (draft 7) of a grid file. */
export function gridJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(gridSchema(RECIPE_FOR_EDITORS), { target: 'draft-7', io: 'input' });
  const definitions = schema.definitions as Record<string, { properties?: Record<string, Record<string, unknown>> }>;
  withConfigDefaults(definitions.recipe.properties);
  return {
    $schema: schema.$schema,
    title: 'tinyquant experiment grid',
    description: 'An experiment (tinyquant run GRID): methods x bit-widths x models x datasets x seeds, a shared recipe, overrides, starting points and smaller scales.',
    ...schema,
  };
}
