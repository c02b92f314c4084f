import { Element } from 'ltx';
import type { Logger } from 'pino';
import type { SessionManager } from '../session/manager.ts';
import type { Session } from '../session/session.ts';
import type { ProxyEventMap, StanzaHook } from '../session/events.ts';
import type { TopLevel } from '../xml/top-level.ts';
import { NS } from '../xml/stream-header.ts';
import { prepJid } from '../jid.ts';
import { publishOptionsOf } from './notification.ts';
import { PushNotifier, type PushOptions } from './notifier.ts';
import type { PushRegistrations } from './registrations.ts';

/** XEP-0357. */
export const NS_PUSH = 'urn:xmpp:push:0';
const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';

/** disco#info requests to the account awaiting the server's answer, per session (bounded). */
const MAX_DISCO_PER_SESSION = 8;

/** Failures of enable/disable, mapped to their stanza errors (RFC 6120 §8.3.3). */
const FAILURES = {
  missingJid: ['modify', 'bad-request', 'the jid attribute is required (XEP-0357 §5)'],
  ownJid: ['modify', 'bad-request', 'the app server must be another entity than the account'],
  malformedJid: ['modify', 'jid-malformed', 'the jid attribute is not a valid JID'],
  badForm: ['modify', 'bad-request', 'the form is not a pubsub#publish-options form'],
  tooLarge: ['modify', 'not-acceptable', 'jid, node or publish-options too large'],
} as const satisfies Record<string, readonly [type: string, condition: string, text: string]>;

/**
 * XEP-0357 for the proxy's clients, whatever the upstream supports (design §4.7, Prosody's
 * mod_cloud_notify): answers `<enable/>` and `<disable/>` itself (they never reach the
 * upstream), adds `urn:xmpp:push:0` to the server's disco#info answer for the account (§5), and
 * has the {@link PushNotifier} push for sessions whose client sleeps. Registrations are per account
 * and durable (PushRegistrations over the store). Plugs into the session manager's stanza hooks
 * and events; the per-stanza path is not touched.
 */
export class PushFeature {
  /** The account's registrations (durable). */
  readonly registrations: PushRegistrations;
  readonly #manager: SessionManager;
  readonly #notifier: PushNotifier;
  readonly #log: Logger;
  /** disco#info ids sent by a session's client to its own bare JID, awaiting the server's answer. */
  readonly #disco = new WeakMap<Session, string[]>();
  readonly #fromClient: StanzaHook;
  readonly #fromUpstream: StanzaHook;
  readonly #listeners: Array<[keyof ProxyEventMap, (...args: never[]) => void]>;

  /**
   * @param hibernationSeconds `sm.hibernationSeconds`, restored after a session's first push.
   */
  constructor(manager: SessionManager, registrations: PushRegistrations, options: PushOptions, hibernationSeconds: number, log: Logger) {
    this.#manager = manager;
    this.registrations = registrations;
    this.#log = log;
    this.#notifier = new PushNotifier({ registrations, options, hibernationSeconds, emit: (name, ...args) => manager.emit(name, ...args), log });
    this.#fromClient = (el, session) => {
      if (el.name !== 'iq') return;
      const type = el.attrs.type;
      if (type === 'set' && el.raw.includes(NS_PUSH)) return this.#onSet(el, session);
      if (type === 'get' && el.attrs.to !== undefined && el.raw.includes(NS_DISCO_INFO)) this.#onDiscoGet(el, session);
    };
    this.#fromUpstream = (el, session) => {
      if (el.name === 'iq' && (el.attrs.type === 'result' || el.attrs.type === 'error')) {
        if (this.#notifier.pending > 0 && this.#notifier.reply(el)) return true;
        if (this.#disco.has(session) && this.#onDiscoAnswer(el, session)) return true;
      }
      this.#notifier.queued(session);
    };
    manager.hooks.fromClient.push(this.#fromClient);
    manager.hooks.fromUpstream.push(this.#fromUpstream);
    const n = this.#notifier;
    this.#listeners = [
      ['session-hibernating', (s: Session) => n.watch(s, 'hibernated')],
      ['session-resumed', (s: Session) => n.unwatch(s)],
      ['ack-delayed', (s: Session) => (s.hibernating ? undefined : n.watch(s, 'unresponsive'))],
      ['ack-received', (s: Session) => n.responsive(s)],
      ['session-ending', (s: Session, info: ProxyEventMap['session-ending'][1]) => n.ending(s, info.held, info.cause)],
      ['session-ended', (s: Session) => n.ended(s)],
      ['upstream-down', (s: Session) => n.linkDown(s)],
      ['upstream-up', (s: Session) => n.linkUp(s)],
    ];
    for (const [name, listener] of this.#listeners) manager.events.on(name as 'session-ended', listener as never);
  }

  /** Sessions watched for pushes now, and pushes awaiting their answer (diagnostics, tests). */
  get stats(): { watched: number; pending: number } {
    return { watched: this.#notifier.watched, pending: this.#notifier.pending };
  }

  /** Unhooks the feature and stops its timers. */
  close(): void {
    this.#notifier.close();
    for (const [name, listener] of this.#listeners) this.#manager.events.off(name as 'session-ended', listener as never);
    const { hooks } = this.#manager;
    hooks.fromClient.splice(hooks.fromClient.indexOf(this.#fromClient), 1);
    hooks.fromUpstream.splice(hooks.fromUpstream.indexOf(this.#fromUpstream), 1);
  }

  /** An iq set naming urn:xmpp:push:0: true (consumed and answered) for enable/disable to the account. */
  #onSet(el: TopLevel, session: Session): boolean | undefined {
    const to = el.attrs.to;
    // XEP-0357 §5: addressed to the user's own account (no 'to', or its bare JID).
    if (to !== undefined && prepJidOr(to) !== session.bareJid) return undefined;
    const iq = el.element();
    const child = iq.children.find((c): c is Element => typeof c !== 'string');
    if (!child || child.attrs.xmlns !== NS_PUSH || (child.name !== 'enable' && child.name !== 'disable')) return undefined;
    const failure = child.name === 'enable' ? this.#enable(child, session) : this.#disable(child, session);
    session.sendToClient(failure ? iqError(el, session, failure) : iqResult(el, session));
    return true;
  }

  /** XEP-0357 §5. @returns the failure, or undefined when registered. */
  #enable(enable: Element, session: Session): (typeof FAILURES)[keyof typeof FAILURES] | undefined {
    const jid = enable.attrs.jid as string | undefined;
    if (!jid) return FAILURES.missingJid;
    const prepared = prepJidOr(jid);
    if (prepared === undefined) return FAILURES.malformedJid;
    if (prepared === session.bareJid || prepared === session.fullJid) return FAILURES.ownJid;
    let form: string | undefined;
    try {
      form = publishOptionsOf(enable);
    } catch {
      return FAILURES.badForm;
    }
    let evicted;
    try {
      evicted = this.registrations.enable(session.bareJid, jid, (enable.attrs.node as string | undefined) ?? '', form);
    } catch {
      return FAILURES.tooLarge;
    }
    this.#notifier.forget(session.bareJid, evicted);
    session.log.info({ appServer: domainOf(prepared), evicted: evicted.length }, 'push enabled');
    return undefined;
  }

  /** XEP-0357 §6: without `node`, every registration of the account with that app server. */
  #disable(disable: Element, session: Session): (typeof FAILURES)[keyof typeof FAILURES] | undefined {
    const jid = disable.attrs.jid as string | undefined;
    if (!jid) return FAILURES.missingJid;
    const removed = this.registrations.disable(session.bareJid, jid, disable.attrs.node as string | undefined);
    this.#notifier.forget(session.bareJid, removed);
    if (!this.registrations.has(session.bareJid)) this.#notifier.unwatch(session);
    session.log.info({ appServer: domainOf(prepJidOr(jid) ?? jid), removed: removed.length }, 'push disabled');
    return undefined;
  }

  /** A disco#info request to the account itself (XEP-0357 §5): its answer gets the push feature. */
  #onDiscoGet(el: TopLevel, session: Session): void {
    const id = el.attrs.id;
    if (id === undefined || prepJidOr(el.attrs.to!) !== session.bareJid) return;
    const query = el.element().getChild('query', NS_DISCO_INFO);
    if (!query || query.attrs.node !== undefined) return; // a node's features are not the account's
    const ids = this.#disco.get(session) ?? [];
    ids.push(id);
    if (ids.length > MAX_DISCO_PER_SESSION) ids.shift();
    this.#disco.set(session, ids);
  }

  /** The server's answer to such a request: true when replaced by one with the push feature. */
  #onDiscoAnswer(el: TopLevel, session: Session): boolean {
    const ids = this.#disco.get(session)!;
    const at = ids.indexOf(el.attrs.id ?? '');
    if (at === -1) return false;
    ids.splice(at, 1);
    if (ids.length === 0) this.#disco.delete(session);
    let answer: Element;
    if (el.attrs.type === 'result') {
      answer = el.element();
      const q = answer.getChild('query', NS_DISCO_INFO) ?? answer.c('query', { xmlns: NS_DISCO_INFO });
      if (!q.getChildren('feature').some((f) => f.attrs.var === NS_PUSH)) q.c('feature', { var: NS_PUSH });
    } else {
      // A server that does not answer for accounts (some legacy ones): the proxy does, so that
      // clients find push (an account exists: it is logged in).
      answer = new Element('iq', { type: 'result', id: el.attrs.id, from: session.bareJid, to: session.fullJid });
      const q = answer.c('query', { xmlns: NS_DISCO_INFO });
      q.c('identity', { category: 'account', type: 'registered' });
      q.c('feature', { var: NS_DISCO_INFO });
      q.c('feature', { var: NS_PUSH });
      this.#log.debug('the server answered disco#info for an account with an error: the proxy answers');
    }
    session.sendToClient(answer.toString());
    return true;
  }
}

/** A prepared JID, or undefined when it is not a valid one. */
function prepJidOr(jid: string): string | undefined {
  try {
    return prepJid(jid);
  } catch {
    return undefined;
  }
}

/** The domain of a JID, for logs (the app server's service, never a user's JID or node). */
function domainOf(jid: string): string {
  const bare = jid.split('/')[0]!;
  return bare.slice(bare.indexOf('@') + 1);
}

function replyTo(el: TopLevel, session: Session, type: 'result' | 'error'): Element {
  // Answered on the account's behalf: from its bare JID when the request named it (RFC 6120 §8.1.2.1).
  const attrs: Record<string, string> = { type, id: el.attrs.id ?? '', to: session.fullJid };
  if (el.attrs.to !== undefined) attrs.from = session.bareJid;
  return new Element('iq', attrs);
}

function iqResult(el: TopLevel, session: Session): string {
  return replyTo(el, session, 'result').toString();
}

function iqError(el: TopLevel, session: Session, [type, condition, text]: readonly [string, string, string]): string {
  const reply = replyTo(el, session, 'error');
  const error = reply.c('error', { type });
  error.c(condition, { xmlns: NS.stanzas });
  error.c('text', { xmlns: NS.stanzas }).t(text);
  return reply.toString();
}
