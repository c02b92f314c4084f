/**
 * A minimal XMPP client for protocol tests: it sends exactly the XML a test gives it and hands
 * back what the proxy answers, so tests can probe edge cases (bad input, SM nonzas, resumption
 * with chosen ids) that a full client library would hide. Parses with @xmpp/xml (ltx), not with
 * the proxy's own parser, so a framing bug in the proxy cannot hide itself.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { Parser } from '@xmpp/xml';
import type { Element } from 'ltx';

export interface RawClientOptions {
  port: number;
  domain?: string;
  /** Direct TLS (XEP-0368) instead of plain TCP + STARTTLS. */
  direct?: boolean;
}

const HEADER = (domain: string): string =>
  `<?xml version='1.0'?><stream:stream to='${domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;

export class RawClient {
  /**
   * Default wait for an expected element (ms): a patience, not a timing assertion (CI runs two
   * files side by side; s2s with a crashed remote is slow under load). Tests may raise it.
   */
  static timeoutMs = 20_000;
  socket: net.Socket;
  readonly domain: string;
  /** Every top-level element received, in order. */
  readonly received: Element[] = [];
  /** Resolves when the socket closes. */
  readonly closed: Promise<void>;
  #waiters: Array<{ pred: (el: Element) => boolean; resolve: (el: Element) => void }> = [];
  #parser!: InstanceType<typeof Parser>;
  #seen = 0;

  private constructor(socket: net.Socket, domain: string) {
    this.socket = socket;
    this.domain = domain;
    this.#reset();
    this.#listen(socket);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Connects; with `direct` the TLS handshake is done (ALPN xmpp-client, any certificate). */
  static async connect(opts: RawClientOptions): Promise<RawClient> {
    const domain = opts.domain ?? 'proxy.test';
    const socket = opts.direct
      ? tls.connect({ host: '127.0.0.1', port: opts.port, servername: domain, rejectUnauthorized: false, ALPNProtocols: ['xmpp-client'] })
      : net.connect({ host: '127.0.0.1', port: opts.port });
    await new Promise<void>((resolve, reject) => {
      socket.once(opts.direct ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    return new RawClient(socket, domain);
  }

  /** Connects (STARTTLS unless direct) up to the stream after SASL success: ready to bind or resume. */
  static async authenticated(opts: RawClientOptions & { user: string; password: string }): Promise<RawClient> {
    const client = await RawClient.tls(opts);
    const answer = await client.auth(opts.user, opts.password);
    if (answer.name !== 'success') throw new Error(`login failed: ${answer.toString()}`);
    await client.open();
    return client;
  }

  /** Connects and opens the stream, on TLS (STARTTLS unless direct): ready for SASL. */
  static async tls(opts: RawClientOptions): Promise<RawClient> {
    const client = await RawClient.connect(opts);
    await client.open();
    if (!opts.direct) await client.starttls();
    return client;
  }

  /** Connects, STARTTLS (unless direct), SASL PLAIN and bind. Returns the bound full JID. */
  static async login(opts: RawClientOptions & { user: string; password: string; resource?: string }): Promise<{ client: RawClient; jid: string }> {
    const client = await RawClient.authenticated(opts);
    const jid = await client.bind(opts.resource ?? 'raw');
    return { client, jid };
  }

  send(xml: string): void {
    this.socket.write(xml);
  }

  /** Sends a stream header and waits for the features. */
  async open(): Promise<Element> {
    this.#reset();
    this.send(HEADER(this.domain));
    return this.next((el) => el.name === 'stream:features');
  }

  async starttls(): Promise<void> {
    this.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
    await this.next((el) => el.name === 'proceed');
    const raw = this.socket;
    raw.removeAllListeners('data');
    const secure = tls.connect({ socket: raw, servername: this.domain, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.socket = secure;
    this.#listen(secure);
    await this.open();
  }

  /** SASL PLAIN; returns `<success/>` or `<failure/>`. */
  async auth(user: string, password: string): Promise<Element> {
    const payload = Buffer.from(`\0${user}\0${password}`).toString('base64');
    this.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${payload}</auth>`);
    return this.next((el) => el.name === 'success' || el.name === 'failure');
  }

  async bind(resource: string): Promise<string> {
    this.send(`<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind></iq>`);
    const iq = await this.next((el) => el.name === 'iq' && el.attrs.id === 'bind1');
    const jid = iq.getChild('bind')?.getChildText('jid');
    if (!jid) throw new Error(`bind failed: ${iq.toString()}`);
    return jid;
  }

  /** The next element (not yet consumed by an earlier next()) matching `pred`. */
  next(pred: (el: Element) => boolean = () => true, timeoutMs = RawClient.timeoutMs): Promise<Element> {
    for (let i = this.#seen; i < this.received.length; i++) {
      const el = this.received[i]!;
      if (pred(el)) {
        this.#seen = i + 1;
        return Promise.resolve(el);
      }
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for an element; got: ${this.received.slice(this.#seen).map(String).join(' ')}`)), timeoutMs);
      this.#waiters.push({
        pred,
        resolve: (el) => {
          clearTimeout(timer);
          resolve(el);
        },
      });
    });
  }

  /** Waits for a `<stream:error/>` and returns its condition name. */
  async streamError(timeoutMs = RawClient.timeoutMs): Promise<string> {
    const el = await this.next((e) => e.name === 'stream:error', timeoutMs);
    return el.children.filter((c): c is Element => typeof c !== 'string' && c.name !== 'text')[0]?.name ?? '';
  }

  /** Drops the TCP connection without closing the stream (a vanished mobile client). */
  destroy(): void {
    this.socket.destroy();
  }

  #reset(): void {
    this.#parser = new Parser();
    this.#parser.on('element', (el: Element) => {
      this.received.push(el);
      const waiter = this.#waiters.find((w) => w.pred(el));
      if (waiter) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        this.#seen = this.received.length;
        waiter.resolve(el);
      }
    });
    this.#parser.on('error', () => {});
  }

  #listen(socket: net.Socket): void {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#parser.write(chunk));
    socket.on('error', () => {});
  }
}
