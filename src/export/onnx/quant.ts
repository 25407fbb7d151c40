/**
 * Quantizers as ONNX QuantizeLinear / DequantizeLinear (QDQ) subgraphs, derived from each
 * quantizer's integer form (codes, scale per integer, and the QuantSpec of its forward pass), so
 * every method lowers through the same two paths:
 *
 * Weights: the fake-quantized weight divided by the integer scale gives the integer codes, stored
 * as an int8 initializer and expanded by DequantizeLinear (per tensor, or per output channel on
 * axis 0). APoT codes are level numerators over the common denominator D (scale alpha/D); EWGS,
 * DoReFa and PACT weights are the odd integers 2k - (L-1) (scale 1/(L-1)); LSQ and int8 weights are
 * the plain signed integers (scale s). Factors the model applies to the layer's product (EWGS's
 * |output_scale|, the activation rescaling below) are folded into the weight scale.
 *
 * Uniform activations (EWGS, LSQ, PACT, DoReFa): [Sub offset] -> [Clip] -> QuantizeLinear ->
 * DequantizeLinear, one uint8 scale and zero point 0 shared by the pair. ONNX zero points are
 * integers, so a real-valued offset (EWGS's lower bound l) is subtracted first; the pair then
 * yields the quantized (x - l), which differs from the model's value (x_q in [0, 1] for EWGS) by a
 * constant factor that the consumer's weight scale absorbs. The Clip is the upper clip bound when
 * it lies below uint8's 255 (the lower bound 0 is QuantizeLinear's saturation).
 *
 * APoT activations (non-uniform levels): Sub -> QuantizeLinear onto a grid of half level-units
 * (unit = alpha/D), offset by a quarter unit -> Cast -> Gather (a 256-entry table: grid cell ->
 * APoT numerator) -> DequantizeLinear (scale alpha/D). The grid's rounding boundaries fall exactly
 * on the multiples of unit/2, which include every midpoint between neighbouring levels
 * (numerators n_i, n_i+1 give (n_i + n_i+1) unit/2) and the clip bound alpha, so each cell lies
 * between two midpoints and the table's nearest level is the nearest level of every input in it:
 * the projection is exact except for an input exactly on a midpoint, where QuantizeLinear's
 * round-half-to-even picks one side while the model picks the lower level, and within float
 * rounding of the two divisions. It needs 2D + 1 cells: 9, 21, 97 and 201 for 2-5 bits.
 */
import { Tensor, noGrad, tidy } from '../../tensor/tensor.js';
import type { IntegerForm, TensorQuantizer } from '../../quant/quantizer.js';
import { DataType } from './proto.js';
import { type GraphBuilder, intAttr } from './graph.js';

const INT8_RANGE = [-128, 127] as const;
const UINT8_MAX = 255;

/**
 * A fake-quantized weight must sit on its integer grid: |w - code * scale| within this fraction of
 * the scale (float32 rounding of the level values is ~1e-7 of it).
 */
const GRID_TOLERANCE = 1e-3;

/** What an activation quantizer lowers to. */
export interface LoweredActivation {
  /** The tensor the layer's op reads. */
  readonly output: string;
  /** The model's quantized value is `valueScale` times the ONNX value (folded into the weight scale). */
  readonly valueScale: number;
}

/** Run the quantizer once so its integer form describes its current parameters, not a stale forward. */
function refreshed(q: TensorQuantizer, input: () => Tensor, scope: string): { values: Float32Array; form: IntegerForm } {
  const values = tidy(() => noGrad(() => q.apply(input(), scope).toArray()));
  return { values, form: q.integerForm() };
}

function describe(form: IntegerForm): string {
  return `${form.method} ${form.bits}-bit ${form.role}`;
}

/** Integer codes of a fake-quantized weight, checked against the quantizer's grid. */
function weightCodes(values: Float32Array, form: IntegerForm, scope: string): Int32Array {
  const channels = form.scale.length;
  const chunk = values.length / channels;
  const allowed = new Set(form.codes);
  const codes = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const scale = form.scale[Math.floor(i / chunk)];
    const code = Math.round(values[i] / scale);
    if (!allowed.has(code) || Math.abs(values[i] - code * scale) > GRID_TOLERANCE * scale) {
      throw new Error(`${scope}: ${describe(form)} value ${values[i]} at index ${i} is not on its integer grid (scale ${scale})`);
    }
    codes[i] = code;
  }
  return codes;
}

function toInt8(codes: Int32Array, form: IntegerForm, scope: string): Int8Array {
  let min = Infinity;
  let max = -Infinity;
  for (const c of codes) {
    min = Math.min(min, c);
    max = Math.max(max, c);
  }
  if (min < INT8_RANGE[0] || max > INT8_RANGE[1]) {
    const hint = form.method === 'int8' ? " (APoT's reference 'apot8' first/last wrapper does not clamp; the 'int8' policy does)" : '';
    throw new Error(`${scope}: ${describe(form)} codes span [${min}, ${max}], outside int8 [-128, 127]${hint}; ONNX export stores weights as int8`);
  }
  return Int8Array.from(codes);
}

/**
 * The layer's weight as int8 codes + DequantizeLinear; `factor` multiplies the scale (per-channel
 * scales on axis 0 when the quantizer is per channel). Returns the dequantized weight's name.
 */
export function lowerWeight(g: GraphBuilder, q: TensorQuantizer, weight: Tensor, scope: string, factor: number): string {
  const { values, form } = refreshed(q, () => weight, scope);
  const codes = toInt8(weightCodes(values, form, scope), form, scope);
  const channels = form.scale.length;
  const scaleDims = channels === 1 ? [] : [channels];
  const inputs = [
    g.int8(`${scope}.weight_codes`, codes, weight.shape),
    g.float(`${scope}.weight_scale`, Array.from(form.scale, (s) => s * factor), scaleDims),
    g.int8(`${scope}.weight_zero_point`, new Int8Array(channels), scaleDims),
  ];
  return g.node(`${scope}.weight`, 'DequantizeLinear', inputs, channels === 1 ? [] : [intAttr('axis', 0)]);
}

/** The activation quantizer of a layer as a QDQ subgraph on `input`. */
export function lowerActivation(g: GraphBuilder, q: TensorQuantizer, input: string, scope: string): LoweredActivation {
  const { form } = refreshed(q, () => Tensor.zeros([1]), scope);
  const { spec } = form;
  if (form.signed || spec.channels !== 1 || spec.symmetric || spec.outOffset[0] !== 0) {
    throw new Error(`${scope}: ${describe(form)} quantizer is signed or per channel; ONNX export supports unsigned per-tensor activations (uint8)`);
  }
  return spec.levels ? lowerLevelActivation(g, form, spec.levels, input, scope) : lowerGridActivation(g, form, input, scope);
}

function uint8Code(value: number, what: string, form: IntegerForm, scope: string): number {
  if (!Number.isInteger(value) || value < 0 || value > UINT8_MAX) {
    throw new Error(`${scope}: ${describe(form)} ${what} is ${value}; ONNX export needs integer activation codes in uint8 [0, 255]`);
  }
  return value;
}

/** Uniform grid: k = round(clip((x - offset) / scale, lo, hi) * steps). */
function lowerGridActivation(g: GraphBuilder, form: IntegerForm, input: string, scope: string): LoweredActivation {
  const { spec } = form;
  const offset = spec.offset[0];
  const step = spec.scale[0] / spec.steps;
  const codeMin = uint8Code(spec.lo * spec.steps + 0, 'lowest code', form, scope); // + 0: LSQ's lo is -0
  const codeMax = uint8Code(spec.hi * spec.steps, 'highest code', form, scope);
  const at = `${scope}.act`;
  let x = input;
  if (offset !== 0) x = g.node(at, 'Sub', [x, g.float(`${at}_offset`, [offset])]);
  if (codeMin > 0 || codeMax < UINT8_MAX) {
    x = g.node(at, 'Clip', [x, g.float(`${at}_min`, [codeMin * step]), g.float(`${at}_max`, [codeMax * step])]);
  }
  const scale = g.float(`${at}_scale`, [step]);
  const zeroPoint = g.uint8(`${at}_zero_point`, Uint8Array.of(0));
  const quantized = g.node(at, 'QuantizeLinear', [x, scale, zeroPoint]);
  return { output: g.node(at, 'DequantizeLinear', [quantized, scale, zeroPoint]), valueScale: form.scale[0] / Math.fround(step) };
}

/**
 * Nearest level (ties to the lower one, as the model) for each cell of the half-unit grid, in
 * units of half a level-unit: level i sits at 2 * codes[i], cell j spans (j, j + 1), beyond
 * `top` (the clip bound) everything takes the level nearest the bound.
 */
function cellTable(codes: Int32Array, top: number): Uint8Array {
  return Uint8Array.from({ length: UINT8_MAX + 1 }, (_, j) => {
    const centre = Math.min(j + 0.5, top);
    let best = codes[0];
    for (const c of codes) if (Math.abs(2 * c - centre) < Math.abs(2 * best - centre)) best = c;
    return best;
  });
}

/** Non-uniform levels (APoT): half-unit grid + lookup table, see the module comment. */
function lowerLevelActivation(g: GraphBuilder, form: IntegerForm, levels: Float32Array, input: string, scope: string): LoweredActivation {
  const { spec, codes } = form;
  const unit = form.scale[0] / spec.outScale[0];
  const scale = spec.scale[0];
  if (codes.length !== levels.length || codes.some((c, i) => Math.abs(c * unit - levels[i]) > 1e-6) || codes[0] !== 0) {
    throw new Error(`${scope}: ${describe(form)} levels are not the integer multiples of ${unit} its integer form claims, starting at 0`);
  }
  codes.forEach((c) => uint8Code(c, 'level code', form, scope));
  // The clip bound in half-units must be a cell boundary, like every midpoint between levels.
  const top = (2 * spec.hi) / unit;
  const cells = Math.round(top);
  if (Math.abs(top - cells) > 1e-6 || spec.lo > 0) {
    throw new Error(`${scope}: ${describe(form)} clip range [${spec.lo}, ${spec.hi}] does not fall on its half-level grid`);
  }
  if (cells + 1 > UINT8_MAX + 1) {
    throw new Error(`${scope}: ${describe(form)} needs ${cells + 1} grid points for an exact level projection, more than uint8's 256`);
  }
  const at = `${scope}.act`;
  const halfUnit = (scale * unit) / 2;
  const shifted = g.node(at, 'Sub', [input, g.float(`${at}_grid_offset`, [spec.offset[0] + halfUnit / 2])]);
  const gridZeroPoint = g.uint8(`${at}_grid_zero_point`, Uint8Array.of(0));
  const cell = g.node(at, 'QuantizeLinear', [shifted, g.float(`${at}_grid_scale`, [halfUnit]), gridZeroPoint]);
  const index = g.node(at, 'Cast', [cell], [intAttr('to', DataType.INT32)]);
  const code = g.node(at, 'Gather', [g.uint8(`${at}_level_table`, cellTable(codes, cells), [UINT8_MAX + 1]), index], [intAttr('axis', 0)]);
  const dequantized = g.node(at, 'DequantizeLinear', [code, g.float(`${at}_scale`, [form.scale[0]]), g.uint8(`${at}_zero_point`, Uint8Array.of(0))]);
  return { output: dequantized, valueScale: 1 };
}
