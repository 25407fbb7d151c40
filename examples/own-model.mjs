// Bring your own model and data: a small CNN written with tinyquant's layers, trained with EWGS at
// W4A4 on an image folder (or Fashion-MNIST from Debian's dataset-fashion-mnist when no folder is
// given), then exported as a tqm file, C for a Cortex-M and ONNX, with the integer model's
// agreement with the fake-quantized one on the test images.
//
//   node examples/own-model.mjs [IMAGE_FOLDER] [OUT_DIR]
//
// IMAGE_FOLDER: <class>/<image>.png|jpg (or train/ and test/ above them); images are converted to
// grey 28x28 and a fifth of them held out for testing when there is no test/ folder.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tq from 'tinyquant';

/** A stem, one depthwise-separable residual block, max pooling and a classifier. */
class SmallNet extends tq.Module {
  constructor(classes) {
    super();
    this.stem = this.registerModule('stem', new tq.Sequential(new tq.Conv2d(1, 32, 3, { padding: 1 }), new tq.BatchNorm(32, { relu: true }), new tq.MaxPool2d(2)));
    this.block = this.registerModule(
      'block',
      new tq.Sequential(
        new tq.Conv2d(32, 32, 3, { padding: 1, groups: 32 }), // depthwise
        new tq.BatchNorm(32, { relu: true }),
        new tq.Conv2d(32, 32, 1), // pointwise
        new tq.BatchNorm(32),
      ),
    );
    this.head = this.registerModule('head', new tq.Sequential(new tq.MaxPool2d(2), new tq.Flatten(), new tq.Linear(32 * 7 * 7, classes)));
  }

  forward(x) {
    const s = this.stem.call(x);
    return this.head.call(tq.ops.addRelu(this.block.call(s), s)); // the residual branch
  }
}

const [folder, out = 'runs/own-model'] = process.argv.slice(2);
const load = (split) =>
  folder
    ? tq.loadDataset({ name: 'imagefolder', path: folder, split, channels: 1, imageSize: [28, 28], resize: true, valSplit: 0.2 })
    : tq.loadDataset({ name: 'fashion-mnist', split });
const data = { train: await load('train'), test: await load('test') };
const { channels, height, width, classes } = data.train;

tq.manualSeed(0);
const model = new SmallNet(classes.length);
const config = tq.resolveConfig({
  ...(folder ? { dataset: 'imagefolder', dataPath: folder, channels: 1 } : { dataset: 'fashion-mnist' }),
  method: 'ewgs',
  wbits: 4,
  abits: 4,
  firstLast: 'int8',
  optimizer: 'adam',
  lr: 1e-3,
  epochs: 2,
  batch: 32,
  augment: false,
});
const run = await tq.train({ config, outDir: out, model, data });
console.log(`fake-quantized top-1 ${run.final.top1.toFixed(2)} %`);

// The integer model: calibrated on training images, then written for every target.
model.eval();
const normalization = tq.resolveNormalization(config.normalization, channels);
const count = Math.min(256, data.train.count);
const calibration = { images: data.train.images.subarray(0, count * channels * height * width), count, channels, height, width };
const integer = tq.lowerModel(model, { normalization, calibration, meta: { model: 'SmallNet', method: 'ewgs', wbits: 4, abits: 4, firstLast: 'int8', classes } });
mkdirSync(join(out, 'c'), { recursive: true });
tq.writeTqm(join(out, 'model.tqm'), integer);
const c = tq.generateC(integer, { headerName: 'model.h' });
writeFileSync(join(out, 'c', 'model.c'), c.source);
writeFileSync(join(out, 'c', 'model.h'), c.header);
tq.writeOnnxFile(join(out, 'model.onnx'), model, { inputShape: [channels, height, width], normalization });

const a = tq.measureAgreement(model, integer, data.test);
console.log(`integer model: top-1 ${a.integerTop1.toFixed(2)} %, same class as the fake-quantized model on ${a.sameTop1.toFixed(2)} % of ${a.images} test images`);
console.log(`C arena ${c.plan.bytes} bytes; files in ${out}`);
