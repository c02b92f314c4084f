import type { Logger } from 'pino';

/** Entries kept per map (addresses, accounts); past it the entry updated longest ago is evicted. */
export const MAX_THROTTLE_ENTRIES = 10_000;

export interface AuthThrottleOptions {
  /** Failed logins allowed per address and per account within `periodMs` (`limits.maxAuthFailures`). */
  maxFailures: number;
  /** The counting window, and how long a key stays throttled once it reached the limit (ms; 0: off). */
  periodMs: number;
  log: Logger;
  /** Entries per map (default {@link MAX_THROTTLE_ENTRIES}). */
  maxEntries?: number;
  /** The clock (ms), for tests. */
  now?: () => number;
}

/** What a refused login is refused for. */
export type Throttled = 'address' | 'account';

/**
 * Throttles password guessing (issue 10), like Prosody's mod_limit_auth and ejabberd's
 * mod_fail2ban: failed logins are counted per client IP address and per account (prepared bare
 * JID). A key that reaches `maxFailures` failures within `periodMs` of its first counted
 * failure is throttled for `periodMs` from the failure that reached the limit: every `<auth/>`
 * from that address, or for that account, is then refused (the client stream answers
 * `temporary-auth-failure`, RFC 6120 §6.5.11) without an upstream login. Only failures count,
 * and only the server's verdicts on a credential (a success neither counts nor clears).
 *
 * Logins already in flight when a key becomes throttled still finish: the overshoot is at most
 * one login per connection of that address (each stream runs one SASL exchange at a time).
 *
 * Memory: each map keeps at most `maxEntries` keys (default {@link MAX_THROTTLE_ENTRIES});
 * past that the key whose failure was counted longest ago is evicted (Map insertion order, a key
 * moves to the end on each failure). Expired keys are deleted when met. A warn line is logged
 * when a key becomes throttled; it names the address or account, never a password or SASL data.
 */
export class AuthThrottle {
  readonly #byAddress: FailureCounter;
  readonly #byAccount: FailureCounter;
  readonly #log: Logger;
  readonly #period: number;

  constructor(options: AuthThrottleOptions) {
    const now = options.now ?? Date.now;
    const max = options.maxEntries ?? MAX_THROTTLE_ENTRIES;
    this.#byAddress = new FailureCounter(options.maxFailures, options.periodMs, max, now);
    this.#byAccount = new FailureCounter(options.maxFailures, options.periodMs, max, now);
    this.#log = options.log;
    this.#period = options.periodMs;
  }

  /** Whether a login from `address` for `account` must be refused now, and for which key. */
  check(address: string, account: string): Throttled | undefined {
    if (this.#byAddress.throttled(address)) return 'address';
    if (this.#byAccount.throttled(account)) return 'account';
    return undefined;
  }

  /** Counts a failed login (the server refused the credential) for both keys. */
  failed(address: string, account: string): void {
    if (this.#byAddress.fail(address)) {
      this.#log.warn({ address, periodSeconds: this.#period / 1000 }, 'too many failed logins from this address: its logins are refused for a while');
    }
    if (this.#byAccount.fail(account)) {
      this.#log.warn({ account, periodSeconds: this.#period / 1000 }, 'too many failed logins for this account: its logins are refused for a while');
    }
  }

  /** Keys kept (addresses, accounts), for tests and metrics. */
  get size(): { addresses: number; accounts: number } {
    return { addresses: this.#byAddress.size, accounts: this.#byAccount.size };
  }
}

interface Entry {
  /** First failure of the current window (ms). */
  since: number;
  count: number;
  /** Set once the count reached the limit: refused until then (ms). */
  until?: number;
}

/** Failures of one kind of key (addresses or accounts), see {@link AuthThrottle}. */
class FailureCounter {
  readonly #entries = new Map<string, Entry>();

  constructor(
    readonly max: number,
    readonly periodMs: number,
    readonly maxEntries: number,
    readonly now: () => number,
  ) {}

  get size(): number {
    return this.#entries.size;
  }

  throttled(key: string): boolean {
    const e = this.#live(key);
    return e?.until !== undefined;
  }

  /** Counts one failure; true when this one made the key throttled. */
  fail(key: string): boolean {
    if (this.periodMs <= 0) return false;
    const now = this.now();
    const e = this.#live(key) ?? { since: now, count: 0 };
    e.count++;
    const reached = e.until === undefined && e.count >= this.max;
    if (reached) e.until = now + this.periodMs;
    // Most recently failed last: eviction takes the first.
    this.#entries.delete(key);
    while (this.#entries.size >= this.maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
    this.#entries.set(key, e);
    return reached;
  }

  /** The key's entry unless its window (and any throttling) is over; an expired entry is deleted. */
  #live(key: string): Entry | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    const now = this.now();
    const over = e.until !== undefined ? now >= e.until : now - e.since >= this.periodMs;
    if (!over) return e;
    this.#entries.delete(key);
    return undefined;
  }
}
