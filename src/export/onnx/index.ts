/**
 * ONNX export: a (fake-)quantized or float tinyquant model in eval mode, traced into its graph, as a standard ONNX model
 * (opset 13) in QuantizeLinear/DequantizeLinear form that onnxruntime runs.
 *
 * Interface: input `input`, float32 [batch, channels, height, width]: the image normalized exactly
 * as for evaluation (pixel / 255, minus the per-channel mean, divided by the std of the training
 * config's normalization preset); output `logits`, float32 [batch, classes], before softmax.
 * Height and width are symbolic unless `inputSize` fixes them.
 *
 * Quantized weights are int8 initializers + DequantizeLinear; activations are QDQ pairs, APoT's
 * through a lookup table (src/export/onnx/quant.ts says what is exact). Batch norm stays
 * BatchNormalization with the running statistics; residual adds, shortcuts, pooling and the
 * classifier are float, as in the model.
 */
import { writeFileAtomic } from '../../io/index.js';
import { type Graph, trace } from '../../graph/index.js';
import type { Module } from '../../nn/module.js';
import { quantizedLayers } from '../../quant/quantize.js';
import { TINYQUANT_VERSION } from '../../package.js';
import { GraphBuilder } from './graph.js';
import { lowerGraphToOnnx } from './lower.js';
import { DataType, encodeModel } from './proto.js';

export const ONNX_OPSET = 13;
/** The IR version that goes with opset 13. */
export const ONNX_IR_VERSION = 7;
export const ONNX_INPUT = 'input';
export const ONNX_OUTPUT = 'logits';

export interface OnnxExportOptions {
  /** [channels, height, width] of one input image, to trace the model with (default [3, 32, 32]). */
  readonly inputShape?: readonly [channels: number, height: number, width: number];
  /** Fix the input's height and width in the ONNX interface (default: symbolic). */
  readonly inputSize?: readonly [height: number, width: number];
  /** The normalization the input must have, recorded in the model's metadata. */
  readonly normalization?: { readonly mean: readonly number[]; readonly std: readonly number[] };
  /** Extra metadata_props entries (e.g. the checkpoint it came from). */
  readonly metadata?: Readonly<Record<string, string>>;
}

const INPUT_DOC =
  'float32 NCHW image, normalized per channel as for evaluation: (pixel / 255 - mean[c]) / std[c]';

const CIFAR_SHAPE = [3, 32, 32] as const;

function checkExportable(model: Module): void {
  const training = [...model.namedModules()].find(([, m]) => m.training);
  if (training) {
    throw new Error(
      `onnx export: ${training[0] || 'the model'} is in training mode; call model.eval() first (the export uses batch-norm running statistics)`,
    );
  }
  const calibrating = quantizedLayers(model).find(([, l]) => l.calibrating);
  if (calibrating) throw new Error(`onnx export: ${calibrating[0]} still waits for its calibration pass (quantize.ts calibrate)`);
}

/** One line per quantized layer, e.g. `layer1.0.conv1: weight apot 4-bit, activation apot 4-bit`. */
function quantizationSummary(model: Module): string {
  return quantizedLayers(model)
    .map(([path, l]) => {
      const parts = [l.weightQuantizer, l.actQuantizer].flatMap((q) => (q ? [`${q.role} ${q.method} ${q.bits}-bit`] : []));
      if (l.outputScale) parts.push('output scale');
      return `${path}: ${parts.join(', ')}`;
    })
    .join('\n');
}

function metadataOf(model: Module, opts: OnnxExportOptions): Record<string, string> {
  const metadata: Record<string, string> = { 'tinyquant.input': INPUT_DOC };
  if (opts.normalization) {
    metadata['tinyquant.normalization.mean'] = opts.normalization.mean.join(',');
    metadata['tinyquant.normalization.std'] = opts.normalization.std.join(',');
  }
  const summary = quantizationSummary(model);
  if (summary) metadata['tinyquant.quantization'] = summary;
  return { ...metadata, ...opts.metadata };
}

/** The serialized ONNX model (a ModelProto). Throws, naming the layer, for what ONNX cannot express. */
export function exportOnnx(model: Module, opts: OnnxExportOptions = {}): Uint8Array {
  checkExportable(model);
  const shape = opts.inputShape ?? CIFAR_SHAPE;
  if (opts.inputSize && (opts.inputSize[0] !== shape[1] || opts.inputSize[1] !== shape[2])) {
    throw new Error(`onnx export: inputSize [${opts.inputSize.join(', ')}] differs from the traced input shape [${shape.join(', ')}]`);
  }
  const graph: Graph = trace(model, shape);
  const g = new GraphBuilder();
  const input = g.reserve(ONNX_INPUT);
  g.nameOutput(lowerGraphToOnnx(g, graph, input), ONNX_OUTPUT);
  const [height, width] = opts.inputSize ?? ['height', 'width'];
  return encodeModel({
    irVersion: ONNX_IR_VERSION,
    opset: ONNX_OPSET,
    producerName: 'tinyquant',
    producerVersion: TINYQUANT_VERSION,
    doc: `tinyquant model; input: ${INPUT_DOC}; output: logits`,
    metadata: metadataOf(model, opts),
    graph: {
      name: 'tinyquant',
      nodes: g.nodes,
      initializers: g.initializers,
      inputs: [{ name: ONNX_INPUT, elemType: DataType.FLOAT, shape: ['batch', graph.nodes[0].shape[0], height, width], doc: INPUT_DOC }],
      outputs: [{ name: ONNX_OUTPUT, elemType: DataType.FLOAT, shape: ['batch', graph.nodes[graph.output].shape[0]], doc: 'logits' }],
      doc: '',
    },
  });
}

/**
 * Export and write atomically (temp file + rename): the model is fully built before anything is
 * written, so a failure leaves no file, and a crash never leaves a partial one. Returns the size.
 */
export function writeOnnxFile(path: string, model: Module, opts: OnnxExportOptions = {}): number {
  const bytes = exportOnnx(model, opts);
  writeFileAtomic(path, bytes);
  return bytes.length;
}
