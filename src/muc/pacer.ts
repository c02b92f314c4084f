import { DueQueue, type DueTicket } from './due-queue.ts';

/** A clock and timers (ms); tests pass a fake. */
export interface Timers {
  /** A monotonic clock (ms). */
  now(): number;
  /** Calls `fn` once after `ms`; the timer must not keep the process alive (unref'd). */
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Node's timers, unref'd, on `performance.now()` (monotonic: a wall-clock step moves nothing). */
export const NODE_TIMERS: Timers = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** Times closer than this (ms) count as equal: float noise in the schedule (12 × 1000/3 ≠ 4000) must not cost a 1 ms timer tick. */
const EPSILON_MS = 1e-6;

/**
 * Releases items at their due time, at most `perSecond` a second: a token bucket of `burst`
 * tokens refilled at `perSecond`. An item due while no token is left waits for the next one;
 * waiting items go in due order (ties: first added first) and none is dropped.
 *
 * The bucket is kept in its GCRA form (ITU-T I.371's virtual scheduling): one number, the time
 * the next release is due at the steady rate, instead of a token count refilled on each look, so
 * waits are exact with fractional rates too. With `burst` 1 releases are `1000 / perSecond` ms
 * apart (to the timers' 1 ms): at most `perSecond` in any second.
 *
 * One timer for all items, set for the earliest due item or the next token, whichever is later.
 */
export class Pacer<T> {
  readonly #queue = new DueQueue<T>();
  readonly #timers: Timers;
  readonly #release: (item: T) => void;
  /** GCRA: when the next release is due at the steady rate (ms). */
  #tat = -Infinity;
  readonly #interval: number;
  /** How far ahead of the steady rate a release may be: the burst beyond one token (ms). */
  readonly #tolerance: number;
  #timer: unknown;
  /** When #timer fires (ms); Infinity when none is set. */
  #timerAt = Infinity;
  /** Tickets counted in `rateLimited`. */
  readonly #counted = new WeakSet<DueTicket<T>>();
  /** Items that were due but waited for a token (each counted once). */
  rateLimited = 0;

  /**
   * @param perSecond releases a second (> 0; Infinity: no limit).
   * @param burst tokens the bucket holds (an integer ≥ 1).
   * @param release called from the timer with each item as it is released; it may call back in.
   * @throws RangeError for a rate or burst out of range.
   */
  constructor(perSecond: number, burst: number, timers: Timers, release: (item: T) => void) {
    if (!(perSecond > 0)) throw new RangeError(`rate must be > 0 a second, not ${perSecond}`);
    if (!Number.isInteger(burst) || burst < 1) throw new RangeError(`burst must be an integer ≥ 1, not ${burst}`);
    this.#interval = 1000 / perSecond;
    this.#tolerance = (burst - 1) * this.#interval;
    this.#timers = timers;
    this.#release = release;
  }

  /** Items waiting. */
  get size(): number {
    return this.#queue.size;
  }

  /** Releases `item` at `dueAt` (ms) or, when no token is left then, as soon as there is one. */
  add(item: T, dueAt: number): DueTicket<T> {
    const ticket = this.#queue.push(item, dueAt);
    this.#arm(dueAt);
    return ticket;
  }

  /** Takes a waiting item out (idempotent; a released one is ignored). */
  remove(ticket: DueTicket<T>): void {
    this.#queue.remove(ticket);
    if (this.#queue.size === 0) this.#disarm();
  }

  /** Drops every item and clears the timer. */
  clear(): void {
    this.#queue.clear();
    this.#disarm();
  }

  /** Makes sure the timer fires by `at` (ms). */
  #arm(at: number): void {
    if (at >= this.#timerAt) return;
    this.#disarm();
    this.#timerAt = at;
    this.#timer = this.#timers.setTimeout(() => this.#releaseDue(), Math.max(0, Math.ceil(at - this.#timers.now() - EPSILON_MS)));
  }

  #disarm(): void {
    if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  /** Releases what is due, as far as the tokens go, and sets the timer for what comes next. */
  #releaseDue(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    for (;;) {
      const next = this.#queue.peek();
      if (!next) return;
      const now = this.#timers.now();
      if (next.dueAt - now > EPSILON_MS) return this.#arm(next.dueAt);
      const tokenAt = this.#tat - this.#tolerance;
      if (tokenAt - now > EPSILON_MS) {
        if (!this.#counted.has(next)) this.rateLimited++;
        this.#counted.add(next);
        return this.#arm(tokenAt);
      }
      this.#queue.pop();
      // The timer fires up to 1 ms after the planned time (whole ms): counting from the plan
      // keeps a fractional rate from drifting; a wake later than that (a busy loop) is not caught up.
      const planned = Math.max(next.dueAt, tokenAt);
      this.#tat = Math.max(this.#tat, now - planned < 1 ? planned : now) + this.#interval;
      this.#release(next.item);
    }
  }
}
