/**
 * The durable store (design §4.8): what the proxy keeps on a user's behalf and what must outlive
 * the process — held messages (design §4.3), the final `h` of ended sessions (XEP-0198 §5
 * `<failed h>`), push registrations (XEP-0357, design §4.7).
 *
 * The split: the in-memory classes (HeldMessages, SessionRegistry, PushRegistrations) stay the
 * working set and keep every bound (per account, TTL, proxy-wide); the store is their journal.
 * They read it once, when constructed, and write each change through before their method
 * returns. So the interface is synchronous and small; a networked store (several proxy nodes)
 * would load everything when opened and journal its writes.
 *
 * Writes never throw: a store that cannot write (disk full, I/O error) reports it to its log,
 * counts it in `writeErrors`, and the working set goes on in memory (what it holds is then lost
 * at a restart, as it was before there was a store). Loading and opening do throw (StoreError):
 * a store that cannot be read at start is a configuration or disk problem to fix, not to hide.
 */

/** Key of a held message in the store, assigned by `heldMessages.put` (increasing: the order of holding). */
export type StoreKey = number;

/** A held message as stored (design §4.3). */
export interface HeldRecord {
  readonly key: StoreKey;
  /** The account it waits for. */
  readonly bareJid: string;
  /** The stanza as serialized when first sent to the client. */
  readonly xml: string;
  /** When the proxy first received it (ms since the epoch). */
  readonly receivedAt: number;
}

/**
 * An ended session remembered for late resumes (XEP-0198 §5). The resumption id itself is never
 * stored: `idHash` is its SHA-256 (base64url), so a copy of the store does not let anyone resume
 * or recognize a session, and a lookup by id still works.
 */
export interface OldSessionRecord {
  readonly idHash: string;
  readonly bareJid: string;
  /** The session's final inbound `h` (0 … 2^32-1). */
  readonly h: number;
  /** Stanza error condition of the `<failed/>` a late resume gets (item-not-found, resource-constraint). */
  readonly condition: string;
  /** When the session ended (ms since the epoch). */
  readonly endedAt: number;
}

/** A push registration of an account (XEP-0357 §5 `<enable/>`, design §4.7). */
export interface PushRegistration {
  /** The app server's JID (`<enable jid=…>`). */
  readonly jid: string;
  /** The node on the app server (`<enable node=…>`). */
  readonly node: string;
  /** The publish-options data form (`<x xmlns='jabber:x:data'>…</x>`) as XML, if the client sent one. */
  readonly form?: string;
  /** When it was enabled (ms since the epoch): the oldest is evicted first. */
  readonly createdAt: number;
  /** Failed pushes since the last success (design §4.7: 16 remove it). */
  readonly failures: number;
}

/** Held messages: one row per message, deleted by key. */
export interface HeldStore {
  /** Stores a message for `bareJid`; returns its key, or undefined when the write failed (reported). */
  put(bareJid: string, xml: string, receivedAt: number): StoreKey | undefined;
  /** Deletes messages by key (taken, dropped, expired); unknown keys are ignored. One transaction. */
  delete(keys: readonly StoreKey[]): void;
  /** Every stored message, in key order. Do not write to the store until the iteration ends. @throws StoreError */
  loadAll(): Iterable<HeldRecord>;
}

/** Ended sessions' final `h`. */
export interface OldSessionStore {
  /** Inserts or replaces (by `idHash`). */
  put(record: OldSessionRecord): void;
  /** Forgets ended sessions by id hash; unknown ones are ignored. One transaction. */
  delete(idHashes: readonly string[]): void;
  /** Everything stored, ordered by `endedAt` (then by insertion). @throws StoreError */
  loadAll(): OldSessionRecord[];
}

/** Push registrations, keyed by (account, jid, node). */
export interface PushStore {
  /** One account's registrations, oldest first (`createdAt`, then insertion). @throws StoreError */
  list(bareJid: string): PushRegistration[];
  /** Inserts, or updates in place a registration with the same (account, jid, node). */
  put(bareJid: string, registration: PushRegistration): void;
  /** Removes one registration; unknown ones are ignored. */
  remove(bareJid: string, jid: string, node: string): void;
  /** Every registration with its account, ordered by account, then as `list`. @throws StoreError */
  loadAll(): Array<{ bareJid: string; registration: PushRegistration }>;
}

/** The durable store: three journals, batched writes, close. */
export interface Store {
  readonly heldMessages: HeldStore;
  readonly oldSessions: OldSessionStore;
  readonly pushRegistrations: PushStore;
  /**
   * Runs `fn`; the writes it makes are committed together (one transaction, one sync to disk).
   * Nested calls join the outer one. When `fn` throws, what it wrote is still committed (the
   * store mirrors the working set, which `fn` changed up to the throw), and the error rethrown.
   */
  transaction<T>(fn: () => T): T;
  /** Writes that failed since the store was opened (each reported to the store's log). */
  readonly writeErrors: number;
  /** Flushes and closes; later writes are ignored. Idempotent. */
  close(): void;
}

/** Where a store reports write failures: pino's Logger fits. */
export interface StoreLog {
  error(obj: object, msg: string): void;
}

/**
 * A store that cannot be opened, read or migrated: its message names the path and the cause,
 * e.g. `storage: cannot open /var/lib/xmpp-sm-proxy/xmpp-sm-proxy.sqlite: file is not a database`.
 */
export class StoreError extends Error {
  override readonly name = 'StoreError';
  /** The file or directory at fault. */
  readonly path: string;

  constructor(path: string, what: string, cause: unknown) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(`storage: ${what} ${path}: ${why}`, { cause });
    this.path = path;
  }
}
