import { parse, type Element } from 'ltx';
import type { TopLevel } from '../xml/top-level.ts';

/** Groupchat messages remembered per room to drop their copies in a rejoin's history. */
const RECENT_PER_ROOM = 20;
const NS_DELAY = 'urn:xmpp:delay';
const BODY = /<body(?:\s[^>]*)?>([\s\S]*?)<\/body>/;

/** XEP-0045 namespaces. */
export const NS_MUC = 'http://jabber.org/protocol/muc';
export const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';

/** One room a session's client is in, or asked to join (design §4.6, mod_track_muc_joins). */
export interface TrackedRoom {
  /** The room's bare JID, as the client addressed it. */
  readonly room: string;
  /** The client's nick in the room (the room's word for it once joined: 210, 303). */
  nick: string;
  /** True once the room sent the client's self-presence (status 110). */
  joined: boolean;
  /** A rejoin of the proxy's (after an upstream reconnect) awaits the room's answer. */
  rejoining: boolean;
  /**
   * The client's last available presence to the room (serialized), for the rejoin after an
   * upstream reconnect: its show/status/caps, without the XEP-0045 `<x/>`, which the rejoin
   * rebuilds with `password` and a history limit.
   */
  presence: Element;
  /** The room password the client joined with, if any. */
  password: string | undefined;
  /** When the client last got a groupchat message or subject from the room (ms since the epoch; 0: none). */
  lastMessageAt: number;
  /** When the client last got anything from the room (ms since the epoch). */
  lastActivityAt: number;
  /** When the join or the last rejoin was asked (ms since the epoch). */
  joinedAt: number;
  /** Fingerprints of the last groupchat messages the client got from the room (sender, body). */
  recent: number[];
}

/**
 * What a stanza from the upstream did to the tracked rooms:
 * - `joined`: the room sent the self-presence (110) of a join or rejoin;
 * - `removed`: the client is out of the room (left, kicked 307, banned 301, removed 321/322/332,
 *   the room destroyed), or the room refused the join with `condition`;
 * - `nick`: the client's nick changed (303, or 210 on the self-presence);
 * - `duplicate`: a history message (XEP-0203 delayed) the client already got live: the copy a
 *   rejoin's history repeats, whether or not the sender gave the message an id.
 */
export type RoomChange =
  | { kind: 'joined'; room: TrackedRoom; rejoin: boolean }
  | { kind: 'removed'; room: TrackedRoom; rejoin: boolean; condition?: string; statuses: readonly string[] }
  | { kind: 'nick'; room: TrackedRoom }
  | { kind: 'duplicate'; room: TrackedRoom };

/**
 * The rooms of one session, kept the way mod_track_muc_joins keeps them: a directed presence with
 * the XEP-0045 `<x/>` to `room@service/nick` starts a join, the room's self-presence (muc#user
 * status 110) confirms it, 303 and 210 rename, an unavailable self-presence or an error to the
 * join removes it. At most `maxRooms` rooms; joins beyond that are not tracked (and counted).
 * Survives hibernation, resumption and upstream reconnects (it belongs to the session).
 */
export class RoomTracker {
  readonly #rooms = new Map<string, TrackedRoom>();
  readonly #maxRooms: number;
  readonly #now: () => number;
  /** Joins not tracked because `maxRooms` were tracked already. */
  untracked = 0;

  constructor(maxRooms: number, now: () => number = Date.now) {
    this.#maxRooms = maxRooms;
    this.#now = now;
  }

  /** Rooms tracked (joined or joining). */
  get size(): number {
    return this.#rooms.size;
  }

  /** The tracked rooms. */
  rooms(): IterableIterator<TrackedRoom> {
    return this.#rooms.values();
  }

  /** The tracked room with this bare JID. */
  get(room: string): TrackedRoom | undefined {
    return this.#rooms.get(room);
  }

  /** Stops tracking a room (the feature told the client it is out). */
  remove(room: string): void {
    this.#rooms.delete(room);
  }

  /** A presence the client sent (only directed ones to a full JID matter). */
  fromClient(el: TopLevel): void {
    const to = el.attrs.to;
    const slash = to?.indexOf('/') ?? -1;
    if (el.name !== 'presence' || to === undefined || slash < 0) return;
    const room = to.slice(0, slash);
    const nick = to.slice(slash + 1);
    const type = el.attrs.type;
    if (type === 'unavailable') return void this.#rooms.delete(room);
    if (type !== undefined) return;
    const tracked = this.#rooms.get(room);
    if (!tracked && !el.raw.includes(NS_MUC)) return; // a directed presence to a contact's resource
    // Its own tree: el.element() is shared with other hooks, and this one is changed.
    const presence = parse(el.raw) as Element;
    const x = presence.getChild('x', NS_MUC);
    if (!tracked && !x) return;
    if (x) presence.remove(x);
    if (tracked) {
      // A presence update (or a nick change asked: the room's 303 will tell).
      tracked.presence = presence;
      if (x) tracked.password = x.getChildText('password') ?? tracked.password;
      return;
    }
    if (this.#rooms.size >= this.#maxRooms) {
      this.untracked++;
      return;
    }
    const now = this.#now();
    this.#rooms.set(room, { room, nick, joined: false, rejoining: false, presence, password: x!.getChildText('password') ?? undefined, lastMessageAt: 0, lastActivityAt: now, joinedAt: now, recent: [] });
  }

  /**
   * A stanza from the upstream for the client. Cheap for everything but presence from, and
   * groupchat messages of, a tracked room.
   */
  fromUpstream(el: TopLevel): RoomChange | undefined {
    if (this.#rooms.size === 0) return undefined;
    const from = el.attrs.from;
    if (from === undefined) return undefined;
    const slash = from.indexOf('/');
    const tracked = this.#rooms.get(slash < 0 ? from : from.slice(0, slash));
    if (!tracked) return undefined;
    const now = this.#now();
    tracked.lastActivityAt = now;
    if (el.name === 'message') {
      if (el.attrs.type !== 'groupchat') return undefined;
      tracked.lastMessageAt = now;
      return this.#seen(tracked, from, el.raw) ? { kind: 'duplicate', room: tracked } : undefined;
    }
    if (el.name !== 'presence' || slash < 0) return undefined;
    return this.#roomPresence(tracked, from.slice(slash + 1), el);
  }

  /**
   * Remembers a groupchat message; true for a delayed one (history) the client already got, whose
   * fingerprint is then used up (two equal messages in the history stand for two).
   */
  #seen(tracked: TrackedRoom, from: string, raw: string): boolean {
    const body = BODY.exec(raw);
    if (!body) return false;
    const fp = fingerprint(`${from}\n${body[1]}`);
    if (raw.includes(NS_DELAY)) {
      const at = tracked.recent.indexOf(fp);
      if (at >= 0) {
        tracked.recent.splice(at, 1);
        return true;
      }
    }
    tracked.recent.push(fp);
    if (tracked.recent.length > RECENT_PER_ROOM) tracked.recent.shift();
    return false;
  }

  #roomPresence(tracked: TrackedRoom, nick: string, el: TopLevel): RoomChange | undefined {
    const type = el.attrs.type;
    const rejoin = tracked.rejoining;
    if (type === 'error') {
      // An error to the join (or to a nick change) from the nick the client asked for.
      if (tracked.joined && !rejoin && nick !== tracked.nick) return undefined;
      const error = el.element().getChild('error');
      const condition = error?.getChildElements().find((c) => c.name !== 'text')?.name;
      if (tracked.joined && !rejoin && condition === 'conflict') return undefined; // a refused nick change
      this.#rooms.delete(tracked.room);
      return { kind: 'removed', room: tracked, rejoin, condition, statuses: [] };
    }
    if (!el.raw.includes(NS_MUC_USER) || !el.raw.includes("'110'") && !el.raw.includes('"110"')) return undefined;
    const x = el.element().getChild('x', NS_MUC_USER);
    const statuses = x?.getChildren('status').map((s) => String(s.attrs.code)) ?? [];
    if (!statuses.includes('110')) return undefined;
    if (type === 'unavailable') {
      const newNick = statuses.includes('303') ? x?.getChild('item')?.attrs.nick : undefined;
      if (newNick) {
        tracked.nick = String(newNick);
        return { kind: 'nick', room: tracked };
      }
      this.#rooms.delete(tracked.room);
      return { kind: 'removed', room: tracked, rejoin, statuses };
    }
    if (type !== undefined) return undefined;
    const renamed = tracked.nick !== nick;
    tracked.nick = nick; // 210: the room's choice of nick
    if (tracked.joined && !rejoin) return renamed ? { kind: 'nick', room: tracked } : undefined;
    tracked.joined = true;
    tracked.rejoining = false;
    return { kind: 'joined', room: tracked, rejoin };
  }
}

/** FNV-1a (32 bits) of a string's UTF-16 code units: cheap, and enough to tell 20 messages apart. */
function fingerprint(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
