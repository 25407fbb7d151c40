/**
 * The safetensors format (https://github.com/huggingface/safetensors):
 *
 *   8 bytes    N, unsigned little-endian: the size of the header
 *   N bytes    JSON object, UTF-8, padded at the end with spaces:
 *                { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] }, ...,
 *                  "__metadata__": { "<key>": "<string value>", ... } }   (metadata optional)
 *   rest       the byte buffer: tensor data, little-endian, row-major; offsets are relative to
 *              its start, and the tensors cover it exactly (no holes, no overlaps)
 *
 * The writer pads the header to a multiple of 8 bytes and orders tensors by decreasing element size
 * (then name), so that every tensor starts aligned to its element size, as the reference writer does.
 */
import { writeFileAtomic } from './atomic.js';
import { DuplicateKeyError, parseJsonStrict } from '../util/json.js';
import { ByteReader, decodeUtf8, readFileBytes, withFileContext } from './bytes.js';
import {
  type DType,
  type NamedTensor,
  type TensorMap,
  bytesOf,
  decodeTensorData,
  dtypeSize,
  isDType,
  makeTensor,
  numel,
} from './tensors.js';
import { printable, quoted } from '../util/text.js';

export interface SafetensorsContents {
  tensors: TensorMap;
  /** The `__metadata__` string map ({} when absent). */
  metadata: Record<string, string>;
}

const METADATA_KEY = '__metadata__';
/** Headers larger than this are refused, as the reference implementation does. */
const MAX_HEADER_BYTES = 100_000_000;
const TENSOR_FIELDS = ['dtype', 'shape', 'data_offsets'];

interface HeaderEntry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isArrayOfIndices(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((x) => Number.isSafeInteger(x) && x >= 0);
}

function parseEntry(name: string, value: unknown): HeaderEntry {
  const where = `tensor ${quoted(name)}`;
  if (!isPlainObject(value)) throw new Error(`${where}: header entry is not an object`);
  for (const field of Object.keys(value)) {
    if (!TENSOR_FIELDS.includes(field)) throw new Error(`${where}: unexpected header field '${field}'`);
  }
  const { dtype, shape, data_offsets: offsets } = value;
  if (!isDType(dtype)) throw new Error(`${where}: unsupported dtype ${JSON.stringify(dtype)}`);
  if (!isArrayOfIndices(shape)) throw new Error(`${where}: shape must be a list of non-negative integers`);
  if (!isArrayOfIndices(offsets) || offsets.length !== 2 || offsets[0] > offsets[1]) {
    throw new Error(`${where}: data_offsets must be [begin, end] with 0 <= begin <= end`);
  }
  const byteLength = numel(shape) * dtypeSize(dtype);
  if (offsets[1] - offsets[0] !== byteLength) {
    throw new Error(
      `${where}: ${dtype} [${shape.join(', ')}] needs ${byteLength} bytes but data_offsets [${offsets.join(', ')}] span ${offsets[1] - offsets[0]}`,
    );
  }
  return { name, dtype, shape, begin: offsets[0], end: offsets[1] };
}

function parseMetadata(value: unknown): Record<string, string> {
  if (!isPlainObject(value) || !Object.values(value).every((v) => typeof v === 'string')) {
    throw new Error(`${METADATA_KEY} must map strings to strings`);
  }
  return { ...(value as Record<string, string>) };
}

/** Checks that the entries, in data order, tile [0, dataLength) exactly. */
function checkCoverage(entries: HeaderEntry[], dataLength: number): void {
  let covered = 0;
  for (const entry of entries) {
    if (entry.end > dataLength) {
      throw new Error(`tensor ${quoted(entry.name)}: data_offsets [${entry.begin}, ${entry.end}] go beyond the ${dataLength} bytes of data`);
    }
    if (entry.begin !== covered) {
      const problem = entry.begin < covered ? 'overlaps the previous tensor' : `leaves a hole [${covered}, ${entry.begin})`;
      throw new Error(`tensor ${quoted(entry.name)}: data_offsets [${entry.begin}, ${entry.end}] ${problem}`);
    }
    covered = entry.end;
  }
  if (covered !== dataLength) {
    throw new Error(`tensors cover ${covered} bytes of data but the file holds ${dataLength}`);
  }
}

/** JSON.parse would keep the last of two entries of one name: a repeated key is refused. */
function headerProblem(error: Error): string {
  if (!(error instanceof DuplicateKeyError)) return `the header is not valid JSON: ${printable(error.message)}`;
  if (error.path !== '$') return `the header repeats a key: ${error.message}`;
  return `the header lists ${error.key === METADATA_KEY ? METADATA_KEY : `tensor ${quoted(error.key)}`} twice`;
}

function readHeader(bytes: Uint8Array): { header: Record<string, unknown>; dataStart: number } {
  const reader = new ByteReader(bytes);
  if (bytes.byteLength < 8) throw new Error(`${bytes.byteLength} bytes is too short for a safetensors file`);
  const headerLength = reader.u64('the header length');
  if (headerLength > reader.remaining) {
    throw new Error(`header length ${headerLength} goes beyond the end of the file (${bytes.byteLength} bytes)`);
  }
  if (headerLength > MAX_HEADER_BYTES) throw new Error(`header length ${headerLength} is unreasonably large`);
  const text = decodeUtf8(reader.take(headerLength), 'the header');
  if (!text.startsWith('{')) throw new Error('the header is not a JSON object');
  let header: unknown;
  try {
    header = parseJsonStrict(text);
  } catch (error) {
    throw new Error(headerProblem(error as Error));
  }
  if (!isPlainObject(header)) throw new Error('the header is not a JSON object');
  return { header, dataStart: reader.pos };
}

/** Parses a safetensors file held in memory; `file` names it in errors. */
export function parseSafetensors(bytes: Uint8Array, file: string): SafetensorsContents {
  return withFileContext(file, () => {
    const { header, dataStart } = readHeader(bytes);
    const data = bytes.subarray(dataStart);
    let metadata: Record<string, string> = {};
    const entries: HeaderEntry[] = [];
    for (const [name, value] of Object.entries(header)) {
      if (name === METADATA_KEY) metadata = parseMetadata(value);
      else entries.push(parseEntry(name, value));
    }
    entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
    checkCoverage(entries, data.byteLength);
    const tensors: TensorMap = new Map();
    for (const { name, dtype, shape, begin, end } of entries) {
      tensors.set(name, { dtype, shape, data: decodeTensorData(dtype, data.subarray(begin, end)) });
    }
    return { tensors, metadata };
  });
}

export function readSafetensorsFile(file: string): SafetensorsContents {
  return parseSafetensors(readFileBytes(file), file);
}

/** Code-unit order, independent of the locale. */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function checkedTensor(name: string, tensor: NamedTensor): NamedTensor {
  if (name === METADATA_KEY) throw new Error(`'${METADATA_KEY}' cannot be a tensor name`);
  return makeTensor(tensor.dtype, tensor.shape, tensor.data, `tensor ${quoted(name)}`);
}

/** The bytes of a safetensors file holding `tensors` (any dtype) and optional string metadata. */
export function serializeSafetensors(tensors: TensorMap, metadata: Record<string, string> = {}): Uint8Array {
  const ordered = [...tensors]
    .map(([name, tensor]) => ({ name, tensor: checkedTensor(name, tensor) }))
    .sort((a, b) => dtypeSize(b.tensor.dtype) - dtypeSize(a.tensor.dtype) || compareNames(a.name, b.name));
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header[METADATA_KEY] = parseMetadata(metadata);
  let offset = 0;
  for (const { name, tensor } of ordered) {
    const end = offset + tensor.data.byteLength;
    header[name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, end] };
    offset = end;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const headerLength = Math.ceil(json.byteLength / 8) * 8;
  const out = Buffer.alloc(8 + headerLength + offset, 0x20); // spaces pad the header
  out.writeBigUInt64LE(BigInt(headerLength), 0);
  json.copy(out, 8);
  let position = 8 + headerLength;
  for (const { tensor } of ordered) {
    out.set(bytesOf(tensor.data), position);
    position += tensor.data.byteLength;
  }
  return out;
}

/** Writes a safetensors file atomically. */
export function writeSafetensorsFile(file: string, tensors: TensorMap, metadata: Record<string, string> = {}): void {
  writeFileAtomic(file, serializeSafetensors(tensors, metadata));
}
