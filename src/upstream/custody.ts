import { EventEmitter } from 'node:events';
import { DEFAULTS } from '../config/config.ts';
import type { UpstreamLink } from './link.ts';

/** Options of a Custody beside its barrier timeout. */
export interface CustodyOptions {
  /**
   * Size of the held stanzas (characters ≈ bytes, see `pendingBytes`) past which `full` is
   * emitted; `room` follows once they fall under half of it. Default: config
   * `upstream.maxCustodyBytes` (1 MiB).
   */
  maxBytes?: number;
}

/**
 * Custody of the client's stanzas on their way upstream (design §4.4): a stanza stays here
 * until the server has confirmed it, so that an ack to the client means the server has it and a
 * dropped link loses nothing (the stanzas are sent again on the next link, in order).
 *
 * Confirmation is by barrier, after a burst: the server's own XEP-0198 `<a/>` answering an
 * `<r/>` when it has SM and its counts hold (server-sm.ts), otherwise an XEP-0199 ping, whose
 * answer confirms everything sent on that link before it (RFC 6120 §10.1: a server processes a
 * stream's stanzas in order). An SM barrier that fails is followed at once by a ping barrier
 * for the same stanzas. One barrier is outstanding at a time; stanzas sent meanwhile wait for
 * the next one (coalesced).
 *
 * Events:
 * - `confirmed` (n: number, counted: number): n more stanzas, the oldest held, reached the
 *   server; `counted` of them were received after XEP-0198 was enabled (they count in `h`).
 * - `barrier` (n: number, latencyMs: number): a barrier confirmed n stanzas `latencyMs` after it
 *   went out (the custody-ack latency of design §4.4).
 * - `timeout` (): a barrier went unanswered for `timeoutMs`: the link is presumed dead.
 * - `fault` (err: unknown): a barrier failed on a bug; the owner replaces the link.
 * - `full` (): `pendingBytes` passed `maxBytes` (emitted once per crossing). The owner stops
 *   reading the client's socket (TCP backpressure): nothing is lost and nothing acked, and a
 *   client sending while the server is down or slow cannot grow the proxy's memory (issue 10).
 *   Stanzas pushed while full are still held: a push is never refused.
 * - `room` (): after `full`, `pendingBytes` fell under half of `maxBytes` (hysteresis, so a
 *   client at the limit is not paused and resumed per stanza): the owner reads again.
 */
export class Custody extends EventEmitter {
  /** Stanzas not yet confirmed, oldest first (so in serial order). */
  #held: Held[] = [];
  /** Serial of the next stanza pushed. */
  #nextSerial = 0;
  /** How many of #held (from the front) were written to the current link. */
  #sent = 0;
  /** How many of #held (from the front) came before XEP-0198 was enabled: not in any `h`. */
  #uncounted = 0;
  #link: UpstreamLink | undefined;
  #barrierOut = false;
  #barrierScheduled = false;
  readonly #timeoutMs: number;
  /** Sum of `raw.length` over #held. */
  #bytes = 0;
  readonly #maxBytes: number;
  /** Between a `full` and the next `room`. */
  #full = false;
  /**
   * How many of #held (from the front) go out one at a time, each after the one before it is
   * confirmed: the suspects of a link the server closed while they were in flight, tried alone
   * so that the one it will not take is told apart from the innocent ones ({@link isolate}).
   */
  #isolate = 0;

  /**
   * @param timeoutMs how long a barrier may go unanswered before the link counts as dead.
   * @param options `maxBytes` (see CustodyOptions).
   */
  constructor(timeoutMs: number, options: CustodyOptions = {}) {
    super();
    this.#timeoutMs = timeoutMs;
    this.#maxBytes = options.maxBytes ?? DEFAULTS.upstream.maxCustodyBytes;
  }

  /** Stanzas held (sent or not) that the server has not confirmed. */
  get pending(): number {
    return this.#held.length;
  }

  /**
   * Size of the held stanzas: the sum of their string lengths (UTF-16 code units; characters ≈
   * bytes). Chosen over `Buffer.byteLength` because it is free where that scans each stanza
   * (~0.15 ns a character, ~100 ns for a typical message, measured on Node 20), and because what
   * it bounds is memory: V8 keeps a string in 1 or 2 bytes per code unit, so this is within 2×
   * of the heap it takes (the UTF-8 length is the wire size, not the memory size).
   */
  get pendingBytes(): number {
    return this.#bytes;
  }

  /** True between a `full` event and the next `room` event. */
  get full(): boolean {
    return this.#full;
  }

  /** True while a link is attached. */
  get linked(): boolean {
    return this.#link !== undefined;
  }

  /**
   * Takes a client stanza: written at once when a link is attached, kept until confirmed.
   * An empty `raw` is a stanza the proxy handled itself (a stanza hook consumed it): nothing is
   * written, but it is confirmed in its place, so the client's `h` covers it only after every
   * stanza it sent before it.
   */
  push(raw: string): void {
    if (raw === '' && this.#held.length === 0) {
      this.emit('confirmed', 1, 1); // nothing before it (so nothing uncounted): handled now
      return;
    }
    const held: Held = { raw, serial: this.#nextSerial++ };
    this.#held.push(held);
    this.#bytes += raw.length;
    if (this.#bytes > this.#maxBytes && !this.#full) {
      this.#full = true;
      this.emit('full');
    }
    // While suspects are tried one at a time, later stanzas wait their turn (order is kept).
    if (!this.#link || this.#isolate > 0) return;
    if (raw !== '') this.#link.send(raw, held.serial);
    this.#sent++;
    this.#scheduleBarrier();
  }

  /** Held stanzas written to the current link and not yet confirmed. */
  get inFlight(): number {
    return this.#sent;
  }

  /** True while held stanzas are being tried one at a time. */
  get isolating(): boolean {
    return this.#isolate > 0;
  }

  /**
   * The link died while the oldest `n` held stanzas were in flight, closed by the server: from
   * the next link on, each of them goes out alone after the one before it is confirmed, so a
   * stanza the server rejects (and closes its stream over) is told apart and never takes the
   * others down with it. Stanzas after them wait; the ones confirmed are not re-tried.
   */
  isolate(n: number): void {
    this.#isolate = Math.max(this.#isolate, Math.min(n, this.#held.length));
  }

  /**
   * While no link is attached: the oldest held stanza is rejected by the server (it was the one
   * in flight, alone, when the server closed the stream). It is dropped and counts as handled,
   * so the client's `h` covers it and it is never sent again.
   * @returns the stanza, or undefined when nothing is held.
   */
  reject(): string | undefined {
    if (this.#link || this.#held.length === 0) return undefined;
    const { raw } = this.#held.shift()!;
    const counted = this.#uncounted > 0 ? 0 : 1;
    if (this.#uncounted > 0) this.#uncounted--;
    if (this.#isolate > 0) this.#isolate--;
    this.#shrunk(raw.length);
    this.emit('confirmed', 1, counted);
    return raw;
  }

  /** XEP-0198 was enabled: what is held now predates it and counts in no `h`. */
  startCounting(): void {
    this.#uncounted = this.#held.length;
  }

  /** A new link is ready: everything held goes out again, in order (design §4.5). */
  attach(link: UpstreamLink): void {
    this.#link = link;
    this.#barrierOut = false;
    this.#sent = 0;
    this.#sendNext();
  }

  /** Writes what is due: the next suspect alone while isolating, else everything not yet sent. */
  #sendNext(): void {
    const link = this.#link!;
    const upTo = this.#isolate > 0 ? Math.min(1, this.#held.length) : this.#held.length;
    for (; this.#sent < upTo; this.#sent++) {
      const { raw, serial } = this.#held[this.#sent]!;
      if (raw !== '') link.send(raw, serial);
    }
    this.#scheduleBarrier();
  }

  /** The link is gone: nothing held counts as sent any more. */
  detach(): void {
    this.#link = undefined;
    this.#sent = 0;
    this.#barrierOut = false;
  }

  /**
   * Resolves once everything sent so far is confirmed (true), or false when the link failed
   * first. Used before answering `<resumed/>`, so its `h` covers every stanza already relayed.
   */
  async settled(): Promise<boolean> {
    while (this.#link && this.#sent > 0) {
      const ok = await new Promise<boolean>((resolve) => {
        const done = (): void => {
          this.off('confirmed', done);
          this.off('timeout', fail);
          resolve(true);
        };
        const fail = (): void => {
          this.off('confirmed', done);
          this.off('timeout', fail);
          resolve(false);
        };
        this.on('confirmed', done);
        this.on('timeout', fail);
        this.#scheduleBarrier();
      });
      if (!ok) return false;
    }
    return this.#sent === 0;
  }

  /**
   * While no link is attached: the held stanzas `taken` picks reached the server after all (its
   * archive shows them, or its resumed XEP-0198 session counted their serials), so they count
   * as confirmed and are not sent again. `serial` is the number the stanza was sent under (see
   * {@link UpstreamLink.send}).
   * @returns how many were taken.
   */
  confirmWhere(taken: (raw: string, serial: number) => boolean): number {
    if (this.#link) return 0;
    const kept: Held[] = [];
    let n = 0;
    let counted = 0;
    let uncountedKept = 0;
    let bytes = 0;
    this.#held.forEach((held, i) => {
      const { raw } = held;
      if (taken(raw, held.serial)) {
        n++;
        bytes += raw.length;
        if (i >= this.#uncounted) counted++;
      } else {
        kept.push(held);
        if (i < this.#uncounted) uncountedKept++;
      }
    });
    if (n === 0) return 0;
    this.#held = kept;
    this.#isolate = Math.min(this.#isolate, kept.length);
    this.#uncounted = uncountedKept;
    this.#shrunk(bytes);
    this.emit('confirmed', n, counted);
    return n;
  }

  /**
   * Forgets what was never confirmed and returns it (oldest first). After a resume while no
   * link is up, the client re-sends those itself (its `h` does not cover them).
   */
  release(): string[] {
    const rest = this.#held.slice(this.#sent);
    this.#held.length = this.#sent;
    this.#uncounted = Math.min(this.#uncounted, this.#held.length);
    this.#isolate = Math.min(this.#isolate, this.#held.length);
    this.#shrunk(sizeOf(rest));
    return rest.map((held) => held.raw);
  }

  /** `bytes` of held stanzas are gone: a full custody may have room again. */
  #shrunk(bytes: number): void {
    this.#bytes -= bytes;
    if (this.#full && this.#bytes < this.#maxBytes / 2) {
      this.#full = false;
      this.emit('room');
    }
  }

  #scheduleBarrier(): void {
    if (this.#barrierOut || this.#barrierScheduled) return;
    this.#barrierScheduled = true;
    // After the burst: every stanza of this event-loop turn is covered by one barrier.
    setImmediate(() => {
      this.#barrierScheduled = false;
      this.#barrier().catch((err: unknown) => this.emit('fault', err));
    });
  }

  async #barrier(): Promise<void> {
    const link = this.#link;
    if (!link || this.#barrierOut || this.#sent === 0) return;
    this.#barrierOut = true;
    const covered = this.#sent;
    const started = performance.now();
    // The server's own acks when it has them and they hold; else, or once they fail, a ping.
    const sm = link.sm?.state === 'enabled' ? await link.sm.confirmAll(this.#timeoutMs) : 'broken';
    let ok = sm === 'confirmed';
    if (!ok && link === this.#link) {
      ok = await link.ping(this.#timeoutMs);
      // The server answered a ping sent after the <r/>, but not the <r/>: its SM went quiet
      // (Openfire past its limit). In-order processing means a slow server would have answered both.
      if (ok && sm === 'timeout' && link.sm?.quiet) link.sm.abandon(`no <a/> within ${this.#timeoutMs} ms while the server answers pings`);
    }
    if (link !== this.#link) return; // detached meanwhile: the new link starts afresh
    this.#barrierOut = false;
    if (!ok) {
      this.emit('timeout');
      return;
    }
    const confirmed = this.#held.splice(0, covered);
    this.#sent -= covered;
    const uncounted = Math.min(covered, this.#uncounted);
    this.#uncounted -= uncounted;
    this.#isolate = Math.max(0, this.#isolate - covered);
    this.#shrunk(sizeOf(confirmed));
    this.emit('confirmed', covered, covered - uncounted);
    this.emit('barrier', covered, performance.now() - started);
    if (link !== this.#link) return; // a 'confirmed' listener detached it
    if (this.#sent < this.#held.length) this.#sendNext();
    else if (this.#sent > 0) this.#scheduleBarrier();
  }
}

/**
 * A client stanza in custody. `serial` (counting from 0 per Custody) is what the link's
 * XEP-0198 counter records it under, so a resumed server session's `h` names exactly which held
 * stanzas it had, whatever a ping barrier confirmed meanwhile.
 */
interface Held {
  raw: string;
  serial: number;
}

/** Sum of the stanzas' lengths (see `Custody.pendingBytes`). */
function sizeOf(stanzas: readonly Held[]): number {
  let bytes = 0;
  for (const { raw } of stanzas) bytes += raw.length;
  return bytes;
}
