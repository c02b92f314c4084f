import { EventEmitter } from 'node:events';
import type { Element } from 'ltx';
import type { Logger } from 'pino';
import type { ClientStream } from '../c2s/client-stream.ts';
import type { UpstreamLink } from '../upstream/link.ts';
import type { PlainCredential } from '../upstream/sasl.ts';
import type { TopLevel } from '../xml/top-level.ts';
import type { SessionRegistry } from '../sm/registry.ts';
import { prepJid } from '../jid.ts';
import { Session, failed, type SessionDeps } from './session.ts';
import type { Handover } from './handover.ts';
import type { EndCause, ProxyEventMap, StanzaHooks } from './events.ts';

/** Session events the manager re-emits as proxy events, with the session first. */
const FORWARDED = [
  ['sm-enabled', 'sm-enabled'],
  ['hibernating', 'session-hibernating'],
  ['resumed', 'session-resumed'],
  ['ack-requested', 'ack-requested'],
  ['ack-received', 'ack-received'],
  ['ack-delayed', 'ack-delayed'],
  ['upstream-down', 'upstream-down'],
  ['upstream-up', 'upstream-up'],
  ['custody-confirmed', 'custody-confirmed'],
  ['duplicate-dropped', 'duplicate-dropped'],
  ['ending', 'session-ending'],
  ['relay-reconnect', 'relay-reconnect'],
] as const;

/** What the manager needs beside what it gives every session (registry, hooks, last-session rule). */
export interface SessionManagerDeps extends Omit<SessionDeps, 'registry' | 'hooks' | 'isLastSession'> {
  registry: SessionRegistry<Session>;
  /**
   * A client's password is checked against a live session's cached credential only while the
   * server accepted that credential within this many seconds (`upstream.credentialCacheSeconds`).
   */
  credentialCacheSeconds: number;
}

/** Live sessions by state, for metrics. */
export interface SessionCounts {
  /** A client stream is attached and the upstream link is up. */
  attached: number;
  /** No client stream: waiting for a resume (design §4.3). */
  hibernated: number;
  /** The upstream link is down and being replaced (design §4.5), client attached or not. */
  reconnecting: number;
}

/**
 * The proxy's sessions (design §2): creates them when a client binds, finds them for resumes,
 * cached-credential checks and resource takeovers, knows which is an account's last (design
 * §4.3), and is the proxy's one event surface: every session's events are re-emitted on
 * {@link events} with the session as first argument (see ProxyEventMap in events.ts), and
 * features register stanza hooks on {@link hooks}. Features never edit the per-stanza path.
 *
 * A listener that throws is logged and ignored: a feature's bug cannot break a session.
 */
export class SessionManager {
  /** The proxy's event surface (payloads: ProxyEventMap). */
  readonly events = new EventEmitter<ProxyEventMap>();
  /** Stanza hooks of features, shared by every session (events.ts). */
  readonly hooks: StanzaHooks = { fromClient: [], fromUpstream: [], relink: [] };
  readonly #sessions = new Set<Session>();
  /** Live sessions per bare JID (for the last-session rule of design §4.3). */
  readonly #byAccount = new Map<string, Set<Session>>();
  readonly #deps: SessionManagerDeps;
  readonly #sessionDeps: SessionDeps;
  readonly #log: Logger;

  constructor(deps: SessionManagerDeps) {
    this.#deps = deps;
    this.#log = deps.log;
    this.#sessionDeps = {
      ...deps,
      hooks: this.hooks,
      isLastSession: (session) => (this.#byAccount.get(session.bareJid)?.size ?? 0) <= 1,
    };
  }

  /** Live sessions, attached or hibernating. */
  get sessions(): ReadonlySet<Session> {
    return this.#sessions;
  }

  /** The live sessions of an account (a copy; empty when none). */
  sessionsOf(bareJid: string): Session[] {
    return [...(this.#byAccount.get(bareJid) ?? [])];
  }

  /** Live sessions by state (a reconnecting session counts there only). */
  counts(): SessionCounts {
    const counts = { attached: 0, hibernated: 0, reconnecting: 0 };
    for (const s of this.#sessions) {
      if (!s.upstreamLinked) counts.reconnecting++;
      else if (s.hibernating) counts.hibernated++;
      else counts.attached++;
    }
    return counts;
  }

  /** Emits a proxy event; a listener's throw is logged, never thrown into the session's code. */
  emit<K extends keyof ProxyEventMap>(name: K, ...args: ProxyEventMap[K]): void {
    try {
      (this.events.emit as (n: K, ...a: ProxyEventMap[K]) => boolean)(name, ...args);
    } catch (err) {
      this.#log.error({ err, event: name }, 'a listener of a proxy event failed');
    }
  }

  /**
   * The features of a live session of `bareJid` whose cached credential matches `cred` and was
   * accepted by the server within `credentialCacheSeconds` (design §4.3: a returning client is
   * verified against it without a new upstream login); undefined otherwise.
   */
  verifyCached(cred: PlainCredential, bareJid: string): Element | undefined {
    // A credential the server accepted long ago may have changed since: log in for real then.
    const fresh = Date.now() - this.#deps.credentialCacheSeconds * 1000;
    const session = [...(this.#byAccount.get(bareJid) ?? [])].find((s) => s.credentialAcceptedAt >= fresh);
    if (!session?.verifyPassword(cred.password)) return undefined;
    return session.upstreamFeatures;
  }

  /** Retires the live session of `bareJid` bound to `resource`, if any, and returns its handover. */
  takeover(bareJid: string, resource: string): Handover | undefined {
    const fullJid = prepJid(`${bareJid}/${resource}`);
    const old = [...(this.#byAccount.get(bareJid) ?? [])].find((s) => s.fullJid === fullJid);
    if (!old) return undefined;
    old.log.info('a new stream of this account binds the same resource: retiring this session');
    return old.retire();
  }

  /** A client bound `fullJid` on `link`: its session starts (design §4.1.4). */
  start(client: ClientStream, link: UpstreamLink, fullJid: string, handover?: Handover): Session {
    const session = new Session(this.#sessionDeps, client, link, fullJid, handover);
    this.#sessions.add(session);
    const mine = this.#byAccount.get(session.bareJid) ?? new Set<Session>();
    mine.add(session);
    this.#byAccount.set(session.bareJid, mine);
    for (const [from, to] of FORWARDED) {
      session.on(from, (...args: unknown[]) => this.emit(to, ...([session, ...args] as ProxyEventMap[typeof to])));
    }
    // resume-failed carries no session in the proxy event (an unknown id has none either).
    session.on('resume-failed', (reason) => this.emit('resume-failed', reason));
    session.once('ended', (end) => {
      this.#sessions.delete(session);
      mine.delete(session);
      if (mine.size === 0) this.#byAccount.delete(session.bareJid);
      this.emit('session-ended', session, end);
    });
    session.log.info('session started');
    this.emit('session-started', session);
    return session;
  }

  /**
   * `<resume/>` from `client` (XEP-0198 §5), after SASL: finds the session by id, bound to the
   * client's authenticated account, and hands the stream to it. Answers `<failed/>` itself for
   * an unknown or expired id. Resolves true when the session took the stream.
   */
  async resume(client: ClientStream, el: TopLevel): Promise<boolean> {
    const id = String(el.attrs.previd ?? '');
    const session = this.#deps.registry.get(id, client.bareJid!);
    if (!session) {
      // Unknown, expired, or another account's id: the same answer (XEP-0198 §5).
      const old = this.#deps.registry.old(id, client.bareJid!);
      client.write(failed(old?.condition ?? 'item-not-found', old?.h));
      client.log.info('resume failed: unknown session');
      this.emit('resume-failed', old ? 'expired' : 'unknown-id');
      return false;
    }
    // A session whose upstream link is down takes the client's new login as its link (a relayed
    // login's session cannot log in by itself, design §4.1.3); a live link stays, the login was proof.
    const takeLogin = session.relayed && !session.upstreamLinked ? () => client.takeLink() : undefined;
    if (!(await session.resume(client, el, takeLogin))) return false;
    // Logged in for real (no cache, or a stale one): the session keeps the fresher credential.
    const fresh = client.closeSpareLink();
    if (fresh) session.renewCredential(fresh);
    return true;
  }

  /** Ends every live session with `cause` (their unacked stanzas settled, design §4.3). */
  endAll(cause: EndCause, detail?: string): void {
    for (const session of [...this.#sessions]) session.end(cause, detail);
  }

  /**
   * The proxy is stopping: every session gets its last acks (at most `waitMs` ms, all in
   * parallel) and ends with cause `shutdown` (Session.shutdown).
   */
  async shutdown(waitMs: number): Promise<void> {
    await Promise.all([...this.#sessions].map((session) => session.shutdown(waitMs)));
  }
}
