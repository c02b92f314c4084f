import { randomBytes } from 'node:crypto';
import { Element } from 'ltx';
import type { Logger } from 'pino';
import type { SessionManager } from '../session/manager.ts';
import type { Session } from '../session/session.ts';
import type { StanzaHook } from '../session/events.ts';
import type { TopLevel } from '../xml/top-level.ts';
import { NS_MUC, NS_MUC_USER, RoomTracker, type RoomChange, type TrackedRoom } from './tracker.ts';
import { SelfPinger, type PingAnswer, type SelfPingOutcome, type SelfPingTarget, type SelfPingTrigger } from './self-ping.ts';

/** The MUC feature's options (config `muc`); times in seconds. */
export interface MucOptions {
  /**
   * After an upstream reconnect (a new server session: every room saw the old one leave), rejoin
   * each tracked room with the client's last presence to it (design §4.6). Default true.
   */
  rejoin: boolean;
  /** Rooms tracked per session (bounded memory); joins beyond it are not tracked. Default 1000. */
  maxRoomsPerSession: number;
  /** Wait after a trigger before a self-ping (Prosody's ping_muc_delay). Default 60. */
  pingDelaySeconds: number;
  /** A self-ping unanswered this long counts as no answer (undecided, retried). Default 30. */
  pingTimeoutSeconds: number;
  /** Self-pings sent per second, proxy-wide (the rest wait their turn). Default 20. */
  maxPingsPerSecond: number;
  /** A joined room silent this long gets a self-ping (0: never). Default 3600. */
  idlePingSeconds: number;
}

/** XEP-0199 / XEP-0410. */
const NS_PING = 'urn:xmpp:ping';

/**
 * History asked at a rejoin starts this long (ms) before the last message the client got from
 * the room: a clock or timestamp rounding difference must not lose a message, and what the client
 * already has is dropped by the session's duplicate window.
 */
const HISTORY_SLACK_MS = 5000;

/** mod_ping_muc's words for the not-joined notice. */
const NOT_JOINED_REASON = 'You are not joined to this chat any more (the connection to it was lost)';

/**
 * Group chats (design §4.6): tracks each session's rooms (tracker.ts), rejoins them on a new
 * upstream session, and tells the client with the not-joined notice (status 110 + 333, as
 * mod_ping_muc) when a room will not have it back. Plugs into the session manager's stanza hooks
 * and events; the per-stanza path is not touched.
 *
 * Proxy events it emits (through the manager):
 * - `muc-rejoin` (session, outcome: 'joined' | 'refused'): a rejoin after an upstream reconnect;
 * - `muc-notice` (session): a not-joined notice went to the client.
 */
export class MucFeature {
  readonly #manager: SessionManager;
  readonly #options: MucOptions;
  readonly #log: Logger;
  /** The sessions with rooms tracked (removed when the session ends). */
  readonly #trackers = new Map<Session, RoomTracker>();
  /** A key per session for the pinger (a full JID may belong to two sessions during a takeover). */
  readonly #keys = new WeakMap<Session, string>();
  readonly #byKey = new Map<string, Session>();
  #nextKey = 0;
  readonly #pinger: SelfPinger;
  /** Self-pings awaiting their answer, by iq id. Bounded by the pinger's pending limit. */
  readonly #pings = new Map<string, (answer: PingAnswer) => void>();
  /** `sessionKey|room` of the self-pings in flight, to answer a room's echo of them. */
  readonly #inFlight = new Set<string>();
  readonly #pingPrefix = `muc-ping-${randomBytes(6).toString('base64url')}-`;
  #pingSeq = 0;
  readonly #idleTimer: NodeJS.Timeout | undefined;
  readonly #listeners: Array<[string, (...args: never[]) => void]>;
  readonly #fromClient: StanzaHook;
  readonly #fromUpstream: StanzaHook;
  readonly #relink: (session: Session) => string[];

  constructor(manager: SessionManager, options: MucOptions, log: Logger) {
    this.#manager = manager;
    this.#options = options;
    this.#log = log;
    this.#pinger = new SelfPinger({
      delayMs: options.pingDelaySeconds * 1000,
      timeoutMs: options.pingTimeoutSeconds * 1000,
      maxPerSecond: options.maxPingsPerSecond,
      // Undecided (the room's server unreachable): try again after the same delay, doubling.
      retryInitialMs: Math.max(1, options.pingDelaySeconds) * 1000,
      send: (target) => this.#sendPing(target),
      onOutcome: (target, outcome) => this.#onPingOutcome(target, outcome),
    });
    this.#fromClient = (el, session) => {
      if (el.name !== 'presence' || el.attrs.to === undefined) return;
      let tracker = this.#trackers.get(session);
      if (!tracker) {
        if (!el.raw.includes(NS_MUC)) return;
        tracker = new RoomTracker(options.maxRoomsPerSession);
        this.#trackers.set(session, tracker);
      }
      tracker.fromClient(el);
    };
    this.#fromUpstream = (el, session) => {
      if (el.name === 'iq' && this.#pings.size > 0 && (this.#answered(el) || this.#echo(el, session))) return true;
      if (el.attrs.type === 'error') this.#onError(el, session);
      const change = this.#trackers.get(session)?.fromUpstream(el);
      return change ? this.#changed(session, change) : undefined;
    };
    this.#relink = (session) => (options.rejoin ? this.#rejoins(session) : this.#pingAll(session, 'reconnected'));
    manager.hooks.fromClient.push(this.#fromClient);
    manager.hooks.fromUpstream.push(this.#fromUpstream);
    manager.hooks.relink.push(this.#relink);
    // XEP-0410 §4: no pings while hibernated; what was triggered meanwhile goes after the resume.
    this.#listeners = [
      ['session-hibernating', (session: Session) => this.#pinger.pause(this.#key(session))],
      ['session-resumed', (session: Session) => this.#pinger.resume(this.#key(session))],
      ['session-ended', (session: Session) => this.#forget(session)],
    ];
    for (const [name, listener] of this.#listeners) manager.events.on(name as 'session-ended', listener as never);
    if (options.idlePingSeconds > 0) {
      const every = Math.max(5, Math.min(options.idlePingSeconds / 4, 300)) * 1000;
      this.#idleTimer = setInterval(() => this.#pingIdle(), every).unref();
    }
  }

  /** The rooms tracked for `session` (for tests and diagnostics). */
  rooms(session: Session): TrackedRoom[] {
    return [...(this.#trackers.get(session)?.rooms() ?? [])];
  }

  /** Self-ping counters (SelfPinger.stats), for metrics. */
  get pingStats(): SelfPinger['stats'] {
    return this.#pinger.stats;
  }

  /** Unhooks the feature and stops its pings. */
  close(): void {
    clearInterval(this.#idleTimer);
    this.#pinger.close();
    for (const [name, listener] of this.#listeners) this.#manager.events.off(name as 'session-ended', listener as never);
    const { hooks } = this.#manager;
    hooks.fromClient.splice(hooks.fromClient.indexOf(this.#fromClient), 1);
    hooks.fromUpstream.splice(hooks.fromUpstream.indexOf(this.#fromUpstream), 1);
    hooks.relink.splice(hooks.relink.indexOf(this.#relink), 1);
  }

  /** @returns true to consume the stanza (the error answering a rejoin the client did not send). */
  #changed(session: Session, change: RoomChange): boolean | undefined {
    if (change.kind === 'duplicate') {
      this.#manager.emit('duplicate-dropped', session);
      return true; // a rejoin's history repeating what the client has
    }
    if (change.kind === 'nick' || !change.rejoin) return undefined;
    if (change.kind === 'joined') {
      session.log.info({ room: change.room.room }, 'room rejoined after the upstream reconnect');
      this.#manager.emit('muc-rejoin', session, 'joined');
      return undefined;
    }
    // The room's own unavailable self-presence (kicked, destroyed) tells the client itself.
    if (change.condition === undefined) return undefined;
    // The room will not take the client back: it must not go on showing the room as joined.
    session.log.info({ room: change.room.room, condition: change.condition }, 'room refused the rejoin: not-joined notice to the client');
    this.#manager.emit('muc-rejoin', session, 'refused');
    this.notJoined(session, change.room);
    return true;
  }

  /**
   * Tells the client it is no longer in `room` (mod_ping_muc's notice: unavailable self-presence
   * with muc#user status 110 and 333, XEP-0045 §9.x "removed because of a technical error"),
   * and stops tracking it.
   */
  notJoined(session: Session, room: TrackedRoom): void {
    this.#trackers.get(session)?.remove(room.room);
    const presence = new Element('presence', { type: 'unavailable', from: `${room.room}/${room.nick}`, to: session.fullJid });
    const x = presence.c('x', { xmlns: NS_MUC_USER });
    x.c('item', { affiliation: 'none', role: 'none' }).c('reason').t(NOT_JOINED_REASON);
    x.c('status', { code: '110' });
    x.c('status', { code: '333' });
    session.sendToClient(presence.toString());
    this.#manager.emit('muc-notice', session);
  }

  // ---- self-pings (XEP-0410) ------------------------------------------------------------------

  #key(session: Session): string {
    let key = this.#keys.get(session);
    if (key === undefined) {
      key = String(++this.#nextKey);
      this.#keys.set(session, key);
      this.#byKey.set(key, session);
    }
    return key;
  }

  #forget(session: Session): void {
    this.#trackers.delete(session);
    const key = this.#keys.get(session);
    if (key === undefined) return;
    this.#pinger.cancel(key);
    this.#byKey.delete(key);
  }

  #schedule(session: Session, room: TrackedRoom, trigger: SelfPingTrigger): void {
    if (!room.joined || !this.#trackers.has(session)) return;
    this.#pinger.schedule({ sessionKey: this.#key(session), fromFullJid: session.fullJid, roomJid: room.room, nick: room.nick }, trigger);
  }

  /** Pings every joined room of `session` (an upstream reconnect with rejoins off). */
  #pingAll(session: Session, trigger: SelfPingTrigger): string[] {
    for (const room of this.#trackers.get(session)?.rooms() ?? []) this.#schedule(session, room, trigger);
    return [];
  }

  /**
   * An error stanza for a client. Design §4.6 (a): `remote-server-not-found`/`-timeout` from a
   * room's domain means the server lost its s2s link there: every session's rooms on that domain
   * are pinged (coalesced per room and session). An error from a tracked room itself to what the
   * client sent (a room answering `not-acceptable` no longer knows the occupant) pings that room.
   */
  #onError(el: TopLevel, session: Session): void {
    const from = el.attrs.from;
    if (from === undefined) return;
    const bare = from.includes('/') ? from.slice(0, from.indexOf('/')) : from;
    if (el.raw.includes('remote-server-')) {
      const domain = bare.includes('@') ? bare.slice(bare.indexOf('@') + 1) : bare;
      for (const [each, tracker] of this.#trackers) {
        for (const room of tracker.rooms()) if (room.room.endsWith(`@${domain}`)) this.#schedule(each, room, 'remote-server-error');
      }
      return;
    }
    if (el.name === 'presence') return; // the tracker handles errors to joins
    const room = this.#trackers.get(session)?.get(bare);
    if (room) this.#schedule(session, room, 'room-error');
  }

  /** Design §4.6 (b): joined rooms silent for `idlePingSeconds` (busy rooms never are). */
  #pingIdle(): void {
    const before = Date.now() - this.#options.idlePingSeconds * 1000;
    for (const [session, tracker] of this.#trackers) {
      for (const room of tracker.rooms()) {
        if (room.lastActivityAt < before) {
          room.lastActivityAt = Date.now(); // one ping per idle period, whatever its answer
          this.#schedule(session, room, 'room-idle');
        }
      }
    }
  }

  /** Sends one self-ping on the session's upstream; resolves with the room's answer. */
  #sendPing(target: SelfPingTarget): Promise<PingAnswer> {
    const session = this.#byKey.get(target.sessionKey);
    const id = `${this.#pingPrefix}${++this.#pingSeq}`;
    if (!session?.sendToUpstream(`<iq type='get' id='${id}' to='${escapeAttr(`${target.roomJid}/${target.nick}`)}'><ping xmlns='${NS_PING}'/></iq>`)) {
      return Promise.reject(new Error('no upstream link'));
    }
    const pair = `${target.sessionKey}|${target.roomJid}`;
    this.#inFlight.add(pair);
    return new Promise<PingAnswer>((resolve) => {
      const timer = setTimeout(() => settle({ type: 'timeout' }), this.#options.pingTimeoutSeconds * 1000 + 1000).unref();
      const settle = (answer: PingAnswer): void => {
        clearTimeout(timer);
        this.#pings.delete(id);
        this.#inFlight.delete(pair);
        resolve(answer);
      };
      this.#pings.set(id, settle);
    });
  }

  /** The answer to one of the proxy's self-pings: consumed (the client never asked). */
  #answered(el: TopLevel): boolean {
    const settle = this.#pings.get(el.attrs.id ?? '');
    if (!settle || (el.attrs.type !== 'result' && el.attrs.type !== 'error')) return false;
    if (el.attrs.type === 'result') {
      settle({ type: 'result' });
      return true;
    }
    const error = el.element().getChild('error');
    let condition = error?.getChildElements().find((c) => c.name !== 'text')?.name ?? 'undefined-condition';
    // XEP-0410 reads item-not-found as "joined under another nick"; said by the MUC service
    // itself (by='conference.example', no room) it means the room is gone (Prosody after a crash).
    const by = error?.attrs.by;
    if (condition === 'item-not-found' && typeof by === 'string' && !by.includes('@')) condition = 'gone';
    settle({ type: 'error', condition });
    return true;
  }

  /**
   * A room without `muc#self-ping-optimization` (XEP-0410 §3.3) forwards a self-ping to the
   * occupant's own JID, i.e. back to this session: the proxy answers it itself, so a sleeping
   * phone is not woken for a ping it never sent.
   */
  #echo(el: TopLevel, session: Session): boolean {
    const from = el.attrs.from;
    if (el.attrs.type !== 'get' || from === undefined || !el.raw.includes(NS_PING)) return false;
    const slash = from.indexOf('/');
    const room = this.#trackers.get(session)?.get(from.slice(0, slash));
    if (!room || from.slice(slash + 1) !== room.nick || !this.#inFlight.has(`${this.#key(session)}|${room.room}`)) return false;
    session.sendToUpstream(`<iq type='result' id='${escapeAttr(el.attrs.id ?? '')}' to='${escapeAttr(from)}'/>`);
    return true;
  }

  #onPingOutcome(target: SelfPingTarget, outcome: SelfPingOutcome): void {
    const session = this.#byKey.get(target.sessionKey);
    if (!session) return;
    this.#manager.emit('muc-self-ping', session, outcome.verdict);
    const room = this.#trackers.get(session)?.get(target.roomJid);
    if (!room || room.nick !== target.nick) return;
    if (outcome.verdict !== 'not-joined') {
      // Still in the room (or undecided: never a kick); a rejoin left unanswered is settled.
      if (outcome.verdict !== 'undecided') room.rejoining = false;
      return;
    }
    session.log.info({ room: room.room, trigger: outcome.trigger }, 'self-ping: no longer in the room; not-joined notice to the client');
    this.notJoined(session, room);
  }

  /** The join presences for every joined room of `session`, for its new upstream link (§4.6). */
  #rejoins(session: Session): string[] {
    const tracker = this.#trackers.get(session);
    if (!tracker || tracker.size === 0) return [];
    const out: string[] = [];
    for (const room of tracker.rooms()) {
      // A join still unanswered is a client stanza in custody: it goes again by itself.
      if (!room.joined) continue;
      room.rejoining = true;
      out.push(rejoinPresence(room).toString());
      room.joinedAt = Date.now();
    }
    if (out.length === 0) return out;
    this.#log.debug({ rooms: out.length, resource: session.fullJid.slice(session.fullJid.indexOf('/') + 1) }, 'rejoining rooms on the new upstream session');
    // A room that never answers the rejoin (its server unreachable, or a service that sends no
    // self-presence to an occupant it still has) is self-pinged: the ping decides, never silence.
    setTimeout(() => {
      for (const room of tracker.rooms()) if (room.rejoining) this.#schedule(session, room, 'reconnected');
    }, this.#options.pingTimeoutSeconds * 1000).unref();
    return out;
  }
}

function escapeAttr(value: string): string {
  return value.replace(/[&<>'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The client's last presence to `room`, as a join: with the XEP-0045 `<x/>`, its password, and
 * history since the last message the client got (less HISTORY_SLACK_MS) or since it joined.
 */
export function rejoinPresence(room: TrackedRoom): Element {
  const presence = new Element('presence', { ...room.presence.attrs, to: `${room.room}/${room.nick}` });
  delete presence.attrs.from;
  for (const child of room.presence.children) {
    if (typeof child === 'string') presence.t(child);
    else presence.cnode(child);
  }
  const x = presence.c('x', { xmlns: NS_MUC });
  if (room.password !== undefined) x.c('password').t(room.password);
  const since = (room.lastMessageAt || room.joinedAt) - HISTORY_SLACK_MS;
  x.c('history', { since: new Date(since).toISOString() });
  return presence;
}
