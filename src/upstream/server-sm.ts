import { EventEmitter } from 'node:events';
import type { TopLevel } from '../xml/top-level.ts';
import { NS } from '../xml/stream-header.ts';
import { addH, diffH, parseH } from '../sm/counter.ts';

/** Where the server's stream management stands on one link. */
export type ServerSmState =
  /** `<enable/>` sent, no answer yet. */
  | 'requested'
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
  readonly #write: (xml: string) => void;

  /** Sends `<enable/>` (XEP-0198 §3, no resumption) through `write`. */
  constructor(write: (xml: string) => void) {
    super();
    this.#write = write;
    write(`<enable xmlns='${NS.sm}'/>`);
  }

  get state(): ServerSmState {
    return this.#state;
  }

  /** Counts a stanza written to the server (call for every write after `<enable/>`). */
  countOut(xml: string): void {
    if (isStanzaText(xml)) this.#outbound = addH(this.#outbound, 1);
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
        if (this.#state === 'requested') this.#set('enabled');
        break;
      case 'failed':
        if (this.#state === 'requested') this.#set('off');
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
      const timer = setTimeout(() => this.#settle('timeout'), timeoutMs);
      timer.unref();
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
      if (parseH(value) !== late) this.abandon(`the server acked h=${value} where ${late} stanzas were sent`);
      return;
    }
    const h = parseH(value);
    if (h === undefined || diffH(h, waiting.expected) !== 0) {
      return this.abandon(`the server acked h=${value} where ${waiting.expected} stanzas were sent`);
    }
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
