import { EventEmitter } from 'node:events';
import type { TopLevel } from '../xml/top-level.ts';
import { NS } from '../xml/stream-header.ts';
import { addH, diffH, parseH } from '../sm/counter.ts';

/** Where the server's stream management stands on one link. */
export type ServerSmState =
  /** `<enable/>` sent, no answer yet. */
  | 'requested'
  /** `<resume/>` sent for an earlier link's session, no answer yet. */
  | 'resuming'
  /** `<enabled/>` received: its acks are trusted. */
  | 'enabled'
  /** The server refused (`<failed/>`) or never offered it. */
  | 'off'
  /** It stopped answering or counted wrong: no longer trusted on this link. */
  | 'broken';

/**
 * The proxy as an XEP-0198 client of the upstream server, without resumption (design §4.4):
 * the server's `<a h/>` answering the proxy's `<r/>` confirms every stanza sent before it, and
 * the proxy's own `<a/>` lets the server's SM settle what it wrote to a link that later dies
 * (Prosody's mod_smacks stores unacked messages offline or bounces them instead of losing them).
 *
 * Trust is checked on every answer: an `<a/>` must carry exactly the count of stanzas sent
 * before the `<r/>` it answers (XEP-0198 §4). A wrong `h` (a server that reset its counter, as
 * Openfire does past its queue limit), a late `<failed/>`, or no answer while the server still
 * answers pings (the caller checks, then calls abandon()) marks it `broken`; the caller falls
 * back to the ping barrier, which holds on to everything still unconfirmed, so custody is never
 * lost.
 *
 * Events:
 * - `state` (state: ServerSmState): enabled, refused or broken (with `reason` as 2nd argument).
 */
export class ServerSm extends EventEmitter {
  #state: ServerSmState = 'requested';
  /** Stanzas written since `<enable/>` (what the server's `h` counts). */
  #outbound = 0;
  /** Stanzas received since `<enabled/>` (our `h` for the server). */
  #inbound = 0;
  /** The outstanding `<r/>`: the `h` it must be answered with, and its resolver. */
  #waiting: { expected: number; resolve: (outcome: 'confirmed' | 'broken' | 'timeout') => void; timer: NodeJS.Timeout } | undefined;
  /** The `h` a timed-out `<r/>` still awaits (a slow server may answer it late). */
  #late: number | undefined;
  /** The server's resumption id (XEP-0198 §5), when it granted resumption. */
  #id: string | undefined;
  /** `#outbound` when the server last confirmed everything (its `h` then). */
  #acked = 0;
  /** For each stanza written since `#acked`: its custody serial, undefined for the proxy's own. */
  #custody: Array<number | undefined> = [];
  readonly #write: (xml: string) => void;

  /**
   * Sends `<enable resume='true'/>` (XEP-0198 §3) through `write`; with `previous`, the server
   * session of an earlier link is resumed instead (`<resume previd h/>`, §5): the server then
   * re-sends what it wrote to the dead link, and nothing of the session's server state is lost.
   */
  /** True while the link does not read (backpressure): no answer can be late then. */
  readingPaused: () => boolean = () => false;

  constructor(write: (xml: string) => void, previous?: ServerSm) {
    super();
    this.#write = write;
    if (previous === undefined || previous.#id === undefined) {
      write(`<enable xmlns='${NS.sm}' resume='true'/>`);
      return;
    }
    this.#state = 'resuming';
    this.#id = previous.#id;
    this.#inbound = previous.#inbound;
    this.#outbound = previous.#outbound;
    this.#acked = previous.#acked;
    this.#custody = [...previous.#custody];
    write(`<resume xmlns='${NS.sm}' previd='${previous.#id}' h='${previous.#inbound}'/>`);
  }

  /** True when the server granted resumption and its counts were trusted to the end. */
  get resumable(): boolean {
    return this.#id !== undefined && this.#state === 'enabled';
  }

  /**
   * After `<resumed h/>`: the custody serials (see `countOut`) of the client stanzas the server
   * had handled since its last `<a/>`, oldest first; some may have been confirmed meanwhile by a
   * ping barrier. Undefined when `h` is not possible (more than was written).
   */
  custodyHandled(h: number): number[] | undefined {
    const handled = diffH(h, this.#acked);
    if (handled > this.#custody.length) return undefined;
    return this.#custody.slice(0, handled).filter((serial): serial is number => serial !== undefined);
  }

  get state(): ServerSmState {
    return this.#state;
  }

  /**
   * Counts a stanza written to the server (call for every write after `<enable/>`);
   * `custody` is the serial of a client stanza held in custody (custody.ts), else undefined.
   */
  countOut(xml: string, custody: number | undefined): void {
    if (!isStanzaText(xml)) return;
    this.#outbound = addH(this.#outbound, 1);
    // Bounded by what stays unconfirmed: an <a/> that confirms all empties it.
    this.#custody.push(custody);
  }

  /**
   * Looks at an element from the server: counts stanzas, consumes SM nonzas.
   * @returns true when `el` was an SM nonza handled here (not to be relayed).
   */
  take(el: TopLevel): boolean {
    if (el.attrs.xmlns !== NS.sm) {
      if (this.#state === 'enabled' && (el.name === 'message' || el.name === 'presence' || el.name === 'iq')) {
        this.#inbound = addH(this.#inbound, 1);
      }
      return false;
    }
    switch (el.name) {
      case 'enabled':
        if (this.#state !== 'requested') break;
        if (el.attrs.resume === 'true' || el.attrs.resume === '1') this.#id = el.attrs.id || undefined;
        this.#set('enabled');
        break;
      case 'resumed': {
        const h = parseH(el.attrs.h);
        if (this.#state !== 'resuming') break;
        if (h === undefined || this.custodyHandled(h) === undefined) {
          this.#set('off', `<resumed h='${el.attrs.h}'/> where ${this.#custody.length} stanzas were unconfirmed`);
          break;
        }
        // XEP-0198 §5: the server handled h; counting goes on from there. The listener reads
        // custodyHandled(h) first, so the old counts go only after it.
        this.#state = 'enabled';
        this.emit('state', 'resumed', String(h));
        this.#outbound = h;
        this.#acked = h;
        this.#custody = [];
        break;
      }
      case 'failed':
        if (this.#state === 'requested' || this.#state === 'resuming') this.#set('off');
        else this.abandon('the server sent <failed/> on an enabled stream');
        break;
      case 'r':
        // XEP-0198 §4: answer with what we have handled (we hold it from here on).
        if (this.#state === 'enabled' || this.#state === 'broken') this.#write(`<a xmlns='${NS.sm}' h='${this.#inbound}'/>`);
        break;
      case 'a':
        this.#onAck(el.attrs.h);
        break;
    }
    return true;
  }

  /**
   * Asks the server to confirm every stanza written so far (`<r/>`). Resolves `confirmed` when
   * its `<a/>` carries exactly that count; `broken` when SM is not usable or a wrong count
   * arrives; `timeout` when nothing came within `timeoutMs` (the caller tells a silent SM from
   * a dead link with a ping, then calls abandon()). One request at a time.
   */
  confirmAll(timeoutMs: number): Promise<'confirmed' | 'broken' | 'timeout'> {
    if (this.#state !== 'enabled' || this.#waiting) return Promise.resolve('broken');
    return new Promise((resolve) => {
      // An answer that sits unread while the link's reading is paused is not late.
      const expire = (): void => {
        if (!this.#waiting) return;
        if (this.readingPaused()) this.#waiting.timer = setTimeout(expire, timeoutMs).unref();
        else this.#settle('timeout');
      };
      const timer = setTimeout(expire, timeoutMs).unref();
      this.#waiting = { expected: this.#outbound, resolve, timer };
      this.#write(`<r xmlns='${NS.sm}'/>`);
    });
  }

  /** Stops trusting the server's acks on this link; a pending confirmAll() resolves `broken`. */
  abandon(reason: string): void {
    if (this.#state === 'broken' || this.#state === 'off') return;
    this.#settle('broken');
    this.#set('broken', reason);
  }

  /** True while an `<r/>` awaits its `<a/>`. */
  get awaiting(): boolean {
    return this.#waiting !== undefined;
  }

  /** True while an `<r/>` that timed out is still unanswered: with pings answered, SM went quiet. */
  get quiet(): boolean {
    return this.#late !== undefined;
  }

  /** The link is gone: a pending confirmAll() resolves `timeout`, blaming nobody. */
  stop(): void {
    this.#settle('timeout');
  }

  #onAck(value: string | undefined): void {
    const waiting = this.#waiting;
    if (!waiting) {
      // Only answers to our own <r/> count; a late one clears the suspicion or proves it wrong.
      if (this.#late === undefined) return;
      const late = this.#late;
      this.#late = undefined;
      if (parseH(value) !== late) return this.abandon(`the server acked h=${value} where ${late} stanzas were sent`);
      this.#custody.splice(0, diffH(late, this.#acked));
      this.#acked = late;
      return;
    }
    const h = parseH(value);
    if (h === undefined || diffH(h, waiting.expected) !== 0) {
      return this.abandon(`the server acked h=${value} where ${waiting.expected} stanzas were sent`);
    }
    this.#custody.splice(0, diffH(h, this.#acked));
    this.#acked = h;
    this.#settle('confirmed');
  }

  #settle(outcome: 'confirmed' | 'broken' | 'timeout'): void {
    const waiting = this.#waiting;
    if (!waiting) return;
    this.#waiting = undefined;
    clearTimeout(waiting.timer);
    this.#late = outcome === 'timeout' ? waiting.expected : undefined;
    waiting.resolve(outcome);
  }

  #set(state: ServerSmState, reason?: string): void {
    this.#state = state;
    this.emit('state', state, reason);
  }
}

/** True for serialized message, presence and iq (what XEP-0198 counts), false for nonzas. */
export function isStanzaText(xml: string): boolean {
  switch (xml.charCodeAt(1)) {
    case 109: // <message
      return xml.startsWith('<message');
    case 112: // <presence
      return xml.startsWith('<presence');
    case 105: // <iq, but not <inactive/>
      return xml.charCodeAt(2) === 113;
    default:
      return false;
  }
}
