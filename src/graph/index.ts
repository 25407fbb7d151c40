/** The model graph: tracing, the node types, and running a graph. */
export * from './graph.js';
export { trace } from './trace.js';
export { type NodeRewrite, type RunOptions, runGraph, trainingForward } from './run.js';
export { type TrainingFusion, fuseForTraining } from './fuse.js';
