/** The model graph: tracing, the node types, and running a graph. */
export * from './graph.js';
export { trace } from './trace.js';
export { runGraph } from './run.js';
