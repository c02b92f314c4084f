/**
 * Caps how many upstream logins run at once, proxy-wide. When the server comes back after an
 * outage every session wants to log in again; in turns, the server is not hammered and each
 * login gets its answer in time (design §4.5).
 */
export class LoginLimiter {
  #running = 0;
  readonly #waiting: Array<() => void> = [];
  readonly #max: number;

  /** @param max logins allowed in flight at once (≥ 1). */
  constructor(max: number) {
    this.#max = Math.max(1, max);
  }

  /** Runs `task` as soon as a slot is free; resolves or rejects with it. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.#max) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    this.#running++;
    try {
      return await task();
    } finally {
      this.#running--;
      this.#waiting.shift()?.();
    }
  }
}
