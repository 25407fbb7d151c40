/**
 * `tinyquant/engine` is browser-safe: no module in its compiled import graph imports a Node.js
 * built-in (`node:*` or a bare builtin name) or any package (the WebAssembly kernels included); and
 * what it exports decodes a tqm from bytes and runs it exactly as the main entry's engine does, on
 * either backend.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import * as engineEntry from '../src/engine.js';
import { IntegerEngine, encodeTqm } from '../src/index.js';
import { irCases, randomImages } from './ir-models.js';

const distSrc = fileURLToPath(new URL('../src/', import.meta.url));
const BUILTINS = new Set(builtinModules);

interface Violation {
  readonly file: string;
  readonly specifier: string;
}

/** Every module reachable from `entry` by static or dynamic imports, and the imports it must not have. */
function walkImports(entry: string): { files: string[]; violations: Violation[] } {
  const seen = new Set<string>();
  const violations: Violation[] = [];
  const pending = [resolve(entry)];
  while (pending.length > 0) {
    const file = pending.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    for (const { fileName: specifier } of importedFiles) {
      if (specifier.startsWith('.')) pending.push(resolve(dirname(file), specifier));
      else violations.push({ file: relative(distSrc, file), specifier }); // node:*, a builtin or a package
    }
  }
  return { files: [...seen], violations };
}

describe('tinyquant/engine', () => {
  test('its compiled import graph has no Node.js built-in and no package', () => {
    const { files, violations } = walkImports(join(distSrc, 'engine.js'));
    assert.deepEqual(violations, []);
    assert.ok(files.some((f) => f.endsWith(join('export', 'engine.js'))) && files.some((f) => f.endsWith(join('export', 'tqm.js'))), files.join(', '));
    assert.ok(files.some((f) => f.endsWith(join('export', 'wasm', 'binary.js'))), `the WebAssembly kernels are in the graph: ${files.join(', ')}`);
  });

  test('the walk finds Node built-ins where they are (the main entry)', () => {
    const { violations } = walkImports(join(distSrc, 'index.js'));
    const builtins = violations.filter((v) => v.specifier.startsWith('node:') || BUILTINS.has(v.specifier));
    assert.ok(builtins.some((v) => v.specifier === 'node:fs'), JSON.stringify(violations.slice(0, 5)));
  });

  test('decodes a tqm from bytes and runs it with the main entry engine\'s logits', () => {
    for (const { name, model } of irCases(3)) {
      const bytes = encodeTqm(model);
      const decoded = engineEntry.decodeTqm(bytes);
      const images = randomImages(model, 4, 11);
      assert.deepEqual(new engineEntry.IntegerEngine(decoded).inferBatch(images, 4), new IntegerEngine(model).inferBatch(images, 4), name);
      assert.equal(engineEntry.modelReport(decoded).layers.length, decoded.ops.length, name);
    }
    assert.throws(() => engineEntry.decodeTqm(new Uint8Array(10)), engineEntry.TqmError);
  });

  test('createEngine runs a decoded tqm on the WebAssembly kernels with the same logits', async () => {
    for (const { name, model } of irCases(4)) {
      const engine = await engineEntry.createEngine(engineEntry.decodeTqm(encodeTqm(model)));
      assert.equal(engine.backend, 'wasm', name);
      const images = randomImages(model, 3, 12);
      assert.deepEqual(engine.inferBatch(images, 3), new IntegerEngine(model).inferBatch(images, 3), name);
    }
  });
});
