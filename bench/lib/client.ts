/**
 * A light XMPP client for the benchmark: raw socket, STARTTLS (any certificate), SASL PLAIN,
 * bind, and optionally XEP-0198 (`<enable resume='true'/>`). It behaves like a well-mannered SM
 * client at the protocol level and does nothing else, so that many of them fit in one process
 * next to the servers being measured:
 * - counts inbound stanzas (`h`) and answers every `<r/>` with `<a h/>` at once;
 * - sends its own `<r/>` after every `rEvery` stanzas it sends, and records the server's `<a/>`
 *   and how long each of those `<r/>` waited for an `<a h/>` covering it (`onAckLatency`);
 * - parses with ltx's SAX parser (no DOM) once negotiation is over: a message's body text is
 *   handed to `onMessage`, anything else is only counted.
 * Writes are coalesced per event-loop turn (one socket write / one TLS record per turn).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { EventEmitter } from 'node:events';
import SaxLtxModule from 'ltx/src/parsers/ltx.js';

/** ltx's own SAX parser (the fastest of ltx's parsers); @types/ltx types it as a CJS namespace. */
interface SaxLtx extends EventEmitter {
  write(data: string): void;
}
const SaxLtx = SaxLtxModule as unknown as new () => SaxLtx;

export const NS_SM = 'urn:xmpp:sm:3';
const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';
const NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind';

export interface LoginOptions {
  host: string;
  port: number;
  domain: string;
  user: string;
  password: string;
  resource: string;
  /** Enable XEP-0198 with resumption after binding. */
  sm: boolean;
  /** Send `<r/>` after this many sent stanzas (SM only). Default 50. */
  rEvery?: number;
  /** Whole login must finish within this time. Default 20 s. */
  timeoutMs?: number;
}

/** For `BenchClient.resume()`: authenticate, then `<resume/>` an existing session (XEP-0198 §5). */
export interface ResumeOptions {
  host: string;
  port: number;
  domain: string;
  user: string;
  password: string;
  /** The session's resumption id (`<enabled id/>`). */
  previd: string;
  /** Stanzas this client had received on the session (`<resume h/>`). */
  h: number;
  /** Stanzas the server should re-send; `times.allAt` is set when that many arrived. */
  expect: number;
  /** Whole resume (and re-send) must finish within this time. Default 60 s. */
  timeoutMs?: number;
}

/** Instants (performance.now(), ms) of one resume. */
export interface ResumeTimes {
  /** Before net.connect(). */
  start: number;
  /** `<resume/>` handed to the socket. */
  resumeSent: number;
  /** `<resumed/>` parsed. */
  resumed: number;
  /** The `expect`-th re-sent stanza parsed (= resumed when expect is 0). */
  allAt: number;
}

/** A top-level element, built only during negotiation. */
interface Node {
  name: string;
  attrs: Record<string, string>;
  children: Node[];
  text: string;
}

function child(n: Node, name: string): Node | undefined {
  return n.children.find((c) => c.name === name);
}

type Waiter = { pred: (n: Node) => boolean; resolve: (n: Node) => void; reject: (e: Error) => void };

export class BenchClient {
  /** Bound full JID. */
  jid = '';
  /** True once `<enabled/>` was received. */
  smEnabled = false;
  /** SM resumption id given by the server. */
  smId = '';
  /** Inbound stanzas counted since `<enabled/>` (what our `<a h/>` reports). */
  h = 0;
  /** Stanzas sent since `<enabled/>` (or since bind without SM). */
  sent = 0;
  /** Last `h` the server acknowledged in an `<a/>`. */
  serverAcked = 0;
  /** `<a/>` received from the server (answers to our `<r/>` and unrequested ones alike). */
  acksReceived = 0;
  /** Periodic `<r/>` sent (one per `rEvery` stanzas; not those of ackAll/confirmAllAcked). */
  ackRequestsSent = 0;
  /** `<r/>` received from the server (each answered with an `<a/>`). */
  requestsAnswered = 0;
  /** Messages with a body received. */
  messages = 0;
  /** Stream error or socket error seen, if any. */
  error: string | undefined;
  /** Resume only: when each step happened, what the server said, how much it re-sent. */
  readonly times: ResumeTimes = { start: NaN, resumeSent: NaN, resumed: NaN, allAt: NaN };
  serverH = NaN;
  resent = 0;
  /** Called with the body text of every inbound message (after negotiation). */
  onMessage: ((body: string) => void) | undefined;
  /**
   * Called once per periodic `<r/>` with its ack latency (ms): from the write that carried it
   * to the first `<a h/>` with h >= the stanzas sent before it. Matched by h, not by order: a
   * server may answer with a lower h (the proxy reports only what its upstream confirmed) and
   * send an unrequested `<a/>` later.
   */
  onAckLatency: ((ms: number) => void) | undefined;
  readonly closed: Promise<void>;

  #socket: net.Socket;
  #parser!: SaxLtx;
  #depth = 0;
  /** Negotiation: build Nodes for top-level elements. Off once the session is up. */
  #building = true;
  #stack: Node[] = [];
  #waiters: Waiter[] = [];
  #backlog: Node[] = [];
  #topName = '';
  #topAttrs: Record<string, string> = {};
  #inBody = false;
  #body = '';
  #out = '';
  #flushScheduled = false;
  #rEvery = 50;
  #ackWaiters: Array<() => void> = [];
  /** Periodic `<r/>` not yet covered by an `<a h/>`, oldest first: stanzas sent before it, write time. */
  #ackPending: Array<{ count: number; at: number }> = [];
  /** How many of #ackPending's newest entries are still queued in #out (time set at the flush). */
  #ackUnwritten = 0;
  #closedFlag = false;
  /** Resume only: stanzas expected after `<resumed/>` (-1: not resuming), and who waits for them. */
  #expect = -1;
  #onAll: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('close', () => {
      this.#closedFlag = true;
      this.#failWaiters(new Error(`connection closed${this.error ? `: ${this.error}` : ''}`));
    });
    this.#listen(socket);
    this.#reset();
  }

  /** Connects and runs the whole login; resolves with a client ready for traffic. */
  static login(o: LoginOptions): Promise<BenchClient> {
    return BenchClient.#run('login', o, o.timeoutMs ?? 20_000, (c) => {
      c.#rEvery = o.rEvery ?? 50;
      return c.#login(o);
    });
  }

  /** Connects, authenticates and resumes; resolves once `<resumed/>` and `expect` stanzas arrived. */
  static resume(o: ResumeOptions): Promise<BenchClient> {
    const start = performance.now();
    return BenchClient.#run('resume', o, o.timeoutMs ?? 60_000, (c) => {
      c.times.start = start;
      return c.#resume(o);
    });
  }

  static async #run(
    what: string,
    o: { host: string; port: number; domain: string; user: string },
    timeoutMs: number,
    negotiate: (c: BenchClient) => Promise<void>,
  ): Promise<BenchClient> {
    const socket = net.connect({ host: o.host, port: o.port });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const c = new BenchClient(socket);
    const timer = setTimeout(() => {
      c.error ??= `${what} timed out for ${o.user}`;
      c.destroy();
    }, timeoutMs);
    try {
      await negotiate(c);
    } catch (err) {
      c.destroy();
      throw new Error(`${what} ${o.user}@${o.domain} via ${o.host}:${o.port}: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    return c;
  }

  /** STARTTLS (when offered), SASL PLAIN and the stream restart; returns the new features. */
  async #authenticate(o: { domain: string; user: string; password: string }): Promise<Node> {
    let features = await this.#open(o.domain);
    if (child(features, 'starttls')) {
      this.send(`<starttls xmlns='${NS_TLS}'/>`);
      const proceed = await this.#next((n) => n.name === 'proceed' || n.name === 'failure');
      if (proceed.name !== 'proceed') throw new Error('STARTTLS refused');
      await this.#upgrade(o.domain);
      features = await this.#open(o.domain);
    }
    const mechs = (child(features, 'mechanisms')?.children ?? []).map((m) => m.text.trim());
    if (!mechs.includes('PLAIN')) throw new Error(`PLAIN not offered (offered: ${mechs.join(', ')})`);
    const payload = Buffer.from(`\0${o.user}\0${o.password}`).toString('base64');
    this.send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${payload}</auth>`);
    const answer = await this.#next((n) => n.name === 'success' || n.name === 'failure');
    if (answer.name !== 'success') throw new Error(`SASL failure: ${answer.children.map((c) => c.name).join(',')}`);
    return this.#open(o.domain);
  }

  async #login(o: LoginOptions): Promise<void> {
    const features = await this.#authenticate(o);
    this.send(`<iq type='set' id='bind1'><bind xmlns='${NS_BIND}'><resource>${o.resource}</resource></bind></iq>`);
    const iq = await this.#next((n) => n.name === 'iq' && n.attrs.id === 'bind1');
    const jid = iq.attrs.type === 'result' ? child(child(iq, 'bind') ?? iq, 'jid')?.text : undefined;
    if (!jid) throw new Error(`bind failed (type ${iq.attrs.type})`);
    this.jid = jid;
    if (o.sm) {
      const sm = features.children.find((c) => c.name === 'sm' && c.attrs.xmlns === NS_SM);
      if (!sm) throw new Error(`server does not offer ${NS_SM}`);
      this.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
      const en = await this.#next((n) => n.name === 'enabled' || n.name === 'failed');
      if (en.name !== 'enabled') throw new Error('SM enable failed');
      this.smId = en.attrs.id ?? '';
      // Stanzas after <enabled/> are counted; any before it are not (nothing is expected).
      this.smEnabled = true;
      this.h = 0;
    }
    this.sent = 0;
    this.#building = false;
  }

  async #resume(o: ResumeOptions): Promise<void> {
    const features = await this.#authenticate(o);
    if (!child(features, 'sm') || child(features, 'sm')!.attrs.xmlns !== NS_SM) throw new Error(`no ${NS_SM} after SASL`);
    this.h = o.h;
    this.#expect = o.expect;
    const all = o.expect === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.#onAll = resolve));
    this.send(`<resume xmlns='${NS_SM}' previd='${o.previd}' h='${o.h}'/>`);
    this.#flush();
    this.times.resumeSent = performance.now();
    const res = await this.#next((n) => n.name === 'resumed' || n.name === 'failed');
    if (res.name !== 'resumed') throw new Error(`resume failed: ${res.children.map((c) => c.name).join(',') || 'no condition'}`);
    this.#building = false;
    this.#backlog = [];
    if (o.expect === 0) this.times.allAt = this.times.resumed;
    await Promise.race([
      all,
      this.closed.then(() => {
        throw new Error(`connection closed after ${this.resent}/${o.expect} re-sent stanzas${this.error ? `: ${this.error}` : ''}`);
      }),
    ]);
  }

  /**
   * Acknowledges everything received (`<a h/>`), then asks for the server's count with `<r/>`
   * and waits for its `<a/>`: once that arrived, the server has processed our ack too.
   */
  async ackAll(timeoutMs = 10_000): Promise<void> {
    const acked = new Promise<void>((resolve) => this.#ackWaiters.push(resolve));
    this.send(`<a xmlns='${NS_SM}' h='${this.h}'/><r xmlns='${NS_SM}'/>`);
    let t: NodeJS.Timeout | undefined;
    await Promise.race([
      acked,
      new Promise((_, reject) => {
        t = setTimeout(() => reject(new Error('no <a/> from the server')), timeoutMs);
      }),
    ]).finally(() => clearTimeout(t));
    if (this.#closedFlag) throw new Error('connection closed before the server acked');
  }

  /** Sends a chat message (counts it; with SM, follows every rEvery-th with `<r/>`). */
  sendMessage(to: string, id: string, body: string): void {
    let xml = `<message to='${to}' type='chat' id='${id}'><body>${body}</body></message>`;
    this.sent++;
    if (this.smEnabled && this.sent % this.#rEvery === 0) {
      xml += `<r xmlns='${NS_SM}'/>`;
      this.ackRequestsSent++;
      this.#ackPending.push({ count: this.sent % 2 ** 32, at: NaN });
      this.#ackUnwritten++;
    }
    this.send(xml);
  }

  /** Queues raw XML; written once per event-loop turn. */
  send(xml: string): void {
    if (this.#closedFlag) return;
    this.#out += xml;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      process.nextTick(this.#flush);
    }
  }

  #flush = (): void => {
    this.#flushScheduled = false;
    const out = this.#out;
    this.#out = '';
    if (this.#ackUnwritten > 0) {
      const now = performance.now();
      const pending = this.#ackPending;
      for (let i = pending.length - this.#ackUnwritten; i < pending.length; i++) pending[i]!.at = now;
      this.#ackUnwritten = 0;
    }
    if (out && !this.#closedFlag) this.#socket.write(out);
  };

  /** An `<a h/>` arrived: every pending `<r/>` it covers gets its latency reported. */
  #ackLatencies(h: number): void {
    if (!Number.isInteger(h)) return;
    const pending = this.#ackPending;
    let n = 0;
    // h covers count when h - count, mod 2^32, is in [0, 2^31).
    while (n < pending.length && (h - pending[n]!.count) >>> 0 < 2 ** 31) n++;
    if (n === 0) return;
    const now = performance.now();
    for (let i = 0; i < n; i++) this.onAckLatency?.(now - pending[i]!.at);
    pending.splice(0, n);
  }

  /**
   * SM only: sends `<r/>` and waits until the server has acknowledged every stanza sent.
   * Resolves true when it did within `timeoutMs`.
   */
  async confirmAllAcked(timeoutMs = 5000): Promise<boolean> {
    if (!this.smEnabled) return true;
    const deadline = Date.now() + timeoutMs;
    this.send(`<r xmlns='${NS_SM}'/>`);
    while (this.serverAcked !== this.sent % 2 ** 32) {
      const left = deadline - Date.now();
      if (left <= 0 || this.#closedFlag) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.#ackWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
      if (this.serverAcked !== this.sent % 2 ** 32) this.send(`<r xmlns='${NS_SM}'/>`);
    }
    return true;
  }

  /** Closes the stream (`</stream:stream>`) and waits for the socket to close (destroys after timeoutMs). */
  async close(timeoutMs = 3000): Promise<void> {
    if (this.#closedFlag) return;
    this.#flush();
    this.#socket.end('</stream:stream>');
    const t = setTimeout(() => this.destroy(), timeoutMs);
    await this.closed;
    clearTimeout(t);
  }

  destroy(): void {
    this.#socket.destroy();
  }

  // ---- negotiation helpers ------------------------------------------------------------------

  async #open(domain: string): Promise<Node> {
    this.#reset();
    this.send(
      `<?xml version='1.0'?><stream:stream to='${domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`,
    );
    return this.#next((n) => n.name === 'stream:features');
  }

  async #upgrade(domain: string): Promise<void> {
    const raw = this.#socket;
    raw.removeAllListeners('data');
    const secure = tls.connect({ socket: raw, servername: domain, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.#socket = secure;
    this.#listen(secure);
  }

  #next(pred: (n: Node) => boolean): Promise<Node> {
    const i = this.#backlog.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.#backlog.splice(i, 1)[0]!);
    if (this.#closedFlag) return Promise.reject(new Error(`connection closed${this.error ? `: ${this.error}` : ''}`));
    return new Promise((resolve, reject) => this.#waiters.push({ pred, resolve, reject }));
  }

  #failWaiters(err: Error): void {
    const ws = this.#waiters;
    this.#waiters = [];
    for (const w of ws) w.reject(err);
    for (const a of this.#ackWaiters.splice(0)) a();
  }

  // ---- parsing ------------------------------------------------------------------------------

  #listen(socket: net.Socket): void {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#parser.write(chunk));
    socket.on('error', (err) => {
      this.error ??= err.message;
    });
  }

  /** A new parser for a new stream (start, and each restart). */
  #reset(): void {
    const p = new SaxLtx();
    this.#depth = 0;
    this.#stack = [];
    p.on('startElement', this.#onStart);
    p.on('endElement', this.#onEnd);
    p.on('text', this.#onText);
    this.#parser = p;
  }

  #onStart = (name: string, attrs: Record<string, string>): void => {
    const depth = ++this.#depth;
    if (depth === 2) {
      this.#topName = name;
      this.#topAttrs = attrs;
    } else if (depth === 3 && name === 'body' && this.#topName === 'message') {
      this.#inBody = true;
      this.#body = '';
    } else if (depth === 3 && this.#topName === 'stream:error' && !this.#building && name !== 'text') {
      this.error = `stream error: ${name}`;
    }
    if (this.#building && depth >= 2) {
      const node: Node = { name, attrs, children: [], text: '' };
      this.#stack[this.#stack.length - 1]?.children.push(node);
      this.#stack.push(node);
    }
  };

  #onText = (text: string): void => {
    if (this.#inBody) this.#body += text;
    if (this.#building && this.#stack.length > 0) this.#stack[this.#stack.length - 1]!.text += text;
  };

  #onEnd = (name: string): void => {
    const depth = this.#depth--;
    if (depth === 3 && this.#inBody) {
      this.#inBody = false;
    } else if (depth === 2) {
      this.#top(name);
    } else if (depth === 1) {
      // The server closed its stream.
      this.error ??= 'server closed the stream';
      this.destroy();
    }
    if (this.#building && depth >= 2) {
      const node = this.#stack.pop()!;
      if (depth === 2) this.#deliver(node);
    }
  };

  #countResent(): void {
    if (++this.resent === this.#expect) {
      this.times.allAt = performance.now();
      this.#onAll?.();
    }
  }

  #deliver(node: Node): void {
    if (node.name === 'stream:error') this.error = `stream error: ${node.children.map((c) => c.name).join(',')}`;
    const i = this.#waiters.findIndex((w) => w.pred(node));
    if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(node);
    else this.#backlog.push(node);
  }

  /** A complete top-level element, on the fast path. */
  #top(name: string): void {
    if (this.#expect >= 0 && this.smEnabled && (name === 'message' || name === 'presence' || name === 'iq')) this.#countResent();
    switch (name) {
      case 'resumed':
        // Counting starts here: the re-sent stanzas may follow in the same chunk.
        if (this.#topAttrs.xmlns === NS_SM) {
          this.smEnabled = true;
          this.serverH = Number(this.#topAttrs.h);
          this.times.resumed = performance.now();
        }
        return;
      case 'message':
        if (this.smEnabled) this.h = (this.h + 1) % 2 ** 32;
        if (this.#body !== '') {
          this.messages++;
          const body = this.#body;
          this.#body = '';
          this.onMessage?.(body);
        }
        return;
      case 'presence':
      case 'iq':
        if (this.smEnabled) this.h = (this.h + 1) % 2 ** 32;
        return;
      case 'r':
        if (this.#topAttrs.xmlns === NS_SM) {
          this.requestsAnswered++;
          this.send(`<a xmlns='${NS_SM}' h='${this.h}'/>`);
        }
        return;
      case 'a':
        if (this.#topAttrs.xmlns === NS_SM) {
          this.serverAcked = Number(this.#topAttrs.h);
          this.acksReceived++;
          this.#ackLatencies(this.serverAcked);
          for (const w of this.#ackWaiters.splice(0)) w();
        }
        return;
      case 'stream:error':
        if (!this.#building) this.error ??= 'stream error';
        return;
      default:
        return;
    }
  }
}
