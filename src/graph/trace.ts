/**
 * `trace(model, input)`: run the model once (eval mode, no gradients) and record it as a graph.
 *
 * Layers without sub-modules (convolutions, batch norms, pools, quantized layers, ...) become one
 * node each, whatever ops they run inside; modules with sub-modules are transparent: the tracer
 * records the layers they call and the functional ops their own `forward` runs between them (the
 * residual add of a block, a ReLU, a flatten). Values are followed by tensor identity, so
 * branches and joins (a shortcut read twice, an add of two paths) come out as they ran.
 */
import type { Shape } from '../backend/backend.js';
import { shapeStr } from '../backend/backend.js';
import { type Module, observeCalls } from '../nn/module.js';
import { isQuantizedLayer } from '../quant/qlayers.js';
import { Tensor, noGrad, observeOps, tidy } from '../tensor/tensor.js';
import { type Graph, GraphError, type GraphNode, type NodeOp } from './graph.js';
import { layerOp } from './layers.js';

/** The node op of a functional op run outside any layer, from its tape name and output. */
function functionalOp(op: string, inputs: readonly Tensor[], output: Tensor): NodeOp | null {
  switch (op) {
    case 'add':
      return { kind: 'add', relu: false };
    case 'addRelu':
      return { kind: 'add', relu: true };
    case 'relu':
      return { kind: 'relu', ceiling: null };
    case 'globalAvgPool':
      return { kind: 'globalavgpool' };
    case 'reshape':
      // Only the flatten (N, ...) -> (N, rest) has a meaning every pass understands.
      return output.shape.length === 2 && output.shape[0] === inputs[0].shape[0] ? { kind: 'flatten' } : null;
    default:
      return null;
  }
}

class Tracer {
  readonly nodes: GraphNode[] = [];
  readonly #values = new Map<Tensor, number>();
  readonly #names = new Set<string>();
  /** Paths of the modules whose forward is running (innermost last). */
  readonly #context: string[] = [];
  /** > 0 while a leaf layer runs: its inner ops belong to its node. */
  #insideLeaf = 0;

  constructor(input: Tensor) {
    this.#add('input', { kind: 'input' }, [], input, null);
  }

  onCall(m: Module, x: Tensor, forward: () => Tensor): Tensor {
    if (this.#insideLeaf > 0) return forward();
    if (m.children().length > 0) {
      this.#context.push(m.path);
      try {
        return forward();
      } finally {
        this.#context.pop();
      }
    }
    // Errors thrown here reach Module.call, which prefixes them with the layer's path.
    const op = layerOp(m);
    if (op === null) throw new GraphError('a layer tinyquant cannot trace (no sub-modules and not one of the layers in src/nn or src/quant)');
    const input = this.#valueOf(x, 'its input');
    this.#insideLeaf++;
    let y: Tensor;
    try {
      y = forward();
    } finally {
      this.#insideLeaf--;
    }
    if (op === 'identity') {
      if (!this.#values.has(y)) this.#values.set(y, input);
      return y;
    }
    // A layer that is not registered as a sub-module has no path of its own: name it as a functional op.
    const context = this.#context.at(-1) ?? '';
    this.#add(m.path || (context ? `${context}.${op.kind}` : op.kind), op, [input], y, m);
    return y;
  }

  onOp(op: string, inputs: readonly Tensor[], output: Tensor): void {
    if (this.#insideLeaf > 0) return;
    const context = this.#context.at(-1) ?? '';
    const where = `op ${op}`;
    const node = functionalOp(op, inputs, output);
    if (node === null) {
      throw new GraphError(`${where} on ${inputs.map((t) => shapeStr(t.shape)).join(', ')} runs outside a layer and cannot be traced; use the layer for it (e.g. MaxPool2d, AvgPool2d, Flatten)`);
    }
    const ids = inputs.map((t) => this.#valueOf(t, where));
    this.#add(context ? `${context}.${node.kind}` : node.kind, node, ids, output, null);
  }

  #valueOf(t: Tensor, where: string): number {
    const id = this.#values.get(t);
    if (id === undefined) {
      throw new GraphError(`${where}: reads a tensor ${shapeStr(t.shape)} that no traced op produced (a parameter or constant used outside a layer?)`);
    }
    return id;
  }

  #add(name: string, op: NodeOp, inputs: number[], output: Tensor, module: Module | null): void {
    let unique = name;
    for (let k = 1; this.#names.has(unique); k++) unique = `${name}_${k}`;
    this.#names.add(unique);
    const id = this.nodes.length;
    this.nodes.push({ id, name: unique, op, inputs, shape: output.shape.slice(1), module });
    this.#values.set(output, id);
  }

  outputOf(y: Tensor): number {
    return this.#valueOf(y, 'model output');
  }
}

/**
 * Trace a model on an example input: a batch tensor (N, ...) or the shape of one sample, e.g.
 * [3, 32, 32] (a batch of one zero image is used). The model runs in eval mode; every module's mode
 * is restored afterwards and its batch-norm statistics are not touched.
 */
export function trace(model: Module, input: Tensor | Shape): Graph {
  const calibrating = [...model.namedModules()].find(([, m]) => isQuantizedLayer(m) && m.calibrating);
  if (calibrating) throw new GraphError(`${calibrating[0]}: its quantizers wait for their calibration pass (quantize.ts calibrate); tracing would run it on the example input`);
  const modules = [...model.namedModules()].map(([, m]) => m);
  const modes = modules.map((m) => m.training);
  model.eval();
  try {
    return tidy(() =>
      noGrad(() => {
        const x = input instanceof Tensor ? input : Tensor.zeros([1, ...input]);
        const tracer = new Tracer(x);
        const y = observeOps(
          (op, inputs, output) => tracer.onOp(op, inputs, output),
          () => observeCalls((m, t, forward) => tracer.onCall(m, t, forward), () => model.call(x)),
        );
        return { nodes: tracer.nodes, output: tracer.outputOf(y) };
      }),
    );
  } finally {
    modules.forEach((m, i) => (m.training = modes[i]));
  }
}
