/**
 * Which class an error the command line caught belongs to (src/util/errors.ts: usage 2, input 3,
 * runtime 1), and how it is printed: one line, the stack only with --debug or TINYQUANT_DEBUG=1.
 * The named errors of the readers and checkers are input errors here by their type; a plain Error
 * is one when it came out of a step that reads what the command was given (readingInput).
 */
import { DataPreparationError } from '../experiments/executor.js';
import { ResultsError } from '../experiments/results.js';
import { StartError } from '../experiments/starts.js';
import { ExportInputError } from '../export/checkpoint-model.js';
import { LoweringError } from '../export/requant.js';
import { TqmError } from '../export/tqm.js';
import { IntegerModelError } from '../export/validate.js';
import { GraphError } from '../graph/graph.js';
import { TensorFileError } from '../io/bytes.js';
import { ConfigError } from '../train/config.js';
import { EXIT_CODES, type ErrorClass, InputError, UsageError } from '../util/errors.js';

const INPUT_ERRORS: readonly (abstract new (...args: never[]) => Error)[] = [
  InputError,
  ConfigError,
  TensorFileError,
  TqmError,
  IntegerModelError,
  LoweringError,
  GraphError,
  ExportInputError,
  ResultsError,
  StartError,
  DataPreparationError,
];

/** File-system errors about a path the user gave (missing, a directory, not readable); ENOSPC or EIO are runtime. */
const PATH_ERROR_CODES = new Set(['ENOENT', 'ENOTDIR', 'EISDIR', 'EACCES', 'EPERM', 'ELOOP', 'ENAMETOOLONG', 'EROFS']);

/** Errors marked by readingInput (kept as they are, so their type, message and stack stay). */
const markedInput = new WeakSet<object>();

/** Programming errors stay runtime errors even when reading input raised them. */
function isBug(e: unknown): boolean {
  return e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError;
}

export function errorClass(e: unknown): ErrorClass {
  if (e instanceof UsageError) return 'usage';
  if (typeof e === 'object' && e !== null && markedInput.has(e)) return 'input';
  if (INPUT_ERRORS.some((type) => e instanceof type)) return 'input';
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && PATH_ERROR_CODES.has(code) && typeof (e as { path?: unknown }).path === 'string') return 'input';
  return 'runtime';
}

export function exitCode(e: unknown): number {
  return EXIT_CODES[errorClass(e)];
}

function markAsInput(e: unknown): unknown {
  if (e instanceof Error && !isBug(e) && !(e instanceof UsageError)) markedInput.add(e);
  return e;
}

/**
 * Run a step that reads what the command was given (a file, a config, a dataset): an error from it
 * is an input error unless it is a bug (TypeError, RangeError, ReferenceError) or a usage error.
 */
export function readingInput<T>(read: () => T): T {
  try {
    const result = read();
    if (result instanceof Promise) return result.catch((e: unknown) => Promise.reject(markAsInput(e))) as T;
    return result;
  } catch (e) {
    throw markAsInput(e);
  }
}

/** The line printed for an error: its message, or with `debug` its stack (and its cause's). */
export function errorLine(e: unknown, debug: boolean): string {
  const err = e instanceof Error ? e : new Error(String(e));
  if (!debug || err instanceof UsageError) return `tinyquant: ${err.message}`;
  const cause = err.cause instanceof Error ? `\ncaused by: ${err.cause.stack ?? err.cause.message}` : '';
  return `tinyquant: ${err.stack ?? err.message}${cause}`;
}
