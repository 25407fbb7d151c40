/**
 * MobileNetV1 (Howard et al. 2017) with a width multiplier alpha; `mobilenetv1-0.25` in the
 * registry is MLPerf Tiny's visual-wake-words reference (`mobilenet_v1`, Keras: 96x96x3 input, 2
 * classes). Stem conv 3x3 stride 2 + BN + ReLU; 13 depthwise-separable blocks (depthwise 3x3 + BN +
 * ReLU, pointwise 1x1 + BN + ReLU) with the paper's strides and widths (64, 128, 128, 256, 256,
 * 512 x 6, 1024, 1024) times alpha (rounded down, as Keras does); global average pool; linear. The
 * reference uses ReLU, not ReLU6 (its comments say Keras' own MobileNet uses ReLU6), and a bias on
 * every convolution. With alpha 0.25 and 2 classes: 216,322 parameters (plus 5,472 batch-norm
 * running statistics; without the conv biases and the classifier, Keras' MobileNet(alpha=0.25)
 * count of 218,544), 7.49 M MACs at 96x96.
 *
 * State-dict names: `conv1`, `bn1`; `blocks.{0..12}.{0,2}` (depthwise, pointwise convs),
 * `blocks.{0..12}.{1,3}` (their batch norms);
 * `linear` (the classifier, named as in the CIFAR ResNets).
 */
import { BatchNorm, GlobalAvgPool, Linear, Sequential } from '../nn/layers.js';
import { type ZooModelOptions, depthwiseSeparable, referenceConv } from './zoo-blocks.js';

const STEM_WIDTH = 32;
/** Output width and depthwise stride of the 13 blocks at alpha 1. */
const BLOCKS: readonly (readonly [width: number, stride: number])[] = [
  [64, 1],
  [128, 2],
  [128, 1],
  [256, 2],
  [256, 1],
  [512, 2],
  [512, 1],
  [512, 1],
  [512, 1],
  [512, 1],
  [512, 1],
  [1024, 2],
  [1024, 1],
];

export interface MobileNetV1Options extends ZooModelOptions {
  /** Width multiplier (default 1). */
  readonly alpha?: number;
}

export function mobileNetV1(opts: MobileNetV1Options = {}): Sequential {
  const alpha = opts.alpha ?? 1;
  if (!(alpha > 0)) throw new Error(`mobileNetV1: alpha must be > 0, got ${alpha}`);
  const scaled = (width: number): number => Math.max(1, Math.floor(width * alpha));
  const rng = opts.rng;
  const stem = scaled(STEM_WIDTH);
  let width = stem;
  const blocks = BLOCKS.map(([w, stride]) => {
    const block = depthwiseSeparable(width, scaled(w), stride, rng);
    width = scaled(w);
    return block;
  });
  return Sequential.named({
    conv1: referenceConv(opts.inChannels ?? 3, stem, 3, { rng, stride: 2, padding: 1 }),
    bn1: new BatchNorm(stem, { relu: true }),
    blocks: new Sequential(...blocks),
    pool: new GlobalAvgPool(),
    linear: new Linear(width, opts.numClasses ?? 2, { rng }),
  });
}
