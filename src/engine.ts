/**
 * `tinyquant/engine`: the integer-only inference engine and the tqm format read from bytes, for
 * browsers and other hosts without Node.js. Nothing imported from here (directly or further down)
 * may use a Node built-in; test/engine-entry.test.ts walks the compiled import graph to keep it so.
 */
export { type EngineBackend, type InferenceEngine, IntegerEngine } from './export/engine.js';
export { type CreateEngineOptions, ENGINE_BACKENDS, createEngine } from './export/engines.js';
export { WasmIntegerEngine, wasmSupported } from './export/wasm/engine.js';
export { TqmError, decodeTqm, encodeTqm } from './export/tqm.js';
export { IntegerModelError, validateIntegerModel } from './export/validate.js';
export { type LayerKind, type LayerReport, type ModelReport, modelReport } from './export/report.js';
export type { IntegerModel, ModelMeta, Op, TensorInfo } from './export/ir.js';
export { formatReport } from './export/report-text.js';
