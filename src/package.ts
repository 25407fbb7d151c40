/** The installed package: its root directory (holding tinyquant's package.json) and its version. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Manifest {
  readonly root: string;
  readonly version: string;
}

/** Found upward from this module, so it works from src/ and dist/src/ alike. */
function findManifest(): Manifest {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'tinyquant') return { root: dir, version: pkg.version ?? '0.0.0' };
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`cannot find tinyquant's package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

const MANIFEST = findManifest();

/** The directory holding tinyquant's package.json (shipped presets and models, the native addon). */
export function packageRoot(): string {
  return MANIFEST.root;
}

export const TINYQUANT_VERSION = MANIFEST.version;
