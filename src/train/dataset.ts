/**
 * The dataset a training config names: every command that loads a config's data (train, eval,
 * export, grids) goes through here, so all of them read the same images the same way.
 */
import { type ImageDataset, type LoadDatasetOptions, type Split, loadDataset } from '../data/index.js';
import { ConfigError, type TrainConfig } from './config.js';

/** Where to look, when a command is told otherwise than the config (flags of eval, export, grids). */
export interface DataLocation {
  readonly dataDir?: string;
  readonly dataPath?: string;
  readonly log?: (message: string) => void;
}

/** The loadDataset options for one split of a config's dataset. */
export function configDatasetOptions(config: TrainConfig, split: Split, location: DataLocation = {}): LoadDatasetOptions {
  const dataPath = location.dataPath ?? config.dataPath;
  if (config.dataset !== 'imagefolder') {
    // The fields only an image folder reads.
    const imageFolderFields = { dataPath: dataPath !== undefined, channels: config.channels !== undefined, imageSize: config.imageSize !== undefined, resize: config.resize };
    const given = Object.keys(imageFolderFields).filter((f) => imageFolderFields[f as keyof typeof imageFolderFields]);
    if (given.length > 0) {
      throw new ConfigError(`${given.join(', ')}: only dataset imagefolder reads ${given.length > 1 ? 'these' : 'this'} (dataset is ${config.dataset})`);
    }
  }
  return {
    name: config.dataset,
    split,
    dataDir: location.dataDir ?? config.dataDir,
    path: dataPath,
    channels: config.channels,
    imageSize: config.imageSize,
    resize: config.resize,
    valSplit: config.valSplit,
    seed: config.seed,
    log: location.log,
  };
}

/** Load one split of a config's dataset (the held-out part of the training images for 'test' when valSplit is set). */
export function loadConfigDataset(config: TrainConfig, split: Split, location: DataLocation = {}): Promise<ImageDataset> {
  return loadDataset(configDatasetOptions(config, split, location));
}
