/**
 * The subset of the ONNX protobuf schema (onnx/onnx.proto) that tinyquant writes, as plain
 * TypeScript data, and its encoder. Field numbers are those of the schema.
 */
import { ProtoWriter } from './protobuf.js';

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7 } as const;
export type DataType = (typeof DataType)[keyof typeof DataType];

/** A constant tensor (an initializer) with its little-endian raw bytes. */
export interface TensorData {
  readonly name: string;
  readonly dataType: DataType;
  readonly dims: readonly number[];
  readonly raw: Uint8Array;
}

export type Attribute =
  | { readonly name: string; readonly kind: 'int'; readonly value: number }
  | { readonly name: string; readonly kind: 'ints'; readonly value: readonly number[] }
  | { readonly name: string; readonly kind: 'float'; readonly value: number }
  | { readonly name: string; readonly kind: 'string'; readonly value: string };

export interface NodeData {
  readonly name: string;
  readonly opType: string;
  /** '' marks an omitted optional input. */
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes: readonly Attribute[];
}

/** A graph input or output: element type and shape (numbers, or names for symbolic dimensions). */
export interface ValueInfo {
  readonly name: string;
  readonly elemType: DataType;
  readonly shape: readonly (number | string)[];
  readonly doc?: string;
}

export interface GraphData {
  readonly name: string;
  readonly nodes: readonly NodeData[];
  readonly initializers: readonly TensorData[];
  readonly inputs: readonly ValueInfo[];
  readonly outputs: readonly ValueInfo[];
  readonly doc: string;
}

export interface ModelData {
  readonly irVersion: number;
  readonly opset: number;
  readonly producerName: string;
  readonly producerVersion: string;
  readonly doc: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly graph: GraphData;
}

/** AttributeProto.AttributeType values. */
const AttributeType = { FLOAT: 1, INT: 2, STRING: 3, INTS: 7 } as const;

function encodeTensor(t: TensorData): Uint8Array {
  const w = new ProtoWriter();
  if (t.dims.length > 0) w.packedInts(1, t.dims);
  return w.int(2, t.dataType).string(8, t.name).bytes(9, t.raw).finish();
}

function encodeAttribute(a: Attribute): Uint8Array {
  const w = new ProtoWriter().string(1, a.name);
  switch (a.kind) {
    case 'int':
      return w.int(3, a.value).int(20, AttributeType.INT).finish();
    case 'ints':
      return w.packedInts(8, a.value).int(20, AttributeType.INTS).finish();
    case 'float':
      return w.float(2, a.value).int(20, AttributeType.FLOAT).finish();
    case 'string':
      return w.string(4, a.value).int(20, AttributeType.STRING).finish();
  }
}

function encodeNode(n: NodeData): Uint8Array {
  const w = new ProtoWriter();
  for (const input of n.inputs) w.string(1, input);
  for (const output of n.outputs) w.string(2, output);
  w.string(3, n.name).string(4, n.opType);
  for (const a of n.attributes) w.message(5, encodeAttribute(a));
  return w.finish();
}

function encodeValueInfo(v: ValueInfo): Uint8Array {
  const shape = new ProtoWriter();
  for (const d of v.shape) shape.message(1, typeof d === 'number' ? new ProtoWriter().int(1, d).finish() : new ProtoWriter().string(2, d).finish());
  const tensorType = new ProtoWriter().int(1, v.elemType).message(2, shape.finish()).finish();
  const w = new ProtoWriter().string(1, v.name).message(2, new ProtoWriter().message(1, tensorType).finish());
  if (v.doc) w.string(3, v.doc);
  return w.finish();
}

function encodeGraph(g: GraphData): Uint8Array {
  const w = new ProtoWriter();
  for (const n of g.nodes) w.message(1, encodeNode(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, encodeTensor(t));
  if (g.doc) w.string(10, g.doc);
  for (const v of g.inputs) w.message(11, encodeValueInfo(v));
  for (const v of g.outputs) w.message(12, encodeValueInfo(v));
  return w.finish();
}

/** The serialized ModelProto. */
export function encodeModel(m: ModelData): Uint8Array {
  const w = new ProtoWriter()
    .int(1, m.irVersion)
    .string(2, m.producerName)
    .string(3, m.producerVersion);
  if (m.doc) w.string(6, m.doc);
  w.message(7, encodeGraph(m.graph));
  w.message(8, new ProtoWriter().string(1, '').int(2, m.opset).finish());
  for (const [key, value] of Object.entries(m.metadata)) w.message(14, new ProtoWriter().string(1, key).string(2, value).finish());
  return w.finish();
}
