/**
 * A Store in the process's memory: nothing survives the process. For tests (a "restart" is a new
 * working set built from the same MemoryStore) and for embedding the proxy without a data
 * directory. It keeps what it is given, unbounded: the working set's bounds are what limit it.
 */
import type { HeldRecord, OldSessionRecord, PushRegistration, Store, StoreKey } from './store.ts';

export class MemoryStore implements Store {
  readonly #held = new Map<StoreKey, HeldRecord>();
  #nextKey = 1;
  /** Insertion order is `endedAt` order as long as the clock does not go back; loadAll sorts anyway. */
  readonly #old = new Map<string, OldSessionRecord>();
  /** account → (jid \0 node → registration), insertion order kept by Map. */
  readonly #push = new Map<string, Map<string, PushRegistration>>();
  /** Writes made (puts and deletes), for tests. */
  writes = 0;

  readonly heldMessages = {
    put: (bareJid: string, xml: string, receivedAt: number): StoreKey => {
      this.writes++;
      const key = this.#nextKey++;
      this.#held.set(key, { key, bareJid, xml, receivedAt });
      return key;
    },
    delete: (keys: readonly StoreKey[]): void => {
      this.writes += keys.length;
      for (const key of keys) this.#held.delete(key);
    },
    loadAll: (): HeldRecord[] => [...this.#held.values()].sort((a, b) => a.key - b.key),
  };

  readonly oldSessions = {
    put: (record: OldSessionRecord): void => {
      this.writes++;
      this.#old.delete(record.idHash);
      this.#old.set(record.idHash, { ...record });
    },
    delete: (idHashes: readonly string[]): void => {
      this.writes += idHashes.length;
      for (const idHash of idHashes) this.#old.delete(idHash);
    },
    // Array.prototype.sort is stable: equal ends stay in insertion order.
    loadAll: (): OldSessionRecord[] => [...this.#old.values()].sort((a, b) => a.endedAt - b.endedAt),
  };

  readonly pushRegistrations = {
    list: (bareJid: string): PushRegistration[] =>
      [...(this.#push.get(bareJid)?.values() ?? [])].sort((a, b) => a.createdAt - b.createdAt),
    put: (bareJid: string, registration: PushRegistration): void => {
      this.writes++;
      const account = this.#push.get(bareJid) ?? new Map<string, PushRegistration>();
      account.set(`${registration.jid}\0${registration.node}`, { ...registration });
      this.#push.set(bareJid, account);
    },
    remove: (bareJid: string, jid: string, node: string): void => {
      this.writes++;
      const account = this.#push.get(bareJid);
      account?.delete(`${jid}\0${node}`);
      if (account?.size === 0) this.#push.delete(bareJid);
    },
    loadAll: (): Array<{ bareJid: string; registration: PushRegistration }> =>
      [...this.#push.keys()].sort().flatMap((bareJid) => this.pushRegistrations.list(bareJid).map((registration) => ({ bareJid, registration }))),
  };

  readonly writeErrors = 0;

  transaction<T>(fn: () => T): T {
    return fn();
  }

  /** Nothing to close: the contents stay, so that a test can build a new working set from them. */
  close(): void {}
}
