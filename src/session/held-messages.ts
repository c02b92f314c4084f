import { DEFAULTS } from '../config/config.ts';
import type { QueuedStanza } from '../sm/outbound-queue.ts';
import type { Store, StoreKey } from '../storage/store.ts';

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
  /**
   * The durable store (design §4.8). With one, the constructor loads what it holds (applying the
   * bounds above: the expired and the over-limit are dropped and deleted from it), and every
   * change is written to it before the method returns. Without one, nothing outlives the process.
   */
  store?: Store;
}

/** A held message: in its account's list and in the proxy-wide order until it is gone. */
interface Entry {
  readonly bareJid: string;
  readonly stanza: QueuedStanza;
  /** Its key in the store (none without a store, or when the store could not write it). */
  readonly key: StoreKey | undefined;
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
 *
 * With a store (design §4.8) this is the working set and the store its journal: loaded at
 * construction, each message inserted before `hold` returns and deleted before `take` (or the
 * bound that drops it) returns, so a crash or restart loses nothing held.
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
  readonly #store: Store | undefined;
  /** Store keys of entries killed since the last write to the store. */
  #gone: StoreKey[] = [];
  /** Messages dropped for any reason (an account's hold full, expired, over the proxy-wide size). */
  dropped = 0;
  /** Messages taken into the hold by `hold` (not those loaded from the store at start). */
  stored = 0;
  /** Messages handed out by `take` for delivery. */
  delivered = 0;
  /** Of `dropped`: older than the TTL. */
  droppedExpired = 0;
  /** Of `dropped`: the oldest held proxy-wide, over `maxBytes`. */
  droppedOverBytes = 0;

  /**
   * @param maxPerAccount messages kept per account (0 keeps none).
   * @param options TTL, proxy-wide size, clock and store (see HeldMessagesOptions).
   * @throws StoreError when the store cannot be read.
   */
  constructor(maxPerAccount: number, options: HeldMessagesOptions = {}) {
    this.#max = maxPerAccount;
    this.#ttlMs = options.ttlMs ?? DEFAULTS.sm.heldMessagesTtlSeconds * 1000;
    this.#maxBytes = options.maxBytes ?? DEFAULTS.sm.maxHeldBytes;
    this.#now = options.now ?? Date.now;
    this.#lastSweep = this.#now();
    this.#store = options.store;
    if (this.#store) this.#load(this.#store);
  }

  /** Rebuilds the working set from the store, in the order of holding, through the same bounds as `hold`. */
  #load(store: Store): void {
    const now = this.#now();
    for (const record of store.heldMessages.loadAll()) {
      const stanza = { xml: record.xml, receivedAt: record.receivedAt };
      if (this.#refused(stanza, now)) this.#gone.push(record.key);
      else this.#add(record.bareJid, stanza, record.key);
    }
    this.#flush();
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
    // One transaction: the insert and whatever it pushes out reach the disk together.
    return this.batch(() => {
      const now = this.#now();
      this.#sweepIfDue(now);
      const refused = this.#refused(stanza, now);
      if (!refused) this.stored++;
      const kept = !refused && this.#add(bareJid, stanza, this.#store?.heldMessages.put(bareJid, stanza.xml, stanza.receivedAt));
      this.#flush();
      return kept;
    });
  }

  /**
   * Runs `fn` (calls to `hold`, typically: a session end settling its queue) as one store
   * transaction, so that many messages cost one sync to disk. Without a store, just runs it.
   */
  batch<T>(fn: () => T): T {
    return this.#store ? this.#store.transaction(fn) : fn();
  }

  /** Whether a message is not kept at all (none are, or it expired already): counted as dropped. */
  #refused(stanza: QueuedStanza, now: number): boolean {
    if (this.#max === 0) {
      this.dropped++;
      return true;
    }
    if (this.#expired(stanza, now)) {
      this.dropped++;
      this.droppedExpired++;
      return true;
    }
    return false;
  }

  /** Adds a message to the working set, then applies the per-account and proxy-wide bounds. */
  #add(bareJid: string, stanza: QueuedStanza, key: StoreKey | undefined): boolean {
    const entry: Entry = { bareJid, stanza, key, live: true };
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
    this.#flush();
    this.delivered += taken.length;
    return taken;
  }

  /** Messages held for `bareJid` (expired ones are dropped first). */
  count(bareJid: string): number {
    const now = this.#now();
    this.#sweepIfDue(now);
    this.#expireAccount(bareJid, now);
    this.#compact();
    this.#flush();
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
    this.#flush();
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
    if (entry.key !== undefined) this.#gone.push(entry.key);
  }

  /** Deletes the killed entries from the store (before the public method that killed them returns). */
  #flush(): void {
    if (this.#gone.length === 0) return;
    const keys = this.#gone;
    this.#gone = [];
    this.#store!.heldMessages.delete(keys);
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
