/**
 * Measurements of the host int8 path against the TypeScript integer engine: images per second of
 * each, and on labelled images how many logits are identical, the share of equal top-1 classes and
 * both accuracies. Used by `tinyquant bench int` and bench/host-int.ts.
 */
import { IntegerEngine } from '../engine.js';
import { argmax } from '../int-ops.js';
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

export interface EngineAgreement {
  readonly images: number;
  /** Images whose logits are identical in both engines. */
  readonly identicalImages: number;
  /** Images with the same top-1 class, in percent. */
  readonly sameTop1: number;
  /** Top-1 accuracy of each engine in percent (null without labels). */
  readonly hostTop1: number | null;
  readonly engineTop1: number | null;
}

/** Run both engines on `count` images (and labels, if any) and compare their logits. */
export function compareEngines(model: IntegerModel, images: Uint8Array, count: number, labels: Int32Array | null, opts: HostEngineOptions = {}): EngineAgreement {
  const engine = new IntegerEngine(model);
  const classes = engine.classes;
  const host = new HostIntegerEngine(model, opts).inferBatch(images, count);
  const reference = engine.inferBatch(images, count);
  let [identical, same, hostCorrect, engineCorrect] = [0, 0, 0, 0];
  for (let n = 0; n < count; n++) {
    const at = n * classes;
    let equal = true;
    for (let k = at; k < at + classes; k++) equal &&= host[k] === reference[k];
    const [a, b] = [argmax(host, at, classes), argmax(reference, at, classes)];
    identical += equal ? 1 : 0;
    same += a === b ? 1 : 0;
    hostCorrect += labels && a === labels[n] ? 1 : 0;
    engineCorrect += labels && b === labels[n] ? 1 : 0;
  }
  const pct = (v: number): number => (count === 0 ? 0 : (100 * v) / count);
  return {
    images: count,
    identicalImages: identical,
    sameTop1: pct(same),
    hostTop1: labels ? pct(hostCorrect) : null,
    engineTop1: labels ? pct(engineCorrect) : null,
  };
}
