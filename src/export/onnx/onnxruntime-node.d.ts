/**
 * onnxruntime-node 1.17.0 names a declaration file it does not ship; its API is onnxruntime-common's
 * (the exact-version package it depends on and re-exports).
 */
declare module 'onnxruntime-node' {
  export * from 'onnxruntime-common';
}
