/**
 * Measurements of the host int8 path against the TypeScript integer engine: images per second of
 * each, and on labelled images how many logits are identical, the share of equal top-1 classes and
 * both accuracies. Used by `tinyquant bench int` and bench/host-int.ts.
 */
import { IntegerEngine } from '../engine.js';
import { type LogitComparison, compareLogits, top1Accuracy } from '../agreement.js';
import type { IntegerModel } from '../ir.js';
import { HostIntegerEngine, type HostEngineOptions } from './engine.js';

/** Images per second of `infer` over `count` images (after one warm-up pass over at most `warmup` images). */
export function imagesPerSecond(infer: (images: Uint8Array, count: number) => unknown, images: Uint8Array, count: number, warmup: number): number {
  const size = images.length / count;
  const w = Math.min(warmup, count);
  infer(images.subarray(0, w * size), w);
  const start = process.hrtime.bigint();
  infer(images, count);
  return count / (Number(process.hrtime.bigint() - start) / 1e9);
}

/** compareLogits (host against the TypeScript engine) plus both accuracies. */
export interface EngineAgreement extends LogitComparison {
  /** Top-1 accuracy of each engine in percent (null without labels). */
  readonly hostTop1: number | null;
  readonly engineTop1: number | null;
}

/** Run both engines on `count` images (and labels, if any) and compare their logits. */
export function compareEngines(model: IntegerModel, images: Uint8Array, count: number, labels: Int32Array | null, opts: HostEngineOptions = {}): EngineAgreement {
  // The TypeScript kernels on purpose: the reference the host path is checked against (and what `bench int` names).
  const engine = new IntegerEngine(model);
  const host = new HostIntegerEngine(model, opts).inferBatch(images, count);
  const reference = engine.inferBatch(images, count);
  return {
    ...compareLogits(host, reference, engine.classes),
    hostTop1: labels ? top1Accuracy(host, labels, engine.classes) : null,
    engineTop1: labels ? top1Accuracy(reference, labels, engine.classes) : null,
  };
}
