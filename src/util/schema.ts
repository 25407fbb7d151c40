/**
 * What the zod schemas of config and grid files share: field schemas whose every problem reads
 * "must be <what>; got <the value>", and the reading of zod's issues as one line naming the source
 * and the field ("run.yaml: ewgs.delta must be a number in [0, 1]; got 2"). zod's own messages
 * ("Invalid input: expected number") name neither, and it reports every problem where a person
 * fixing a file wants the first one.
 */
import * as z from 'zod';
import { printable } from './text.js';

type Issue = z.core.$ZodIssue;
type RawIssue = z.core.$ZodRawIssue;

/** T with every property and element read-only, at every depth. */
export type Immutable<T> = T extends (...args: never[]) => unknown ? T : T extends object ? { readonly [K in keyof T]: Immutable<T[K]> } : T;

/** The value a schema gives once checked, read-only. */
export type Checked<S extends z.ZodType> = Immutable<z.output<S>>;

/** An error map for a schema: any problem reads "<must>; got <the value as JSON>". */
export function got(must: string): (issue: { readonly input?: unknown }) => string {
  return (issue) => `${must}; got ${JSON.stringify(issue.input)}`;
}

/** An integer in [lo, hi]; `label` goes before the message ("(height) must be ..."). */
export function integer(lo: number, hi?: number, label?: string) {
  const range = `[${lo}, ${hi ?? '...'}]`;
  return z.int({ error: got(`${label ? `(${label}) ` : ''}must be an integer in ${range}`) }).min(lo).max(hi ?? Number.MAX_SAFE_INTEGER);
}

/** A finite number in [lo, hi] (hi may be Infinity). */
export function numberIn(lo: number, hi: number) {
  const schema = z.number({ error: got(`must be a number in [${lo}, ${hi}]`) }).min(lo);
  // JSON Schema has no Infinity (JSON.stringify writes null): no maximum there instead.
  return Number.isFinite(hi) ? schema.max(hi) : schema;
}

export function positive() {
  return z.number({ error: got('must be a number > 0') }).positive();
}

/** A fraction in [0, 1). */
export function fraction() {
  return z.number({ error: got('must be a fraction in [0, 1)') }).min(0).lt(1);
}

export function nonEmptyString() {
  return z.string({ error: got('must be a non-empty string') }).min(1);
}

export function boolean() {
  return z.boolean({ error: got('must be true or false') });
}

export function oneOf<const T extends readonly string[]>(values: T) {
  return z.enum(values, { error: got(`must be one of ${values.join(', ')}`) });
}

/**
 * An object of these fields and no others. `notObject`: the problem when the value is no object;
 * `unknownField`: the problem with a field it does not have (default: it lists the known ones).
 */
export function fields<S extends z.core.$ZodLooseShape>(shape: S, notObject?: string | ((issue: RawIssue) => string), unknownField?: (key: string) => string) {
  const known = Object.keys(shape).join(', ');
  const unknown = unknownField ?? (() => `is not a known field (known: ${known})`);
  return z.strictObject(shape, {
    error: (issue) => (issue.code === 'unrecognized_keys' ? unknown(issue.keys[0]) : typeof notObject === 'function' ? notObject(issue) : notObject),
  });
}

/** How far into the value an issue points: an unknown field one below its object; a failed union as far as its best branch. */
function depth(issue: Issue): number {
  if (issue.code === 'unrecognized_keys') return issue.path.length + 1;
  if (issue.code === 'invalid_union') return issue.path.length + Math.max(0, ...issue.errors.map((branch) => depth(first(branch))));
  return issue.path.length;
}

/** The issue reported among several: an unknown field first (as the hand-written checks did), else the first. */
function first(issues: readonly Issue[]): Issue {
  return issues.find((i) => i.code === 'unrecognized_keys') ?? issues[0];
}

/**
 * The problem to report and where: in a union none of whose options fit, the option that got
 * furthest into the value (a list's bad element rather than "not a single value"); when none got
 * past the top, the union's own message.
 */
function reported(issues: readonly Issue[], at: readonly PropertyKey[] = []): { path: PropertyKey[]; message: string } {
  const issue = first(issues);
  const path = [...at, ...issue.path];
  if (issue.code === 'unrecognized_keys') return { path: [...path, issue.keys[0]], message: issue.message };
  if (issue.code === 'invalid_union') {
    const branches = issue.errors.filter((b) => b.length > 0);
    const best = branches.reduce<Issue[] | undefined>((a, b) => (depth(first(b)) > (a ? depth(first(a)) : 0) ? b : a), undefined);
    if (best) return reported(best, path);
  }
  // A record's key: the key schema's own message, at the key.
  if (issue.code === 'invalid_key' && issue.issues.length > 0) return { path, message: issue.issues[0].message };
  return { path, message: issue.message };
}

/** `imageSize[0]`, `ewgs.delta`, `paramGroups[1].match`. */
export function fieldName(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${printable(String(p))}`)).join('');
}

/**
 * `value` checked by `schema`, or `fail` with the first problem as one line:
 * "<source>: <field> <problem>" (`root` names the value itself; without it, "<source>: <problem>").
 */
export function checked<S extends z.ZodType>(schema: S, value: unknown, source: string, fail: (message: string) => never, root = ''): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const { path, message } = reported(result.error.issues);
  const field = fieldName(path) || root;
  return fail(`${source}: ${field ? `${field} ` : ''}${message}`);
}
