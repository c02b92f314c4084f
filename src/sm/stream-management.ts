import { EventEmitter } from 'node:events';
import { addH, parseH } from './counter.ts';
import { OutboundQueue, type QueuedStanza } from './outbound-queue.ts';
import { NS } from '../xml/stream-header.ts';
import { StreamError } from '../xml/stream-error.ts';
import { DEFAULTS } from '../config/config.ts';

/** Per-session XEP-0198 options (seconds where a time): the config's `sm` section. Defaults live in config/config.ts. */
export interface SmOptions {
  maxUnackedStanzas: number;
  /** Unacked stanzas kept before the session becomes unresumable (count). */
  maxQueueSize: number;
  maxAckDelaySeconds: number;
  /**
   * Size of the unacked stanzas (characters ≈ bytes, see OutboundQueue.bytes) kept before the
   * session becomes unresumable, beside `maxQueueSize`. Omitted: no byte limit (config's
   * `sm.maxQueueBytes` is 4 MiB).
   */
  maxQueueBytes?: number;
  /**
   * More `<r/>` than this within `ackRequestWindowSeconds` with no stanza between them is a
   * flood (`policy-violation`). Omitted: the config's default (`sm.maxAckRequests`, 100).
   */
  maxAckRequests?: number;
  /** The window of `maxAckRequests` (seconds). Omitted: the config's default (10). */
  ackRequestWindowSeconds?: number;
}

/**
 * XEP-0198 state of one session towards its client: the inbound count `h` (client stanzas
 * handled), the outbound unacked queue and the ack-request policy. Survives the client's stream
 * (hibernation); the session attaches a writer while a client stream is live.
 *
 * Events:
 * - `overflow` (): the unacked queue passed `maxQueueSize` stanzas or `maxQueueBytes`, whichever
 *   first (emitted once); the session can no longer be resumed (XEP-0198 §5 resource-constraint).
 * - `ack-delayed` (): an `<r/>` has been outstanding for `maxAckDelaySeconds` (push uses it).
 * - `requested` (unacked: number): an `<r/>` went to the client with `unacked` stanzas queued.
 * - `acked` (n: number, unacked: number): an `<a/>` acknowledged `n` more; `unacked` remain.
 */
export class StreamManagement extends EventEmitter {
  /** True after `<enabled/>` was sent. */
  enabled = false;
  /**
   * Client stanzas handled, mod 2^32: what `<a h/>` reports. Handled means confirmed by the
   * server (custody rule, design §4.2), so it trails `received` while a barrier is out.
   */
  inbound = 0;
  /** Client stanzas received since enable, mod 2^32. */
  received = 0;
  /** An `<a/>` reported less than was received: send another when more is confirmed. */
  #owedAck = false;
  readonly queue: OutboundQueue;
  /** Queue overflowed: the session is not resumable any more (XEP-0198 §5 resource-constraint). */
  overflowed = false;

  readonly #options: SmOptions;
  #write: ((xml: string) => void) | undefined;
  #requestPending = false;
  #requestScheduled = false;
  #ackDelayTimer: NodeJS.Timeout | undefined;
  /**
   * Stanzas written to the current client stream before it saw `<enabled/>`: a client that
   * counted them (xmpp.js 0.14 does) may ack up to that many more than were queued (design §4.2).
   */
  #preEnableWritten = 0;
  /** The excess accepted from such a client, subtracted from its later acks. */
  #ackOffset = 0;
  /**
   * `queue.sent` when the last `<r/>` went out: no new request until more was sent, so a client
   * that keeps acking too little cannot start an ack loop (mod_smacks' last_requested_h).
   */
  #lastRequestedAt = -1;
  /** `<r/>` received since the last client stanza, within the current flood window. */
  #requests = 0;
  #requestWindowStart = 0;

  constructor(options: SmOptions, acked = 0) {
    super();
    this.#options = options;
    this.queue = new OutboundQueue(acked);
  }

  /** Connects (or, with undefined, disconnects) the live client stream's writer. */
  attach(write: ((xml: string) => void) | undefined): void {
    this.#write = write;
    this.#requestPending = false;
    this.#ackOffset = 0;
    this.#preEnableWritten = 0;
    clearTimeout(this.#ackDelayTimer);
    this.#ackDelayTimer = undefined;
  }

  /** XEP-0198 §3: turns SM on for this stream; the caller sends `<enabled/>`. */
  enable(): void {
    this.enabled = true;
  }

  /** Counts a stanza received from the client (XEP-0198 §4: message, presence, iq). */
  countInbound(): void {
    if (this.enabled) this.received = addH(this.received, 1);
    this.#requests = 0;
  }

  /**
   * `n` more counted client stanzas reached the server: `h` grows, and a client that was told
   * a lower `h` than it sent gets an unrequested `<a/>` (XEP-0198 §4 allows one at any time).
   */
  confirm(n: number): void {
    if (!this.enabled || n === 0) return;
    this.inbound = addH(this.inbound, n);
    if (this.#owedAck && this.#write) {
      this.#write(`<a xmlns='${NS.sm}' h='${this.inbound}'/>`);
      this.#owedAck = this.inbound !== this.received;
    }
  }

  /**
   * After a resume the stanzas received but never confirmed are forgotten (the client re-sends
   * them): `received` falls back to `inbound`.
   */
  forgetUnconfirmed(): void {
    this.received = this.inbound;
    this.#owedAck = false;
  }

  /**
   * Sends a stanza to the client: queued when SM is on, written when a client is attached,
   * followed (coalesced per I/O turn) by an ack request.
   * @param receivedAt when the proxy got it (ms), for delay stamps if it must be re-sent.
   */
  send(xml: string, receivedAt: number): void {
    if (!this.enabled) {
      if (this.#write) {
        this.#write(xml);
        this.#preEnableWritten++;
      }
      return;
    }
    this.queue.push({ xml, receivedAt });
    if (!this.overflowed && (this.queue.length > this.#options.maxQueueSize || this.queue.bytes > (this.#options.maxQueueBytes ?? Infinity))) {
      this.overflowed = true;
      this.emit('overflow');
    }
    if (this.#write) {
      this.#write(xml);
      this.#scheduleRequest();
    }
  }

  /**
   * Handles an SM nonza from the client (`<r/>`, `<a/>`). Returns false for elements that are
   * not its business. Throws StreamError for an ack of stanzas never sent (XEP-0198 §4).
   */
  handleNonza(el: { name: string; attrs: Readonly<Record<string, string | undefined>> }): boolean {
    if (el.attrs.xmlns !== NS.sm || (el.name !== 'r' && el.name !== 'a')) return false;
    // Like mod_smacks: acks on a stream without SM are stanzas of an unknown kind.
    if (!this.enabled) throw new StreamError('unsupported-stanza-type', `<${el.name}/> before <enable/>`);
    if (el.name === 'r') {
      this.#checkFlood();
      this.#write?.(`<a xmlns='${NS.sm}' h='${this.inbound}'/>`);
      if (this.inbound !== this.received) this.#owedAck = true;
      // mod_smacks piggybacks its own request on the answer when one is due.
      this.#scheduleRequest();
      return true;
    }
    if (el.name === 'a') {
      this.#onAck(parseH(el.attrs.h));
      return true;
    }
    return false;
  }

  /**
   * Applies the `h` of a `<resume/>` (XEP-0198 §5). Returns false when it acknowledges more
   * than was sent (the caller fails the resume).
   */
  ackOnResume(h: number): boolean {
    return this.queue.ack(h) >= 0;
  }

  /** The unacked stanzas to re-send after a resume (XEP-0198 §5), oldest first. */
  unacked(): QueuedStanza[] {
    return this.queue.unacked();
  }

  /** Stops timers; the session is over. */
  close(): void {
    this.attach(undefined);
    this.removeAllListeners();
  }

  #onAck(h: number | undefined): void {
    if (h === undefined) {
      throw new StreamError('bad-format', "<a/> without a valid 'h'");
    }
    this.#requestPending = false;
    clearTimeout(this.#ackDelayTimer);
    this.#ackDelayTimer = undefined;
    let n = this.queue.ack(addH(h, 2 ** 32 - this.#ackOffset));
    if (n < 0) {
      const excess = addH(h, 2 ** 32 - this.#ackOffset - this.queue.sent);
      if (this.#ackOffset === 0 && excess <= this.#preEnableWritten) {
        // Design §4.2: a client that counted stanzas written before <enabled/>.
        this.#ackOffset = excess;
        this.emit('ack-offset', excess);
        n = this.queue.ack(addH(h, 2 ** 32 - excess));
      }
      if (n < 0) {
        throw new StreamError(
          'undefined-condition',
          `acknowledged ${h} stanzas, only ${this.queue.sent} were sent`,
          `<handled-count-too-high xmlns='${NS.sm}' h='${h}' send-count='${this.queue.sent}'/>`,
        );
      }
    }
    this.emit('acked', n, this.queue.length);
    // mod_smacks (Feb 2017): ask again at once if the ack left too much unacknowledged.
    if (this.queue.length > this.#options.maxUnackedStanzas) this.#scheduleRequest();
  }

  /** Asks the client for an ack (coalesced) if enough is unacknowledged, e.g. after a re-send. */
  requestAck(): void {
    this.#lastRequestedAt = -1;
    this.#scheduleRequest();
  }

  /**
   * More than `maxAckRequests` `<r/>` within `ackRequestWindowSeconds` with no stanza between
   * them is a flood: an honest client asks after sending (however often), or now and then to
   * probe the link.
   */
  #checkFlood(): void {
    const now = Date.now();
    const windowSeconds = this.#options.ackRequestWindowSeconds ?? DEFAULTS.sm.ackRequestWindowSeconds;
    if (now - this.#requestWindowStart > windowSeconds * 1000) {
      this.#requestWindowStart = now;
      this.#requests = 0;
    }
    if (++this.#requests > (this.#options.maxAckRequests ?? DEFAULTS.sm.maxAckRequests)) {
      throw new StreamError('policy-violation', 'too many ack requests');
    }
  }

  #requestDue(): boolean {
    return !this.#requestPending && this.queue.length > this.#options.maxUnackedStanzas && this.queue.sent !== this.#lastRequestedAt;
  }

  #scheduleRequest(): void {
    if (this.#requestScheduled || !this.#requestDue()) return;
    this.#requestScheduled = true;
    // One <r/> per burst: wait until this I/O turn's stanzas are written.
    setImmediate(() => {
      this.#requestScheduled = false;
      if (!this.#write || !this.#requestDue()) return;
      this.#requestPending = true;
      this.#lastRequestedAt = this.queue.sent;
      this.#write(`<r xmlns='${NS.sm}'/>`);
      this.emit('requested', this.queue.length);
      this.#ackDelayTimer ??= setTimeout(() => {
        this.#ackDelayTimer = undefined;
        this.emit('ack-delayed');
      }, this.#options.maxAckDelaySeconds * 1000);
      this.#ackDelayTimer.unref();
    });
  }
}
