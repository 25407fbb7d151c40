/**
 * ResNets for 32x32 inputs: the CIFAR ResNet-20/32/44/56 of He et al. (2016) with either shortcut
 * option, and ResNet-18 adapted to 32x32 images. Parameter names follow the PyTorch CIFAR ResNets
 * (`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.shortcut.0`, `linear`), so state dicts are
 * interchangeable with them.
 */
import { type InitName, initializers } from '../nn/init.js';
import { BatchNorm, Conv2d, GlobalAvgPool, Linear, Sequential, ShortcutPad } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import * as ops from '../tensor/ops.js';
import type { Tensor } from '../tensor/tensor.js';
import { Rng } from '../util/rng.js';

/**
 * "A": parameter-free (stride-2 subsampling, zero-padded channels), the CIFAR ResNet paper's
 * choice and EWGS's; "B": 1x1 convolution + batch norm, APoT's.
 */
export type ShortcutOption = 'A' | 'B';

export interface ResNetConfig {
  /** Blocks per stage, e.g. [3, 3, 3] for ResNet-20. */
  readonly blocks: readonly number[];
  /** Channels per stage, e.g. [16, 32, 64]. */
  readonly widths: readonly number[];
  readonly numClasses: number;
  readonly inChannels: number;
  readonly shortcut: ShortcutOption;
  /** BatchNorm1d between the pooled features and the classifier (EWGS's ResNet-20). */
  readonly headBatchNorm: boolean;
  readonly init: InitName;
  readonly seed: number;
}

export class BasicBlock extends Module {
  conv1: Conv2d;
  readonly bn1: BatchNorm;
  conv2: Conv2d;
  readonly bn2: BatchNorm;
  readonly shortcut: Module | null;

  constructor(inPlanes: number, planes: number, stride: number, option: ShortcutOption, cfg: ResNetConfig, rng: Rng) {
    super();
    const init = initializers[cfg.init];
    this.conv1 = this.registerModule('conv1', new Conv2d(inPlanes, planes, 3, { stride, padding: 1, init, rng }));
    this.bn1 = this.registerModule('bn1', new BatchNorm(planes, { relu: true }));
    this.conv2 = this.registerModule('conv2', new Conv2d(planes, planes, 3, { padding: 1, init, rng }));
    this.bn2 = this.registerModule('bn2', new BatchNorm(planes));
    this.shortcut = null;
    if (stride !== 1 || inPlanes !== planes) {
      this.shortcut = this.registerModule(
        'shortcut',
        option === 'A'
          ? new ShortcutPad(stride, (planes - inPlanes) >> 1, planes - inPlanes - ((planes - inPlanes) >> 1))
          : new Sequential(new Conv2d(inPlanes, planes, 1, { stride, init, rng }), new BatchNorm(planes)),
      );
    }
  }

  /** relu(bn2(conv2(bn1(conv1(x)))) + shortcut(x)). */
  forward(x: Tensor): Tensor {
    const out = this.bn2.call(this.conv2.call(this.bn1.call(this.conv1.call(x))));
    return ops.addRelu(out, this.shortcut ? this.shortcut.call(x) : x);
  }

}

export class ResNet extends Module {
  readonly config: ResNetConfig;
  conv1: Conv2d;
  readonly bn1: BatchNorm;
  readonly stages: Sequential[];
  readonly pool: GlobalAvgPool;
  readonly bn2: BatchNorm | null;
  linear: Linear;

  constructor(config: ResNetConfig) {
    super();
    validateConfig(config);
    this.config = config;
    const rng = new Rng(config.seed);
    const init = initializers[config.init];
    const stem = config.widths[0];
    this.conv1 = this.registerModule('conv1', new Conv2d(config.inChannels, stem, 3, { padding: 1, init, rng }));
    this.bn1 = this.registerModule('bn1', new BatchNorm(stem, { relu: true }));
    let inPlanes = stem;
    this.stages = config.blocks.map((count, s) => {
      const planes = config.widths[s];
      const blocks: BasicBlock[] = [];
      for (let b = 0; b < count; b++) {
        blocks.push(new BasicBlock(inPlanes, planes, b === 0 && s > 0 ? 2 : 1, config.shortcut, config, rng));
        inPlanes = planes;
      }
      return this.registerModule(`layer${s + 1}`, new Sequential(...blocks));
    });
    this.pool = this.registerModule('pool', new GlobalAvgPool());
    this.bn2 = config.headBatchNorm ? this.registerModule('bn2', new BatchNorm(inPlanes)) : null;
    this.linear = this.registerModule('linear', new Linear(inPlanes, config.numClasses, { init, rng }));
  }

  forward(x: Tensor): Tensor {
    let y = this.bn1.call(this.conv1.call(x));
    y = this.stages.reduce((input, stage) => stage.call(input), y);
    y = this.pool.call(y);
    if (this.bn2) y = this.bn2.call(y);
    return this.linear.call(y);
  }

}

function validateConfig(c: ResNetConfig): void {
  if (c.blocks.length !== c.widths.length || c.blocks.length === 0) {
    throw new Error(`ResNet: ${c.blocks.length} stages of blocks but ${c.widths.length} widths`);
  }
  if (!Number.isInteger(c.numClasses) || c.numClasses < 2) throw new Error(`ResNet: numClasses must be >= 2, got ${c.numClasses}`);
  if (!(c.init in initializers)) throw new Error(`ResNet: unknown init "${c.init}"`);
}
