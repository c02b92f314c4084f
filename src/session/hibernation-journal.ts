import type { QueuedStanza } from '../sm/outbound-queue.ts';
import type { HeldStore, StoreKey } from '../storage/store.ts';
import { settle } from './settle.ts';

/** What the journal needs to know of a session. */
export interface Journaled {
  /** The account (bare JID) its messages are held for after a crash. */
  readonly bareJid: string;
}

/**
 * The messages queued for hibernated sessions, journaled in the store (design §4.8) so that a
 * crash of the proxy (SIGKILL, OOM) does not lose them: the server handed them over and has
 * forgotten them, and the client is away. They are written as held messages of the account, so
 * that a restart loads them as such (delivered at the account's next login, with delay stamps);
 * while the session lives they are only journaled, not in the held working set, and a resume or
 * the session's end (which settles its queue, design §4.3) deletes them again.
 *
 * Only what a session's end would hold is journaled: chat and normal messages the server did not
 * archive (settle.ts). Writes are batched per event-loop turn: one transaction, one sync to disk,
 * whatever the number of hibernated sessions receiving in that turn; attached sessions cost
 * nothing. Bounded by the sessions' own queue limits (`sm.maxQueueSize` per session).
 */
export class HibernationJournal<S extends Journaled> {
  readonly #store: HeldStore;
  readonly #transaction: <T>(fn: () => T) => T;
  /** Store keys of what is journaled, per hibernated session. */
  readonly #keys = new Map<S, StoreKey[]>();
  /** Messages to write at the end of this turn. */
  #pending: Array<{ session: S; stanza: QueuedStanza }> = [];
  #scheduled = false;

  /** @param transaction the store's `transaction` (one sync for a batch). */
  constructor(store: HeldStore, transaction: <T>(fn: () => T) => T) {
    this.#store = store;
    this.#transaction = transaction;
  }

  /** Sessions with something journaled or about to be. */
  get size(): number {
    return this.#keys.size;
  }

  /** `session` hibernates with `queued` unacked: what a crash would lose is journaled. */
  hibernating(session: S, queued: readonly QueuedStanza[]): void {
    if (!this.#keys.has(session)) this.#keys.set(session, []);
    for (const stanza of queued) this.queued(session, stanza);
  }

  /** A stanza was queued for `session`, which is hibernating. */
  queued(session: S, stanza: QueuedStanza): void {
    if (!this.#keys.has(session) || !stanza.xml.startsWith('<message')) return;
    if (settle(stanza, session.bareJid, true).action !== 'hold') return;
    this.#pending.push({ session, stanza });
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#write());
  }

  /**
   * `session` resumed or ended (its end settled its queue, holding what must be held): its
   * journal is deleted. Call it inside the transaction of that settlement, so both reach the
   * disk together.
   */
  release(session: S): void {
    const keys = this.#keys.get(session);
    if (!keys) return;
    this.#keys.delete(session);
    if (this.#pending.some((p) => p.session === session)) this.#pending = this.#pending.filter((p) => p.session !== session);
    if (keys.length > 0) this.#store.delete(keys);
  }

  #write(): void {
    this.#scheduled = false;
    const pending = this.#pending;
    this.#pending = [];
    this.#transaction(() => {
      for (const { session, stanza } of pending) {
        const key = this.#store.put(session.bareJid, stanza.xml, stanza.receivedAt);
        if (key !== undefined) this.#keys.get(session)?.push(key);
      }
    });
  }
}
