/** Datasets (CIFAR-10/100, MNIST/Fashion-MNIST, image folders) and the batch pipeline. */

export { type ImageDataset, type Split, imageSize, validateDataset, checkSplitsAgree, allocShared, fixedSubset, holdOut } from './dataset.js';
export { loadDataset, dataSearchDirs, DATASET_NAMES, type DatasetName, type LoadDatasetOptions } from './load.js';
export {
  CIFAR_LAYOUTS,
  CIFAR10_CLASSES,
  cifarRecordSize,
  parseCifar,
  readCifarArchive,
  readCifarFolder,
  type CifarKind,
} from './cifar.js';
export { parseIdx, readIdxDataset } from './idx.js';
export { loadImageFolder, defaultDecodeWorkers, type ImageFolderOptions } from './image-folder.js';
export { decodeImage, type ImageChannels } from './image-decode.js';
export { readTar, readTarFile, type TarEntry } from './tar.js';
export { cacheDir } from './cache.js';
export { downloadFirstVerified, downloadVerified, remoteUrls, DATA_MIRROR_ENV, type RemoteFile } from './download.js';
export {
  AUGMENT_TAG,
  CIFAR_AUGMENT,
  NORMALIZATION_PRESETS,
  SHUFFLE_TAG,
  defaultAugment,
  defaultNormalization,
  resolveNormalization,
  sampleAugmentation,
  type AugmentSpec,
  type Normalization,
  type NormalizationPreset,
  type SampleAugmentation,
} from './augment.js';
export { DataLoader, createEvalLoader, type Batch, type LoaderOptions } from './loader.js';
export { resizeArea } from './resize.js';
