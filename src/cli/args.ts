/**
 * Command-line options, declared once per command (name, type, default, value, description): the
 * parser (node:util parseArgs) and the help text are both made from that declaration, so the help
 * cannot leave out an option the parser accepts. Typed access to the values with clear errors.
 */
import { parseArgs } from 'node:util';
import { UsageError } from '../util/errors.js';

export { UsageError } from '../util/errors.js';

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  readonly multiple?: boolean;
  /** Filled in by the parser when the option is absent, and shown in the help. */
  readonly default?: string;
  /** The value's placeholder in the help (FILE, N, js|native); string options only. */
  readonly value?: string;
  readonly description: string;
}

export type Options = Readonly<Record<string, OptionSpec>>;

/** A command: how it is called, what it does, and its options. */
export interface CommandSpec {
  /** As typed after `tinyquant`: 'train', 'bench train'. */
  readonly name: string;
  /** One line, for the command list. */
  readonly summary: string;
  /** What follows the name in the usage line ('GRID [options]'). */
  readonly synopsis: string;
  /** Lines printed between the usage line and the options. */
  readonly about?: string;
  readonly options: Options;
}

/** Accepted by every command. */
export const COMMON_OPTIONS: Options = {
  help: { type: 'boolean', short: 'h', description: 'print this help' },
  debug: { type: 'boolean', description: 'print the stack trace of an error too (as TINYQUANT_DEBUG=1)' },
};

export interface ParsedArgs {
  readonly values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  readonly positionals: string[];
}

/** Every option a command accepts: its own and the common ones. */
export function commandOptions(spec: CommandSpec): Options {
  return { ...spec.options, ...COMMON_OPTIONS };
}

export function parse(spec: CommandSpec, argv: string[]): ParsedArgs {
  const options = Object.fromEntries(
    Object.entries(commandOptions(spec)).map(([name, o]) => [
      name,
      { type: o.type, ...(o.short && { short: o.short }), ...(o.multiple && { multiple: true }), ...(o.default !== undefined && { default: o.default }) },
    ]),
  );
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values, positionals };
  } catch (e) {
    // Only what parseArgs says about argv is the user's doing; anything else is a bug here.
    if (!String((e as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')) throw e;
    // Node's text for an unknown option goes on to explain '--'; its first sentence is the point.
    const message = (e as Error).message.split('\n')[0].replace(/^(Unknown option '[^']*')\..*$/, '$1');
    throw new UsageError(`${spec.name}: ${message} (tinyquant help ${spec.name} lists the options)`);
  }
}

function optionLabel(name: string, o: OptionSpec): string {
  const short = o.short ? `-${o.short}, ` : '';
  return `${short}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`;
}

/** Labels longer than this put their description on the next line. */
const LABEL_WIDTH = 26;

/** The help text: usage line, description, then every option with its value, meaning and default. */
export function helpText(spec: CommandSpec): string {
  const lines = Object.entries(commandOptions(spec)).map(([name, o]) => {
    const label = optionLabel(name, o);
    const text = `${o.description}${o.default !== undefined ? ` (default ${o.default})` : ''}`;
    return label.length < LABEL_WIDTH ? `  ${label.padEnd(LABEL_WIDTH)}${text}` : `  ${label}\n  ${' '.repeat(LABEL_WIDTH)}${text}`;
  });
  return [`usage: tinyquant ${spec.name} ${spec.synopsis}`, '', ...(spec.about ? [spec.about, ''] : []), 'options:', ...lines].join('\n');
}

/** The one-line error for a positional argument the command does not take. */
export function unexpectedArgument(spec: CommandSpec, arg: string): UsageError {
  return new UsageError(`${spec.name}: unexpected argument "${arg}" (usage: tinyquant ${spec.name} ${spec.synopsis})`);
}

export function str(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function flag(args: ParsedArgs, name: string): boolean {
  return args.values[name] === true;
}

/**
 * A flag's text as a number when it is written in decimal (`4`, `-0.5`, `1e-3`); null otherwise.
 * Number() alone would also read `0x10`, `0b1`, `''` and `' 4 '`, none of which a user means as a number.
 */
export function decimalNumber(text: string): number | null {
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(text) ? Number(text) : null;
}

export interface NumberOptions {
  readonly integer?: boolean;
  readonly min?: number;
  /** The value when the option is absent; without it (and without a declared default) it is required. */
  readonly fallback?: number;
}

/** A numeric option; `integer` demands an integer; `min` a lower bound. */
export function num(args: ParsedArgs, name: string, opts: NumberOptions = {}): number {
  const raw = str(args, name);
  if (raw === undefined) {
    if (opts.fallback === undefined) throw new UsageError(`--${name} is required`);
    return opts.fallback;
  }
  const v = decimalNumber(raw) ?? NaN;
  if (!Number.isFinite(v) || (opts.integer && !Number.isInteger(v)) || (opts.min !== undefined && v < opts.min)) {
    const what = opts.integer ? 'an integer' : 'a number';
    const bound = opts.min !== undefined ? ` >= ${opts.min}` : '';
    throw new UsageError(`--${name} must be ${what}${bound}, got "${raw}"`);
  }
  return v;
}

/** A positive integer option, or undefined when it is not given. */
export function optionalInt(args: ParsedArgs, name: string): number | undefined {
  return str(args, name) === undefined ? undefined : num(args, name, { integer: true, min: 1 });
}

/** One of `allowed`; `fallback` when absent (options with a declared default are never absent). */
export function oneOf<T extends string>(args: ParsedArgs, name: string, allowed: readonly T[], fallback?: T): T {
  const raw = str(args, name);
  if (raw === undefined) {
    if (fallback === undefined) throw new UsageError(`--${name} is required (one of ${allowed.join(', ')})`);
    return fallback;
  }
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new UsageError(`--${name} must be one of ${allowed.join(', ')}; got "${raw}"`);
  }
  return raw as T;
}

/** Parse a command's arguments; on --help print its help and return null. */
export function parseOrHelp(spec: CommandSpec, argv: string[]): ParsedArgs | null {
  const args = parse(spec, argv);
  if (flag(args, 'help')) {
    console.log(helpText(spec));
    return null;
  }
  return args;
}
