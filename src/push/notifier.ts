import { randomBytes } from 'node:crypto';
import { parse, type Element } from 'ltx';
import type { Logger } from 'pino';
import type { Session } from '../session/session.ts';
import type { EndCause, ProxyEventMap } from '../session/events.ts';
import type { QueuedStanza } from '../sm/outbound-queue.ts';
import type { TopLevel } from '../xml/top-level.ts';
import { bareJidOf } from '../jid.ts';
import { pushKind } from './classify.ts';
import { notificationIq } from './notification.ts';
import type { PushRegistration, PushRegistrations } from './registrations.ts';

/** The push options (config `push`, mod_cloud_notify's names); times in seconds. */
export interface PushOptions {
  /** Registrations per account (push_max_devices). Default 5. */
  maxDevices: number;
  /** Failed pushes in a row that remove a registration (push_max_errors). Default 16. */
  maxErrors: number;
  /** A hibernated session waits this long for its first important push (push_max_hibernation_timeout). Default 72 h. */
  maxHibernationSeconds: number;
  /** `last-message-body` carries the body (push_notification_with_body). Default false. */
  withBody: boolean;
  /** `last-message-sender` carries the sender (push_notification_with_sender). Default false. */
  withSender: boolean;
  /** The body placeholder of important pushes (push_notification_important_body). Default 'New Message!'. */
  importantBody: string;
  /** Stanzas are collected this long before one push per registration goes out. Default 1. */
  batchSeconds: number;
  /** An unanswered push counts as failed after this long. Default 60. */
  replyTimeoutSeconds: number;
}

/** Pushes awaiting the app server's answer, proxy-wide; past it the oldest is no longer awaited. */
export const MAX_PENDING_PUSHES = 10_000;

/** Why a session is watched: its client is away (hibernated) or does not answer `<r/>`. */
type WatchReason = 'hibernated' | 'unresponsive';

interface Watch {
  reason: WatchReason;
  /** The batch timer, while a batch is open. */
  timer: NodeJS.Timeout | undefined;
  /** Pushable stanzas since the watch began (`message-count`). */
  count: number;
  /** The hibernation runs to `maxHibernationSeconds` until the first important push. */
  extended: boolean;
}

interface PendingPush {
  bareJid: string;
  registration: PushRegistration;
  important: boolean;
  session: Session;
  timer: NodeJS.Timeout;
}

/** What a batch found among stanzas not judged before. */
interface Batch {
  count: number;
  important: boolean;
  /** For `withSender` / `withBody`: the last pushable stanza (an important one when there is one). */
  last: Element | undefined;
}

export interface PushNotifierDeps {
  registrations: PushRegistrations;
  options: PushOptions;
  /** The normal hibernation time (`sm.hibernationSeconds`), restored after the first push. */
  hibernationSeconds: number;
  emit<K extends keyof ProxyEventMap>(name: K, ...args: ProxyEventMap[K]): void;
  log: Logger;
}

/**
 * Sends the pushes (XEP-0357 §7) with mod_cloud_notify's rules (design §4.7): for a session
 * that is watched (hibernated, or not answering `<r/>` for `max_ack_delay`), the stanzas queued
 * for it are judged (classify.ts) in batches of `batchSeconds`: one push per registration per
 * batch, important when any stanza of it was; a stanza is judged once, so never pushed twice.
 * The account's messages held when its last session ends are pushed there too.
 *
 * Each push goes over the session's own upstream link (whatever the server supports) and its
 * answer is awaited `replyTimeoutSeconds`: errors other than type `wait` and timeouts count
 * against the registration, a result resets the count (PushRegistrations).
 *
 * Proxy events it emits: `push-outcome` (outcome, { important }), `push-hibernation-extended` (session).
 */
export class PushNotifier {
  readonly #deps: PushNotifierDeps;
  readonly #watched = new Map<Session, Watch>();
  /** Queued stanzas already judged (pushed or not worth a push): never judged again. */
  readonly #judged = new WeakSet<QueuedStanza>();
  readonly #pending = new Map<string, PendingPush>();

  constructor(deps: PushNotifierDeps) {
    this.#deps = deps;
  }

  /** Sessions watched now (for tests and metrics). */
  get watched(): number {
    return this.#watched.size;
  }

  /** Pushes awaiting their answer. */
  get pending(): number {
    return this.#pending.size;
  }

  /**
   * The client of `session` is away (`hibernated`) or silent (`unresponsive`): push for what is
   * queued for it, if its account has registrations. A hibernation is extended (see class doc).
   */
  watch(session: Session, reason: WatchReason): void {
    if (!this.#deps.registrations.has(session.bareJid)) return;
    let w = this.#watched.get(session);
    if (!w) {
      w = { reason, timer: undefined, count: 0, extended: false };
      this.#watched.set(session, w);
    }
    if (reason === 'hibernated') {
      w.reason = reason;
      const { maxHibernationSeconds } = this.#deps.options;
      // mod_cloud_notify: a phone that got no push has no reason to wake: keep its session.
      if (!w.extended && maxHibernationSeconds > this.#deps.hibernationSeconds && session.setHibernationTimeout(maxHibernationSeconds)) {
        w.extended = true;
        session.log.info(`push enabled: hibernation extended to ${maxHibernationSeconds} s until the first push`);
        this.#deps.emit('push-hibernation-extended', session);
      }
    }
    this.#schedule(session, w);
  }

  /** The client answered (an `<a/>`): an unresponsive session is no longer watched. */
  responsive(session: Session): void {
    if (this.#watched.get(session)?.reason === 'unresponsive') this.unwatch(session);
  }

  /** The client is back (resumed) or the session ends: no more pushes for it. */
  unwatch(session: Session): void {
    const w = this.#watched.get(session);
    if (!w) return;
    clearTimeout(w.timer);
    this.#watched.delete(session);
  }

  /** A stanza is on its way to the client of `session` (the stanza hook): a batch opens if watched. */
  queued(session: Session): void {
    const w = this.#watched.get(session);
    if (w && w.timer === undefined) this.#schedule(session, w);
  }

  /**
   * The session is ending and `held` stanzas wait for the account's next login (its last
   * session): push for those not pushed yet, to every registration of the account, now (the
   * link closes next, so the answers cannot come back: `unconfirmed`). Not at a shutdown:
   * attached clients reconnect by themselves, hibernated ones were pushed already.
   */
  ending(session: Session, held: readonly QueuedStanza[], cause: EndCause): void {
    this.unwatch(session);
    if (held.length === 0 || cause === 'shutdown' || !this.#deps.registrations.has(session.bareJid)) return;
    const batch = this.#judge(held);
    if (batch.count === 0) return;
    session.log.info({ held: held.length }, 'push for the messages held after the last session of the account');
    for (const r of this.#deps.registrations.list(session.bareJid)) this.#send(session, r, batch, batch.count, false);
  }

  /** The session ended: its pushes' answers cannot arrive any more. */
  ended(session: Session): void {
    this.unwatch(session);
    this.linkDown(session);
  }

  /** The session's upstream link dropped: answers to pushes sent on it are lost (not counted). */
  linkDown(session: Session): void {
    for (const [id, p] of this.#pending) if (p.session === session) this.#settle(id, p, 'unconfirmed');
  }

  /** A new upstream link: what could not be pushed while it was down goes now. */
  linkUp(session: Session): void {
    const w = this.#watched.get(session);
    if (w) this.#schedule(session, w);
  }

  /** Registrations were removed (disable, eviction): answers to their pushes are not awaited. */
  forget(bareJid: string, removed: readonly PushRegistration[]): void {
    if (removed.length === 0 || this.#pending.size === 0) return;
    for (const [id, p] of this.#pending) {
      if (p.bareJid === bareJid && removed.some((r) => r.jid === p.registration.jid && r.node === p.registration.node)) this.#settle(id, p, 'unconfirmed');
    }
  }

  /**
   * An iq from the upstream: true (consumed) when it answers one of the pushes (the client never
   * sees it). Errors of type `wait` do not count against the registration (mod_cloud_notify).
   */
  reply(el: TopLevel): boolean {
    const id = el.attrs.id;
    const p = id === undefined ? undefined : this.#pending.get(id);
    if (!p || (el.attrs.type !== 'result' && el.attrs.type !== 'error')) return false;
    const from = el.attrs.from ?? '';
    if (from !== p.registration.jid && bareJidOf(from) !== bareJidOf(p.registration.jid)) {
      p.session.log.debug('answer to a push from another entity than its app server: ignored');
      return true;
    }
    if (el.attrs.type === 'result') {
      this.#settle(id!, p, 'sent');
      this.#deps.registrations.succeeded(p.bareJid, p.registration.jid, p.registration.node);
      return true;
    }
    const error = el.element().getChild('error');
    this.#settle(id!, p, 'error');
    if (error?.attrs.type === 'wait') return true;
    const condition = error?.children.find((c): c is Element => typeof c !== 'string')?.name;
    this.#failed(p, `error ${error?.attrs.type ?? '?'}/${condition ?? '?'}`);
    return true;
  }

  /** Stops every timer. */
  close(): void {
    for (const w of this.#watched.values()) clearTimeout(w.timer);
    this.#watched.clear();
    for (const p of this.#pending.values()) clearTimeout(p.timer);
    this.#pending.clear();
  }

  #schedule(session: Session, w: Watch): void {
    if (w.timer !== undefined) return;
    w.timer = setTimeout(() => this.#flush(session), this.#deps.options.batchSeconds * 1000);
    w.timer.unref();
  }

  /** The end of a batch: one push per registration for what was queued and not judged yet. */
  #flush(session: Session): void {
    const w = this.#watched.get(session);
    if (!w) return;
    w.timer = undefined;
    const registrations = this.#deps.registrations.list(session.bareJid);
    if (registrations.length === 0) {
      // Every registration went (errors, or disabled from another client).
      this.unwatch(session);
      if (w.extended) session.setHibernationTimeout(this.#deps.hibernationSeconds);
      return;
    }
    if (!session.upstreamLinked) return; // linkUp() schedules it again
    const batch = this.#judge(session.sm.unacked());
    if (batch.count === 0) return;
    w.count += batch.count;
    let sent = false;
    for (const r of registrations) sent = this.#send(session, r, batch, w.count, true) || sent;
    // mod_cloud_notify: the first push that shows something ends the extension; the normal time runs from it.
    if (sent && w.extended && w.reason === 'hibernated' && (batch.important || this.#deps.options.importantBody === '')) {
      w.extended = false;
      session.setHibernationTimeout(this.#deps.hibernationSeconds);
      session.log.info(`first push sent: hibernation ends in ${this.#deps.hibernationSeconds} s unless resumed`);
    }
  }

  /** Judges the stanzas not judged before (each once: never pushed twice). */
  #judge(stanzas: readonly QueuedStanza[]): Batch {
    const batch: Batch = { count: 0, important: false, last: undefined };
    for (const stanza of stanzas) {
      if (this.#judged.has(stanza)) continue;
      this.#judged.add(stanza);
      if (stanza.xml.startsWith('<presence')) continue; // never pushed, and the common case
      let el: Element;
      try {
        el = parse(stanza.xml) as Element;
      } catch {
        continue; // the proxy's own text, well-formed; a bug here must not cost the push of the rest
      }
      const kind = pushKind(el);
      if (kind === 'none') continue;
      batch.count++;
      if (kind === 'important') batch.important = true;
      if (kind === 'important' || !batch.important) batch.last = el;
    }
    return batch;
  }

  /** Sends one push; `track`: await its answer. @returns false when it could not go out. */
  #send(session: Session, registration: PushRegistration, batch: Batch, count: number, track: boolean): boolean {
    const { withBody, withSender, importantBody } = this.#deps.options;
    const id = `push-${randomBytes(12).toString('base64url')}`;
    const last = batch.last && unwrapCarbon(batch.last);
    const body = withBody ? (last?.getChildText('body') ?? undefined) : batch.important && importantBody !== '' ? importantBody : undefined;
    const xml = notificationIq({
      id,
      to: registration.jid,
      node: registration.node,
      count,
      ...(withSender && last?.attrs.from ? { sender: bareJidOf(last.attrs.from as string) } : {}),
      ...(body ? { body } : {}),
      ...(registration.form === undefined ? {} : { publishOptions: registration.form }),
    });
    if (!session.sendToUpstream(xml)) return false;
    if (!track) {
      this.#deps.emit('push-outcome', 'unconfirmed', { important: batch.important });
      return true;
    }
    if (this.#pending.size >= MAX_PENDING_PUSHES) {
      const [oldId, old] = this.#pending.entries().next().value!;
      this.#settle(oldId, old, 'unconfirmed');
    }
    const timer = setTimeout(() => {
      const p = this.#pending.get(id);
      if (!p) return;
      this.#settle(id, p, 'timeout');
      this.#failed(p, `no answer in ${this.#deps.options.replyTimeoutSeconds} s`);
    }, this.#deps.options.replyTimeoutSeconds * 1000);
    timer.unref();
    this.#pending.set(id, { bareJid: session.bareJid, registration, important: batch.important, session, timer });
    session.log.debug({ important: batch.important, count }, 'push sent');
    return true;
  }

  #settle(id: string, p: PendingPush, outcome: 'sent' | 'error' | 'timeout' | 'unconfirmed'): void {
    clearTimeout(p.timer);
    this.#pending.delete(id);
    this.#deps.emit('push-outcome', outcome, { important: p.important });
  }

  #failed(p: PendingPush, why: string): void {
    const failure = this.#deps.registrations.failed(p.bareJid, p.registration.jid, p.registration.node);
    if (!failure) return;
    const appServer = bareJidOf(p.registration.jid).split('@').pop();
    if (failure.removed) {
      p.session.log.warn({ appServer, failures: failure.failures }, `push failed (${why}): registration removed after ${this.#deps.options.maxErrors} failures in a row`);
    } else {
      p.session.log.info({ appServer, failures: failure.failures }, `push failed (${why})`);
    }
  }
}

/** A received carbon's inner message (XEP-0280 §6), else the stanza itself. */
function unwrapCarbon(el: Element): Element {
  const inner = el.getChild('received', 'urn:xmpp:carbons:2')?.getChild('forwarded', 'urn:xmpp:forward:0')?.getChild('message');
  return inner ?? el;
}
