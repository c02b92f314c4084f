import type { QueuedStanza } from '../sm/outbound-queue.ts';

/**
 * The proxy's stand-in for offline storage (design §4.3): chat/normal messages left unacked by
 * an account's last session, kept in memory per bare JID and delivered, with delay stamps, when
 * the account next logs in. Bounded per account; the oldest are dropped first (and counted).
 */
export class HeldMessages {
  readonly #byAccount = new Map<string, QueuedStanza[]>();
  readonly #max: number;
  /** Messages dropped because an account's hold was full. */
  dropped = 0;

  /** @param maxPerAccount messages kept per account (0 keeps none). */
  constructor(maxPerAccount: number) {
    this.#max = maxPerAccount;
  }

  /** Keeps a message for `bareJid`. Returns false when it had to drop one to make room. */
  hold(bareJid: string, stanza: QueuedStanza): boolean {
    if (this.#max === 0) {
      this.dropped++;
      return false;
    }
    const list = this.#byAccount.get(bareJid) ?? [];
    list.push(stanza);
    this.#byAccount.set(bareJid, list);
    if (list.length <= this.#max) return true;
    list.shift();
    this.dropped++;
    return false;
  }

  /** Removes and returns what is held for `bareJid`, oldest first. */
  take(bareJid: string): QueuedStanza[] {
    const list = this.#byAccount.get(bareJid) ?? [];
    this.#byAccount.delete(bareJid);
    return list;
  }

  /** Messages held for `bareJid`. */
  count(bareJid: string): number {
    return this.#byAccount.get(bareJid)?.length ?? 0;
  }
}
