/**
 * Push registrations per account (XEP-0357 §5–6) with mod_cloud_notify's rules as design §4.7
 * states them: at most 5 per account, the oldest evicted; enabling the same (jid, node) again
 * replaces it (new form, new age, failures reset); failed pushes are counted per registration,
 * a success resets the count, and the 16th failure in a row removes it.
 *
 * Kept in memory for every account (the working set) and written through to the store (design
 * §4.8) before each method returns; loaded from the store at construction. Memory is bounded by
 * accounts × `maxPerAccount` × (jid + node + form), each field limited by {@link PUSH_LIMITS}.
 */
import type { PushRegistration, Store } from '../storage/store.ts';

export type { PushRegistration } from '../storage/store.ts';

/** Sizes (characters) past which `enable` refuses a registration. */
export const PUSH_LIMITS = {
  /** RFC 7622 §3.1: a JID is at most 3071 bytes. */
  jid: 3071,
  /** A pubsub node id; app servers use short tokens. */
  node: 1024,
  /** The publish-options form (XML); clients send a secret and an endpoint or two. */
  form: 8192,
} as const;

export interface PushRegistrationsOptions {
  /** Registrations per account; past it the oldest is evicted (design §4.7). Default 5. */
  maxPerAccount?: number;
  /** Failed pushes in a row that remove a registration (design §4.7, mod_cloud_notify). Default 16. */
  maxFailures?: number;
  /** The clock (ms since the epoch), for `createdAt`; tests pass a fake one. Default Date.now. */
  now?: () => number;
  /** The durable store; without one, registrations are lost at a restart. */
  store?: Store;
}

/** The outcome of a failed push for its registration. */
export interface PushFailure {
  /** Failures in a row, this one included. */
  failures: number;
  /** Whether this failure removed the registration (it reached `maxFailures`). */
  removed: boolean;
}

export class PushRegistrations {
  /** account → its registrations, oldest first. */
  readonly #byAccount = new Map<string, PushRegistration[]>();
  readonly #max: number;
  readonly #maxFailures: number;
  readonly #now: () => number;
  readonly #store: Store | undefined;

  /** @throws StoreError when the store cannot be read. */
  constructor(options: PushRegistrationsOptions = {}) {
    this.#max = options.maxPerAccount ?? 5;
    this.#maxFailures = options.maxFailures ?? 16;
    this.#now = options.now ?? Date.now;
    this.#store = options.store;
    if (this.#store) this.#load(this.#store);
  }

  /** Rebuilds the working set; what is over the limits now (lowered since) is removed from the store. */
  #load(store: Store): void {
    const over: Array<[string, PushRegistration]> = [];
    for (const { bareJid, registration } of store.pushRegistrations.loadAll()) {
      if (registration.failures >= this.#maxFailures) {
        over.push([bareJid, registration]);
        continue;
      }
      const list = this.#byAccount.get(bareJid) ?? [];
      list.push(registration);
      this.#byAccount.set(bareJid, list);
      if (list.length > this.#max) over.push([bareJid, list.shift()!]);
    }
    store.transaction(() => {
      for (const [bareJid, r] of over) store.pushRegistrations.remove(bareJid, r.jid, r.node);
    });
  }

  /** Accounts with registrations. */
  get accounts(): number {
    return this.#byAccount.size;
  }

  /** Registrations, all accounts. */
  get size(): number {
    let n = 0;
    for (const list of this.#byAccount.values()) n += list.length;
    return n;
  }

  /** True when `bareJid` has at least one registration (cheap: no copy). */
  has(bareJid: string): boolean {
    return this.#byAccount.has(bareJid);
  }

  /** An account's registrations, oldest first (a copy). */
  list(bareJid: string): PushRegistration[] {
    return [...(this.#byAccount.get(bareJid) ?? [])];
  }

  /**
   * Registers (`<enable jid node>` with an optional publish-options form, as XML) for `bareJid`,
   * replacing one with the same jid and node.
   * @returns the registrations evicted to make room (the account's oldest).
   * `node` may be '' (mod_cloud_notify accepts an enable without one: XEP-0357 §5 says SHOULD).
   * @throws RangeError when a field is over {@link PUSH_LIMITS} or jid is empty (the caller
   *   answers `bad-request` or `not-acceptable`).
   */
  enable(bareJid: string, jid: string, node: string, form?: string): PushRegistration[] {
    if (!jid) throw new RangeError('push: jid is required');
    if (jid.length > PUSH_LIMITS.jid || node.length > PUSH_LIMITS.node || (form?.length ?? 0) > PUSH_LIMITS.form) {
      throw new RangeError('push: registration too large');
    }
    const registration: PushRegistration = { jid, node, ...(form === undefined ? {} : { form }), createdAt: this.#now(), failures: 0 };
    const list = (this.#byAccount.get(bareJid) ?? []).filter((r) => !(r.jid === jid && r.node === node));
    list.push(registration);
    const evicted = list.length > this.#max ? list.splice(0, list.length - this.#max) : [];
    this.#set(bareJid, list);
    this.#write((store) => {
      // Removed first: the replaced one then goes to the back of the store's order too.
      store.pushRegistrations.remove(bareJid, jid, node);
      store.pushRegistrations.put(bareJid, registration);
      for (const r of evicted) store.pushRegistrations.remove(bareJid, r.jid, r.node);
    });
    return evicted;
  }

  /**
   * Unregisters (`<disable jid [node]>`, XEP-0357 §6): without `node`, every registration of the
   * account with that app server.
   * @returns the registrations removed.
   */
  disable(bareJid: string, jid: string, node?: string): PushRegistration[] {
    const list = this.#byAccount.get(bareJid) ?? [];
    const hit = (r: PushRegistration) => r.jid === jid && (node === undefined || r.node === node);
    const removed = list.filter(hit);
    if (removed.length === 0) return [];
    this.#set(bareJid, list.filter((r) => !hit(r)));
    this.#write((store) => {
      for (const r of removed) store.pushRegistrations.remove(bareJid, r.jid, r.node);
    });
    return removed;
  }

  /**
   * Counts a failed push (the caller leaves out errors of type `wait`, design §4.7); the
   * `maxFailures`-th in a row removes the registration.
   * @returns the count and whether it was removed, or undefined for an unknown registration.
   */
  failed(bareJid: string, jid: string, node: string): PushFailure | undefined {
    const r = this.#find(bareJid, jid, node);
    if (!r) return undefined;
    const failures = r.failures + 1;
    if (failures >= this.#maxFailures) {
      this.disable(bareJid, jid, node);
      return { failures, removed: true };
    }
    this.#update(bareJid, { ...r, failures });
    return { failures, removed: false };
  }

  /** A push went through: the failure count starts again from 0. */
  succeeded(bareJid: string, jid: string, node: string): void {
    const r = this.#find(bareJid, jid, node);
    if (r && r.failures > 0) this.#update(bareJid, { ...r, failures: 0 });
  }

  #find(bareJid: string, jid: string, node: string): PushRegistration | undefined {
    return this.#byAccount.get(bareJid)?.find((r) => r.jid === jid && r.node === node);
  }

  /** Replaces a registration in place (same jid and node, same position). */
  #update(bareJid: string, registration: PushRegistration): void {
    const list = this.#byAccount.get(bareJid)!;
    list[list.findIndex((r) => r.jid === registration.jid && r.node === registration.node)] = registration;
    this.#write((store) => store.pushRegistrations.put(bareJid, registration));
  }

  #set(bareJid: string, list: PushRegistration[]): void {
    if (list.length === 0) this.#byAccount.delete(bareJid);
    else this.#byAccount.set(bareJid, list);
  }

  #write(fn: (store: Store) => void): void {
    const store = this.#store;
    if (store) store.transaction(() => fn(store));
  }
}
