/**
 * Layers as ONNX nodes, mirroring each module's eval-mode forward(): ResNet and BasicBlock
 * (src/models/resnet.ts), convolutions and linear layers (quantized ones through src/export/onnx/quant.ts),
 * batch norm with its fused ReLU, the option-A shortcut, global average pooling.
 */
import { BasicBlock, ResNet } from '../../models/resnet.js';
import { BatchNorm, Conv2d, GlobalAvgPool, Linear, Sequential, ShortcutPad } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import { isQuantizedLayer } from '../../quant/qlayers.js';
import { type GraphBuilder, floatAttr, intAttr, intsAttr } from './graph.js';
import { lowerActivation, lowerWeight } from './quant.js';

/** Slice's "to the end" (ONNX clamps ends to the dimension). */
const TO_END = Number.MAX_SAFE_INTEGER;

/** Lower `m` applied to the tensor named `x`; returns the output's name. */
export function lowerModule(g: GraphBuilder, m: Module, x: string): string {
  if (m instanceof ResNet) return lowerResNet(g, m, x);
  if (m instanceof BasicBlock) return lowerBlock(g, m, x);
  if (m instanceof Sequential) return m.layers.reduce((y, layer) => lowerModule(g, layer, y), x);
  if (m instanceof Conv2d) return lowerConv(g, m, x);
  if (m instanceof Linear) return lowerLinear(g, m, x);
  if (m instanceof BatchNorm) return lowerBatchNorm(g, m, x);
  if (m instanceof ShortcutPad) return lowerShortcutPad(g, m, x);
  if (m instanceof GlobalAvgPool) return g.node(m.path, 'Flatten', [g.node(m.path, 'GlobalAveragePool', [x])], [intAttr('axis', 1)]);
  throw new Error(`onnx export: ${m.path || 'model'} (${m.constructor.name}) has no ONNX equivalent`);
}

function lowerResNet(g: GraphBuilder, net: ResNet, x: string): string {
  let y = lowerModule(g, net.bn1, lowerModule(g, net.conv1, x));
  for (const stage of net.stages) y = lowerModule(g, stage, y);
  y = lowerModule(g, net.pool, y);
  if (net.bn2) y = lowerModule(g, net.bn2, y);
  return lowerModule(g, net.linear, y);
}

/** relu(bn2(conv2(bn1(conv1(x)))) + shortcut(x)); the shortcut reads the unquantized x. */
function lowerBlock(g: GraphBuilder, block: BasicBlock, x: string): string {
  let y = lowerModule(g, block.conv1, x);
  y = lowerModule(g, block.bn1, y);
  y = lowerModule(g, block.conv2, y);
  y = lowerModule(g, block.bn2, y);
  const shortcut = block.shortcut ? lowerModule(g, block.shortcut, x) : x;
  return g.node(block.path, 'Relu', [g.node(block.path, 'Add', [y, shortcut])]);
}

function scaled(values: Float32Array, factor: number): Float32Array {
  return factor === 1 ? values : values.map((v) => v * factor);
}

/**
 * Input, weight and bias of a convolution or linear layer. A quantized layer computes
 * |output_scale| * (op(Q_A(x), Q_W(w)) + bias) (EWGS's output scale, as its reference does); with
 * Q_A(x) = valueScale * (ONNX activation), both factors move into the weight scale and the output
 * scale into the bias.
 */
function lowerOperands(g: GraphBuilder, layer: Conv2d | Linear, x: string): { input: string; weight: string; bias: string | null } {
  const scope = layer.path;
  const q = isQuantizedLayer(layer) ? layer : null;
  const act = q?.actQuantizer ? lowerActivation(g, q.actQuantizer, x, scope) : { output: x, valueScale: 1 };
  const outputScale = q?.outputScale ? Math.abs(q.outputScale.item()) : 1;
  const factor = act.valueScale * outputScale;
  const weight = q?.weightQuantizer
    ? lowerWeight(g, q.weightQuantizer, layer.weight, scope, factor)
    : g.float(`${scope}.weight`, scaled(layer.weight.toArray(), factor), layer.weight.shape);
  const bias = layer.bias ? g.float(`${scope}.bias`, scaled(layer.bias.toArray(), outputScale), layer.bias.shape) : null;
  return { input: act.output, weight, bias };
}

function lowerConv(g: GraphBuilder, conv: Conv2d, x: string): string {
  const { input, weight, bias } = lowerOperands(g, conv, x);
  const { stride, padding, groups } = conv.params;
  return g.node(conv.path, 'Conv', bias ? [input, weight, bias] : [input, weight], [
    intsAttr('kernel_shape', conv.kernel),
    intsAttr('strides', stride),
    intsAttr('pads', [padding[0], padding[1], padding[0], padding[1]]),
    intAttr('group', groups),
  ]);
}

/** y = x W^T + b as Gemm with transB. */
function lowerLinear(g: GraphBuilder, linear: Linear, x: string): string {
  const { input, weight, bias } = lowerOperands(g, linear, x);
  return g.node(linear.path, 'Gemm', bias ? [input, weight, bias] : [input, weight], [intAttr('transB', 1)]);
}

function lowerBatchNorm(g: GraphBuilder, bn: BatchNorm, x: string): string {
  const scope = bn.path;
  const channels = [bn.channels];
  const y = g.node(
    scope,
    'BatchNormalization',
    [
      x,
      g.float(`${scope}.weight`, bn.weight.toArray(), channels),
      g.float(`${scope}.bias`, bn.bias.toArray(), channels),
      g.float(`${scope}.running_mean`, bn.runningMean.toArray(), channels),
      g.float(`${scope}.running_var`, bn.runningVar.toArray(), channels),
    ],
    [floatAttr('epsilon', bn.eps)],
  );
  return bn.relu ? g.node(scope, 'Relu', [y]) : y;
}

/** Every `stride`-th pixel (Slice with steps), then zero channels on both sides (Pad). */
function lowerShortcutPad(g: GraphBuilder, m: ShortcutPad, x: string): string {
  const scope = m.path;
  let y = x;
  if (m.stride !== 1) {
    y = g.node(scope, 'Slice', [
      y,
      g.int64(`${scope}.starts`, [0, 0]),
      g.int64(`${scope}.ends`, [TO_END, TO_END]),
      g.int64(`${scope}.axes`, [2, 3]),
      g.int64(`${scope}.steps`, [m.stride, m.stride]),
    ]);
  }
  if (m.padBefore > 0 || m.padAfter > 0) {
    y = g.node(scope, 'Pad', [y, g.int64(`${scope}.pads`, [0, m.padBefore, 0, 0, 0, m.padAfter, 0, 0])]);
  }
  return y;
}
