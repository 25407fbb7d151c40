/**
 * Tensor file I/O: safetensors (read and write), PyTorch checkpoints (read, both formats, without
 * running code from the file), atomic file writes.
 *
 *   const weights = loadStateDict('resnet20_apot.pth.tar');   // TensorMap, any supported format
 *   writeSafetensorsFile('out.safetensors', weights, { method: 'apot' });
 */
export { writeFileAtomic, writeJsonAtomic, readJsonFile } from './atomic.js';
export { TensorFileError } from './bytes.js';
export {
  type DType,
  type DTypeArrays,
  type TypedArray,
  type NamedTensor,
  type TensorMap,
  isDType,
  isNamedTensor,
  dtypeSize,
  numel,
  makeTensor,
  toFloat32,
} from './tensors.js';
export {
  type SafetensorsContents,
  parseSafetensors,
  readSafetensorsFile,
  serializeSafetensors,
  writeSafetensorsFile,
} from './safetensors.js';
export { type PyKey, type PyDict, type PyValue, PyOpaque, unpickle } from './pickle.js';
export {
  type TensorFileFormat,
  STATE_DICT_KEYS,
  detectTensorFormat,
  parseTensorFile,
  loadTensorFile,
  extractStateDict,
  loadStateDict,
} from './pth.js';
