/**
 * Builds an ONNX graph node by node: constants become initializers, every node gets one output
 * named after the layer it comes from (`layer1.0.conv1/QuantizeLinear`), names are unique.
 */
import { type Attribute, DataType, type NodeData, type TensorData } from './proto.js';

type Dims = readonly number[];

export class GraphBuilder {
  readonly nodes: NodeData[] = [];
  readonly initializers: TensorData[] = [];
  readonly #used = new Set<string>();

  /** `base`, or `base_2`, `base_3`, ... when taken. */
  unique(base: string): string {
    let name = base;
    for (let i = 2; this.#used.has(name); i++) name = `${base}_${i}`;
    this.#used.add(name);
    return name;
  }

  /** Reserve a name that the graph's interface fixes (the input). */
  reserve(name: string): string {
    if (this.#used.has(name)) throw new Error(`onnx: name "${name}" is already used`);
    this.#used.add(name);
    return name;
  }

  #constant(name: string, dataType: DataType, dims: Dims, raw: Uint8Array): string {
    const unique = this.unique(name);
    this.initializers.push({ name: unique, dataType, dims: [...dims], raw });
    return unique;
  }

  float(name: string, values: ArrayLike<number>, dims: Dims = []): string {
    return this.#constant(name, DataType.FLOAT, dims, bytesOf(Float32Array.from(values)));
  }

  int8(name: string, values: Int8Array, dims: Dims = []): string {
    return this.#constant(name, DataType.INT8, dims, bytesOf(values));
  }

  uint8(name: string, values: Uint8Array, dims: Dims = []): string {
    return this.#constant(name, DataType.UINT8, dims, bytesOf(values));
  }

  int64(name: string, values: readonly number[], dims: Dims = [values.length]): string {
    return this.#constant(name, DataType.INT64, dims, bytesOf(BigInt64Array.from(values, (v) => BigInt(v))));
  }

  /** Add a node with one output, named `${scope}/${opType}`; returns the output name. */
  node(scope: string, opType: string, inputs: readonly string[], attributes: readonly Attribute[] = []): string {
    const output = this.unique(`${scope}/${opType}`);
    this.nodes.push({ name: output, opType, inputs, outputs: [output], attributes });
    return output;
  }

  /** Rename the final tensor `from` (which no node reads) to the graph output name `to`. */
  nameOutput(from: string, to: string): void {
    const i = this.nodes.findIndex((n) => n.outputs.includes(from));
    if (i < 0 || this.nodes.some((n) => n.inputs.includes(from))) throw new Error(`onnx: "${from}" is not a final node output`);
    this.reserve(to);
    const node = this.nodes[i];
    this.nodes[i] = { ...node, outputs: node.outputs.map((o) => (o === from ? to : o)) };
  }
}

const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The bytes of a typed array, which ONNX stores little-endian. */
function bytesOf(a: ArrayBufferView): Uint8Array {
  if (!hostIsLittleEndian) throw new Error('onnx export needs a little-endian machine');
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

export function intAttr(name: string, value: number): Attribute {
  return { name, kind: 'int', value };
}

export function intsAttr(name: string, value: readonly number[]): Attribute {
  return { name, kind: 'ints', value };
}

export function floatAttr(name: string, value: number): Attribute {
  return { name, kind: 'float', value };
}
