import type { Timers } from '../../src/muc/pacer.ts';

/** Lets pending promise callbacks run (a macrotask turn: every microtask queued before it has run). */
export const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Timers on a hand-driven clock (ms, starting at 0). `advance` runs the timers that fall due, in
 * time order (ties in the order they were set), moving the clock to each, and lets promise
 * callbacks run after each one, so a test never depends on real time.
 */
export class FakeTimers implements Timers {
  #now = 0;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  now = (): number => this.#now;

  setTimeout = (fn: () => void, ms: number): unknown => {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + ms, fn });
    return id;
  };

  clearTimeout = (handle: unknown): void => {
    this.#timers.delete(handle as number);
  };

  /** Timers set and neither fired nor cleared. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Moves the clock `ms` forward, firing what falls due on the way. */
  async advance(ms: number): Promise<void> {
    const end = this.#now + ms;
    for (;;) {
      await settle();
      let next: number | undefined;
      let nextAt = Infinity;
      // Map order is the order set: a strict < keeps the first set among equal times.
      for (const [id, timer] of this.#timers) {
        if (timer.at < nextAt) {
          nextAt = timer.at;
          next = id;
        }
      }
      if (next === undefined || nextAt > end) break;
      const timer = this.#timers.get(next)!;
      this.#timers.delete(next);
      this.#now = Math.max(this.#now, timer.at);
      timer.fn();
    }
    this.#now = end;
    await settle();
  }
}

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
export function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
