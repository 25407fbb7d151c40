/**
 * Backend selection. `TINYQUANT_BACKEND=js|native` chooses; without it the native backend is used
 * when its addon loads, and the pure-TypeScript one otherwise, which is said once on stderr with
 * the command that gets the native one.
 */
import type { Backend, BackendName } from './backend.js';
import { JsBackend } from './js/index.js';
import { loadNativeBackend, nativeUnavailable } from './native/index.js';

let current: Backend | null = null;

/** Backend threads from TINYQUANT_THREADS; 0 (unset) means all cores. */
export function defaultThreads(): number {
  const env = process.env.TINYQUANT_THREADS;
  if (env === undefined || env === '') return 0;
  const n = Number(env);
  if (!Number.isInteger(n) || n < 1) throw new Error(`TINYQUANT_THREADS must be a positive integer, got "${env}"`);
  return n;
}

/** Create a backend by name. `threads` 0 means the default (TINYQUANT_THREADS, else all cores). */
export function createBackend(name: BackendName, threads = defaultThreads()): Backend {
  if (name === 'js') return new JsBackend();
  const native = loadNativeBackend(threads);
  if (!native) {
    const why = nativeUnavailable();
    throw new Error(`the native backend is not available: ${why?.reason}; to get it: ${why?.fix}`);
  }
  return native;
}

function selectDefault(): Backend {
  const env = process.env.TINYQUANT_BACKEND;
  if (env !== undefined && env !== '') {
    if (env !== 'js' && env !== 'native') throw new Error(`TINYQUANT_BACKEND must be "js" or "native", got "${env}"`);
    return createBackend(env);
  }
  return loadNativeBackend(defaultThreads()) ?? fallBackToJs();
}

/** Set in the environment once said, so that worker processes of the same command do not say it again. */
const FALLBACK_SAID = 'TINYQUANT_JS_FALLBACK_SAID';

function fallBackToJs(): JsBackend {
  const why = nativeUnavailable();
  if (why && process.env[FALLBACK_SAID] !== '1') {
    process.env[FALLBACK_SAID] = '1';
    process.stderr.write(`tinyquant: using the js backend (pure TypeScript, about 75x slower to train): ${why.reason}. To get the native backend: ${why.fix}\n`);
  }
  return new JsBackend();
}

export function getBackend(): Backend {
  current ??= selectDefault();
  return current;
}

/** Switch the process-wide backend. Tensors of the previous backend must not be used afterwards. */
export function setBackend(backend: Backend | BackendName): Backend {
  current = typeof backend === 'string' ? createBackend(backend) : backend;
  return current;
}

/** Run fn with another backend active, restoring the previous one afterwards. */
export function withBackend<T>(backend: Backend, fn: () => T): T {
  const before = current;
  current = backend;
  try {
    return fn();
  } finally {
    current = before;
  }
}
