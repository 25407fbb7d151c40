/**
 * MLPerf Tiny's keyword-spotting reference (`ds_cnn`, Keras, after Hello Edge's DS-CNN-S): conv
 * 64 filters, kernel 10x4, stride 2, padding [5, 1] (a 49x10 MFCC input gives 25x5, the size
 * the reference's 'same' padding gives; that pads 4 rows above and 5 below, this 5 and 5) + BN + ReLU; four depthwise-separable blocks (depthwise 3x3 +
 * BN + ReLU, pointwise 1x1 64 + BN + ReLU); global average pool; linear. The reference's dropout
 * layers (training only) are left out. Global pooling makes it take any input size; 1 channel by
 * default. 23,756 parameters with 12 classes (plus 1,152 batch-norm running statistics: Keras'
 * 24,908), 2.66 M MACs at 49x10. Conv weights are drawn from N(0, 2 / fan_in) as in the image
 * references (this one keeps Keras' default, glorot_uniform).
 *
 * State-dict names: `conv1`, `bn1`; `blocks.{0..3}.{0,2}` (depthwise, pointwise convs),
 * `blocks.{0..3}.{1,3}` (their batch norms);
 * `linear` (the classifier, named as in the CIFAR ResNets).
 */
import { BatchNorm, GlobalAvgPool, Linear, Sequential } from '../nn/layers.js';
import { type ZooModelOptions, depthwiseSeparable, referenceConv } from './zoo-blocks.js';

const FILTERS = 64;
const BLOCKS = 4;

export function dsCnn(opts: ZooModelOptions = {}): Sequential {
  const rng = opts.rng;
  const blocks = Array.from({ length: BLOCKS }, () => depthwiseSeparable(FILTERS, FILTERS, 1, rng));
  return Sequential.named({
    conv1: referenceConv(opts.inChannels ?? 1, FILTERS, [10, 4], { rng, stride: 2, padding: [5, 1] }),
    bn1: new BatchNorm(FILTERS, { relu: true }),
    blocks: new Sequential(...blocks),
    pool: new GlobalAvgPool(),
    linear: new Linear(FILTERS, opts.numClasses ?? 12, { rng }),
  });
}
