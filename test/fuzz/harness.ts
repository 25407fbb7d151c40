/**
 * The fuzz harness: runs a parser's property (fast-check) over generated and mutated inputs and
 * checks each outcome: a valid result, or one of the parser's own named errors with no internal
 * error (TypeError, RangeError, ...) anywhere in its cause chain; within a time limit per input and
 * with bounded memory. Properties run on a worker thread so that a parser stuck in a synchronous
 * loop can be stopped: the host thread gets a heartbeat with each input and terminates the worker
 * when one takes too long, reporting that input (fast-check's own timeout cannot interrupt
 * synchronous code).
 *
 * Used by test/fuzz.test.ts (a short budget in `npm test`) and bench/fuzz.ts (`npm run fuzz`).
 */
import fc from 'fast-check';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

type ErrorClass = abstract new (...args: never[]) => Error;

/** A parser under fuzzing: inputs, what running one means, and the errors it may throw. */
export interface FuzzTarget<T = unknown> {
  readonly name: string;
  readonly inputs: fc.Arbitrary<T>;
  /** Parses the input and checks the result is valid (throws an AssertionError if not). */
  run(input: T): unknown;
  /** The named errors a bad input may produce. */
  readonly errors: readonly ErrorClass[];
  /**
   * Third-party decoders whose own TypeErrors on damaged data the parser turns into its named error:
   * an internal error in the cause chain is accepted when its first stack frame is in one of these.
   */
  readonly libraries?: RegExp;
}

/** Errors that mean the parser itself went wrong, wherever they appear in a cause chain. */
const INTERNAL_ERRORS: readonly ErrorClass[] = [TypeError, RangeError, ReferenceError, EvalError, URIError];

export interface GuardLimits {
  /** An input taking longer than this fails the property. */
  perInputMs: number;
  /** Growth of heap + external memory (typed arrays) during one input that fails the property. */
  memoryBytes: number;
}

export const DEFAULT_LIMITS: GuardLimits = { perInputMs: 2000, memoryBytes: 512 * 2 ** 20 };

/** Whether the first stack frame outside Node's own modules (a Buffer read, say) is in one of `libraries`. */
function thrownInside(error: Error, libraries: RegExp | undefined): boolean {
  const frames = error.stack?.split('\n').filter((line) => line.trimStart().startsWith('at ')) ?? [];
  const first = frames.find((line) => !line.includes('node:'));
  return libraries !== undefined && first !== undefined && libraries.test(first);
}

/** Throws unless `error` is one of `allowed` and nothing in its cause chain is an internal error (but a library's). */
export function checkNamedError(error: unknown, allowed: readonly ErrorClass[], libraries?: RegExp): void {
  if (!allowed.some((type) => error instanceof type)) {
    throw new Error(`threw ${describeError(error)}, not one of ${allowed.map((t) => t.name).join(', ')}`, { cause: error });
  }
  for (let link: unknown = error, depth = 0; link instanceof Error && depth < 20; link = link.cause, depth++) {
    if (INTERNAL_ERRORS.some((type) => link instanceof type) && !thrownInside(link, libraries)) {
      throw new Error(`threw ${describeError(error)}, which wraps an internal ${describeError(link)}`, { cause: error });
    }
  }
  const message = (error as Error).message;
  if (!message || message.includes('\n')) throw new Error(`threw ${describeError(error)}: the message is not one line`);
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.constructor.name}: ${error.message.slice(0, 300)}` : String(error);
}

let collectGarbage: (() => void) | undefined;

/** V8's gc(), made available at run time (so that a worker needs no --expose-gc flag). */
function gc(): void {
  if (!collectGarbage) {
    setFlagsFromString('--expose-gc');
    collectGarbage = runInNewContext('gc') as () => void;
  }
  collectGarbage();
}

function memoryInUse(): number {
  const { heapUsed, external } = process.memoryUsage();
  return heapUsed + external;
}

/**
 * Tracks memory between inputs: the growth over the level after the last collection. Garbage of
 * small inputs is collected long before it reaches the limit (V8 collects on external growth).
 */
class MemoryGuard {
  #base: number;

  constructor(readonly limit: number) {
    gc();
    this.#base = memoryInUse();
  }

  check(): void {
    const used = memoryInUse();
    if (used - this.#base > this.limit) {
      throw new Error(`memory grew by ${Math.round((used - this.#base) / 2 ** 20)} MiB on one input (limit ${Math.round(this.limit / 2 ** 20)} MiB)`);
    }
    if (used - this.#base > this.limit / 4) {
      gc();
      this.#base = memoryInUse();
    }
  }
}

/** Runs one input and checks its outcome and guards; throws to fail the property, else returns the milliseconds it took. */
export async function checkInput<T>(target: FuzzTarget<T>, input: T, limits: GuardLimits, memory: MemoryGuard): Promise<number> {
  const started = performance.now();
  try {
    await target.run(input);
  } catch (error) {
    if ((error as Error)?.name === 'AssertionError') throw error;
    checkNamedError(error, target.errors, target.libraries);
  }
  const ms = performance.now() - started;
  if (ms > limits.perInputMs) throw new Error(`took ${Math.round(ms)} ms (limit ${limits.perInputMs} ms)`);
  memory.check();
  return ms;
}

export interface FuzzFailure {
  seed: number;
  /** fast-check's replay path (with the seed), or null for a hang. */
  path: string | null;
  error: string;
  /** The (shrunk) counterexample, as text. */
  counterexample: string;
}

export interface FuzzReport {
  name: string;
  /** Inputs run, shrinking included. */
  inputs: number;
  /** The longest time an input that passed took, in ms (after a hang: the hang limit). */
  slowestMs: number;
  failures: FuzzFailure[];
}

export interface FuzzRunOptions {
  seed: number;
  numRuns: number;
  /** Stop after this long (the runs done so far count as passed). */
  timeLimitMs?: number;
  limits?: GuardLimits;
}

/** One fast-check run of a target's property in this thread; `onInput` sees each input first. */
export async function runTarget<T>(target: FuzzTarget<T>, options: FuzzRunOptions, onInput?: (input: T) => void): Promise<FuzzReport> {
  const limits = options.limits ?? DEFAULT_LIMITS;
  const memory = new MemoryGuard(limits.memoryBytes);
  let inputs = 0;
  let slowestMs = 0;
  const property = fc.asyncProperty(target.inputs, async (input) => {
    inputs++;
    onInput?.(input);
    slowestMs = Math.max(slowestMs, await checkInput(target, input, limits, memory));
  });
  const details = await fc.check(property, {
    seed: options.seed,
    numRuns: options.numRuns,
    ...(options.timeLimitMs === undefined ? {} : { interruptAfterTimeLimit: options.timeLimitMs }),
  });
  const failures: FuzzFailure[] = [];
  if (details.failed && !details.interrupted) {
    failures.push({
      seed: details.seed,
      path: details.counterexamplePath,
      error: describeError(details.errorInstance),
      counterexample: details.counterexample ? describeInput(details.counterexample[0]) : '(none)',
    });
  }
  return { name: target.name, inputs, slowestMs, failures };
}

/** An input as JSON, byte arrays in base64, cut to a readable length. */
export function describeInput(input: unknown, limit = 4000): string {
  const text =
    JSON.stringify(input, (_, value: unknown) => {
      if (value instanceof Uint8Array) return { base64: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
      return typeof value === 'bigint' ? { bigint: String(value) } : value;
    }) ?? String(input);
  return text.length > limit ? `${text.slice(0, limit)}... (${text.length} characters)` : text;
}

/** Where the targets write the files of the parsers that read files (one folder per thread). */
export function scratchRoot(): string {
  return join(tmpdir(), `tq-fuzz-${process.pid}`);
}

// ---- the worker thread and its host --------------------------------------------------------------

interface WorkerRequest {
  target: string;
  options: FuzzRunOptions;
}

type WorkerMessage =
  | { kind: 'input'; input: unknown; index: number }
  | { kind: 'done'; report: FuzzReport }
  | { kind: 'crash'; error: string };

/** How long an input may run before the host declares a hang and stops the worker. */
export const HANG_MS = 20_000;
/** How long a new worker may take to load the parsers and send its first input. */
const STARTUP_MS = 60_000;

/** Runs targets on a worker thread, one at a time, restarting it after a hang. */
export class FuzzHost {
  #worker: Worker | null = null;

  constructor(readonly hangMs = HANG_MS) {}

  async run(target: string, options: FuzzRunOptions): Promise<FuzzReport> {
    const worker = (this.#worker ??= new Worker(new URL(import.meta.url), { workerData: { fuzzWorker: true } }));
    return new Promise<FuzzReport>((resolve, reject) => {
      let last: { input: unknown; index: number } = { input: '(none yet)', index: 0 };
      let watchdog: NodeJS.Timeout;
      const finish = (result: () => void): void => {
        clearTimeout(watchdog);
        worker.off('message', onMessage);
        worker.off('error', onError);
        result();
      };
      const onHang = (): void => {
        finish(() => {
          this.#worker = null;
          void worker.terminate();
          resolve({
            name: target,
            inputs: last.index,
            slowestMs: this.hangMs,
            failures: [{ seed: options.seed, path: null, error: `no result after ${this.hangMs} ms: a hang`, counterexample: describeInput(last.input, Infinity) }],
          });
        });
      };
      const onMessage = (message: WorkerMessage): void => {
        if (message.kind === 'input') {
          last = message;
          clearTimeout(watchdog);
          watchdog = setTimeout(onHang, this.hangMs);
        } else if (message.kind === 'done') finish(() => resolve(message.report));
        else finish(() => reject(new Error(`fuzz worker: ${message.error}`)));
      };
      const onError = (error: Error): void => {
        this.#worker = null;
        finish(() => reject(error));
      };
      watchdog = setTimeout(onHang, Math.max(this.hangMs, STARTUP_MS)); // until the first input: the worker's start
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.postMessage({ target, options } satisfies WorkerRequest);
    });
  }

  async close(): Promise<void> {
    await this.#worker?.terminate();
    this.#worker = null;
    rmSync(scratchRoot(), { recursive: true, force: true });
  }
}

/** A target that never returns, for the harness's own test (the host must stop it and report its input). */
export const HANG_TARGET: FuzzTarget<number> = {
  name: 'harness self-test: a hang',
  inputs: fc.constant(7),
  errors: [],
  run() {
    for (;;);
  },
};

async function serveRequests(): Promise<void> {
  const { FUZZ_TARGETS } = await import('./targets.js');
  const port = parentPort!;
  port.on('message', ({ target: name, options }: WorkerRequest) => {
    const target = [...FUZZ_TARGETS, HANG_TARGET].find((t) => t.name === name) as FuzzTarget | undefined;
    if (!target) {
      port.postMessage({ kind: 'crash', error: `no fuzz target '${name}'` } satisfies WorkerMessage);
      return;
    }
    let index = 0;
    // each input goes to the host before it runs, so that a hang is reported with its input
    const heartbeat = (input: unknown): void => port.postMessage({ kind: 'input', index: ++index, input } satisfies WorkerMessage);
    runTarget(target, options, heartbeat).then(
      (report) => port.postMessage({ kind: 'done', report } satisfies WorkerMessage),
      (error: Error) => port.postMessage({ kind: 'crash', error: error.stack ?? String(error) } satisfies WorkerMessage),
    );
  });
}

// node --test runs every file below test/, this one too: it serves only when started as the fuzz worker.
if (!isMainThread && (workerData as { fuzzWorker?: boolean } | null)?.fuzzWorker) void serveRequests();
