/**
 * The JSON Schemas committed under schemas/ for editors (yaml-language-server in VS Code reads them
 * through the `# yaml-language-server: $schema=...` line of presets/*.yaml): generated from the zod
 * schemas that tinyquant checks the files with, by `npm run schemas`; a test keeps them equal.
 */
import { gridJsonSchema } from './experiments/grid-schema.js';
import { trainConfigJsonSchema } from './train/config-schema.js';

/** Each schema file, relative to the package root, with its text. */
export function jsonSchemaFiles(): { readonly path: string; readonly text: string }[] {
  return [
    { path: 'schemas/train-config.schema.json', text: jsonText(trainConfigJsonSchema()) },
    { path: 'schemas/grid.schema.json', text: jsonText(gridJsonSchema()) },
  ];
}

function jsonText(schema: unknown): string {
  return `${JSON.stringify(schema, null, 2)}\n`;
}
