/**
 * The pure-TypeScript backend: the reference implementation of `Backend` (tests compare the native
 * backend against it) and the fallback where the native addon cannot be built.
 *
 * Buffers are plain Float32Arrays in logical row-major layout (`JsBuf`). Every method validates its
 * arguments (see validate.ts) and returns fresh buffers; sums accumulate in float64 (convolutions
 * and matrix products included, see gemm.ts) and results are rounded to float32 once. Single
 * threaded.
 */
import type {
  AdamParams,
  Backend,
  BatchNormParams,
  Buf,
  Conv2dParams,
  CrossEntropyResult,
  Pool2dParams,
  QuantSpec,
  SgdParams,
  Shape,
} from '../backend.js';
import { STAT_FIELDS, numel, shapeStr } from '../backend.js';
import {
  applyChannelAffine,
  batchNormBackward,
  batchStats,
  inverseStd,
  normalizationAffine,
  updateRunning,
} from './batchnorm.js';
import { JsBatchNormSaved, JsBuf, Ledger, savedOf, valuesOf } from './buffer.js';
import { channelSums, conv2dBackwardData, conv2dBackwardWeights, conv2dForward } from './conv.js';
import { gemmAccumulate, rowMajor, transposeOf } from './gemm.js';
import { softmaxCrossEntropyBackward, softmaxCrossEntropyForward } from './loss.js';
import { adamUpdate, sgdUpdate } from './optim.js';
import {
  type ShortcutGeometry,
  avgPool2dBackward,
  avgPool2dForward,
  globalAvgPoolBackward,
  globalAvgPoolForward,
  maxPool2dBackward,
  maxPool2dForward,
  shortcutPadBackward,
  shortcutPadForward,
} from './pool.js';
import { quantizeBackwardPass, quantizeForward } from './quantize.js';
import {
  type BatchNormGeometry,
  batchNormGeometry,
  channelChunk,
  checkAdamParams,
  checkBatchNormParams,
  checkBatchNormTrainable,
  checkBias,
  checkCeiling,
  checkClassification,
  checkQuantSpec,
  checkSgdParams,
  checkShape,
  conv2dBackwardGeometry,
  conv2dGeometry,
  convOutputShape,
  expectFinite,
  expectRank,
  expectSameShape,
  expectShape,
  fail,
  linearDims,
  pool2dGeometry,
  poolOutputShape,
  shortcutPadAfter,
  shortcutPadShape,
} from './validate.js';

export { JsBatchNormSaved, JsBuf } from './buffer.js';
export { roundHalfEven } from './round.js';

export class JsBackend implements Backend<JsBuf, JsBatchNormSaved> {
  readonly name = 'js' as const;
  readonly threads = 1;
  readonly #ledger = new Ledger();

  #wrap(data: Float32Array, shape: Shape): JsBuf {
    return new JsBuf(data, shape, this.#ledger);
  }

  // ---- memory ---------------------------------------------------------------------------------

  upload(data: Float32Array, shape: Shape): JsBuf {
    checkShape('upload', 'target', shape);
    if (!(data instanceof Float32Array)) fail('upload', 'data must be a Float32Array');
    if (data.length !== numel(shape)) fail('upload', `${data.length} values do not fill shape ${shapeStr(shape)}`);
    return this.#wrap(data.slice(), shape);
  }

  download(x: JsBuf): Float32Array {
    return valuesOf('download', 'buffer', x).slice();
  }

  zeros(shape: Shape): JsBuf {
    checkShape('zeros', 'requested', shape);
    return this.#wrap(new Float32Array(numel(shape)), shape);
  }

  clone(x: JsBuf): JsBuf {
    return this.#wrap(valuesOf('clone', 'buffer', x).slice(), x.shape);
  }

  free(x: JsBuf): void {
    valuesOf('free', 'buffer', x); // rejects a foreign buffer
    x.release('free');
  }

  freeSaved(s: JsBatchNormSaved): void {
    savedOf('freeSaved', s).release('freeSaved');
  }

  reshape(x: JsBuf, shape: Shape): JsBuf {
    const values = valuesOf('reshape', 'input', x);
    checkShape('reshape', 'target', shape);
    if (numel(shape) !== values.length) fail('reshape', `cannot reshape ${shapeStr(x.shape)} to ${shapeStr(shape)}`);
    return this.#wrap(values.slice(), shape);
  }

  liveBytes(): number {
    return this.#ledger.bytes;
  }

  // ---- elementwise and reductions ---------------------------------------------------------------

  #map(op: string, x: JsBuf, fn: (v: number) => number): JsBuf {
    const xs = valuesOf(op, 'input', x);
    const out = new Float32Array(xs.length);
    for (let i = 0; i < xs.length; i++) out[i] = fn(xs[i]);
    return this.#wrap(out, x.shape);
  }

  #zip(op: string, names: [string, string], a: JsBuf, b: JsBuf, fn: (u: number, v: number) => number): JsBuf {
    const as = valuesOf(op, names[0], a);
    const bs = valuesOf(op, names[1], b);
    expectSameShape(op, names[0], a.shape, names[1], b.shape);
    const out = new Float32Array(as.length);
    for (let i = 0; i < as.length; i++) out[i] = fn(as[i], bs[i]);
    return this.#wrap(out, a.shape);
  }

  add(a: JsBuf, b: JsBuf): JsBuf {
    return this.#zip('add', ['a', 'b'], a, b, (u, v) => u + v);
  }

  addRelu(a: JsBuf, b: JsBuf): JsBuf {
    return this.#zip('addRelu', ['a', 'b'], a, b, (u, v) => relu(u + v));
  }

  affine(x: JsBuf, alpha: number, beta: number): JsBuf {
    expectFinite('affine', 'alpha', alpha);
    expectFinite('affine', 'beta', beta);
    return this.#map('affine', x, (v) => alpha * v + beta);
  }

  mul(a: JsBuf, b: JsBuf): JsBuf {
    return this.#zip('mul', ['a', 'b'], a, b, (u, v) => u * v);
  }

  relu(x: JsBuf): JsBuf {
    return this.#map('relu', x, relu);
  }

  reluBackward(gy: JsBuf, y: JsBuf): JsBuf {
    return this.#zip('reluBackward', ['gradient', 'output'], gy, y, (g, v) => (v > 0 ? g : 0));
  }

  clippedRelu(x: JsBuf, ceiling: number): JsBuf {
    checkCeiling('clippedRelu', ceiling);
    const c = Math.fround(ceiling); // the float32 ceiling the outputs hold (and the native backend uses)
    return this.#map('clippedRelu', x, (v) => (v < 0 ? 0 : v > c ? c : v));
  }

  clippedReluBackward(gy: JsBuf, y: JsBuf, ceiling: number): JsBuf {
    checkCeiling('clippedReluBackward', ceiling);
    const c = Math.fround(ceiling);
    // Written as PyTorch's hardtanh backward: a NaN output passes the gradient.
    return this.#zip('clippedReluBackward', ['gradient', 'output'], gy, y, (g, v) => (v <= 0 || v >= c ? 0 : g));
  }

  tanh(x: JsBuf): JsBuf {
    return this.#map('tanh', x, Math.tanh);
  }

  tanhBackward(gy: JsBuf, y: JsBuf): JsBuf {
    return this.#zip('tanhBackward', ['gradient', 'output'], gy, y, (g, v) => g * (1 - v * v));
  }

  axpyInPlace(dst: JsBuf, src: JsBuf, alpha: number): void {
    const d = valuesOf('axpyInPlace', 'destination', dst);
    const s = valuesOf('axpyInPlace', 'source', src);
    expectSameShape('axpyInPlace', 'destination', dst.shape, 'source', src.shape);
    expectFinite('axpyInPlace', 'alpha', alpha);
    for (let i = 0; i < d.length; i++) d[i] += alpha * s[i];
  }

  dot(a: JsBuf, b: JsBuf): number {
    const as = valuesOf('dot', 'a', a);
    const bs = valuesOf('dot', 'b', b);
    expectSameShape('dot', 'a', a.shape, 'b', b.shape);
    let s = 0;
    for (let i = 0; i < as.length; i++) s += as[i] * bs[i];
    return s;
  }

  stats(x: JsBuf, channels: number): Float64Array {
    const xs = valuesOf('stats', 'input', x);
    const chunk = channelChunk('stats', 'input', x.shape, channels);
    const out = new Float64Array(STAT_FIELDS * channels);
    for (let c = 0; c < channels; c++) {
      let sum = 0, sumSq = 0, absSum = 0, min = Infinity, max = -Infinity;
      for (let i = c * chunk; i < (c + 1) * chunk; i++) {
        const v = xs[i];
        sum += v;
        sumSq += v * v;
        absSum += Math.abs(v);
        if (v < min) min = v;
        if (v > max) max = v;
      }
      out.set([sum, sumSq, min, max, absSum], c * STAT_FIELDS);
    }
    return out;
  }

  countNonFinite(x: JsBuf): number {
    const xs = valuesOf('countNonFinite', 'input', x);
    let count = 0;
    for (let i = 0; i < xs.length; i++) if (!Number.isFinite(xs[i])) count++;
    return count;
  }

  // ---- convolution ----------------------------------------------------------------------------

  conv2d(x: JsBuf, w: JsBuf, bias: JsBuf | null, p: Conv2dParams): JsBuf {
    const op = 'conv2d';
    const xs = valuesOf(op, 'input', x);
    const ws = valuesOf(op, 'weight', w);
    const bs = bias === null ? null : valuesOf(op, 'bias', bias);
    const g = conv2dGeometry(op, x.shape, w.shape, p);
    checkBias(op, bias?.shape ?? null, g.outChannels);
    return this.#wrap(conv2dForward(xs, ws, bs, g), convOutputShape(g));
  }

  conv2dBackwardData(gy: JsBuf, w: JsBuf, xShape: Shape, p: Conv2dParams): JsBuf {
    const op = 'conv2dBackwardData';
    const gys = valuesOf(op, 'gradient', gy);
    const ws = valuesOf(op, 'weight', w);
    checkShape(op, 'input', xShape);
    const g = conv2dBackwardGeometry(op, gy.shape, xShape, w.shape, p);
    return this.#wrap(conv2dBackwardData(gys, ws, g), xShape);
  }

  conv2dBackwardWeights(gy: JsBuf, x: JsBuf, wShape: Shape, withBias: boolean, p: Conv2dParams): { gw: JsBuf; gb: JsBuf | null } {
    const op = 'conv2dBackwardWeights';
    const gys = valuesOf(op, 'gradient', gy);
    const xs = valuesOf(op, 'input', x);
    checkShape(op, 'weight', wShape);
    const g = conv2dBackwardGeometry(op, gy.shape, x.shape, wShape, p);
    const { gw, gb } = conv2dBackwardWeights(gys, xs, g, withBias);
    return { gw: this.#wrap(gw, wShape), gb: gb === null ? null : this.#wrap(gb, [g.outChannels]) };
  }

  // ---- batch normalization ----------------------------------------------------------------------

  batchNormTrain(
    x: JsBuf,
    gamma: JsBuf,
    beta: JsBuf,
    runningMean: JsBuf,
    runningVar: JsBuf,
    p: BatchNormParams,
  ): { y: JsBuf; saved: JsBatchNormSaved } {
    const op = 'batchNormTrain';
    const [xs, gammas, betas, rm, rv] = this.#batchNormInputs(op, x, gamma, beta, runningMean, runningVar, p);
    const g = batchNormGeometry(op, x.shape, channelVectorShapes(gamma, beta, runningMean, runningVar));
    checkBatchNormTrainable(op, x.shape, g);
    const stats = batchStats(xs, g);
    const invStd = inverseStd(stats.variance, p.eps);
    updateRunning(stats, g.batch * g.spatial, p.momentum, rm, rv);
    const y = this.#normalized(x, xs, g, stats.mean, invStd, gammas, betas, p.relu);
    return { y, saved: new JsBatchNormSaved(stats.mean, invStd, this.#ledger) };
  }

  batchNormInfer(x: JsBuf, gamma: JsBuf, beta: JsBuf, runningMean: JsBuf, runningVar: JsBuf, p: BatchNormParams): JsBuf {
    const op = 'batchNormInfer';
    const [xs, gammas, betas, rm, rv] = this.#batchNormInputs(op, x, gamma, beta, runningMean, runningVar, p);
    const g = batchNormGeometry(op, x.shape, channelVectorShapes(gamma, beta, runningMean, runningVar));
    return this.#normalized(x, xs, g, rm, inverseStd(rv, p.eps), gammas, betas, p.relu);
  }

  /** gamma (x - mean) invStd + beta per channel (then ReLU when asked), in a buffer of x's shape. */
  #normalized(
    x: JsBuf,
    xs: Float32Array,
    g: BatchNormGeometry,
    mean: ArrayLike<number>,
    invStd: ArrayLike<number>,
    gammas: Float32Array,
    betas: Float32Array,
    relu: boolean,
  ): JsBuf {
    const { scale, shift } = normalizationAffine(mean, invStd, gammas, betas);
    return this.#wrap(applyChannelAffine(xs, g, scale, shift, relu), x.shape);
  }

  #batchNormInputs(op: string, x: JsBuf, gamma: JsBuf, beta: JsBuf, rm: JsBuf, rv: JsBuf, p: BatchNormParams): Float32Array[] {
    checkBatchNormParams(op, p);
    return [
      valuesOf(op, 'input', x),
      valuesOf(op, 'gamma', gamma),
      valuesOf(op, 'beta', beta),
      valuesOf(op, 'running mean', rm),
      valuesOf(op, 'running variance', rv),
    ];
  }

  batchNormBackward(
    gy: JsBuf,
    x: JsBuf,
    y: JsBuf,
    gamma: JsBuf,
    saved: JsBatchNormSaved,
    p: BatchNormParams,
  ): { gx: JsBuf; gGamma: JsBuf; gBeta: JsBuf } {
    const op = 'batchNormBackward';
    checkBatchNormParams(op, p);
    const gys = valuesOf(op, 'gradient', gy);
    const xs = valuesOf(op, 'input', x);
    const ys = valuesOf(op, 'output', y);
    const gammas = valuesOf(op, 'gamma', gamma);
    const { mean, invStd } = savedOf(op, saved).get(op);
    const g = batchNormGeometry(op, x.shape, { gamma: gamma.shape });
    expectSameShape(op, 'gradient', gy.shape, 'input', x.shape);
    expectSameShape(op, 'output', y.shape, 'input', x.shape);
    if (mean.length !== g.channels) fail(op, `saved state has ${mean.length} channels, input is ${shapeStr(x.shape)}`);
    const r = batchNormBackward(gys, xs, p.relu ? ys : null, gammas, mean, invStd, g);
    return { gx: this.#wrap(r.gx, x.shape), gGamma: this.#wrap(r.gGamma, gamma.shape), gBeta: this.#wrap(r.gBeta, gamma.shape) };
  }

  /** The reference: batchNormTrain, then quantize (the native backend fuses them). */
  batchNormQuantizeTrain(
    x: JsBuf,
    gamma: JsBuf,
    beta: JsBuf,
    runningMean: JsBuf,
    runningVar: JsBuf,
    p: BatchNormParams,
    spec: QuantSpec,
  ): { y: JsBuf; saved: JsBatchNormSaved } {
    checkPerTensor('batchNormQuantizeTrain', spec);
    const { y, saved } = this.batchNormTrain(x, gamma, beta, runningMean, runningVar, p);
    const q = this.quantize(y, spec);
    this.free(y);
    return { y: q, saved };
  }

  /** The reference: the batch-norm output recomputed from the saved statistics, then quantizeBackward and batchNormBackward. */
  batchNormQuantizeBackward(
    gq: JsBuf,
    x: JsBuf,
    gamma: JsBuf,
    beta: JsBuf,
    saved: JsBatchNormSaved,
    p: BatchNormParams,
    spec: QuantSpec,
  ): { gx: JsBuf; gGamma: JsBuf; gBeta: JsBuf; sums: Float64Array } {
    const op = 'batchNormQuantizeBackward';
    checkPerTensor(op, spec);
    checkBatchNormParams(op, p);
    const { mean, invStd } = savedOf(op, saved).get(op);
    const g = batchNormGeometry(op, x.shape, { gamma: gamma.shape, beta: beta.shape });
    const y = this.#normalized(x, valuesOf(op, 'input', x), g, mean, invStd, valuesOf(op, 'gamma', gamma), valuesOf(op, 'beta', beta), p.relu);
    const { gx: gy, sums } = this.quantizeBackward(y, gq, spec);
    const grads = this.batchNormBackward(gy, x, y, gamma, saved, p);
    this.free(y);
    this.free(gy);
    return { ...grads, sums };
  }

  // ---- pooling ------------------------------------------------------------------------------

  avgPool2d(x: JsBuf, p: Pool2dParams): JsBuf {
    const xs = valuesOf('avgPool2d', 'input', x);
    const g = pool2dGeometry('avgPool2d', x.shape, p);
    return this.#wrap(avgPool2dForward(xs, g), poolOutputShape(g));
  }

  avgPool2dBackward(gy: JsBuf, xShape: Shape, p: Pool2dParams): JsBuf {
    const op = 'avgPool2dBackward';
    const gys = valuesOf(op, 'gradient', gy);
    checkShape(op, 'input', xShape);
    const g = pool2dGeometry(op, xShape, p);
    expectShape(op, `gradient for input ${shapeStr(xShape)}`, gy.shape, poolOutputShape(g));
    return this.#wrap(avgPool2dBackward(gys, g), xShape);
  }

  maxPool2d(x: JsBuf, p: Pool2dParams): JsBuf {
    const xs = valuesOf('maxPool2d', 'input', x);
    const g = pool2dGeometry('maxPool2d', x.shape, p);
    return this.#wrap(maxPool2dForward(xs, g), poolOutputShape(g));
  }

  maxPool2dBackward(gy: JsBuf, x: JsBuf, p: Pool2dParams): JsBuf {
    const op = 'maxPool2dBackward';
    const gys = valuesOf(op, 'gradient', gy);
    const xs = valuesOf(op, 'input', x);
    const g = pool2dGeometry(op, x.shape, p);
    expectShape(op, `gradient for input ${shapeStr(x.shape)}`, gy.shape, poolOutputShape(g));
    return this.#wrap(maxPool2dBackward(gys, xs, g), x.shape);
  }

  globalAvgPool(x: JsBuf): JsBuf {
    const xs = valuesOf('globalAvgPool', 'input', x);
    expectRank('globalAvgPool', 'input', x.shape, 4);
    const [n, c, h, w] = x.shape;
    if (h * w === 0) fail('globalAvgPool', `input ${shapeStr(x.shape)} has no pixels`);
    return this.#wrap(globalAvgPoolForward(xs, n * c, h * w), [n, c]);
  }

  globalAvgPoolBackward(gy: JsBuf, xShape: Shape): JsBuf {
    const op = 'globalAvgPoolBackward';
    const gys = valuesOf(op, 'gradient', gy);
    checkShape(op, 'input', xShape);
    expectRank(op, 'input', xShape, 4);
    const [n, c, h, w] = xShape;
    expectShape(op, `gradient for input ${shapeStr(xShape)}`, gy.shape, [n, c]);
    return this.#wrap(globalAvgPoolBackward(gys, n * c, h * w), xShape);
  }

  // ---- fully connected -----------------------------------------------------------------------

  linear(x: JsBuf, w: JsBuf, bias: JsBuf | null): JsBuf {
    const op = 'linear';
    const xs = valuesOf(op, 'input', x);
    const ws = valuesOf(op, 'weight', w);
    const bs = bias === null ? null : valuesOf(op, 'bias', bias);
    const [n, k, m] = linearDims(op, x.shape, w.shape);
    checkBias(op, bias?.shape ?? null, m);
    const acc = new Float64Array(n * m);
    gemmAccumulate(n, m, k, rowMajor(xs, 0, k), transposeOf(ws, 0, k), acc, 0, m);
    const y = new Float32Array(n * m);
    for (let i = 0; i < y.length; i++) y[i] = acc[i] + (bs === null ? 0 : bs[i % m]);
    return this.#wrap(y, [n, m]);
  }

  linearBackwardData(gy: JsBuf, w: JsBuf): JsBuf {
    const op = 'linearBackwardData';
    const gys = valuesOf(op, 'gradient', gy);
    const ws = valuesOf(op, 'weight', w);
    expectRank(op, 'gradient', gy.shape, 2);
    expectRank(op, 'weight', w.shape, 2);
    const [n, m] = gy.shape;
    const [wm, k] = w.shape;
    if (wm !== m) fail(op, `gradient ${shapeStr(gy.shape)} has ${m} features, weight ${shapeStr(w.shape)} produces ${wm}`);
    const acc = new Float64Array(n * k);
    gemmAccumulate(n, k, m, rowMajor(gys, 0, m), rowMajor(ws, 0, k), acc, 0, k);
    return this.#wrap(Float32Array.from(acc), [n, k]);
  }

  linearBackwardWeights(gy: JsBuf, x: JsBuf, withBias: boolean): { gw: JsBuf; gb: JsBuf | null } {
    const op = 'linearBackwardWeights';
    const gys = valuesOf(op, 'gradient', gy);
    const xs = valuesOf(op, 'input', x);
    expectRank(op, 'gradient', gy.shape, 2);
    expectRank(op, 'input', x.shape, 2);
    const [n, m] = gy.shape;
    const [xn, k] = x.shape;
    if (xn !== n) fail(op, `gradient ${shapeStr(gy.shape)} and input ${shapeStr(x.shape)} have different batch sizes`);
    const acc = new Float64Array(m * k);
    gemmAccumulate(m, k, n, transposeOf(gys, 0, m), rowMajor(xs, 0, k), acc, 0, k);
    const gb = withBias ? this.#wrap(channelSums(gys, n, m, 1), [m]) : null;
    return { gw: this.#wrap(Float32Array.from(acc), [m, k]), gb };
  }

  // ---- ResNet option-A shortcut ----------------------------------------------------------------

  shortcutPad(x: JsBuf, stride: number, padBefore: number, padAfter: number): JsBuf {
    const xs = valuesOf('shortcutPad', 'input', x);
    const outShape = shortcutPadShape('shortcutPad', x.shape, stride, padBefore, padAfter);
    return this.#wrap(shortcutPadForward(xs, shortcutGeometry(x.shape, outShape, stride, padBefore)), outShape);
  }

  shortcutPadBackward(gy: JsBuf, xShape: Shape, stride: number, padBefore: number): JsBuf {
    const op = 'shortcutPadBackward';
    const gys = valuesOf(op, 'gradient', gy);
    checkShape(op, 'input', xShape);
    shortcutPadAfter(op, gy.shape, xShape, stride, padBefore);
    return this.#wrap(shortcutPadBackward(gys, shortcutGeometry(xShape, gy.shape, stride, padBefore)), xShape);
  }

  // ---- loss -----------------------------------------------------------------------------------

  softmaxCrossEntropy(logits: JsBuf, labels: Int32Array, smoothing: number): CrossEntropyResult & { probs: JsBuf } {
    const op = 'softmaxCrossEntropy';
    const ls = valuesOf(op, 'logits', logits);
    const [n, c] = checkClassification(op, logits.shape, labels, smoothing);
    const r = softmaxCrossEntropyForward(ls, labels, n, c, smoothing);
    return { loss: r.loss, probs: this.#wrap(r.probs, logits.shape), correct: r.correct };
  }

  softmaxCrossEntropyBackward(probs: JsBuf, labels: Int32Array, smoothing: number, scale: number): JsBuf {
    const op = 'softmaxCrossEntropyBackward';
    const ps = valuesOf(op, 'probabilities', probs);
    const [n, c] = checkClassification(op, probs.shape, labels, smoothing);
    expectFinite(op, 'scale', scale);
    return this.#wrap(softmaxCrossEntropyBackward(ps, labels, n, c, smoothing, scale), probs.shape);
  }

  // ---- optimizers -----------------------------------------------------------------------------

  sgdStep(param: JsBuf, grad: JsBuf, momentumBuf: JsBuf | null, p: SgdParams): void {
    const op = 'sgdStep';
    const ps = valuesOf(op, 'parameter', param);
    const gs = valuesOf(op, 'gradient', grad);
    const vs = momentumBuf === null ? null : valuesOf(op, 'momentum buffer', momentumBuf);
    expectSameShape(op, 'parameter', param.shape, 'gradient', grad.shape);
    if (momentumBuf !== null) expectSameShape(op, 'parameter', param.shape, 'momentum buffer', momentumBuf.shape);
    checkSgdParams(op, p, momentumBuf !== null);
    sgdUpdate(ps, gs, vs, p);
  }

  adamStep(param: JsBuf, grad: JsBuf, m: JsBuf, v: JsBuf, p: AdamParams): void {
    const op = 'adamStep';
    const ps = valuesOf(op, 'parameter', param);
    const gs = valuesOf(op, 'gradient', grad);
    const ms = valuesOf(op, 'first moment', m);
    const vs = valuesOf(op, 'second moment', v);
    for (const [what, b] of [['gradient', grad], ['first moment', m], ['second moment', v]] as const) {
      expectSameShape(op, 'parameter', param.shape, what, b.shape);
    }
    checkAdamParams(op, p);
    adamUpdate(ps, gs, ms, vs, p);
  }

  // ---- quantization ---------------------------------------------------------------------------

  quantize(x: JsBuf, spec: QuantSpec): JsBuf {
    const xs = valuesOf('quantize', 'input', x);
    const chunk = checkQuantSpec('quantize', x.shape, spec);
    return this.#wrap(quantizeForward(xs, spec, chunk), x.shape);
  }

  /** The reference: addRelu, then quantize. */
  addReluQuantize(a: JsBuf, b: JsBuf, spec: QuantSpec): { y: JsBuf; q: JsBuf } {
    checkPerTensor('addReluQuantize', spec);
    const y = this.addRelu(a, b);
    return { y, q: this.quantize(y, spec) };
  }

  quantizeBackward(x: JsBuf, gy: JsBuf, spec: QuantSpec, accumulate?: JsBuf): { gx: JsBuf; sums: Float64Array } {
    const op = 'quantizeBackward';
    const xs = valuesOf(op, 'input', x);
    const gys = valuesOf(op, 'gradient', gy);
    expectSameShape(op, 'input', x.shape, 'gradient', gy.shape);
    const chunk = checkQuantSpec(op, x.shape, spec);
    const { gx, sums } = quantizeBackwardPass(xs, gys, spec, chunk);
    if (!accumulate) return { gx: this.#wrap(gx, x.shape), sums };
    expectSameShape(op, 'input', x.shape, 'accumulated gradient', accumulate.shape);
    const total = valuesOf(op, 'accumulated gradient', accumulate);
    for (let i = 0; i < total.length; i++) total[i] += gx[i];
    return { gx: accumulate, sums };
  }
}

/** max(v, 0); NaN stays NaN, as in PyTorch. */
function relu(v: number): number {
  return v < 0 ? 0 : v;
}

function channelVectorShapes(gamma: Buf, beta: Buf, runningMean: Buf, runningVar: Buf): Record<string, Shape> {
  return { gamma: gamma.shape, beta: beta.shape, 'running mean': runningMean.shape, 'running variance': runningVar.shape };
}

function shortcutGeometry(x: Shape, out: Shape, stride: number, padBefore: number): ShortcutGeometry {
  return {
    batch: x[0], inChannels: x[1], inH: x[2], inW: x[3],
    outChannels: out[1], outH: out[2], outW: out[3],
    stride, padBefore,
  };
}

function checkPerTensor(op: string, spec: QuantSpec): void {
  if (spec.channels !== 1) fail(op, `the quantizer must be per tensor (1 channel), got ${spec.channels} channels`);
}
