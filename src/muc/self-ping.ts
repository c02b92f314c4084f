import type { DueTicket } from './due-queue.ts';
import { NODE_TIMERS, Pacer, type Timers } from './pacer.ts';
import { classifySelfPing, type PingAnswer, type SelfPingVerdict } from './self-ping-verdict.ts';

export { classifySelfPing, type PingAnswer, type SelfPingVerdict } from './self-ping-verdict.ts';
export { NODE_TIMERS, type Timers } from './pacer.ts';

/**
 * Defaults of {@link SelfPingerOptions}, declared together (design §4.6 and §5). Times in ms.
 * - `delayMs`: Prosody's `ping_muc_delay` (60 s; config `muc.pingDelaySeconds` × 1000).
 * - `timeoutMs`: a self-ping crosses s2s to a remote room and back, perhaps with a new s2s
 *   connection and dialback on the way: 30 s.
 * - `maxPerSecond`, `burst`: 20 pings a second proxy-wide, evenly spaced (no burst).
 * - `retryInitialMs`, `retryMaxMs`, `maxAttempts`: an undecided ping is retried after 30 s,
 *   then 60 s, 120 s ... at most 10 min apart, 6 pings in all (about 16 min after the first).
 * - `maxPending`: 100 000 pairs scheduled, in flight or held at once (about 200 bytes each,
 *   measured, beside the JID strings, which are shared with the caller).
 */
export const SELF_PING_DEFAULTS = {
  delayMs: 60_000,
  timeoutMs: 30_000,
  maxPerSecond: 20,
  burst: 1,
  retryInitialMs: 30_000,
  retryMaxMs: 600_000,
  maxAttempts: 6,
  maxPending: 100_000,
} as const;

/** Who is pinged: the occupant `roomJid/nick` as seen by one proxy session, pinged from the client's full JID. */
export interface SelfPingTarget {
  /** The proxy session (any stable key the feature chooses); with `roomJid`, the unit of coalescing. */
  readonly sessionKey: string;
  /** The client's full JID: the ping's `from`. */
  readonly fromFullJid: string;
  /** The room's bare JID (`room@service`), compared as given: pass it prepared. */
  readonly roomJid: string;
  /** The occupant nick: the ping goes to `roomJid/nick`. */
  readonly nick: string;
}

/**
 * Why a pair was scheduled (design §4.6): (a) a `remote-server-*` error from the room's domain,
 * an error from the room itself to what the client sent (`room-error`), (b) the room silent past
 * the idle interval, (c) a resume after hibernation, or an upstream reconnect while rejoins are
 * off (`reconnected`). Carried to the
 * outcome for logs and metrics only. (With `pause`/`resume` a held pair keeps its own trigger;
 * `resumed` is for a feature that schedules on resume itself.)
 */
export type SelfPingTrigger = 'remote-server-error' | 'room-error' | 'room-idle' | 'resumed' | 'reconnected';

/** The final word on one scheduled pair, given once to `onOutcome`. */
export interface SelfPingOutcome {
  /** `undecided` only once `maxAttempts` pings in a row were undecided (see {@link SelfPinger}). */
  verdict: SelfPingVerdict;
  /** Pings sent for this schedule, the last one included (≥ 1; counted afresh after a resume). */
  attempts: number;
  /** The trigger that scheduled the pair (later triggers were coalesced into it). */
  trigger: SelfPingTrigger;
  /** The last answer; `timeout` also when `send` failed (threw or rejected). */
  answer: PingAnswer;
}

/**
 * What {@link SelfPinger.schedule} did with a trigger: `scheduled` (a ping goes out `delayMs`
 * from now), `held` (the session is paused: `delayMs` after its resume), `coalesced` (the pair is
 * pending already: nothing more), `refused` (`maxPending` pairs are pending; counted), `closed`.
 */
export type ScheduleResult = 'scheduled' | 'held' | 'coalesced' | 'refused' | 'closed';

/** Counters for metrics (plain numbers, only ever growing; see `SelfPinger.stats`). */
export interface SelfPingStats {
  /** Pairs accepted by `schedule` ('scheduled' or 'held'). */
  scheduled: number;
  coalesced: number;
  refused: number;
  /** Pings handed to `send` (retries included). */
  sent: number;
  /** Pings that were due but waited for the rate limit (each counted once per wait). */
  rateLimited: number;
  /** Undecided pings followed by another attempt. */
  retried: number;
  /** Pings unanswered within `timeoutMs` (or answered `timeout` by the feature). */
  timedOut: number;
  /** Pings whose `send` threw or rejected. */
  sendFailures: number;
  /** Pairs dropped by `cancel` or `close` before their outcome. */
  cancelled: number;
  /** Outcomes, by verdict. */
  joined: number;
  joinedNickChanged: number;
  notJoined: number;
  undecided: number;
}

/** Options of a {@link SelfPinger}: the two callbacks, then limits defaulting to {@link SELF_PING_DEFAULTS}. */
export interface SelfPingerOptions {
  /**
   * Sends `<iq type='get' to='roomJid/nick' from='fromFullJid'><ping xmlns='urn:xmpp:ping'/></iq>`
   * on the session's upstream and resolves with the answer. It need not time out (the scheduler
   * stops waiting after `timeoutMs` and ignores a later answer) but should settle eventually,
   * e.g. reject when the upstream link is gone: until then its promise is kept.
   */
  send(target: SelfPingTarget): Promise<PingAnswer>;
  /** The final outcome of a scheduled pair, once, asynchronously; the pair is forgotten before the call. */
  onOutcome(target: SelfPingTarget, outcome: SelfPingOutcome): void;
  /** Wait after a trigger (or a resume) before the ping (ms). Default {@link SELF_PING_DEFAULTS}. */
  delayMs?: number;
  /** An answer later than this (ms) counts as none (undecided). */
  timeoutMs?: number;
  /** Pings sent per second, proxy-wide (a token bucket; excess waits its turn, never dropped). */
  maxPerSecond?: number;
  /** Tokens the bucket holds: pings that may go out back to back after a quiet spell (≥ 1). */
  burst?: number;
  /** Wait (ms) before the first retry of an undecided ping; doubled for each further one. */
  retryInitialMs?: number;
  /** Longest wait (ms) between retries. */
  retryMaxMs?: number;
  /** Pings per schedule before an undecided result is final (≥ 1; 1: no retry). */
  maxAttempts?: number;
  /** Pairs pending at once (scheduled, in flight or held); beyond it `schedule` refuses. */
  maxPending?: number;
  /** Clock and timers. Default {@link NODE_TIMERS}. */
  timers?: Timers;
}

/** One pending (session, room) pair. */
interface Entry {
  readonly target: SelfPingTarget;
  readonly trigger: SelfPingTrigger;
  /** Pings sent in this round. */
  attempts: number;
  /** Set while waiting for its time (or for the rate limit). */
  ticket: DueTicket<Entry> | undefined;
  /** Set while a ping is out; an answer counts only if this is still its flight. */
  flight: { timer: unknown } | undefined;
}

/** A session's pairs, by room JID; `paused` while it hibernates. */
interface SessionPairs {
  paused: boolean;
  readonly rooms: Map<string, Entry>;
}

type Resolved = Required<Omit<SelfPingerOptions, 'send' | 'onOutcome'>>;

/**
 * Schedules the proxy's XEP-0410 self-pings (design §4.6): after a trigger, `delayMs` later, one
 * ping of `roomJid/nick` from the client's full JID, for each (session, room) pair triggered.
 *
 * - Coalescing: a pair has at most one ping pending (waiting, in flight, held or between retries);
 *   a trigger for a pending pair does nothing.
 * - Rate: pings leave at most `maxPerSecond` a second proxy-wide, `burst` back to back after a
 *   quiet spell (a token bucket, pacer.ts). Due pings wait their turn in due order; none is dropped.
 * - Undecided (`remote-server-*`, no answer, a failed send): retried after `retryInitialMs`,
 *   doubling up to `retryMaxMs`, for `maxAttempts` pings in all. Then the outcome is `undecided`
 *   and the feature keeps the room as joined: no false kick. A room whose server stays away is
 *   checked again on its next trigger (its silence fires the idle trigger again); a kick the
 *   proxy cannot confirm would make the client rejoin a room it cannot reach anyway.
 * - Hibernation (design §4.6 (c), after XEP-0410 §4: no pings while hibernated): `pause(session)` stops
 *   its pings (an answer in flight is ignored) and holds its pairs; triggers meanwhile are held
 *   too; `resume(session)` schedules every held pair `delayMs` later, attempts counted afresh.
 * - Bounded: at most `maxPending` pairs; nothing is kept for a pair after its outcome or cancel.
 *   One timer for all waiting pairs plus one per ping in flight, all unref'd; `close()` clears them.
 *
 * `send` is called from a timer, `onOutcome` from a promise callback, never from inside
 * `schedule`, `cancel`, `pause` or `resume`; both may call back into the scheduler. `send` may
 * throw (a failed send); `onOutcome` must not (a throw would be an unhandled rejection).
 */
export class SelfPinger {
  readonly #stats: Omit<SelfPingStats, 'rateLimited'> = {
    scheduled: 0, coalesced: 0, refused: 0, sent: 0, retried: 0, timedOut: 0,
    sendFailures: 0, cancelled: 0, joined: 0, joinedNickChanged: 0, notJoined: 0, undecided: 0,
  };
  readonly #send: SelfPingerOptions['send'];
  readonly #onOutcome: SelfPingerOptions['onOutcome'];
  readonly #o: Resolved;
  readonly #t: Timers;
  readonly #sessions = new Map<string, SessionPairs>();
  /** The pairs waiting for their time, released through the rate limit. */
  readonly #due: Pacer<Entry>;
  #pending = 0;
  #inFlight = 0;
  #closed = false;

  /** @throws RangeError for an option out of range. */
  constructor(options: SelfPingerOptions) {
    this.#send = options.send;
    this.#onOutcome = options.onOutcome;
    const o: Resolved = { ...SELF_PING_DEFAULTS, timers: NODE_TIMERS };
    for (const [k, v] of Object.entries(options)) if (v !== undefined && k in o) (o as Record<string, unknown>)[k] = v;
    for (const k of ['delayMs', 'timeoutMs', 'retryInitialMs', 'retryMaxMs', 'maxPending'] as const) {
      if (!(o[k] >= 0)) throw new RangeError(`SelfPinger: ${k} must be ≥ 0, not ${o[k]}`);
    }
    if (!Number.isInteger(o.maxAttempts) || o.maxAttempts < 1) throw new RangeError(`SelfPinger: maxAttempts must be an integer ≥ 1, not ${o.maxAttempts}`);
    this.#o = o;
    this.#t = o.timers;
    this.#due = new Pacer<Entry>(o.maxPerSecond, o.burst, o.timers, (entry) => this.#ping(entry));
  }

  /** Counters for metrics: a snapshot. */
  get stats(): Readonly<SelfPingStats> {
    return { ...this.#stats, rateLimited: this.#due.rateLimited };
  }

  /** Pairs pending: waiting, in flight or held. */
  get pending(): number {
    return this.#pending;
  }

  /** Pings sent and not yet answered (nor timed out). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Asks for a self-ping of `target` `delayMs` from now, unless its pair is pending already (see ScheduleResult). */
  schedule(target: SelfPingTarget, trigger: SelfPingTrigger): ScheduleResult {
    if (this.#closed) return 'closed';
    let pairs = this.#sessions.get(target.sessionKey);
    if (pairs?.rooms.has(target.roomJid)) {
      this.#stats.coalesced++;
      return 'coalesced';
    }
    if (this.#pending >= this.#o.maxPending) {
      this.#stats.refused++;
      return 'refused';
    }
    if (!pairs) {
      pairs = { paused: false, rooms: new Map() };
      this.#sessions.set(target.sessionKey, pairs);
    }
    const { sessionKey, fromFullJid, roomJid, nick } = target; // a copy: the caller's object may change
    const entry: Entry = { target: { sessionKey, fromFullJid, roomJid, nick }, trigger, attempts: 0, ticket: undefined, flight: undefined };
    pairs.rooms.set(roomJid, entry);
    this.#pending++;
    this.#stats.scheduled++;
    if (pairs.paused) return 'held';
    this.#wait(entry, this.#t.now() + this.#o.delayMs);
    return 'scheduled';
  }

  /**
   * Drops the session's pending pair for `roomJid` (the room was left, the occupant removed), or
   * with no room all its pairs and its paused state (the session ended). A ping in flight is not
   * recalled, but its answer is ignored. No outcome follows.
   * @returns how many pairs were dropped.
   */
  cancel(sessionKey: string, roomJid?: string): number {
    const pairs = this.#sessions.get(sessionKey);
    if (!pairs) return 0;
    const entries = roomJid === undefined ? [...pairs.rooms.values()] : [pairs.rooms.get(roomJid)].filter((e) => e !== undefined);
    for (const entry of entries) this.#forget(entry);
    if (roomJid === undefined) this.#sessions.delete(sessionKey);
    this.#stats.cancelled += entries.length;
    return entries.length;
  }

  /**
   * The session hibernates: none of its pings go out until `resume` (an answer to one in flight
   * is ignored); its pairs, and those triggered meanwhile, are held. The paused state is kept
   * until `resume` or `cancel(sessionKey)`, even with no pair. Idempotent.
   */
  pause(sessionKey: string): void {
    if (this.#closed) return;
    const pairs = this.#sessions.get(sessionKey);
    if (!pairs) {
      this.#sessions.set(sessionKey, { paused: true, rooms: new Map() });
      return;
    }
    pairs.paused = true;
    for (const entry of pairs.rooms.values()) this.#stop(entry);
  }

  /** The session is attached again: each held pair is pinged `delayMs` from now, attempts counted afresh. */
  resume(sessionKey: string): void {
    const pairs = this.#sessions.get(sessionKey);
    if (!pairs?.paused) return;
    pairs.paused = false;
    if (pairs.rooms.size === 0) this.#sessions.delete(sessionKey);
    const dueAt = this.#t.now() + this.#o.delayMs;
    for (const entry of pairs.rooms.values()) {
      entry.attempts = 0;
      this.#wait(entry, dueAt);
    }
  }

  /** Drops every pair (counted as cancelled) and clears every timer; later calls do nothing. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const pairs of this.#sessions.values()) {
      for (const entry of pairs.rooms.values()) this.#stop(entry);
      this.#stats.cancelled += pairs.rooms.size;
    }
    this.#sessions.clear();
    this.#due.clear();
    this.#pending = 0;
  }

  #wait(entry: Entry, dueAt: number): void {
    entry.ticket = this.#due.add(entry, dueAt);
  }

  /** Stops the entry's wait or its ping (its answer will be ignored); it stays pending. */
  #stop(entry: Entry): void {
    if (entry.ticket) this.#due.remove(entry.ticket);
    entry.ticket = undefined;
    if (entry.flight) {
      this.#t.clearTimeout(entry.flight.timer);
      entry.flight = undefined;
      this.#inFlight--;
    }
  }

  /** Stops the entry and forgets it. */
  #forget(entry: Entry): void {
    this.#stop(entry);
    const pairs = this.#sessions.get(entry.target.sessionKey)!;
    pairs.rooms.delete(entry.target.roomJid);
    this.#pending--;
    if (pairs.rooms.size === 0 && !pairs.paused) this.#sessions.delete(entry.target.sessionKey);
  }

  #ping(entry: Entry): void {
    entry.ticket = undefined;
    entry.attempts++;
    this.#inFlight++;
    this.#stats.sent++;
    const flight = { timer: undefined as unknown };
    entry.flight = flight;
    const settle = (answer: PingAnswer, failed: boolean): void => {
      if (entry.flight !== flight) return; // stopped, timed out or closed meanwhile
      this.#t.clearTimeout(flight.timer);
      entry.flight = undefined;
      this.#inFlight--;
      this.#answered(entry, answer, failed);
    };
    // Armed before `send`, which may call back in (a cancel clears it).
    flight.timer = this.#t.setTimeout(() => settle({ type: 'timeout' }, false), this.#o.timeoutMs);
    let answer: Promise<PingAnswer>;
    try {
      answer = Promise.resolve(this.#send(entry.target));
    } catch (err) {
      answer = Promise.reject(err);
    }
    answer.then(
      (a) => settle(a, false),
      () => settle({ type: 'timeout' }, true),
    );
  }

  #answered(entry: Entry, answer: PingAnswer, failed: boolean): void {
    if (failed) this.#stats.sendFailures++;
    else if (answer.type === 'timeout') this.#stats.timedOut++;
    const verdict = classifySelfPing(answer);
    if (verdict === 'undecided' && entry.attempts < this.#o.maxAttempts) {
      this.#stats.retried++;
      const backoff = Math.min(this.#o.retryMaxMs, this.#o.retryInitialMs * 2 ** (entry.attempts - 1));
      this.#wait(entry, this.#t.now() + backoff);
      return;
    }
    this.#forget(entry);
    if (verdict === 'joined') this.#stats.joined++;
    else if (verdict === 'joined-nick-changed') this.#stats.joinedNickChanged++;
    else if (verdict === 'not-joined') this.#stats.notJoined++;
    else this.#stats.undecided++;
    this.#onOutcome(entry.target, { verdict, attempts: entry.attempts, trigger: entry.trigger, answer });
  }
}
