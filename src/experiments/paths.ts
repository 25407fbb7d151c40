/**
 * Where things live relative to the installed package (never the current directory): the package
 * root, the shipped presets and models, and the shared data folder of the development layout.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { packageRoot } from '../package.js';

export const PACKAGE_PREFIX = 'package:';

/**
 * The npm package of the shipped float models (the repository's models/, packed on its own): at
 * about 1 MB they would double tinyquant's tarball, and only the presets that start from them need them.
 */
export const MODELS_PACKAGE = '@tinyquant/models';

/** `package:models/NAME`: the checkout's models/NAME, else NAME in the installed models package (else the former, missing). */
function packagePath(rel: string): string {
  const own = join(packageRoot(), rel);
  if (existsSync(own) || !rel.startsWith('models/')) return own;
  try {
    return createRequire(join(packageRoot(), 'package.json')).resolve(`${MODELS_PACKAGE}/${rel.slice('models/'.length)}`);
  } catch {
    return own;
  }
}

/**
 * A path written in a grid file: `package:REL` is relative to the package root (`package:models/`:
 * the shipped models, see packagePath), other relative paths to the directory of the file that names them.
 */
export function resolveGridPath(path: string, fileDir: string): string {
  if (path.startsWith(PACKAGE_PREFIX)) return packagePath(path.slice(PACKAGE_PREFIX.length));
  return isAbsolute(path) ? path : resolve(fileDir, path);
}

/** The presets shipped with the package. */
export function presetsDir(): string {
  return join(packageRoot(), 'presets');
}

/** A preset name (`kiots2023`) or a grid file path -> the file to read. */
export function gridFile(nameOrPath: string): string {
  if (/^[a-z0-9][a-z0-9-]*$/i.test(nameOrPath) && !existsSync(nameOrPath)) {
    const preset = join(presetsDir(), `${nameOrPath}.yaml`);
    if (existsSync(preset)) return preset;
  }
  return resolve(nameOrPath);
}

/**
 * The data folder to pass to runs when none is given: TINYQUANT_DATA is searched by the loader
 * itself, so only the development layout (`shared/data` beside the package) needs naming.
 */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.TINYQUANT_DATA) return undefined;
  const beside = resolve(packageRoot(), '..', 'shared', 'data');
  return existsSync(beside) ? beside : undefined;
}
