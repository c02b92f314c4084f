import { Element } from 'ltx';
import type { Logger } from 'pino';
import type { SessionManager } from '../session/manager.ts';
import type { Session } from '../session/session.ts';
import type { StanzaHook } from '../session/events.ts';
import { NS_MUC, NS_MUC_USER, RoomTracker, type RoomChange, type TrackedRoom } from './tracker.ts';

/** The MUC feature's options (config `muc`); times in seconds. */
export interface MucOptions {
  /**
   * After an upstream reconnect (a new server session: every room saw the old one leave), rejoin
   * each tracked room with the client's last presence to it (design §4.6). Default true.
   */
  rejoin: boolean;
  /** Rooms tracked per session (bounded memory); joins beyond it are not tracked. Default 1000. */
  maxRoomsPerSession: number;
}

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
  readonly #trackers = new WeakMap<Session, RoomTracker>();
  readonly #fromClient: StanzaHook;
  readonly #fromUpstream: StanzaHook;
  readonly #relink: (session: Session) => string[];

  constructor(manager: SessionManager, options: MucOptions, log: Logger) {
    this.#manager = manager;
    this.#options = options;
    this.#log = log;
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
      const change = this.#trackers.get(session)?.fromUpstream(el);
      return change ? this.#changed(session, change) : undefined;
    };
    this.#relink = (session) => (options.rejoin ? this.#rejoins(session) : []);
    manager.hooks.fromClient.push(this.#fromClient);
    manager.hooks.fromUpstream.push(this.#fromUpstream);
    manager.hooks.relink.push(this.#relink);
  }

  /** The rooms tracked for `session` (for tests and diagnostics). */
  rooms(session: Session): TrackedRoom[] {
    return [...(this.#trackers.get(session)?.rooms() ?? [])];
  }

  /** Unhooks the feature. */
  close(): void {
    const { hooks } = this.#manager;
    hooks.fromClient.splice(hooks.fromClient.indexOf(this.#fromClient), 1);
    hooks.fromUpstream.splice(hooks.fromUpstream.indexOf(this.#fromUpstream), 1);
    hooks.relink.splice(hooks.relink.indexOf(this.#relink), 1);
  }

  /** @returns true to consume the stanza (the error answering a rejoin the client did not send). */
  #changed(session: Session, change: RoomChange): boolean | undefined {
    if (change.kind === 'nick' || !change.rejoin) return undefined;
    if (change.kind === 'joined') {
      session.log.info({ room: change.room.room }, 'room rejoined after the upstream reconnect');
      this.#manager.emit('muc-rejoin', session, 'joined');
      return undefined;
    }
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
    if (out.length > 0) this.#log.debug({ rooms: out.length, resource: session.fullJid.slice(session.fullJid.indexOf('/') + 1) }, 'rejoining rooms on the new upstream session');
    return out;
  }
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
