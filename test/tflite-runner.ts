/**
 * Runs a TFLite model in a real TFLite interpreter: @tensorflow/tfjs-tflite (TFLite's C++ runtime
 * compiled to WebAssembly, a devDependency) in headless Debian Chromium through playwright-core,
 * its scripts and wasm files served from node_modules on a loopback port (no network). Used by
 * the tflite export tests and bench/tflite-agreement; no tests here.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, join, normalize } from 'node:path';
import { chromium } from 'playwright-core';
import type { IntArray } from '../src/export/engine.js';
import type { IntegerModel } from '../src/export/ir.js';
import { type TfliteGraph, isolatedOp } from '../src/export/tflite/convert.js';
import { BuiltinOperator, writeModel } from '../src/export/tflite/schema.js';

export const CHROMIUM = '/usr/bin/chromium';

const require = createRequire(import.meta.url);
const packageDir = (name: string): string => dirname(require.resolve(`${name}/package.json`));

/** Why the interpreter cannot run here, or null when it can. */
export function tfliteRunnerMissing(): string | null {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is absent (scripts/setup-debian.sh --all installs it)`;
  try {
    packageDir('@tensorflow/tfjs-tflite');
  } catch {
    return '@tensorflow/tfjs-tflite is not installed (a devDependency)';
  }
  return null;
}

const PAGE = `<!doctype html><script src="/core.js"></script><script src="/cpu.js"></script><script src="/tflite.js"></script><body></body>`;

/** The int8 output of a one-output `model` for each int8 input (flat, in the model's input layout), one interpreter run each. */
export async function runTflite(model: Uint8Array, inputs: readonly Int8Array[], inputShape: readonly number[]): Promise<Int8Array[]> {
  return (await runTfliteOutputs(model, inputs.map((x) => [x]), [inputShape])).map((o) => Object.values(o)[0]);
}

/** Every output of `model`, by tensor name, for each run: one int8 array per model input (shapes: the inputs' shapes). */
export async function runTfliteOutputs(model: Uint8Array, runs: readonly (readonly Int8Array[])[], shapes: readonly (readonly number[])[]): Promise<Record<string, Int8Array>[]> {
  const files: Record<string, string> = {
    '/core.js': join(packageDir('@tensorflow/tfjs-core'), 'dist', 'tf-core.min.js'),
    '/cpu.js': join(packageDir('@tensorflow/tfjs-backend-cpu'), 'dist', 'tf-backend-cpu.min.js'),
    '/tflite.js': join(packageDir('@tensorflow/tfjs-tflite'), 'dist', 'tf-tflite.min.js'),
  };
  const wasmDir = join(packageDir('@tensorflow/tfjs-tflite'), 'wasm');
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (url === '/') return void res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
    if (url === '/model.tflite') return void res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(model);
    const wasm = url.startsWith('/wasm/') ? normalize(join(wasmDir, url.slice(6))) : null;
    const path = files[url] ?? (wasm && wasm.startsWith(wasmDir) ? wasm : null);
    if (!path || !existsSync(path)) return void res.writeHead(404).end();
    const type = path.endsWith('.wasm') ? 'application/wasm' : 'text/javascript';
    res.writeHead(200, { 'content-type': type }).end(readFileSync(path));
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    const outputs = await page.evaluate(
      async ({ runs, shapes }) => {
        const w = window as unknown as { tflite: any; tf: any }; // eslint-disable-line @typescript-eslint/no-explicit-any
        w.tflite.setWasmPath('/wasm/');
        const m = await w.tflite.loadTFLiteModel('/model.tflite', { numThreads: 1 });
        return runs.map((xs: number[][]) => {
          const tensors = xs.map((x, i) => w.tf.tensor(x, shapes[i], 'int32'));
          const out = m.predict(tensors.length === 1 ? tensors[0] : tensors);
          for (const t of tensors) t.dispose();
          const named = typeof out.dataSync === 'function' ? { output: out } : out;
          const values: Record<string, number[]> = {};
          for (const [name, t] of Object.entries(named) as [string, any][]) { // eslint-disable-line @typescript-eslint/no-explicit-any
            values[name] = Array.from(t.dataSync() as Int32Array);
            t.dispose();
          }
          return values;
        });
      },
      { runs: runs.map((xs) => xs.map((x) => Array.from(x))), shapes: shapes.map((sh) => [...sh]) },
    );
    if (errors.length > 0) throw new Error(`tflite page: ${errors.join('; ')}`);
    return outputs.map((o) => Object.fromEntries(Object.entries(o).map(([name, v]) => [name, Int8Array.from(v)])));
  } finally {
    await browser.close();
    server.close();
  }
}

/** IR tensor values (CHW) as the int8 NHWC tensor TFLite holds (the logits: divided by 2^logitShift, rounded, saturated). */
export function asTflite(model: IntegerModel, g: TfliteGraph, ir: number, values: ArrayLike<number>): Int8Array {
  const [c, h, w] = model.tensors[ir].shape;
  const zp = g.traced.find((t) => t.irTensor === ir)!.zeroPoint;
  const q = (v: number): number => (ir === model.output ? Math.max(-127, Math.min(127, Math.round(v / 2 ** g.logitShift))) : v + zp);
  const out = new Int8Array(c * h * w);
  for (let ch = 0; ch < c; ch++) for (let p = 0; p < h * w; p++) out[p * c + ch] = q(values[ch * h * w + p]);
  return out;
}

export interface OpAgreement {
  readonly name: string;
  /** The TFLite operators of the IR op. */
  readonly operators: readonly string[];
  readonly differ: number;
  readonly total: number;
  readonly maxDiff: number;
}

/** Each IR op's TFLite operators alone in the interpreter, fed the engine's tensors (`traces`: engine.trace per image), against the engine's output. */
export async function opByOp(model: IntegerModel, g: TfliteGraph, traces: readonly IntArray[][]): Promise<OpAgreement[]> {
  const shape = (ir: number): number[] => [1, model.tensors[ir].shape[1], model.tensors[ir].shape[2], model.tensors[ir].shape[0]];
  const rows: OpAgreement[] = [];
  for (const r of g.opRanges) {
    const inputs = [...new Set(r.inputs)];
    const outputs = await runTfliteOutputs(writeModel(isolatedOp(g, r)), traces.map((t) => inputs.map((i) => asTflite(model, g, i, t[i]))), inputs.map(shape));
    let [differ, total, maxDiff] = [0, 0, 0];
    traces.forEach((t, k) => {
      const expected = asTflite(model, g, r.output, t[r.output]);
      const got = Object.values(outputs[k])[0];
      for (let i = 0; i < expected.length; i++) {
        const d = Math.abs(got[i] - expected[i]);
        [differ, total, maxDiff] = [differ + Number(d > 0), total + 1, Math.max(maxDiff, d)];
      }
    });
    const operators = g.def.operators.slice(r.first, r.end).map((o) => Object.entries(BuiltinOperator).find(([, v]) => v === o.opcode)![0]);
    rows.push({ name: r.name, operators, differ, total, maxDiff });
  }
  return rows;
}
