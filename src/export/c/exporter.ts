/**
 * The `c` format of `tinyquant export` (listed in src/export/formats.ts): a C99 source and its
 * header. `--out` names the source (`dir/name.c`: the header is `dir/name.h`), a base name without
 * extension (`dir/name`: the same two files) or a directory (`dir/` or an existing directory:
 * `dir/model.c` and `dir/model.h`). With build files (project.ts) also `dir/CMakeLists.txt`,
 * `dir/name.mk` and `dir/main.c`. The caller writes the files atomically.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { packedBytes } from '../bitpack.js';
import { IntegerEngine } from '../engine.js';
import type { ExportContext, ExportResult, ExportedFile } from '../formats.js';
import { type IntegerModel, inputShape } from '../ir.js';
import { CExportError, type ImageLayout, generateC } from './generate.js';
import { kernelLayers } from './kernels.js';
import { DEFAULT_PREFIX, type DropInOptions, dropInProblem } from './names.js';
import { EXAMPLE_SOURCE, type ExampleImage, GENERATED_MARKER, projectFiles } from './project.js';

/** The `c` format's own options (`--name`, `--arena`, `--section`, `--image-layout`, `--build-files`). */
export interface CExportOptions extends DropInOptions {
  readonly imageLayout?: ImageLayout;
  /** Store 4-bit activation codes two per byte where that lowers the arena (generate.ts CGenerateOptions.packActivations). */
  readonly packActivations?: boolean;
  /** Arena bytes the layout may use for faster kernels (generate.ts CGenerateOptions.arenaBudget). */
  readonly arenaBudget?: number;
  /** Also write CMakeLists.txt, NAME.mk and the example main.c next to the sources. */
  readonly buildFiles?: boolean;
  /** The image the example embeds (CHW) and where it came from; a synthetic one when absent or failing. */
  readonly exampleImage?: () => Promise<Pick<ExampleImage, 'image' | 'what'>>;
}

export interface COutputPaths {
  readonly source: string;
  readonly header: string;
}

/** Where `--out PATH` puts the source and the header (see the file comment). */
export function cOutputPaths(out: string): COutputPaths {
  const isDirectory = /[/\\]$/.test(out) || (existsSync(out) && statSync(out).isDirectory());
  const ext = extname(out);
  if (!isDirectory && ext !== '' && ext !== '.c') {
    throw new CExportError(`--out ${out}: the C format writes NAME.c and NAME.h; give NAME.c, NAME (no extension) or a directory`);
  }
  const stem = isDirectory ? join(out, 'model') : ext === '.c' ? out.slice(0, -2) : out;
  if (!/^[A-Za-z0-9_.-]+$/.test(basename(stem))) throw new CExportError(`--out ${out}: the file name "${basename(stem)}" must be letters, digits, '_', '-' or '.' (the source #includes the header by name)`);
  const dir = dirname(`${stem}.c`);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CExportError(`--out ${out}: directory ${dir} does not exist`);
  return { source: `${stem}.c`, header: `${stem}.h` };
}

/** The build files' paths; refuses an example that would be the model's own source and files tinyquant did not write. */
function buildFilePaths(paths: COutputPaths): string[] {
  const dir = dirname(paths.source);
  if (basename(paths.source) === EXAMPLE_SOURCE) throw new CExportError(`--out ${paths.source} with --build-files: the example program is ${EXAMPLE_SOURCE}; give the model another name`);
  const files = ['CMakeLists.txt', basename(paths.source).replace(/\.c$/, '.mk'), EXAMPLE_SOURCE].map((f) => join(dir, f));
  for (const f of files) {
    if (existsSync(f) && !readFileSync(f, 'utf8').split('\n', 1)[0].includes(GENERATED_MARKER)) {
      throw new CExportError(`--build-files: ${f} exists and was not written by tinyquant; export into another directory`);
    }
  }
  return files;
}

/** The example's image and the engine's logits for it: the given one, else a fixed synthetic pattern (with a warning). */
async function exampleImage(ctx: ExportContext, model: IntegerModel, o: CExportOptions): Promise<ExampleImage> {
  const [c, h, w] = inputShape(model);
  let picked: Pick<ExampleImage, 'image' | 'what'> | null = null;
  try {
    picked = o.exampleImage ? await o.exampleImage() : null;
    if (picked && picked.image.length !== c * h * w) throw new Error(`an image of ${picked.image.length} bytes, the model reads ${c * h * w}`);
  } catch (e) {
    ctx.warn(`--build-files: the example embeds a synthetic image (${(e as Error).message})`);
    picked = null;
  }
  picked ??= { image: Uint8Array.from({ length: c * h * w }, (_, i) => (i * 37 + 11) & 255), what: 'a synthetic pattern, (37 i + 11) mod 256' };
  return { ...picked, logits: new IntegerEngine(model).inferBatch(picked.image, 1) };
}

export async function cExporter(ctx: ExportContext): Promise<ExportResult> {
  const paths = cOutputPaths(ctx.out);
  const o = ctx.c ?? {};
  const problem = dropInProblem(o); // before the (slow) lowering; generateC checks the same
  if (problem) throw new CExportError(problem);
  const buildPaths = o.buildFiles ? buildFilePaths(paths) : [];
  const model = await ctx.integerModel();
  const [headerName, imageLayout, arena] = [basename(paths.header), o.imageLayout ?? 'chw', o.arena ?? 'static'];
  const c = generateC(model, { headerName, imageLayout, name: o.name, arena, section: o.section, packActivations: o.packActivations, arenaBudget: o.arenaBudget });
  const encoder = new TextEncoder();
  const [source, header] = [encoder.encode(c.source), encoder.encode(c.header)];
  const files: ExportedFile[] = [
    { path: paths.source, bytes: source },
    { path: paths.header, bytes: header },
  ];
  const p = o.name ?? DEFAULT_PREFIX;
  if (o.buildFiles) {
    const example = await exampleImage(ctx, model, o);
    const project = projectFiles({ p, P: p.toUpperCase(), source: basename(paths.source), header: headerName, arena, imageLayout, shape: inputShape(model), example });
    for (const path of buildPaths) files.push({ path, bytes: encoder.encode(project[basename(path)]) });
  }
  const weightBytes = model.ops.reduce((s, op) => s + (op.kind === 'conv' ? packedBytes(op.weights.codes.length, op.weights.bits) : 0), 0);
  const where = arena === 'caller' ? "the caller's" : `static${o.section ? `, section ${o.section}` : ''}`;
  return {
    files,
    summary: [
      `${paths.source}: ${source.length} bytes, ${paths.header}: ${header.length} bytes; ${p}_infer(image, logits${arena === 'caller' ? ', arena' : ''}), ${imageLayout.toUpperCase()} image, C99, integers only`,
      `packed weights ${weightBytes} bytes (const), arena ${c.plan.bytes} bytes (${where}; live tensors need at least ${c.plan.lowerBound})`,
      `conv kernels: ${c.kernels.filter((k) => k?.kind === 'dsp').length} dual-MAC, ${c.kernels.filter((k) => k?.kind === 'triple').length} triple-MAC, ${c.kernels.filter((k) => k?.kind === 'depthwise').length} depthwise, ${c.kernels.filter((k) => k?.kind === 'generic').length} generic`,
      ...kernelLayers(model, c.kernels),
      ...c.arenaReport,
      ...c.notes,
      ...(o.buildFiles ? [`build files: ${buildPaths.join(', ')}`] : []),
      ...model.meta.notes,
    ],
  };
}
