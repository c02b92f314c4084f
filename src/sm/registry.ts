import { randomBytes } from 'node:crypto';

/** An ended session remembered for late resumes. */
export interface OldSession {
  id: string;
  /** Client stanzas the session had handled (its final inbound `h`). */
  h: number;
  /** Stanza error condition for a late `<resume/>`: item-not-found, or resource-constraint after an overflow. */
  condition: string;
}

/** What the registry needs to know of a resumable session. */
export interface Resumable {
  /** The authenticated account (bare JID) that owns the session. */
  readonly bareJid: string;
}

/**
 * Resumable sessions by resumption id (XEP-0198 §5), and the final `h` of ended ones, a bounded
 * number per account (mod_smacks' smacks_max_old_sessions) so that a late `<resume/>` gets
 * `<failed h='…'>`.
 */
export class SessionRegistry<S extends Resumable> {
  readonly #live = new Map<string, S>();
  /** bare JID → ended sessions' (id, h, why not resumable), oldest first. */
  readonly #old = new Map<string, Array<OldSession>>();
  readonly #maxOld: number;

  constructor(maxOldSessions: number) {
    this.#maxOld = maxOldSessions;
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

  /** An ended session of `bareJid` with this id, if still remembered. */
  old(id: string, bareJid: string): OldSession | undefined {
    return this.#old.get(bareJid)?.find((entry) => entry.id === id);
  }

  /**
   * Removes a live session; with `finalH`, remembers it for late resumes (XEP-0198 §5 `<failed h>`),
   * with the stanza error `condition` a late resume gets (default item-not-found).
   */
  remove(id: string, session: S, finalH?: number, condition = 'item-not-found'): void {
    if (this.#live.get(id) !== session) return;
    this.#live.delete(id);
    if (finalH === undefined || this.#maxOld === 0) return;
    const list = this.#old.get(session.bareJid) ?? [];
    list.push({ id, h: finalH, condition });
    if (list.length > this.#maxOld) list.shift();
    this.#old.set(session.bareJid, list);
  }

  /** All live sessions (for shutdown). */
  sessions(): S[] {
    return [...this.#live.values()];
  }
}
