/**
 * Training configuration: one plain object (from flags, or a JSON/YAML file) checked against the
 * schema of config-schema.ts; an error names the source, the bad field and the allowed values.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isNode, isScalar, parseDocument, visit } from 'yaml';
import { defaultNormalization } from '../data/index.js';
import { DuplicateKeyError, parseJsonStrict } from '../util/json.js';
import { checked } from '../util/schema.js';
import { hasControlCharacters, printable } from '../util/text.js';
import { CONFIG_INPUT, DEFAULT_CONFIG, type TrainConfig } from './config-schema.js';

export { CONFIG_FIELDS, DEFAULT_CONFIG, type DeployConfig, type EwgsConfig, type ParamGroupConfig, type TrainConfig } from './config-schema.js';

export class ConfigError extends Error {}

type Raw = Record<string, unknown>;

function fail(source: string, field: string, message: string): never {
  throw new ConfigError(`${source}: ${field} ${message}`);
}

function isObject(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The fields `raw` gives, checked (fields given as undefined count as not given). */
function givenFields(raw: unknown, source: string): Raw {
  const given: Raw = checked(CONFIG_INPUT, raw, source, (message) => {
    throw new ConfigError(message);
  });
  return Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
}

/** Check a raw object field by field and fill in defaults. `source` names it in errors. */
export function resolveConfig(raw: unknown, source = 'config', base: TrainConfig = DEFAULT_CONFIG): TrainConfig {
  const given = givenFields(raw, source);
  // A base from an older run lacks the fields added since: they take their defaults.
  const out: Record<string, unknown> = { ...DEFAULT_CONFIG, ...base, ...given };
  const config = out as unknown as TrainConfig;
  // Over the defaults, the normalization follows the dataset and its channel count.
  if (given.normalization === undefined && base === DEFAULT_CONFIG) {
    out.normalization = defaultNormalization(config.dataset, config.channels ?? (config.dataset === 'mnist' || config.dataset === 'fashion-mnist' ? 1 : 3));
  }
  // Quantized runs: 4 bits unless given; activations follow the weights unless given.
  if (config.method !== 'float') {
    if (given.wbits === undefined && config.wbits === 32) out.wbits = 4;
    if (given.abits === undefined && config.abits === 32) out.abits = out.wbits;
  }
  // A cosine schedule without its own length follows the run's epochs.
  if (config.schedule.kind === 'cosine' && (given.schedule === undefined || config.schedule.epochs === 0)) {
    out.schedule = { ...config.schedule, epochs: config.epochs };
  }
  checkCombination(out as unknown as TrainConfig, source);
  return out as unknown as TrainConfig;
}

/** Epochs a run of `c` trains: its `epochs`, then a quantized run's final phase. */
export function totalEpochs(c: TrainConfig): number {
  return c.epochs + (c.method === 'float' ? 0 : c.deploy.finalEpochs);
}

function checkCombination(c: TrainConfig, source: string): void {
  if (c.resize && !c.imageSize) fail(source, 'resize', 'needs imageSize [height, width], the size to resize to');
  if (c.method === 'float') return;
  if (c.wbits >= 32 || c.abits >= 32) fail(source, 'wbits/abits', `must be set below 32 for method ${c.method}`);
}

/** The config fields that are paths. */
export const PATH_FIELDS = ['dataDir', 'dataPath', 'init'] as const;

/** Fields that may differ between attempts of one run (where the data is, how it is loaded). */
const INCIDENTAL_FIELDS: readonly string[] = ['dataDir', 'workers'];

/**
 * The fields in which two configs of one run differ, ignoring incidental ones; paths compare as the
 * files they name (relative ones against `dir`, the directory the run was started in), so a config
 * read back from a run directory (paths made absolute) equals the one the run was given.
 */
export function configDifferences(a: TrainConfig, b: TrainConfig, dir = process.cwd()): string[] {
  const [x, y] = [a, b] as unknown as Record<string, unknown>[];
  const same = (k: string): boolean =>
    (PATH_FIELDS as readonly string[]).includes(k) && typeof x[k] === 'string' && typeof y[k] === 'string'
      ? resolve(dir, x[k] as string) === resolve(dir, y[k] as string)
      : JSON.stringify(x[k]) === JSON.stringify(y[k]);
  return [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => !INCIDENTAL_FIELDS.includes(k) && !same(k));
}

/** The config as a run directory's config.json keeps it: paths absolute, so that reading the file back finds the same files. */
export function configForFile(config: TrainConfig): TrainConfig {
  const out: Record<string, unknown> = { ...config };
  for (const k of PATH_FIELDS) if (typeof out[k] === 'string') out[k] = resolve(out[k] as string);
  return out as unknown as TrainConfig;
}

/** Relative paths of a config file's path fields, resolved against the file's directory. */
export function resolveConfigPaths(raw: Raw, fileDir: string, resolvePath = (path: string, dir: string): string => resolve(dir, path)): Raw {
  const out = { ...raw };
  for (const key of PATH_FIELDS) {
    if (typeof out[key] === 'string' && out[key] !== '') out[key] = resolvePath(out[key] as string, fileDir);
  }
  return out;
}

/** Read a JSON or YAML config file (by extension; YAML is a superset of JSON). */
export function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config ${path}: ${(e as Error).message}`);
  }
  const value = path.endsWith('.json') ? parseJsonConfig(text, path) : parseYamlConfig(text, path);
  checkKeyNames(value, path, '');
  return value;
}

function parseJsonConfig(text: string, path: string): unknown {
  try {
    return parseJsonStrict(text);
  } catch (e) {
    throw new ConfigError(`${path}: ${e instanceof DuplicateKeyError ? e.message : `not valid JSON: ${printable((e as Error).message)}`}`);
  }
}

/**
 * Strict YAML: a warning (an unknown tag or directive) is an error too, keys must be plain scalars
 * (the parser would turn a mapping key into its text), repeated keys are refused (the parser's
 * default), and aliases cannot expand beyond the parser's limit.
 */
function parseYamlConfig(text: string, path: string): unknown {
  const fail = (message: string): never => {
    // the parser's messages continue with a quote of the line: the first line says it all
    throw new ConfigError(`${path}: not valid YAML: ${message.split('\n')[0]}`);
  };
  const doc = parseDocument(text);
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) fail(problem.message);
  visit(doc, {
    Pair(_, pair) {
      if (!isScalar(pair.key)) fail(`a key${isNode(pair.key) ? ` at line ${lineOf(text, pair.key.range?.[0])}` : ''} is a list or mapping, not a name`);
    },
  });
  try {
    return doc.toJS();
  } catch (e) {
    return fail((e as Error).message);
  }
}

function lineOf(text: string, offset = 0): number {
  return text.slice(0, offset).split('\n').length;
}

/** Keys with line breaks or control characters are refused: no config field has them, and errors quote keys. */
function checkKeyNames(value: unknown, path: string, at: string, depth = 0): void {
  if (depth > 64) throw new ConfigError(`${path}: ${at || 'the top level'} is nested more than 64 levels deep`);
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkKeyNames(item, path, `${at}[${i}]`, depth + 1));
  } else if (isObject(value)) {
    for (const [key, item] of Object.entries(value)) {
      if (hasControlCharacters(key)) throw new ConfigError(`${path}: key ${JSON.stringify(key)}${at ? ` in ${at}` : ''} holds a line break or control character`);
      checkKeyNames(item, path, at ? `${at}.${key}` : key, depth + 1);
    }
  }
}
