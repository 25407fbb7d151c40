#!/usr/bin/env node
/**
 * `npm run schemas`: writes the JSON Schemas of config and grid files (schemas/*.schema.json, what
 * editors check presets/*.yaml with) from the zod schemas tinyquant reads the files with. Needs
 * the build (dist/); test/schemas.test.ts fails when the committed files differ from these.
 */
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { jsonSchemaFiles } = await import(pathToFileURL(join(root, 'dist', 'src', 'json-schemas.js')).href);
const { writeFileAtomic } = await import(pathToFileURL(join(root, 'dist', 'src', 'io', 'atomic.js')).href);

for (const { path, text } of jsonSchemaFiles()) {
  const target = join(root, path);
  mkdirSync(dirname(target), { recursive: true });
  writeFileAtomic(target, text);
  console.log(`wrote ${path}`);
}
