/**
 * A resuming client for `bench/sessions.ts` (lib/client.ts's BenchClient logs in and binds but
 * cannot resume): raw socket, STARTTLS (any certificate), SASL PLAIN, then
 * `<resume xmlns='urn:xmpp:sm:3' previd h/>` instead of a bind. It records when each step
 * happened (performance.now(), ms) and counts the stanzas re-sent after `<resumed/>`.
 * After that it behaves like BenchClient: counts inbound stanzas and answers `<r/>` at once.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { EventEmitter } from 'node:events';
import SaxLtxModule from 'ltx/src/parsers/ltx.js';
import { NS_SM } from './client.ts';

interface SaxLtx extends EventEmitter {
  write(data: string): void;
}
const SaxLtx = SaxLtxModule as unknown as new () => SaxLtx;

const NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls';
const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';

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
  /** Stanzas the server should re-send; `allAt` is set when that many arrived. */
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

interface Node {
  name: string;
  attrs: Record<string, string>;
  children: Node[];
}

type Waiter = { pred: (n: Node) => boolean; resolve: (n: Node) => void; reject: (e: Error) => void };

export class ResumeClient {
  readonly times: ResumeTimes = { start: NaN, resumeSent: NaN, resumed: NaN, allAt: NaN };
  /** Inbound stanzas counted (starts at the server's view after `<resumed h/>` … our own `h`). */
  h = 0;
  /** Stanzas received after `<resumed/>`. */
  resent = 0;
  /** `h` of the server's `<resumed/>` (stanzas of ours it had handled). */
  serverH = NaN;
  error: string | undefined;
  readonly closed: Promise<void>;

  #socket: net.Socket;
  #parser!: SaxLtx;
  #depth = 0;
  #stack: Node[] = [];
  #waiters: Waiter[] = [];
  #backlog: Node[] = [];
  #closedFlag = false;
  #resumedFlag = false;
  #expect = 0;
  #onAll: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('close', () => {
      this.#closedFlag = true;
      const err = new Error(`connection closed${this.error ? `: ${this.error}` : ''}`);
      for (const w of this.#waiters.splice(0)) w.reject(err);
    });
    this.#listen(socket);
    this.#reset();
  }

  /** Connects, authenticates and resumes; resolves once `<resumed/>` and `expect` stanzas arrived. */
  static async resume(o: ResumeOptions): Promise<ResumeClient> {
    const start = performance.now();
    const socket = net.connect({ host: o.host, port: o.port });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const c = new ResumeClient(socket);
    c.times.start = start;
    const timer = setTimeout(() => {
      c.error ??= `resume timed out for ${o.user}`;
      c.destroy();
    }, o.timeoutMs ?? 60_000);
    try {
      await c.#negotiate(o);
    } catch (err) {
      c.destroy();
      throw new Error(`resume ${o.user}@${o.domain} via ${o.host}:${o.port}: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    return c;
  }

  async #negotiate(o: ResumeOptions): Promise<void> {
    let features = await this.#open(o.domain);
    if (!features.children.some((n) => n.name === 'starttls')) throw new Error('no STARTTLS offered');
    this.#send(`<starttls xmlns='${NS_TLS}'/>`);
    const proceed = await this.#next((n) => n.name === 'proceed' || n.name === 'failure');
    if (proceed.name !== 'proceed') throw new Error('STARTTLS refused');
    await this.#upgrade(o.domain);
    await this.#open(o.domain);
    const payload = Buffer.from(`\0${o.user}\0${o.password}`).toString('base64');
    this.#send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${payload}</auth>`);
    const answer = await this.#next((n) => n.name === 'success' || n.name === 'failure');
    if (answer.name !== 'success') throw new Error(`SASL failure: ${answer.children.map((c) => c.name).join(',')}`);
    features = await this.#open(o.domain);
    if (!features.children.some((n) => n.name === 'sm' && n.attrs.xmlns === NS_SM)) throw new Error(`no ${NS_SM} after SASL`);
    this.h = o.h;
    this.#expect = o.expect;
    const all = o.expect === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.#onAll = resolve));
    this.#send(`<resume xmlns='${NS_SM}' previd='${o.previd}' h='${o.h}'/>`);
    this.times.resumeSent = performance.now();
    const res = await this.#next((n) => n.name === 'resumed' || n.name === 'failed');
    if (res.name !== 'resumed') throw new Error(`resume failed: ${res.children.map((c) => c.name).join(',') || 'no condition'}`);
    this.serverH = Number(res.attrs.h);
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
    this.#send(`<a xmlns='${NS_SM}' h='${this.h}'/><r xmlns='${NS_SM}'/>`);
    let t: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#next((n) => n.name === 'a' && n.attrs.xmlns === NS_SM),
      new Promise((_, reject) => {
        t = setTimeout(() => reject(new Error('no <a/> from the server')), timeoutMs);
      }),
    ]).finally(() => clearTimeout(t));
  }

  /** Drops the connection without closing the stream (the session hibernates). */
  destroy(): void {
    this.#socket.destroy();
  }

  // ---- plumbing ---------------------------------------------------------------------------

  #send(xml: string): void {
    if (!this.#closedFlag) this.#socket.write(xml);
  }

  async #open(domain: string): Promise<Node> {
    this.#reset();
    this.#send(
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

  #listen(socket: net.Socket): void {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#parser.write(chunk));
    socket.on('error', (err) => {
      this.error ??= err.message;
    });
  }

  #reset(): void {
    const p = new SaxLtx();
    this.#depth = 0;
    this.#stack = [];
    p.on('startElement', (name: string, attrs: Record<string, string>) => {
      const depth = ++this.#depth;
      if (depth < 2) return;
      const node: Node = { name, attrs, children: [] };
      this.#stack[this.#stack.length - 1]?.children.push(node);
      this.#stack.push(node);
    });
    p.on('endElement', (name: string) => {
      const depth = this.#depth--;
      if (depth === 1) {
        this.error ??= 'server closed the stream';
        this.destroy();
        return;
      }
      const node = this.#stack.pop()!;
      if (depth === 2) this.#top(node, name);
    });
    this.#parser = p;
  }

  #top(node: Node, name: string): void {
    if (name === 'message' || name === 'presence' || name === 'iq') {
      if (!this.#resumedFlag) return;
      this.h = (this.h + 1) % 2 ** 32;
      this.resent++;
      if (this.resent === this.#expect) {
        this.times.allAt = performance.now();
        this.#onAll?.();
      }
      return;
    }
    if (name === 'r' && node.attrs.xmlns === NS_SM) {
      this.#send(`<a xmlns='${NS_SM}' h='${this.h}'/>`);
      return;
    }
    if (name === 'resumed') {
      this.#resumedFlag = true;
      this.times.resumed = performance.now();
    }
    if (name === 'stream:error') this.error = `stream error: ${node.children.map((c) => c.name).join(',')}`;
    const i = this.#waiters.findIndex((w) => w.pred(node));
    if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(node);
    else this.#backlog.push(node);
  }
}
