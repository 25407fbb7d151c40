/**
 * The browser page: decodes a dropped or picked .tqm with tinyquant/engine, decodes an image with
 * the browser's own codecs (createImageBitmap + canvas) into the engine's uint8 CHW planes, and
 * shows the prediction, the top-5 logits, the `tinyquant inspect` table and the inference time.
 * The engine is `createEngine`'s: the WebAssembly kernels where the browser runs them, else the
 * TypeScript ones (the same logits).
 * Every failure becomes a message on the page (never an exception in the console).
 */
import { type InferenceEngine, type IntegerModel, createEngine, decodeTqm, formatReport, modelReport } from '../src/engine.js';

interface Loaded {
  readonly name: string;
  readonly model: IntegerModel;
  readonly engine: InferenceEngine;
}

interface Picture {
  readonly name: string;
  readonly width: number;
  readonly height: number;
  /** RGB planes, [3, H, W]. */
  readonly planes: Uint8Array;
}

const $ = (id: string): HTMLElement => document.getElementById(id) as HTMLElement;
let loaded: Loaded | undefined;
let picture: Picture | undefined;

function message(text: string | undefined): void {
  $('message').textContent = text ?? '';
  $('message').hidden = text === undefined;
}

async function loadModel(file: File): Promise<void> {
  loaded = undefined;
  $('model-info').hidden = true;
  let model: IntegerModel;
  try {
    model = decodeTqm(new Uint8Array(await file.arrayBuffer()));
  } catch (e) {
    throw new Error(`${file.name}: not a valid tqm model: ${e instanceof Error ? e.message : String(e)}`);
  }
  loaded = { name: file.name, model, engine: await createEngine(model) };
  $('report').textContent = formatReport(file.name, file.size, modelReport(model));
  $('model-info').hidden = false;
}

async function loadImage(file: File): Promise<void> {
  picture = undefined;
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch {
    throw new Error(`${file.name}: not an image the browser can decode (PNG or JPEG)`);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d') as OffscreenCanvasRenderingContext2D;
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const n = bitmap.width * bitmap.height;
  const planes = new Uint8Array(3 * n);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) planes[c * n + i] = rgba[4 * i + c];
  picture = { name: file.name, width: bitmap.width, height: bitmap.height, planes };
}

function show(): void {
  $('result').hidden = true;
  if (loaded === undefined || picture === undefined) return;
  const [c, h, w] = loaded.engine.inputShape;
  if (c !== 3) throw new Error(`${loaded.name}: the model takes ${c}-channel images; this page feeds RGB images`);
  if (picture.width !== w || picture.height !== h) {
    throw new Error(`${picture.name}: the image is ${picture.width}x${picture.height}, the model takes ${w}x${h} (resize it first)`);
  }
  const start = performance.now();
  const logits = loaded.engine.infer(picture.planes);
  const ms = performance.now() - start;
  const classes = loaded.model.meta.classes;
  const ranked = Array.from(logits, (v, i) => ({ v, i })).sort((a, b) => b.v - a.v || a.i - b.i);
  const label = (i: number): string => classes[i] ?? `class ${i}`;
  $('prediction').textContent = label(ranked[0].i);
  $('time').textContent = `${ms.toFixed(1)} ms per inference (${loaded.engine.backend} engine)`;
  const body = $('top5').querySelector('tbody') as HTMLElement;
  body.replaceChildren(...ranked.slice(0, 5).map(({ v, i }) => {
    const row = document.createElement('tr');
    for (const text of [label(i), String(v)]) row.appendChild(document.createElement('td')).textContent = text;
    return row;
  }));
  $('logits').textContent = JSON.stringify(Array.from(logits));
  $('result').dataset.ms = String(ms);
  $('result').dataset.backend = loaded.engine.backend;
  $('result').hidden = false;
}

async function take(files: Iterable<File>): Promise<void> {
  try {
    message(undefined);
    for (const file of files) await (/\.tqm$/i.test(file.name) ? loadModel(file) : loadImage(file));
    show();
  } catch (e) {
    $('result').hidden = true;
    message(e instanceof Error ? e.message : String(e));
  }
}

for (const id of ['model', 'image']) {
  const input = $(id) as HTMLInputElement;
  input.addEventListener('change', () => {
    if (input.files) void take(Array.from(input.files).map((f) => (id === 'model' && !/\.tqm$/i.test(f.name) ? new File([f], `${f.name}.tqm`) : f)));
  });
}
document.addEventListener('dragover', (e) => {
  e.preventDefault();
  document.body.classList.add('dragging');
});
document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
document.addEventListener('drop', (e) => {
  e.preventDefault();
  document.body.classList.remove('dragging');
  if (e.dataTransfer) void take(Array.from(e.dataTransfer.files));
});
document.body.dataset.ready = '1';
