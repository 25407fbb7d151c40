/**
 * The native-versus-js test pair (no tests here): one native backend for the process, and `Twin`,
 * which runs an op on both backends with the same inputs and compares.
 */
import assert from 'node:assert/strict';
import type { Shape } from '../src/backend/backend.js';
import { numel } from '../src/backend/backend.js';
import { JsBackend, type JsBuf } from '../src/backend/js/index.js';
import { type NativeBackend, type NativeBuf, loadNativeBackend, nativeUnavailable } from '../src/backend/native/index.js';
import { Rng } from '../src/util/rng.js';
import { assertClose as assertCloseTol, conv } from './backend-helpers.js';

/** The tolerance of native-versus-js comparisons (relative to the largest reference value). */
export const TOL = 1e-4;
export const native = loadNativeBackend(0);
/** For `describe(..., { skip })`: the reason when the addon is not built. */
export const skip = native === null ? `native addon not available: ${nativeUnavailable()?.reason}` : false;

export interface Pair {
  readonly js: JsBuf;
  readonly nat: NativeBuf;
}

export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, tol = TOL): void {
  assertCloseTol(actual, expected, tol, what);
}

/**
 * One test's pair of backends with random inputs on both. `done` checks that the test freed
 * everything it allocated on either side.
 */
export class Twin {
  readonly js = new JsBackend();
  readonly nat: NativeBackend;
  readonly rng: Rng;
  readonly #startBytes: number;

  constructor(seed: number, nat: NativeBackend = native!) {
    this.nat = nat;
    this.rng = new Rng(seed);
    this.#startBytes = nat.liveBytes();
  }

  random(shape: Shape, scale = 1, shift = 0): Float32Array {
    return Float32Array.from({ length: numel(shape) }, () => this.rng.normal() * scale + shift);
  }

  pair(values: Float32Array, shape: Shape): Pair {
    return { js: this.js.upload(values, shape), nat: this.nat.upload(values, shape) };
  }

  randomPair(shape: Shape, scale = 1, shift = 0): Pair {
    return this.pair(this.random(shape, scale, shift), shape);
  }

  /**
   * Random values on both sides, the native one in the blocked layout a convolution produces
   * (see `blockedPairOf`).
   */
  blockedPair(shape: Shape, scale = 1, shift = 0): Pair {
    return this.blockedPairOf(this.random(shape, scale, shift), shape);
  }

  /**
   * `values` on both sides, the native one in the blocked layout a convolution produces (made by
   * a 1x1 identity convolution, which copies exactly, except that -0 becomes +0).
   */
  blockedPairOf(values: Float32Array, shape: Shape): Pair {
    const c = shape[1];
    const eye = new Float32Array(c * c);
    for (let i = 0; i < c; i++) eye[i * c + i] = 1;
    const plain = this.nat.upload(values, shape);
    const w = this.nat.upload(eye, [c, c, 1, 1]);
    const nat = this.nat.conv2d(plain, w, null, conv(1, 0));
    this.nat.free(plain);
    this.nat.free(w);
    assert.match(this.nat.layoutOf(nat), /^aBcd(8|16)b$/, 'a convolution output is blocked');
    return { js: this.js.upload(values, shape), nat };
  }

  /** A js copy of a native buffer's values. */
  mirror(b: NativeBuf): JsBuf {
    return this.js.upload(this.nat.download(b), b.shape);
  }

  /** Compare and free both. */
  agree(js: JsBuf, nat: NativeBuf, what: string, tol = TOL): void {
    assert.deepEqual(nat.shape, js.shape, `${what}: shape`);
    assertClose(this.nat.download(nat), this.js.download(js), what, tol);
    this.js.free(js);
    this.nat.free(nat);
  }

  free(...pairs: Pair[]): void {
    for (const p of pairs) {
      this.js.free(p.js);
      this.nat.free(p.nat);
    }
  }

  done(): void {
    assert.equal(this.js.liveBytes(), 0, 'the test leaked js buffers');
    assert.equal(this.nat.liveBytes(), this.#startBytes, 'the test leaked native buffers');
  }
}
