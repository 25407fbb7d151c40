/**
 * Named tensors as they come out of (and go into) tensor files: a dtype, a shape and the raw
 * element data in a typed array, row-major and contiguous. Shared by the safetensors and PyTorch
 * readers and by whoever turns loaded weights into model parameters.
 *
 * Dtype names follow the safetensors spec. Types that JavaScript has no typed array for keep their
 * raw bits: F16 and BF16 in a Uint16Array; `toFloat32` decodes them.
 */

/** Element type and the typed array that holds its data. */
export interface DTypeArrays {
  F64: Float64Array;
  F32: Float32Array;
  /** IEEE half precision, raw bits. */
  F16: Uint16Array;
  /** bfloat16 (upper half of a float32), raw bits. */
  BF16: Uint16Array;
  I64: BigInt64Array;
  I32: Int32Array;
  I16: Int16Array;
  I8: Int8Array;
  U64: BigUint64Array;
  U32: Uint32Array;
  U16: Uint16Array;
  U8: Uint8Array;
  /** One byte per element, 0 or 1. */
  BOOL: Uint8Array;
}

export type DType = keyof DTypeArrays;
export type TypedArray = DTypeArrays[DType];

export interface NamedTensor<D extends DType = DType> {
  dtype: D;
  /** Row-major sizes; [] for a scalar. */
  shape: number[];
  /** Exactly numel(shape) elements. */
  data: DTypeArrays[D];
}

/** Tensors by name, in file order (a PyTorch state dict or the contents of a safetensors file). */
export type TensorMap = Map<string, NamedTensor>;

interface TypedArrayConstructor {
  readonly name: string;
  readonly BYTES_PER_ELEMENT: number;
  new (length: number): TypedArray;
  new (buffer: ArrayBuffer, byteOffset: number, length: number): TypedArray;
}

const ARRAY_TYPES: Record<DType, TypedArrayConstructor> = {
  F64: Float64Array,
  F32: Float32Array,
  F16: Uint16Array,
  BF16: Uint16Array,
  I64: BigInt64Array,
  I32: Int32Array,
  I16: Int16Array,
  I8: Int8Array,
  U64: BigUint64Array,
  U32: Uint32Array,
  U16: Uint16Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
};

export function isDType(name: unknown): name is DType {
  return typeof name === 'string' && Object.hasOwn(ARRAY_TYPES, name);
}

export function dtypeSize(dtype: DType): number {
  return ARRAY_TYPES[dtype].BYTES_PER_ELEMENT;
}

/** Number of elements of a shape (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The bytes of a typed array (a view, no copy). */
export function bytesOf(data: TypedArray): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export function allocateTensorData<D extends DType>(dtype: D, length: number): DTypeArrays[D] {
  return new ARRAY_TYPES[dtype](length) as DTypeArrays[D];
}

const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * A typed array over a copy of `bytes` (little-endian element data): the copy makes the data
 * aligned and independent of the file buffer it came from.
 */
export function decodeTensorData<D extends DType>(dtype: D, bytes: Uint8Array): DTypeArrays[D] {
  if (!hostIsLittleEndian) throw new Error('reading tensor data needs a little-endian machine');
  const size = dtypeSize(dtype);
  if (bytes.byteLength % size !== 0) {
    throw new Error(`${bytes.byteLength} bytes are not a whole number of ${dtype} elements`);
  }
  const copy = new Uint8Array(bytes);
  return new ARRAY_TYPES[dtype](copy.buffer, 0, bytes.byteLength / size) as DTypeArrays[D];
}

/** Checks that data matches dtype and shape; `what` names the tensor in the error. */
export function makeTensor<D extends DType>(
  dtype: D,
  shape: readonly number[],
  data: DTypeArrays[D],
  what = 'tensor',
): NamedTensor<D> {
  for (const size of shape) {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new Error(`${what}: invalid shape [${shape.join(', ')}]`);
    }
  }
  const expected = ARRAY_TYPES[dtype];
  if (data.constructor !== expected) {
    throw new Error(`${what}: ${dtype} data must be a ${expected.name}, got ${data.constructor.name}`);
  }
  if (data.length !== numel(shape)) {
    throw new Error(`${what}: ${data.length} elements do not fill shape [${shape.join(', ')}]`);
  }
  return { dtype, shape: [...shape], data };
}

export function isNamedTensor(value: unknown): value is NamedTensor {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Partial<NamedTensor>;
  return isDType(candidate.dtype) && Array.isArray(candidate.shape) && ArrayBuffer.isView(candidate.data);
}

const f32Bits = new Uint32Array(1);
const f32Value = new Float32Array(f32Bits.buffer);

function bf16ToFloat(bits: number): number {
  f32Bits[0] = bits << 16;
  return f32Value[0];
}

/** Decodes IEEE half-precision bits. */
export function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/**
 * The values as float32 (64-bit integers beyond 2^24 and F64 values round). Returns `tensor.data`
 * itself, not a copy, when it already is F32.
 */
export function toFloat32(tensor: NamedTensor): Float32Array {
  const { dtype, data } = tensor;
  if (dtype === 'F32') return data as Float32Array;
  const out = new Float32Array(data.length);
  if (dtype === 'F16' || dtype === 'BF16') {
    const decode = dtype === 'F16' ? halfToFloat : bf16ToFloat;
    const bits = data as Uint16Array;
    for (let i = 0; i < bits.length; i++) out[i] = decode(bits[i]);
  } else if (data instanceof BigInt64Array || data instanceof BigUint64Array) {
    for (let i = 0; i < data.length; i++) out[i] = Number(data[i]);
  } else {
    out.set(data);
  }
  return out;
}
