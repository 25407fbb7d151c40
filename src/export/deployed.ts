/**
 * The deployed accuracy of a run: its model lowered with its deployment plan and the integer model
 * run on the test images (the host int8 path where the native addon has it, bit-identical to the
 * TypeScript engine and thousands of images a second; else `createEngine`'s, the WebAssembly
 * kernels where they run, else the TypeScript ones), compared image by image with the
 * fake-quantized model's predictions.
 */
import type { Normalization } from '../data/augment.js';
import type { ImageDataset } from '../data/dataset.js';
import { type Graph, trace } from '../graph/index.js';
import type { Module } from '../nn/module.js';
import type { InferenceEngine } from './engine.js';
import { createEngine } from './engines.js';
import { HostIntegerEngine, hostEngineAvailability } from './host/engine.js';
import type { IntegerModel, ModelMeta } from './ir.js';
import { lowerGraph } from './lower.js';
import { type DeploymentPlan, type PlanOptions, planDeployment } from './plan.js';

/** What the device computes on the test images, against the fake-quantized model. */
export interface DeviceEvaluation {
  /** Top-1 of the integer model, in percent. */
  readonly top1: number;
  /** Images whose integer top-1 class is the fake-quantized model's, in percent. */
  readonly sameTop1: number;
  readonly images: number;
  readonly engine: DeviceEngineName;
}

/** Which implementation computed a device evaluation ('typescript': the TypeScript kernels). */
export type DeviceEngineName = 'host-int8' | 'wasm' | 'typescript';

/** An integer engine that runs batches, with its name for the records. */
export interface BatchEngine {
  readonly name: DeviceEngineName;
  readonly engine: Pick<InferenceEngine, 'inferBatch' | 'predict'>;
}

/** The host path's refusal of a model it cannot compute exactly on this CPU (native/src/int8_model.cc), not a bad model. */
function isHostArithmeticRefusal(e: unknown): boolean {
  return e instanceof Error && e.message.includes('use the TypeScript integer engine');
}

/**
 * The fastest integer engine here, all bit-identical: the host int8 path (where `host`: by default
 * where the addon has it, and where it computes this model exactly), else createEngine's (wasm,
 * else ts).
 */
export async function fastestIntegerEngine(ir: IntegerModel, host = hostEngineAvailability().available): Promise<BatchEngine> {
  if (host) {
    try {
      return { name: 'host-int8', engine: new HostIntegerEngine(ir) };
    } catch (e) {
      if (!isHostArithmeticRefusal(e)) throw e;
    }
  }
  const engine = await createEngine(ir);
  return { name: engine.backend === 'wasm' ? 'wasm' : 'typescript', engine };
}

/** Lower a model's graph with a plan, for evaluation (the lowering's notes are not needed here). */
export function lowerForEvaluation(graph: Graph, plan: DeploymentPlan, normalization: Normalization, meta: Omit<ModelMeta, 'normalization' | 'residualBits' | 'notes'>): IntegerModel {
  return lowerGraph(graph, { normalization, plan, meta });
}

/** The integer model's top-1 on every image of `data`, compared with `fakeQuant` (predictions in dataset order). */
export async function evaluateOnDevice(ir: IntegerModel, data: ImageDataset, fakeQuant: Int32Array): Promise<DeviceEvaluation> {
  const { name, engine } = await fastestIntegerEngine(ir);
  const predictions = engine.predict(data.images, data.count);
  let [correct, same] = [0, 0];
  for (let i = 0; i < data.count; i++) {
    correct += predictions[i] === data.labels[i] ? 1 : 0;
    same += predictions[i] === fakeQuant[i] ? 1 : 0;
  }
  return {
    top1: (100 * correct) / data.count,
    sameTop1: (100 * same) / data.count,
    images: data.count,
    engine: name,
  };
}

/**
 * Whether a model can be deployed, checked before training: a plan from a few calibration images
 * and a lowering, which throw a LoweringError or GraphError naming the layer that cannot be.
 */
export function checkDeployable(model: Module, imageShape: readonly [number, number, number], opts: PlanOptions, meta: Omit<ModelMeta, 'normalization' | 'residualBits' | 'notes'>): void {
  const graph = trace(model, [...imageShape]);
  lowerForEvaluation(graph, planDeployment(graph, opts), opts.normalization, meta);
}
