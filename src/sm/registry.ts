import { createHash, randomBytes } from 'node:crypto';
import type { Store } from '../storage/store.ts';

/** An ended session remembered for late resumes. */
export interface OldSession {
  id: string;
  /** Client stanzas the session had handled (its final inbound `h`). */
  h: number;
  /** Stanza error condition for a late `<resume/>`: item-not-found, or resource-constraint after an overflow. */
  condition: string;
}

/** Bounds of the remembered ended sessions beside the per-account count. */
export interface SessionRegistryOptions {
  /** An ended session's `h` is forgotten this long after the session ended (ms). Default 24 h. */
  oldSessionTtlMs?: number;
  /**
   * Accounts with ended sessions remembered, proxy-wide; past it the account whose last session
   * ended longest ago is forgotten first (with all its ended sessions). Default 10 000.
   */
  maxOldAccounts?: number;
  /** The clock (ms since the epoch); tests pass a fake one. Default Date.now. */
  now?: () => number;
  /**
   * The durable store (design §4.8) for the ended sessions. With one, the constructor loads them
   * (the expired and the over-limit are dropped and deleted from it) and every change is written
   * to it before the method returns. Live sessions are never stored: they die with the process.
   */
  store?: Store;
}

/** An ended session: its id only as a hash, with when it ended. */
interface OldEntry {
  /** SHA-256 of the resumption id ({@link hashId}). */
  readonly idHash: string;
  readonly h: number;
  readonly condition: string;
  /** When the session ended (ms since the epoch). */
  readonly endedAt: number;
}

/**
 * What is kept of an ended session's resumption id: its SHA-256, base64url. The ids are 144
 * random bits, so the hash needs no salt; a copy of the store (or of memory) reveals no id.
 */
export function hashId(id: string): string {
  return createHash('sha256').update(id).digest('base64url');
}

/** What the registry needs to know of a resumable session. */
export interface Resumable {
  /** The authenticated account (bare JID) that owns the session. */
  readonly bareJid: string;
}

/**
 * Resumable sessions by resumption id (XEP-0198 §5), and the final `h` of ended ones so that a
 * late `<resume/>` gets `<failed h='…'>`. The ended ones are a cache, bounded three ways
 * (issue 10):
 * - per account: `maxOldSessions`, the oldest forgotten first (mod_smacks' smacks_max_old_sessions);
 * - in time: forgotten `oldSessionTtlMs` after the session ended, default 24 h. mod_smacks keeps
 *   them in a store with the time they ended and never expires them (it only trims an account's
 *   list to smacks_max_old_sessions when the account enables SM again); held in memory here,
 *   they need a limit, and a day is far beyond the hibernation time (600 s) a resuming client
 *   counts on, so a client back the next day still learns its `h`;
 * - proxy-wide: `maxOldAccounts` accounts, default 10 000; past it the account whose last
 *   session ended longest ago is forgotten first.
 * Expiry costs no timer: the accounts are kept in the order their last session ended, so each
 * `remove` and `old` drops the expired ones from the front (amortized O(1)).
 * Ended sessions are kept by the hash of their id ({@link hashId}), in memory and in the store.
 */
export class SessionRegistry<S extends Resumable> {
  readonly #live = new Map<string, S>();
  /**
   * bare JID → ended sessions' (id hash, h, why not resumable) with when they ended, oldest first;
   * the accounts in the order of their latest ended session (re-inserted on each).
   */
  readonly #old = new Map<string, OldEntry[]>();
  readonly #maxOld: number;
  readonly #ttlMs: number;
  readonly #maxAccounts: number;
  readonly #now: () => number;
  readonly #store: Store | undefined;
  /** Id hashes of ended sessions forgotten since the last write to the store. */
  #gone: string[] = [];

  /**
   * @param maxOldSessions ended sessions remembered per account (0: none).
   * @param options TTL, proxy-wide account limit, clock and store (see SessionRegistryOptions).
   * @throws StoreError when the store cannot be read.
   */
  constructor(maxOldSessions: number, options: SessionRegistryOptions = {}) {
    this.#maxOld = maxOldSessions;
    this.#ttlMs = options.oldSessionTtlMs ?? 24 * 3600_000;
    this.#maxAccounts = options.maxOldAccounts ?? 10_000;
    this.#now = options.now ?? Date.now;
    this.#store = options.store;
    if (this.#store) this.#load(this.#store);
  }

  /** Rebuilds the ended sessions from the store, in the order they ended, through the same bounds as `remove`. */
  #load(store: Store): void {
    const now = this.#now();
    for (const { idHash, bareJid, h, condition, endedAt } of store.oldSessions.loadAll()) {
      const entry: OldEntry = { idHash, h, condition, endedAt };
      if (this.#maxOld === 0 || this.#expired(entry, now)) this.#gone.push(idHash);
      else this.#remember(bareJid, entry);
    }
    this.#expire(now);
    this.#flush();
  }

  /** Accounts with ended sessions remembered. */
  get oldAccounts(): number {
    return this.#old.size;
  }

  /** Number of resumable sessions. */
  get size(): number {
    return this.#live.size;
  }

  /** Registers a session under a fresh id of 144 random bits (base64url) and returns the id. */
  add(session: S): string {
    let id: string;
    do id = randomBytes(18).toString('base64url');
    while (this.#live.has(id));
    this.#live.set(id, session);
    return id;
  }

  /**
   * The live session with this id, only if it belongs to `bareJid`: resumption is bound to the
   * authenticated account, and a foreign id looks exactly like an unknown one.
   */
  get(id: string, bareJid: string): S | undefined {
    const session = this.#live.get(id);
    return session && session.bareJid === bareJid ? session : undefined;
  }

  /** An ended session of `bareJid` with this id, if still remembered (and not expired). */
  old(id: string, bareJid: string): OldSession | undefined {
    const now = this.#now();
    this.#expire(now);
    const list = this.#old.get(bareJid);
    if (!list) return this.#flush();
    // This account's older entries may have expired while its latest has not (or all of them,
    // with the clock set back between two ends, which #expire's early stop can miss).
    const fresh = list.findIndex((entry) => !this.#expired(entry, now));
    if (fresh < 0) {
      this.#forget(bareJid);
      return this.#flush();
    }
    if (fresh > 0) for (const entry of list.splice(0, fresh)) this.#gone.push(entry.idHash);
    this.#flush();
    const idHash = hashId(id);
    const entry = list.find((e) => e.idHash === idHash);
    return entry && { id, h: entry.h, condition: entry.condition };
  }

  /**
   * Removes a live session; with `finalH`, remembers it for late resumes (XEP-0198 §5 `<failed h>`),
   * with the stanza error `condition` a late resume gets (default item-not-found).
   */
  remove(id: string, session: S, finalH?: number, condition = 'item-not-found'): void {
    if (this.#live.get(id) !== session) return;
    this.#live.delete(id);
    if (finalH === undefined || this.#maxOld === 0) return;
    const now = this.#now();
    const entry: OldEntry = { idHash: hashId(id), h: finalH, condition, endedAt: now };
    const write = () => {
      this.#store?.oldSessions.put({ ...entry, bareJid: session.bareJid });
      this.#remember(session.bareJid, entry);
      this.#expire(now);
      this.#flush();
    };
    // One transaction: the insert and whatever it pushes out reach the disk together.
    if (this.#store) this.#store.transaction(write);
    else write();
  }

  /** Adds an ended session, then applies the per-account and proxy-wide bounds. */
  #remember(bareJid: string, entry: OldEntry): void {
    const list = this.#old.get(bareJid) ?? [];
    list.push(entry);
    if (list.length > this.#maxOld) this.#gone.push(list.shift()!.idHash);
    // To the back: the accounts stay in the order their latest session ended.
    this.#old.delete(bareJid);
    this.#old.set(bareJid, list);
    for (const oldest of this.#old.keys()) {
      if (this.#old.size <= this.#maxAccounts) break;
      this.#forget(oldest);
    }
  }

  #expired(entry: OldEntry, now: number): boolean {
    return now - entry.endedAt >= this.#ttlMs;
  }

  /** Forgets the accounts whose latest ended session expired: they are at the front. */
  #expire(now: number): void {
    for (const [bareJid, list] of this.#old) {
      if (!this.#expired(list.at(-1)!, now)) break;
      this.#forget(bareJid);
    }
  }

  /** Forgets an account's ended sessions. */
  #forget(bareJid: string): void {
    for (const entry of this.#old.get(bareJid) ?? []) this.#gone.push(entry.idHash);
    this.#old.delete(bareJid);
  }

  /** Deletes what was forgotten from the store (before the public method that forgot it returns). */
  #flush(): undefined {
    if (this.#gone.length === 0) return;
    const hashes = this.#gone;
    this.#gone = [];
    this.#store?.oldSessions.delete(hashes);
  }

  /** All live sessions (for shutdown). */
  sessions(): S[] {
    return [...this.#live.values()];
  }
}
