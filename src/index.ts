/**
 * tinyquant's library API (`import { ... } from 'tinyquant'`), in the order data flows:
 * tensors and backends -> layers and models -> quantizers -> data -> training -> export -> experiments.
 *
 *   const model = createModel('resnet20');
 *   quantize(model, { method: 'apot', wbits: 4, abits: 4 });
 *   const result = await train({ config: resolveConfig({ model: 'resnet20', method: 'apot', wbits: 4, abits: 4 }), outDir: 'runs/x' });
 */
export { TINYQUANT_VERSION } from './package.js';

// Tensors, autograd and the backends.
export { Tensor, backward, keep, noGrad, tidy, isGradEnabled } from './tensor/tensor.js';
export * as ops from './tensor/ops.js';
export type { Backend, BackendName, Shape } from './backend/backend.js';
export { createBackend, getBackend, setBackend, withBackend } from './backend/index.js';

// Layers, models, optimizers.
export { Module, Parameter, StateDictError, type LoadOptions, type ParamKind, type StateDict, type StateTensor } from './nn/module.js';
export {
  AvgPool2d,
  BatchNorm,
  type BatchNormOptions,
  ClippedReLU,
  Conv2d,
  type Conv2dOptions,
  Flatten,
  GlobalAvgPool,
  Identity,
  Linear,
  type LinearOptions,
  MaxPool2d,
  ReLU,
  ReLU6,
  Residual,
  type ResidualOptions,
  Sequential,
  ShortcutPad,
  type SizePair,
} from './nn/layers.js';
export { Rng, manualSeed } from './util/rng.js';
export {
  ResNet,
  type ResNetConfig,
  type ModelEntry,
  type ModelName,
  type ModelOptions,
  type MobileNetV1Options,
  type ZooModelOptions,
  createModel,
  dsCnn,
  mobileNetV1,
  modelNames,
  models,
  resnet8Mlperf,
} from './models/index.js';
export * from './optim/index.js';

// Quantization.
export { type MethodName, type IntegerForm, type TensorQuantizer, methodNames } from './quant/quantizer.js';
export { type FirstLastPolicy, type QuantizeOptions, allQuantizers, calibrate, quantize, quantizedLayers, roundFirstLastApot8 } from './quant/quantize.js';

// Data.
export { type ImageDataset, type DatasetName, DataLoader, createEvalLoader, fixedSubset, loadDataset } from './data/index.js';
export { type Normalization, resolveNormalization } from './data/augment.js';
export { loadStateDict, readSafetensorsFile, writeSafetensorsFile, writeFileAtomic } from './io/index.js';

// Training and evaluation.
export { type TrainConfig, ConfigError, resolveConfig, readConfigFile } from './train/config.js';
export { type TrainOptions, type TrainResult, type TrainingData, DivergedError, buildModel, train } from './train/trainer.js';
export { type LoadedCheckpoint, readCheckpoint, saveCheckpoint } from './train/checkpoint.js';
export { type EvalSummary, evaluate } from './train/evaluate.js';

// Deployment.
export type { IntegerModel } from './export/ir.js';
export { type LowerOptions, lowerGraph, lowerModel } from './export/lower.js';
export { type Graph, type GraphNode, type NodeOp, GraphError, describeGraph, runGraph, trace } from './graph/index.js';
export { type CalibrationImages, normalizeImages } from './export/calibrate.js';
export { type EngineBackend, type InferenceEngine, IntegerEngine } from './export/engine.js';
export { type CreateEngineOptions, ENGINE_BACKENDS, createEngine } from './export/engines.js';
export { WasmIntegerEngine, wasmSupported } from './export/wasm/engine.js';
export { type AgreementResult, compareLogits, fakeQuantLogits, measureAgreement } from './export/agreement.js';
export { HostIntegerEngine, hostEngineAvailability } from './export/host/engine.js';
export { readTqm, writeTqm } from './export/tqm-file.js';
export { TqmError, decodeTqm, encodeTqm } from './export/tqm.js';
export { exportOnnx, writeOnnxFile } from './export/onnx/index.js';
export { generateC } from './export/c/generate.js';

// Experiments.
export { type GridSpec, type Plan, expandGrid, readGrid } from './experiments/grid.js';
export { executePlan } from './experiments/executor.js';
export { writeReport } from './experiments/report/index.js';
