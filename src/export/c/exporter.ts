/**
 * The `c` format of `tinyquant export` (listed in src/export/formats.ts): a C99 source and its
 * header. `--out` names the source (`dir/name.c`: the header is `dir/name.h`), a base name without
 * extension (`dir/name`: the same two files) or a directory (`dir/` or an existing directory:
 * `dir/model.c` and `dir/model.h`). The caller writes both files atomically.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { packedBytes } from '../bitpack.js';
import type { ExportContext, ExportResult } from '../formats.js';
import { CExportError, generateC } from './generate.js';

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

export async function cExporter(ctx: ExportContext): Promise<ExportResult> {
  const paths = cOutputPaths(ctx.out);
  const model = await ctx.integerModel();
  const c = generateC(model, { headerName: basename(paths.header) });
  const encoder = new TextEncoder();
  const [source, header] = [encoder.encode(c.source), encoder.encode(c.header)];
  const weightBytes = model.ops.reduce((s, op) => s + (op.kind === 'conv' ? packedBytes(op.weights.codes.length, op.weights.bits) : 0), 0);
  return {
    files: [
      { path: paths.source, bytes: source },
      { path: paths.header, bytes: header },
    ],
    summary: [
      `${paths.source}: ${source.length} bytes, ${paths.header}: ${header.length} bytes; tq_infer(image, logits), C99, integers only`,
      `packed weights ${weightBytes} bytes (const), arena ${c.plan.bytes} bytes (static; live tensors need at least ${c.plan.lowerBound})`,
      ...model.meta.notes,
    ],
  };
}
