import { DEFAULTS } from '../config/config.ts';
import type { QueuedStanza } from '../sm/outbound-queue.ts';

/** Limits of HeldMessages beside the per-account count. */
export interface HeldMessagesOptions {
  /**
   * A message older than this (by its `receivedAt`) is dropped, like an offline store's expiry
   * (ms). Default: config `sm.heldMessagesTtlSeconds` (7 days).
   */
  ttlMs?: number;
  /**
   * Size of everything held, proxy-wide (characters ≈ bytes: the sum of `xml.length`, within 2×
   * of the memory V8 keeps the strings in); past it the oldest held messages go first, whatever
   * their account. Default: config `sm.maxHeldBytes` (64 MiB).
   */
  maxBytes?: number;
  /** The clock (ms since the epoch), compared with `receivedAt`; tests pass a fake one. Default Date.now. */
  now?: () => number;
}

/** A held message: in its account's list and in the proxy-wide order until it is gone. */
interface Entry {
  readonly bareJid: string;
  readonly stanza: QueuedStanza;
  /** False once taken, expired or dropped; the proxy-wide order skips it (lazy deletion). */
  live: boolean;
}

/** A full sweep for expired messages runs at most this often (ms), or once per TTL if shorter (but 1 s at least). */
const SWEEP_INTERVAL_MS = 3600_000;
const MIN_SWEEP_INTERVAL_MS = 1000;

/**
 * The proxy's stand-in for offline storage (design §4.3): chat/normal messages left unacked by
 * an account's last session, kept in memory per bare JID and delivered, with delay stamps, when
 * the account next logs in. Bounded three ways (issue 10), each dropping the oldest first and
 * counting what it drops:
 * - per account: `maxPerAccount` messages (config `sm.maxHeldMessages`);
 * - in time: a message older than `ttlMs` (by `receivedAt`) is dropped;
 * - proxy-wide: `maxBytes` for all accounts together; the messages held longest, whichever
 *   account they wait for, go first (a proxy-wide FIFO of the held entries, with lazy deletion:
 *   taken and expired ones are skipped when met and compacted away once they outnumber the rest).
 *
 * Expiry is checked for an account on each `take` and `count`, and for all accounts by a sweep
 * that `hold`, `take` and `count` run at most once an hour (once per TTL if shorter), so that an
 * account that never logs in again loses its messages too. There is no timer: nothing here
 * can keep the process alive, and a proxy where nothing is held or taken does no work. (Without
 * calls nothing new is held either, so what expired while idle is bounded by `maxBytes`.)
 */
export class HeldMessages {
  readonly #byAccount = new Map<string, Entry[]>();
  /** Every live entry (and some dead ones), oldest held first from #head. */
  #order: Entry[] = [];
  #head = 0;
  /** Live entries: in #byAccount's lists. */
  #live = 0;
  #bytes = 0;
  #lastSweep: number;
  readonly #max: number;
  readonly #ttlMs: number;
  readonly #maxBytes: number;
  readonly #now: () => number;
  /** Messages dropped for any reason (an account's hold full, expired, over the proxy-wide size). */
  dropped = 0;
  /** Of `dropped`: older than the TTL. */
  droppedExpired = 0;
  /** Of `dropped`: the oldest held proxy-wide, over `maxBytes`. */
  droppedOverBytes = 0;

  /**
   * @param maxPerAccount messages kept per account (0 keeps none).
   * @param options TTL, proxy-wide size and clock (see HeldMessagesOptions).
   */
  constructor(maxPerAccount: number, options: HeldMessagesOptions = {}) {
    this.#max = maxPerAccount;
    this.#ttlMs = options.ttlMs ?? DEFAULTS.sm.heldMessagesTtlSeconds * 1000;
    this.#maxBytes = options.maxBytes ?? DEFAULTS.sm.maxHeldBytes;
    this.#now = options.now ?? Date.now;
    this.#lastSweep = this.#now();
  }

  /** Messages held, all accounts. */
  get size(): number {
    return this.#live;
  }

  /** Size of the messages held, all accounts (characters ≈ bytes, see HeldMessagesOptions.maxBytes). */
  get bytes(): number {
    return this.#bytes;
  }

  /** Accounts with messages held. */
  get accounts(): number {
    return this.#byAccount.size;
  }

  /**
   * Keeps a message for `bareJid`. Returns false when it dropped one to make room (the account's
   * oldest, or the oldest proxy-wide; this one itself if it alone is over `maxBytes`), or did not
   * keep this one (none are kept, or it is older than the TTL already).
   */
  hold(bareJid: string, stanza: QueuedStanza): boolean {
    const now = this.#now();
    this.#sweepIfDue(now);
    if (this.#max === 0) {
      this.dropped++;
      return false;
    }
    if (this.#expired(stanza, now)) {
      this.dropped++;
      this.droppedExpired++;
      return false;
    }
    const entry: Entry = { bareJid, stanza, live: true };
    const list = this.#byAccount.get(bareJid) ?? [];
    list.push(entry);
    this.#byAccount.set(bareJid, list);
    this.#order.push(entry);
    this.#live++;
    this.#bytes += stanza.xml.length;
    let kept = true;
    if (list.length > this.#max) {
      this.#kill(list.shift()!);
      this.dropped++;
      kept = false;
    }
    while (this.#bytes > this.#maxBytes) {
      this.#evictOldest();
      kept = false;
    }
    this.#compact();
    return kept;
  }

  /** Removes and returns what is held for `bareJid` and not expired, oldest first. */
  take(bareJid: string): QueuedStanza[] {
    const now = this.#now();
    this.#sweepIfDue(now);
    const list = this.#byAccount.get(bareJid);
    if (!list) return [];
    this.#byAccount.delete(bareJid);
    const taken: QueuedStanza[] = [];
    for (const entry of list) {
      this.#kill(entry);
      if (this.#expired(entry.stanza, now)) {
        this.dropped++;
        this.droppedExpired++;
      } else taken.push(entry.stanza);
    }
    this.#compact();
    return taken;
  }

  /** Messages held for `bareJid` (expired ones are dropped first). */
  count(bareJid: string): number {
    const now = this.#now();
    this.#sweepIfDue(now);
    this.#expireAccount(bareJid, now);
    this.#compact();
    return this.#byAccount.get(bareJid)?.length ?? 0;
  }

  /**
   * Drops every expired message, all accounts (O(messages held)). Runs by itself from
   * hold/take/count (see the class doc); public for tests and for an owner with a timer.
   * @returns how many were dropped.
   */
  sweep(): number {
    const now = this.#now();
    this.#lastSweep = now;
    const before = this.droppedExpired;
    for (const bareJid of [...this.#byAccount.keys()]) this.#expireAccount(bareJid, now);
    this.#compact();
    return this.droppedExpired - before;
  }

  #sweepIfDue(now: number): void {
    if (now - this.#lastSweep >= Math.max(MIN_SWEEP_INTERVAL_MS, Math.min(this.#ttlMs, SWEEP_INTERVAL_MS))) this.sweep();
  }

  #expired(stanza: QueuedStanza, now: number): boolean {
    return now - stanza.receivedAt > this.#ttlMs;
  }

  /** Drops the expired messages of one account; forgets the account when none are left. */
  #expireAccount(bareJid: string, now: number): void {
    const list = this.#byAccount.get(bareJid);
    if (!list) return;
    const kept = list.filter((entry) => {
      if (!this.#expired(entry.stanza, now)) return true;
      this.#kill(entry);
      this.dropped++;
      this.droppedExpired++;
      return false;
    });
    if (kept.length === 0) this.#byAccount.delete(bareJid);
    else if (kept.length < list.length) this.#byAccount.set(bareJid, kept);
  }

  /** Drops the message held longest, proxy-wide. */
  #evictOldest(): void {
    let entry = this.#order[this.#head++]!;
    while (!entry.live) entry = this.#order[this.#head++]!;
    // Lists and the order are both in the order of holding: it is the first of its account's.
    const list = this.#byAccount.get(entry.bareJid)!;
    const at = list[0] === entry ? 0 : list.indexOf(entry);
    list.splice(at, 1);
    if (list.length === 0) this.#byAccount.delete(entry.bareJid);
    this.#kill(entry);
    this.dropped++;
    this.droppedOverBytes++;
  }

  /** Takes an entry out of the counts; it stays in #order until skipped or compacted. */
  #kill(entry: Entry): void {
    entry.live = false;
    this.#live--;
    this.#bytes -= entry.stanza.xml.length;
  }

  /**
   * Keeps #order within twice the live entries (plus 1024): dead ones, skipped below #head or
   * lazily deleted above it, are dropped in one pass (amortized O(1) per entry held).
   */
  #compact(): void {
    if (this.#order.length <= 1024 || this.#order.length <= 2 * this.#live) return;
    this.#order = this.#order.slice(this.#head).filter((entry) => entry.live);
    this.#head = 0;
  }
}
