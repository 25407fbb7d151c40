/** Model registry: every architecture a config or the CLI can name. */
import { ResNet, type ResNetConfig } from './resnet.js';

export { BasicBlock, ResNet, type ResNetConfig, type ShortcutOption } from './resnet.js';

type Architecture = Omit<ResNetConfig, 'numClasses' | 'inChannels' | 'seed'>;

function cifarResNet(depth: number, overrides: Partial<Architecture> = {}): Architecture {
  const n = (depth - 2) / 6;
  return {
    blocks: [n, n, n],
    widths: [16, 32, 64],
    shortcut: 'A',
    headBatchNorm: false,
    init: 'kaiming-normal-fan-in',
    ...overrides,
  };
}

/**
 * `resnetNN`: He et al.'s CIFAR ResNet (depth 6n + 2) with option-A shortcuts (the canonical one,
 * used for fair comparisons; ResNet-8 is the smallest, for tests and the tiniest devices); `-apot` and `-ewgs` are the exact variants of the two reference implementations
 * (option-B 1x1 projection shortcuts; option A plus BatchNorm1d before the classifier).
 */
export const architectures = {
  resnet8: cifarResNet(8),
  resnet20: cifarResNet(20),
  resnet32: cifarResNet(32),
  resnet44: cifarResNet(44),
  resnet56: cifarResNet(56),
  'resnet20-apot': cifarResNet(20, { shortcut: 'B', init: 'kaiming-normal-fan-out' }),
  'resnet56-apot': cifarResNet(56, { shortcut: 'B', init: 'kaiming-normal-fan-out' }),
  'resnet20-ewgs': cifarResNet(20, { headBatchNorm: true }),
  resnet18: {
    blocks: [2, 2, 2, 2],
    widths: [64, 128, 256, 512],
    shortcut: 'B',
    headBatchNorm: false,
    init: 'kaiming-normal-fan-in',
  },
} as const satisfies Record<string, Architecture>;

export type ModelName = keyof typeof architectures;

export const modelNames = Object.keys(architectures) as ModelName[];

export interface ModelOptions {
  readonly numClasses?: number;
  readonly inChannels?: number;
  readonly seed?: number;
}

export function isModelName(name: string): name is ModelName {
  return name in architectures;
}

export function createModel(name: string, opts: ModelOptions = {}): ResNet {
  if (!isModelName(name)) throw new Error(`unknown model "${name}"; choose one of ${modelNames.join(', ')}`);
  return new ResNet({
    ...architectures[name],
    numClasses: opts.numClasses ?? 10,
    inChannels: opts.inChannels ?? 3,
    seed: opts.seed ?? 0,
  });
}
