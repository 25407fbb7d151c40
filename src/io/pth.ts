/**
 * PyTorch checkpoints (`torch.save` files, `.pth` / `.pth.tar` / `.pt`), read without Python and
 * without running anything from the file (see pickle.ts), in both serialization formats:
 *
 * - zip (PyTorch >= 1.6): `<archive>/data.pkl` is the pickled object; each storage it refers to
 *   by persistent id ('storage', storage_class, key, location, numel) is the entry
 *   `<archive>/data/<key>`, raw little-endian elements.
 * - legacy (`_use_new_zipfile_serialization=False`): consecutive pickles: the magic number, the
 *   protocol version 1001, a sys_info dict, the object (persistent ids as above, plus an optional
 *   view (view_key, offset, numel)), the sorted list of storage keys; then per key an int64
 *   element count followed by the elements.
 *
 * `loadTensorFile` also reads safetensors, choosing the format from the content, not the name.
 */
import { ByteReader, TensorFileError, readFileBytes, withFileContext } from './bytes.js';
import { type PyValue, TensorBudget, TorchStorage, TorchStorageType, unpickle } from './pickle.js';
import { parseSafetensors } from './safetensors.js';
import { type TensorMap, decodeTensorData, dtypeSize, isNamedTensor } from './tensors.js';
import { ZipArchive, looksLikeZip } from './zip.js';
import { printable, quoted } from '../util/text.js';

export type TensorFileFormat = 'safetensors' | 'torch-zip' | 'torch-legacy';

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL_VERSION = 1001;
const PICKLE_PROTO_OPCODE = 0x80;

interface StorageId {
  type: TorchStorageType;
  key: string;
  numel: number;
  /** Legacy format only: the storage is a slice of the storage `key`. */
  view: { key: string; offset: number; numel: number } | null;
}

function isCount(value: PyValue): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function parseView(view: PyValue): StorageId['view'] {
  if (view === null || view === undefined) return null;
  if (Array.isArray(view) && view.length === 3 && typeof view[0] === 'string' && isCount(view[1]) && isCount(view[2])) {
    return { key: view[0], offset: view[1], numel: view[2] };
  }
  throw new Error('malformed storage view in a persistent id');
}

/** ('storage', storage_class, key, location, numel[, view_metadata]). */
function parseStorageId(pid: PyValue): StorageId {
  if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5 || pid.length > 6) {
    throw new Error('unsupported persistent id: only tensor storages are accepted');
  }
  const [, type, key, , numel, view] = pid as readonly PyValue[];
  if (!(type instanceof TorchStorageType) || typeof key !== 'string' || !isCount(numel)) {
    throw new Error(`malformed storage persistent id for key ${typeof key === 'string' ? quoted(key) : String(key)}`);
  }
  return { type, key, numel, view: parseView(view) };
}

/** Storages by key, created once however many tensors share them. */
class StorageTable {
  readonly byKey = new Map<string, TorchStorage>();
  readonly #budget = new TensorBudget();
  #declaredBytes = 0;

  /** `maxBytes`: what the storages may declare in all (the legacy format checks their data only after the whole pickle). */
  constructor(readonly maxBytes = Infinity) {}

  /** The storage `id.key`; `load` runs when it is first seen. A `view` shares its data with another storage. */
  get(id: Omit<StorageId, 'view'>, load?: (storage: TorchStorage) => void, view = false): TorchStorage {
    const known = this.byKey.get(id.key);
    if (known) {
      if (known.dtype !== id.type.dtype) {
        throw new Error(`storage ${quoted(id.key)} is used as both ${known.dtype} and ${id.type.dtype}`);
      }
      return known;
    }
    if (!view) this.#declare(id);
    const storage = new TorchStorage(id.type.dtype, id.numel, id.key, this.#budget);
    this.byKey.set(id.key, storage);
    load?.(storage);
    return storage;
  }

  #declare(id: Omit<StorageId, 'view'>): void {
    this.#declaredBytes += id.numel * dtypeSize(id.type.dtype);
    if (this.#declaredBytes > this.maxBytes) {
      throw new Error(`storage ${quoted(id.key)}: the storages declare ${this.#declaredBytes} bytes of data, more than the file's ${this.maxBytes}`);
    }
  }
}

/** The zip entry of a storage must hold exactly its elements: checked from the directory, before anything is inflated. */
function readZipStorage(archive: ZipArchive, name: string, storage: TorchStorage): Uint8Array {
  const bytes = storage.numel * dtypeSize(storage.dtype);
  const entry = archive.entries.get(name);
  if (entry && entry.size !== bytes) {
    throw new Error(`storage ${quoted(storage.key)} holds ${storage.numel} ${storage.dtype} elements (${bytes} bytes), its zip entry ${entry.size} bytes`);
  }
  return archive.read(name);
}

function parseZipCheckpoint(bytes: Uint8Array, file: string): PyValue {
  const archive = new ZipArchive(bytes);
  const pickles = [...archive.entries.keys()].filter((name) => /^[^/]+\/data\.pkl$/.test(name));
  if (pickles.length !== 1) {
    throw new Error(`a PyTorch zip checkpoint has one <archive>/data.pkl entry, this one has ${pickles.length}`);
  }
  const prefix = pickles[0].slice(0, -'data.pkl'.length);
  // newer PyTorch versions record the byte order; older ones wrote little-endian data only
  const byteOrderEntry = `${prefix}byteorder`;
  const byteOrder = archive.entries.has(byteOrderEntry) ? new TextDecoder().decode(archive.read(byteOrderEntry)) : 'little';
  if (byteOrder !== 'little') throw new Error(`tensor data is ${printable(byteOrder)}-endian; only little-endian is supported`);
  const storages = new StorageTable();
  const loadStorage = (storage: TorchStorage): void =>
    storage.supply(decodeTensorData(storage.dtype, readZipStorage(archive, `${prefix}data/${storage.key}`, storage)));
  return unpickle(archive.read(pickles[0]), file, {
    persistentLoad: (pid) => {
      const id = parseStorageId(pid);
      if (id.view) throw new Error('storage views do not exist in the zip format');
      return storages.get(id, loadStorage);
    },
  }).value;
}

function legacyStorage(storages: StorageTable, id: StorageId): TorchStorage {
  const root = storages.get(id);
  if (!id.view) return root;
  const { key, offset, numel } = id.view;
  if (offset + numel > root.numel) throw new Error(`storage view ${quoted(key)} reaches beyond storage ${quoted(root.key)}`);
  return storages.get(
    { type: id.type, key, numel },
    (view) => root.whenLoaded((elements) => view.supply(elements.subarray(offset, offset + numel))),
    true,
  );
}

function checkSysInfo(sysInfo: PyValue): void {
  if (!(sysInfo instanceof Map)) throw new Error('legacy PyTorch file: sys_info is not a dict');
  if (sysInfo.get('little_endian') !== true) {
    throw new Error('legacy PyTorch file saved on a big-endian machine: not supported');
  }
}

/** Reads the storage data section: for each key, an int64 element count and the elements. */
function readLegacyStorageData(bytes: Uint8Array, start: number, keys: PyValue, storages: StorageTable): void {
  if (!Array.isArray(keys) || !keys.every((key) => typeof key === 'string')) {
    throw new Error('legacy PyTorch file: the storage key list is malformed');
  }
  const reader = new ByteReader(bytes, start);
  for (const key of keys as string[]) {
    const storage = storages.byKey.get(key);
    if (!storage) throw new Error(`legacy PyTorch file: storage ${quoted(key)} has data but no tensor uses it`);
    const count = reader.i64(`the element count of storage ${quoted(key)}`);
    if (count !== BigInt(storage.numel)) {
      throw new Error(`legacy PyTorch file: storage ${quoted(key)} should hold ${storage.numel} elements, the file says ${count}`);
    }
    const data = reader.take(storage.numel * dtypeSize(storage.dtype), `the data of storage ${quoted(key)}`);
    storage.supply(decodeTensorData(storage.dtype, data));
  }
  for (const storage of storages.byKey.values()) {
    if (!storage.loaded) throw new Error(`legacy PyTorch file: storage ${quoted(storage.key)} has no data`);
  }
}

function parseLegacyCheckpoint(bytes: Uint8Array, file: string): PyValue {
  const magic = unpickle(bytes, file);
  if (magic.value !== LEGACY_MAGIC) {
    throw new Error('a pickle without the PyTorch magic number: plain pickles are not accepted');
  }
  const version = unpickle(bytes, file, { start: magic.end });
  if (version.value !== LEGACY_PROTOCOL_VERSION) {
    throw new Error(`unsupported legacy PyTorch protocol version ${printable(String(version.value))}`);
  }
  const sysInfo = unpickle(bytes, file, { start: version.end });
  checkSysInfo(sysInfo.value);
  const storages = new StorageTable(bytes.byteLength);
  const object = unpickle(bytes, file, {
    start: sysInfo.end,
    persistentLoad: (pid) => legacyStorage(storages, parseStorageId(pid)),
  });
  const keys = unpickle(bytes, file, { start: object.end });
  readLegacyStorageData(bytes, keys.end, keys.value, storages);
  return object.value;
}

function looksLikeSafetensors(bytes: Uint8Array): boolean {
  if (bytes.byteLength < 9 || bytes[8] !== 0x7b /* '{' */) return false;
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  return headerLength <= BigInt(bytes.byteLength - 8);
}

/** POSIX tar archives have 'ustar' at offset 257. */
function isTarArchive(bytes: Uint8Array): boolean {
  return new TextDecoder().decode(bytes.subarray(257, 262)) === 'ustar';
}

/** The format of a tensor file, judged from its first bytes; null when it is none of them. */
export function detectTensorFormat(bytes: Uint8Array): TensorFileFormat | null {
  if (looksLikeZip(bytes)) return 'torch-zip';
  // Safetensors first: its 8-byte header length can start with 0x80 like a pickle does.
  if (looksLikeSafetensors(bytes)) return 'safetensors';
  if (bytes[0] === PICKLE_PROTO_OPCODE) return 'torch-legacy';
  return null;
}

/**
 * Parses a PyTorch checkpoint (either format) or a safetensors file held in memory. Tensors come
 * back as NamedTensor, dicts as Maps (a safetensors file gives its TensorMap).
 */
export function parseTensorFile(bytes: Uint8Array, file: string): PyValue {
  const format = detectTensorFormat(bytes);
  if (format === 'safetensors') return parseSafetensors(bytes, file).tensors;
  return withFileContext(file, () => {
    if (format === 'torch-zip') return parseZipCheckpoint(bytes, file);
    if (format === 'torch-legacy') return parseLegacyCheckpoint(bytes, file);
    if (isTarArchive(bytes)) {
      throw new Error('a tar archive, not a tensor file (the tar-based checkpoints of PyTorch < 0.4 are not supported)');
    }
    const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new Error(`not a tensor file (safetensors, PyTorch zip or legacy PyTorch); it starts with ${head || 'nothing'}`);
  });
}

/** Reads a tensor file; see parseTensorFile. */
export function loadTensorFile(file: string): PyValue {
  return parseTensorFile(readFileBytes(file), file);
}

/** Where training scripts commonly put the model's state dict in a checkpoint dict, in the order tried. */
export const STATE_DICT_KEYS = ['state_dict', 'model_state_dict', 'model', 'net', 'network', 'module'] as const;
const DATA_PARALLEL_PREFIX = 'module.';

/** A non-empty dict with string keys and only tensor values. */
function asStateDict(value: PyValue | undefined): TensorMap | null {
  if (!(value instanceof Map) || value.size === 0) return null;
  for (const [key, entry] of value) {
    if (typeof key !== 'string' || !isNamedTensor(entry)) return null;
  }
  return value as TensorMap;
}

/** Removes nn.DataParallel's `module.` prefix when every name has it. */
function stripDataParallelPrefix(stateDict: TensorMap): TensorMap {
  const names = [...stateDict.keys()];
  if (!names.every((name) => name.startsWith(DATA_PARALLEL_PREFIX))) return new Map(stateDict);
  return new Map(names.map((name) => [name.slice(DATA_PARALLEL_PREFIX.length), stateDict.get(name)!]));
}

function describeTopLevel(checkpoint: PyValue): string {
  if (checkpoint instanceof Map) {
    const keys = [...checkpoint.keys()].map((key) => printable(String(key)));
    return `a dict with keys ${keys.slice(0, 12).join(', ')}${keys.length > 12 ? ', ...' : ''}`;
  }
  return Array.isArray(checkpoint) ? 'a list' : `a ${checkpoint === null ? 'None' : typeof checkpoint}`;
}

/**
 * The model weights in a loaded checkpoint: the checkpoint itself when it is a state dict, else
 * the first state dict under one of STATE_DICT_KEYS; names lose a DataParallel `module.` prefix.
 * Non-float entries (BatchNorm's int64 num_batches_tracked) are kept: the caller decides.
 */
export function extractStateDict(checkpoint: PyValue, file: string): TensorMap {
  let stateDict = asStateDict(checkpoint);
  if (!stateDict && checkpoint instanceof Map) {
    stateDict = STATE_DICT_KEYS.map((key) => asStateDict(checkpoint.get(key))).find((found) => found !== null) ?? null;
  }
  if (!stateDict) {
    throw new TensorFileError(
      file,
      `no state dict found: the file holds ${describeTopLevel(checkpoint)}; expected a dict of tensors, or one under ${STATE_DICT_KEYS.map((key) => `'${key}'`).join(', ')}`,
    );
  }
  return stripDataParallelPrefix(stateDict);
}

/** loadTensorFile + extractStateDict. */
export function loadStateDict(file: string): TensorMap {
  return extractStateDict(loadTensorFile(file), file);
}
