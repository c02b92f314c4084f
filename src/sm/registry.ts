import { randomBytes } from 'node:crypto';

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
  /** bare JID → ended sessions' (id, h), oldest first. */
  readonly #old = new Map<string, Array<{ id: string; h: number }>>();
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

  /** The final `h` of an ended session of `bareJid`, if still remembered. */
  oldH(id: string, bareJid: string): number | undefined {
    return this.#old.get(bareJid)?.find((entry) => entry.id === id)?.h;
  }

  /** Removes a live session; with `finalH`, remembers it for late resumes. */
  remove(id: string, session: S, finalH?: number): void {
    if (this.#live.get(id) !== session) return;
    this.#live.delete(id);
    if (finalH === undefined || this.#maxOld === 0) return;
    const list = this.#old.get(session.bareJid) ?? [];
    list.push({ id, h: finalH });
    if (list.length > this.#maxOld) list.shift();
    this.#old.set(session.bareJid, list);
  }

  /** All live sessions (for shutdown). */
  sessions(): S[] {
    return [...this.#live.values()];
  }
}
