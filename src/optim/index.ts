export { Adam, type AdamOptions } from './adam.js';
export { type OptimizerState, type ParamGroup, type ParamGroupSpec, Optimizer, byKind, groupParameters } from './optimizer.js';
export { type Schedule, type Warmup, lrFactor, scheduleFactor, validateSchedule } from './schedule.js';
export { Sgd, type SgdOptions } from './sgd.js';
