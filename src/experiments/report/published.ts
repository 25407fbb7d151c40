/**
 * Published CIFAR accuracies to show beside ours (spec: shared/docs/quant-methods.md §4.1), each
 * with its own float baseline: compare the drop from float, not the absolute numbers, since the
 * training data, schedule and float model differ from ours.
 */
import type { MethodName } from '../../quant/quantizer.js';

export interface PublishedResult {
  readonly source: string;
  readonly method: MethodName;
  readonly dataset: 'cifar10';
  /** Depth of the CIFAR ResNet (our resnet20, resnet20-apot and resnet20-ewgs are all 20). */
  readonly depth: 20 | 56;
  /** The float model the source quantized, in its own setup. */
  readonly float: number;
  /** Top-1 (%) by bit-width label, e.g. W4A4. */
  readonly top1: Readonly<Record<string, number>>;
  readonly regime: string;
}

export const PUBLISHED: readonly PublishedResult[] = [
  {
    source: 'APoT paper (ICLR 2020), Table 2',
    method: 'apot',
    dataset: 'cifar10',
    depth: 20,
    float: 91.6,
    top1: { W2A2: 91.0, W3A3: 92.2, W4A4: 92.3 },
    regime: 'progressive from float (4 -> 3 -> 2 bits), 200 epochs per stage, best epoch',
  },
  {
    source: 'APoT code, released checkpoints (README)',
    method: 'apot',
    dataset: 'cifar10',
    depth: 20,
    float: 92.96,
    top1: { W2A2: 90.96, W3A3: 92.49, W4A4: 92.45 },
    regime: 'progressive, 300 epochs per stage, best test epoch',
  },
  {
    source: 'PACT, as quoted in APoT Table 2',
    method: 'pact',
    dataset: 'cifar10',
    depth: 20,
    float: 91.6,
    top1: { W2A2: 89.7, W3A3: 91.1, W4A4: 91.7 },
    regime: "PACT's own regime (not re-verified); float baseline is APoT's",
  },
  {
    source: 'DoReFa-Net as re-run by PACT, quoted in APoT Table 2',
    method: 'uniform',
    dataset: 'cifar10',
    depth: 20,
    float: 91.6,
    top1: { W2A2: 88.2, W3A3: 89.9, W4A4: 90.5 },
    regime: "PACT's re-run (not re-verified); float baseline is APoT's",
  },
  {
    source: 'EWGS paper (CVPR 2021)',
    method: 'ewgs',
    dataset: 'cifar10',
    depth: 20,
    float: 91.4,
    top1: { W1A1: 85.6 },
    regime: 'from their float model, 400 epochs, Hessian delta; W2A2-W4A4 not published',
  },
  {
    source: 'APoT paper (ICLR 2020), Table 2',
    method: 'apot',
    dataset: 'cifar10',
    depth: 56,
    float: 93.2,
    top1: { W2A2: 92.9, W3A3: 93.9, W4A4: 94.0 },
    regime: 'progressive from float, 200 epochs per stage, best epoch',
  },
  {
    source: 'APoT code, README',
    method: 'apot',
    dataset: 'cifar10',
    depth: 56,
    float: 94.46,
    top1: { W2A2: 93.05, W3A3: 93.77, W4A4: 93.93 },
    regime: 'progressive, 300 epochs per stage, best test epoch',
  },
];

/** CIFAR ResNet depth of one of our model names (resnet20-apot -> 20), or null for others. */
export function resnetDepth(model: string): number | null {
  const m = /^resnet(\d+)(-|$)/.exec(model);
  return m && model !== 'resnet18' ? Number(m[1]) : null;
}

/** Published results for a model/dataset and method, at a bit-width label. */
export function publishedFor(model: string, dataset: string, method: string, bits: string): { result: PublishedResult; top1: number }[] {
  const depth = resnetDepth(model);
  return PUBLISHED.filter((p) => p.dataset === dataset && p.depth === depth && p.method === method && p.top1[bits] !== undefined).map((result) => ({
    result,
    top1: result.top1[bits],
  }));
}
