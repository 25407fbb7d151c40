/**
 * Seeded, splittable pseudo-random numbers (xoshiro128** seeded through splitmix32), so every
 * random decision of a run (initialization, shuffling, augmentation) is reproducible from a seed
 * and independent of thread scheduling: derive a stream per purpose with `Rng.derive`.
 */

function splitmix32(state: number): [value: number, next: number] {
  const next = (state + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [(z ^ (z >>> 16)) >>> 0, next];
}

/** Mix several 32-bit integers into one seed (order matters). */
export function mixSeed(...parts: number[]): number {
  let h = 0x12345678;
  for (const p of parts) {
    const [v] = splitmix32(h ^ Math.imul(p | 0, 0x27d4eb2d) ^ Math.floor(p / 0x100000000));
    h = v;
  }
  return h >>> 0;
}

export class Rng {
  #s: Uint32Array;
  #spareNormal: number | null = null;

  constructor(seed: number) {
    this.#s = new Uint32Array(4);
    let state = seed | 0;
    for (let i = 0; i < 4; i++) {
      const [v, next] = splitmix32(state);
      this.#s[i] = v;
      state = next;
    }
  }

  /** An independent stream for a purpose, e.g. `Rng.derive(seed, EPOCH_SHUFFLE, epoch)`. */
  static derive(...parts: number[]): Rng {
    return new Rng(mixSeed(...parts));
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    const s = this.#s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextU32() / 0x100000000;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    if (this.#spareNormal !== null) {
      const v = this.#spareNormal;
      this.#spareNormal = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** A uniformly random permutation of 0..n-1 (Fisher-Yates). */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    return p;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * The generator that layers draw their initial weights from when not given one (PyTorch's global
 * generator): seeded with 0 at start-up, reseeded by `manualSeed`, so a script that calls
 * `manualSeed(s)` and then builds a net gets the same weights every run.
 */
let defaultGenerator = new Rng(0);

/** Reseed the default generator (like torch.manual_seed). */
export function manualSeed(seed: number): void {
  if (!Number.isInteger(seed)) throw new Error(`manualSeed: the seed must be an integer, got ${seed}`);
  defaultGenerator = new Rng(seed);
}

/** The default generator, in its current state. */
export function defaultRng(): Rng {
  return defaultGenerator;
}
