/**
 * The training config's schema (zod): the one definition of its fields, their types, ranges,
 * descriptions and the defaults of its nested blocks. TrainConfig's type is inferred from it,
 * resolveConfig checks config files, flags and grid recipes with it, and
 * schemas/train-config.schema.json (completion and checks in editors) is generated from it.
 */
import * as z from 'zod';
import { DATASET_NAMES, NORMALIZATION_PRESETS } from '../data/index.js';
import { modelNames } from '../models/index.js';
import type { Schedule } from '../optim/schedule.js';
import { firstLastPolicies } from '../quant/quantize.js';
import { methodNames } from '../quant/quantizer.js';
import { type Checked, type Immutable, boolean, fields, fraction, got, integer, nonEmptyString, numberIn, oneOf, positive } from '../util/schema.js';

const EWGS = fields(
  {
    delta: numberIn(0, 1).default(0).describe('Fixed backward scaling factor; the start value when `hessian` is on (the reference starts at 0).'),
    hessian: boolean().default(false).describe('Re-estimate delta from the Hessian trace every `hessianEvery` epochs (never at epoch 0).'),
    hessianEvery: integer(1).default(10).describe('Epochs between Hessian estimates of delta.'),
    hessianBatches: integer(1).default(3).describe('Training batches each Hessian estimate averages over.'),
    hessianSamples: integer(2).default(50).describe('Most Hutchinson samples per estimate (the reference: 50, with an early stop).'),
    hessianEstimator: oneOf(['joint', 'per-quantizer']).default('joint').describe('One trace for all quantizers (joint) or one per quantizer.'),
  },
  'must be an object',
).describe('EWGS (method ewgs): the gradient scaling factor delta and its Hessian-based re-estimation; missing fields take their defaults.');

const deployBits = () => z.literal([8, 16], { error: got('must be 8 or 16') });

const DEPLOY = fields(
  {
    evaluate: boolean()
      .default(true)
      .describe('Lower the model at the end and evaluate the integer model on the test images; a model the lowering rejects stops the run before training, naming the layer.'),
    finalEpochs: integer(0)
      .default(0)
      .describe(
        'The final phase: N epochs after the epochs of quantization-aware training, with the deployment simulated (its plan made at their start) and batch norm frozen (statistics, scale and shift); 0: none. Float runs ignore it.',
      ),
    finalLr: z
      .number({ error: got('must be a factor in (0, 1]') })
      .positive()
      .max(1)
      .default(0.02)
      .describe(
        "The final phase's learning rates, constant, as a factor on the configured ones (lr, each group's): with frozen statistics, steps that are safe with batch statistics can make the weights diverge.",
      ),
    residualBits: deployBits().default(16).describe('Bits of the residual (shortcut) streams of the integer model.'),
    inputBits: deployBits().default(8).describe('Bits of the image after the normalization lookup table.'),
    calibrationImages: integer(1, 100_000).default(256).describe("Training images the plan's fixed-point scales are calibrated on."),
  },
  'must be an object',
).describe('The integer deployment of a quantized run; missing fields take their defaults.');

const PARAM_KINDS = ['weight', 'bias', 'norm', 'quant'] as const;

/** A regular expression on parameter names, or `kind:<weight|bias|norm|quant>`. */
const paramMatch = nonEmptyString().superRefine((match, ctx) => {
  if (match.startsWith('kind:')) {
    const kind = match.slice(5);
    if (!(PARAM_KINDS as readonly string[]).includes(kind)) ctx.addIssue({ code: 'custom', input: match, message: `(kind) must be one of ${PARAM_KINDS.join(', ')}; got ${JSON.stringify(kind)}` });
    return;
  }
  try {
    new RegExp(match);
  } catch (e) {
    ctx.addIssue({ code: 'custom', input: match, message: `is not a valid regular expression: ${(e as Error).message}` });
  }
});

const PARAM_GROUP = fields(
  {
    name: nonEmptyString().describe('The group\'s name in logs.'),
    match: paramMatch.describe('A regular expression on parameter names, or kind:weight, kind:bias, kind:norm or kind:quant (quantizer parameters).'),
    lr: numberIn(0, Infinity).describe('The learning rate of the group.'),
    weightDecay: numberIn(0, Infinity).describe('The weight decay of the group.'),
  },
  'must be an object {name, match, lr, weightDecay}',
);

const SCHEDULE_KINDS = ['constant', 'multistep', 'cosine'] as const;

const SCHEDULE = z
  .discriminatedUnion(
    'kind',
    [
      fields({ kind: z.literal('constant') }),
      fields(
        {
          kind: z.literal('multistep'),
          milestones: z.array(integer(0), { error: 'must be a list of epochs' }).describe('Epochs at which the learning rate is multiplied by gamma.'),
          gamma: positive().default(0.1).describe('The factor at each milestone.'),
        },
      ),
      fields(
        {
          kind: z.literal('cosine'),
          // 0 until resolveConfig fills in the run's epochs (a cosine without its own length).
          epochs: integer(1)
            .optional()
            .transform((epochs) => epochs ?? 0)
            .describe("Epochs of the decay (default: the run's epochs)."),
          minFactor: numberIn(0, 1).default(0).describe('The last learning rate as a fraction of lr.'),
        },
      ),
    ],
    {
      error: (issue) =>
        issue.code === 'invalid_union'
          ? got(`must be one of ${SCHEDULE_KINDS.join(', ')}`)({ input: (issue.input as { kind?: unknown }).kind })
          : `must be an object with kind ${SCHEDULE_KINDS.slice(0, -1).join(', ')} or ${SCHEDULE_KINDS.at(-1)}`,
    },
  )
  .describe('The learning-rate schedule over the epochs (after the warm-up).');

const TRAIN_CONFIG = fields(
  {
    model: oneOf(modelNames).describe('The architecture (tinyquant models lists them).'),
    dataset: oneOf(DATASET_NAMES).describe('The dataset; imagefolder: your own images at dataPath.'),
    dataDir: nonEmptyString().optional().describe('Where named datasets (cifar10, mnist, ...) are looked for first; not part of the run\'s identity. Relative: to the file\'s directory.'),
    dataPath: nonEmptyString().optional().describe('The folder or .tar(.gz) archive of this run\'s own dataset (dataset imagefolder). Relative: to the file\'s directory.'),
    channels: z
      .literal([1, 3], { error: got('must be 1 (grey) or 3 (RGB)') })
      .optional()
      .describe("imagefolder: convert every image to 1 (grey, BT.601 luma) or 3 (RGB) channels; default: the files' own, which must agree."),
    imageSize: z
      .tuple([integer(1, 65535, 'height'), integer(1, 65535, 'width')], { error: got('must be [height, width]') })
      .optional()
      .describe("imagefolder: the size every image must have, [height, width]; default: the first image's."),
    resize: boolean().describe('imagefolder: resize images of another size to imageSize (area averaging) instead of rejecting them.'),
    valSplit: fraction().describe("Hold out this fraction of the training images (stratified, seeded by seed) as the test set; 0: the dataset's test split."),
    normalization: oneOf(NORMALIZATION_PRESETS).describe("Input normalization. Default: the dataset's (MNIST and Fashion-MNIST statistics; none for 1 channel; else APoT's CIFAR constants)."),
    augment: boolean().describe('Random crop (4-pixel padding) and horizontal flip.'),
    method: oneOf(['float', ...methodNames] as const).describe('float, or the quantization-aware training method.'),
    wbits: integer(1, 32).describe('Weight bits. Default: 32 for float, else 4.'),
    abits: integer(1, 32).describe('Activation bits. Default: 32 for float, else wbits.'),
    firstLast: oneOf(firstLastPolicies).describe(
      "First conv and last linear layer: float (not quantized), apot8 (APoT's 8-bit wrapper), int8 (8-bit weights and last-layer input: what a device runs), same (the run's bit-widths), reference (what the method's reference did).",
    ),
    perChannel: boolean().describe('Per-channel weight quantizer parameters.'),
    apotVariant: oneOf(['cifar', 'imagenet'] as const).describe("Which of APoT's reference codes to follow."),
    ewgs: EWGS,
    deploy: DEPLOY,
    epochs: integer(1).describe('Training epochs.'),
    batch: integer(1).describe('Training batch size.'),
    evalBatch: integer(1).describe('Evaluation batch size.'),
    optimizer: oneOf(['sgd', 'adam', 'adamw'] as const).describe('The optimizer.'),
    lr: positive().describe('Learning rate of the default parameter group.'),
    momentum: numberIn(0, 1).describe('SGD momentum.'),
    nesterov: boolean().describe('Nesterov momentum (SGD).'),
    weightDecay: numberIn(0, Infinity).describe('Weight decay of the default parameter group.'),
    paramGroups: z
      .array(PARAM_GROUP, { error: 'must be a list of {name, match, lr, weightDecay}' })
      .describe('Groups with their own lr and weight decay, matched in order before the default group.'),
    schedule: SCHEDULE,
    warmupEpochs: numberIn(0, Infinity).describe('Epochs of linear learning-rate warm-up.'),
    init: nonEmptyString().optional().describe('Starting weights: a float or quantized checkpoint (tinyquant\'s, safetensors, or a PyTorch .pth). Relative: to the file\'s directory.'),
    seed: integer(0).describe('Seed of the weights, the data order and the augmentation.'),
    labelSmoothing: numberIn(0, 1).describe('Label smoothing of the cross-entropy loss.'),
    trainSubset: integer(0).describe('Train on a fixed subset of this many images (quick runs); 0: all.'),
    testSubset: integer(0).describe('Test on a fixed subset of this many images; 0: all.'),
    workers: integer(0, 64).describe('Data-loader worker threads.'),
    evalEvery: integer(1).describe('Evaluate on the test set every this many epochs (and always after the last one).'),
  },
  'must be an object of fields',
);

/** What a config file, the flags or a grid recipe may give: any of the fields, each checked. */
export const CONFIG_INPUT = TRAIN_CONFIG.partial();

export type EwgsConfig = Checked<typeof EWGS>;
export type DeployConfig = Checked<typeof DEPLOY>;
export type ParamGroupConfig = Checked<typeof PARAM_GROUP>;

type Assert<T extends true> = T;
/** The schema's schedules are the trainer's (whose cosine may lack minFactor, as the default config's does). */
export type ScheduleFits = Assert<z.output<typeof SCHEDULE> extends Schedule ? true : false>;

/** A complete config: the schema's fields, with the trainer's Schedule type. */
export type TrainConfig = Immutable<Omit<z.output<typeof TRAIN_CONFIG>, 'schedule'> & { schedule: Schedule }>;

export const CONFIG_FIELDS = Object.keys(TRAIN_CONFIG.shape) as (keyof TrainConfig)[];

export const DEFAULT_CONFIG: TrainConfig = {
  model: 'resnet20',
  dataset: 'cifar10',
  resize: false,
  valSplit: 0,
  normalization: 'apot',
  augment: true,
  method: 'float',
  wbits: 32,
  abits: 32,
  firstLast: 'int8',
  perChannel: false,
  apotVariant: 'cifar',
  ewgs: EWGS.parse({}),
  deploy: DEPLOY.parse({}),
  epochs: 1,
  batch: 128,
  evalBatch: 500,
  optimizer: 'sgd',
  lr: 0.1,
  momentum: 0.9,
  nesterov: false,
  weightDecay: 1e-4,
  paramGroups: [],
  schedule: { kind: 'cosine', epochs: 1 },
  warmupEpochs: 0,
  seed: 0,
  labelSmoothing: 0,
  trainSubset: 0,
  testSubset: 0,
  workers: 1,
  evalEvery: 1,
};

/** Fields whose default depends on other fields (resolveConfig sets them): their descriptions say it. */
const DERIVED_DEFAULTS: readonly string[] = ['normalization', 'wbits', 'abits', 'schedule'];

type JsonProperties = Record<string, Record<string, unknown>>;

/** JSON Schema properties of config fields, each given its default (in place). */
export function withConfigDefaults(properties: JsonProperties = {}): JsonProperties {
  for (const [key, property] of Object.entries(properties)) {
    const fallback = (DEFAULT_CONFIG as unknown as Record<string, unknown>)[key];
    if (fallback !== undefined && !DERIVED_DEFAULTS.includes(key)) property.default = fallback;
  }
  return properties;
}

/** The JSON Schema (draft 7) of a config file, each field with its default. */
export function trainConfigJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(CONFIG_INPUT, { target: 'draft-7', io: 'input' });
  withConfigDefaults(schema.properties as JsonProperties);
  return {
    $schema: schema.$schema,
    title: 'tinyquant training config',
    description: 'A training config file (tinyquant train --config FILE): any of the fields; the others take their defaults.',
    ...schema,
  };
}
