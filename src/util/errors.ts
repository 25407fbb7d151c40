/**
 * The classes of error a user can act on, and the exit code of each (the command line's contract,
 * documented in the README): how the command was called (usage, 2), what it was given to read
 * (input, 3: a file, a field of a config, the data), and everything else (runtime, 1). A parser's
 * or checker's own named error joins the input class by extending InputError.
 */

/** An error in how the command was called: an unknown option, a missing or malformed value. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Something the command was given is wrong: a file that is missing or broken, a field, the data. */
export class InputError extends Error {
  override name = 'InputError';
}

export type ErrorClass = 'usage' | 'input' | 'runtime';

export const EXIT_CODES: Readonly<Record<ErrorClass, number>> = { usage: 2, input: 3, runtime: 1 };
