/**
 * MLPerf Tiny's image-classification reference (`resnet_v1_eembc`, Keras): a ResNet-8 for 32x32x3
 * CIFAR-10 images. conv 3x3 16 + BN + ReLU; three stacks of one residual block (16, 32, 64
 * filters; the 2nd and 3rd start with stride 2 and take a 1x1 stride-2 convolution, without batch
 * norm, as their shortcut): relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); global average pool;
 * dense. Every convolution has a bias, as in the reference. 78,186 parameters with 10 classes
 * (plus 480 batch-norm running statistics: Keras' 78,666), 12.5 M MACs.
 *
 * State-dict names: `conv1`, `bn1`; `stack{1,2,3}.body.{0,2}` (convs), `stack{1,2,3}.body.{1,3}`
 * (their batch norms), `stack{2,3}.shortcut` (the 1x1 convs);
 * `linear` (the classifier, named as in the CIFAR ResNets).
 */
import { BatchNorm, GlobalAvgPool, Linear, Residual, Sequential } from '../nn/layers.js';
import { kaimingNormalFanIn } from '../nn/init.js';
import type { Rng } from '../util/rng.js';
import { type ZooModelOptions, referenceConv } from './zoo-blocks.js';

function stack(inChannels: number, outChannels: number, stride: number, rng: Rng | undefined): Residual {
  const body = new Sequential(
    referenceConv(inChannels, outChannels, 3, { rng, stride, padding: 1 }),
    new BatchNorm(outChannels, { relu: true }),
    referenceConv(outChannels, outChannels, 3, { rng, padding: 1 }),
    new BatchNorm(outChannels),
  );
  const shortcut = stride === 1 && inChannels === outChannels ? undefined : referenceConv(inChannels, outChannels, 1, { rng, stride });
  return new Residual(body, { shortcut, relu: true });
}

export function resnet8Mlperf(opts: ZooModelOptions = {}): Sequential {
  const rng = opts.rng;
  return Sequential.named({
    conv1: referenceConv(opts.inChannels ?? 3, 16, 3, { rng, padding: 1 }),
    bn1: new BatchNorm(16, { relu: true }),
    stack1: stack(16, 16, 1, rng),
    stack2: stack(16, 32, 2, rng),
    stack3: stack(32, 64, 2, rng),
    pool: new GlobalAvgPool(),
    linear: new Linear(64, opts.numClasses ?? 10, { init: kaimingNormalFanIn, rng }),
  });
}
