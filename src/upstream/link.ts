import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { escapeXML, type Element } from 'ltx';
import type { TopLevel } from '../xml/top-level.ts';
import { isSaslData } from '../c2s/scram-relay.ts';
import { QUERY_PREFIX } from './gap-fill.ts';
import { ServerSm } from './server-sm.ts';
import { XmlStream } from '../xml/xml-stream.ts';
import { NS, streamHeader } from '../xml/stream-header.ts';
import type { StreamLimits } from '../xml/stream-parser.ts';
import type { StreamErrorCondition } from '../xml/stream-error.ts';
import type { UpstreamTlsMode } from '../config/config.ts';
import {
  SaslFailure,
  chooseMechanism,
  startExchange,
  type PlainCredential,
} from './sasl.ts';

export { SaslFailure };

/** Stream errors that, arriving while an `<r/>` is outstanding, mean the server's SM is gone. */
const SM_REJECTED = new Set(['unsupported-stanza-type', 'bad-format', 'invalid-xml']);

/**
 * Stream errors (RFC 6120 §4.9.3) by which a server rejects something it received on the stream:
 * the input, not the server or the network, is at fault, so sending the same input again on a
 * new link would only be rejected again.
 */
export const INPUT_REJECTED: ReadonlyMap<string, StreamErrorCondition> = new Map(([
  'bad-format', 'bad-namespace-prefix', 'invalid-from', 'invalid-namespace', 'invalid-xml',
  'not-well-formed', 'policy-violation', 'restricted-xml', 'unsupported-encoding',
  'unsupported-stanza-type',
] as const).map((c) => [c, c] as [string, StreamErrorCondition]).concat([['xml-not-well-formed', 'not-well-formed']])); // RFC 3920's name

/** How a link ended, beyond its reason text (the `close` event's third argument). */
/**
 * How a link ended, the fixed set metrics count reconnects by:
 * `connection-lost` (the TCP connection failed or was reset), `stream-closed` (the server closed
 * its stream), `stream-error` (the server sent a stream error), `bad-xml` (the server sent what
 * cannot be parsed), `timeout` (no answer to a ping: half-open), `proxy` (the proxy closed it).
 */
export type LinkEndKind = 'connection-lost' | 'stream-closed' | 'stream-error' | 'bad-xml' | 'timeout' | 'proxy';

export interface LinkEnd {
  /** How it ended (a timeout or a replaced link is `timeout` / `proxy`). */
  kind: LinkEndKind;
  /**
   * The server's stream error rejects what was relayed ({@link INPUT_REJECTED}), not the
   * proxy's own `<r/>` to a server whose SM went away.
   */
  rejectedInput: boolean;
  /** The proxy closed or dropped it (a timeout, a replaced link, the session's end). */
  byProxy: boolean;
}

/** Where and how to reach the upstream server. Times in milliseconds. */
export interface UpstreamOptions {
  host: string;
  port: number;
  /** The XMPP domain (stream `to`, TLS server name). */
  domain: string;
  tls: UpstreamTlsMode;
  /**
   * Trust for the server's certificate when not the system CAs (built once per proxy: parsing
   * the root store costs about 20 ms of CPU, too much for every reconnect of an outage).
   */
  secureContext?: tls.SecureContext;
  acceptSelfSigned: boolean;
  /** Connect plus full negotiation must finish within this time. */
  timeoutMs: number;
  /** Ping the server when nothing was sent for this long (0: never). */
  keepaliveMs: number;
  /** An unanswered keepalive ping after this long closes the link as dead. */
  pingTimeoutMs: number;
  limits: StreamLimits;
}


/** The upstream could not be reached or broke the protocol (not a verdict on the credential). */
export class UpstreamError extends Error {
  override name = 'UpstreamError';

  /**
   * @param transient the server could not be reached, timed out or dropped the connection: it
   *   may work a moment later (a restart), unlike a TLS or protocol failure (a misconfiguration).
   */
  constructor(
    message: string,
    readonly transient = false,
  ) {
    super(message);
  }
}

/** `open()` stops after the server's SASL offer (see {@link UpstreamLink.mechanisms}). */
const PROBE = Symbol('probe');

/** How `open()` hands back the offer of a probe (an UpstreamError: its catch passes those on). */
class MechanismsOffered extends UpstreamError {
  constructor(readonly offered: string[]) {
    super('probe');
  }
}

/**
 * A client's SASL exchange relayed to the server (`auth.mode` scram-relay, design §4.1.3): the
 * texts are base64 as on the wire, passed through unchanged both ways.
 */
export interface SaslRelay {
  /** The mechanism the client chose (one the server offered). */
  readonly mechanism: string;
  /** The client's initial response (base64, as in its `<auth/>`; `=` for an empty one). */
  readonly initial: string;
  /**
   * Sends a server challenge (base64) to the client; resolves with the client's response (base64).
   * @throws SaslFailure('aborted') when the client aborts, or another error when it leaves.
   */
  challenge(data: string): Promise<string>;
  /** Aborted when the client leaves (no new upstream attempt for it). */
  readonly signal?: AbortSignal;
  /**
   * True once a server challenge went to the client: its next message is bound to that
   * connection's nonce (RFC 5802 §5), so the exchange cannot move to another connection.
   */
  readonly challenged: boolean;
}

/**
 * One authenticated c2s stream to the upstream server, opened on behalf of one client (design §2).
 * `UpstreamLink.open()` connects, negotiates STARTTLS and SASL (RFC 6120 §5–6) and restarts the
 * stream; resource binding and everything after it are relayed by the session.
 *
 * Events:
 * - `element` (el: TopLevel): a top-level element from the server.
 * - `archive` (el: TopLevel): a result of the proxy's own archive query (gap-fill.ts), kept
 *   from the client; emitted only while someone listens.
 * - `close` (reason: string, condition: string | undefined, how: LinkEnd): the link is gone
 *   (server closed, network loss, stream error); `condition` is the server's stream error
 *   condition when it sent one.
 * - `fault` (err: unknown): an `element` listener threw (a bug); the element is dropped, the
 *   link goes on.
 */
export class UpstreamLink extends EventEmitter {
  /** The server's post-authentication stream features (RFC 6120 §4.3.2, after SASL). */
  readonly features: Element;
  /**
   * The credential for a later re-login, in memory only (design §4.1.3); undefined for a login
   * relayed from the client (`auth.mode` scram-relay): the proxy holds no secret then.
   */
  readonly credential: PlainCredential | undefined;
  /** The SASL mechanisms the server offered before this login (RFC 6120 §6.4.1). */
  readonly offeredMechanisms: readonly string[];
  /** The additional data of the server's `<success/>` (base64, '' for none): SCRAM's server signature, for a relay. */
  readonly successData: string;
  /** True when the link runs over TLS. */
  readonly secure: boolean;
  readonly #stream: XmlStream;
  readonly #options: UpstreamOptions;
  #closeReason = 'closed';
  #closeKind: LinkEndKind = 'connection-lost';
  /** The server's stream error condition, when it sent one. */
  #closeCondition: string | undefined;
  /** The server's stream error rejected relayed input (see INPUT_REJECTED). */
  #rejectedInput = false;
  #byProxy = false;
  /** The proxy's own iqs to the server awaiting their answer, by id. */
  readonly #ownIqs = new Map<string, (answer: TopLevel | undefined) => void>();
  #iqSeq = 0;
  /** Count of writes; the keepalive timer pings when it has not moved for a period. */
  #writes = 0;
  /** Count of elements received (the keepalive's proof of life from the server). */
  #reads = 0;
  #keepaliveTimer: NodeJS.Timeout | undefined;
  #sm: ServerSm | undefined;
  /** Reading stopped for backpressure (the client does not take what it is sent). */
  #readingPaused = false;

  private constructor(stream: XmlStream, options: UpstreamOptions, login: { features: Element; credential: PlainCredential | undefined; secure: boolean; offered: string[]; successData: string }) {
    super();
    this.#stream = stream;
    this.#options = options;
    this.features = login.features;
    this.credential = login.credential;
    this.secure = login.secure;
    this.offeredMechanisms = login.offered;
    this.successData = login.successData;
    stream.on('element', (el: TopLevel) => this.#onElement(el));
    stream.on('handlerError', (err: unknown) => this.emit('fault', err));
    stream.on('streamError', (err: Error) => {
      this.#closeReason = `upstream sent bad XML: ${err.message}`;
      this.#closeKind = 'bad-xml';
      stream.destroy();
    });
    stream.on('end', () => {
      if (this.#closeReason === 'closed') {
        this.#closeReason = 'upstream closed the stream'; // keep a stream error's reason
        this.#closeKind = 'stream-closed';
      }
      stream.end();
    });
    stream.once('close', () => {
      clearInterval(this.#keepaliveTimer);
      this.#sm?.stop();
      for (const settle of [...this.#ownIqs.values()]) settle(undefined);
      this.#ownIqs.clear();
      const kind = this.#byProxy && this.#closeKind === 'connection-lost' ? 'proxy' : this.#closeKind;
      const how: LinkEnd = { kind, rejectedInput: this.#rejectedInput, byProxy: this.#byProxy };
      this.emit('close', this.#closeReason, this.#closeCondition, how);
    });
    if (options.keepaliveMs > 0) {
      let written = -1;
      let read = -1;
      // Quiet either way for a period: nothing received proves nothing about a half-open link,
      // and nothing sent looks idle to a server with an idle disconnect (Openfire).
      this.#keepaliveTimer = setInterval(() => {
        // Nothing is read while paused: silence then proves nothing about the link.
        if (this.#readingPaused) read = -1;
        else if (this.#writes === written || this.#reads === read) this.#keepalive().catch((err: unknown) => this.emit('fault', err));
        written = this.#writes;
        read = this.#reads;
      }, options.keepaliveMs);
      this.#keepaliveTimer.unref();
    }
  }

  /**
   * The SASL mechanisms the server offers (after STARTTLS, as to a login): connects, reads them
   * and closes, logging in as nobody.
   * @throws UpstreamError when the server cannot be reached or negotiated with.
   */
  static async mechanisms(options: UpstreamOptions): Promise<string[]> {
    try {
      await UpstreamLink.open(options, PROBE);
    } catch (err) {
      if (err instanceof MechanismsOffered) return err.offered;
      throw err;
    }
    throw new UpstreamError('the probe logged in');
  }

  /**
   * Connects and logs in, with the client's credential (the proxy runs the exchange) or by
   * relaying the client's own SASL exchange ({@link SaslRelay}: the proxy holds no secret).
   * Resolves with a link ready for resource binding.
   * @throws SaslFailure when the server rejects the credential (or, relayed, the mechanism).
   * @throws UpstreamError on connect, TLS or protocol trouble, or on timeout.
   */
  static async open(options: UpstreamOptions, auth: PlainCredential | SaslRelay | typeof PROBE): Promise<UpstreamLink> {
    const socket = net.connect({ host: options.host, port: options.port });
    socket.setNoDelay(true);
    const stream = new XmlStream(socket, options.limits);
    const reader = new Reader(stream);
    const timer = setTimeout(() => reader.abort(new UpstreamError(`upstream negotiation timed out after ${options.timeoutMs} ms`, true)), options.timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', (err) => reject(new UpstreamError(`cannot connect to upstream ${options.host}:${options.port}: ${err.message}`, true)));
      });
      let secure = false;
      let features = await reader.open(options.domain);
      const starttls = features.getChild('starttls', NS.tls);
      if (starttls && options.tls !== 'none') {
        stream.write(`<starttls xmlns='${NS.tls}'/>`);
        const answer = await reader.next();
        if (!answer.is('proceed', NS.tls)) throw new UpstreamError('upstream refused STARTTLS');
        reader.pause();
        await stream.upgradeClient({
          servername: options.domain,
          secureContext: options.secureContext,
          rejectUnauthorized: !options.acceptSelfSigned,
        }).catch((err: Error) => {
          throw new UpstreamError(`upstream TLS failed: ${err.message}`);
        });
        reader.resume();
        secure = true;
        features = await reader.open(options.domain);
      } else if (options.tls === 'required') {
        throw new UpstreamError('upstream does not offer STARTTLS (upstream.tls is "required")');
      } else if (starttls?.getChild('required')) {
        throw new UpstreamError('upstream requires STARTTLS but upstream.tls is "none"');
      }

      const offered = (features.getChild('mechanisms', NS.sasl)?.getChildren('mechanism') ?? []).map((m) => m.getText().trim());
      if (auth === PROBE) throw new MechanismsOffered(offered);
      const relay = 'initial' in auth ? auth : undefined;
      let successData = '';
      if (relay) {
        // Relayed as the client wrote it (base64 text unchanged): the proof covers every byte.
        if (!offered.includes(relay.mechanism)) throw new SaslFailure('invalid-mechanism', undefined, offered);
        stream.write(`<auth xmlns='${NS.sasl}' mechanism='${relay.mechanism}'>${relay.initial}</auth>`);
      }
      // PLAIN in clear text only when the operator chose a plain link (loopback deployments).
      const mechanism = relay ? undefined : chooseMechanism(offered, secure || options.tls === 'none');
      if (!relay && !mechanism) throw new UpstreamError(`no usable SASL mechanism upstream (offered: ${offered.join(', ') || 'none'})`);
      const exchange = relay ? undefined : startExchange(mechanism!, auth as PlainCredential);
      if (exchange) stream.write(`<auth xmlns='${NS.sasl}' mechanism='${mechanism}'>${b64(exchange.initial())}</auth>`);
      for (let done = false; !done;) {
        const el = await reader.next();
        if (el.is('challenge', NS.sasl)) {
          const response = exchange ? b64(await exchange.challenge(unb64(el.getText()))) : await reader.whileAlive(relay!.challenge(relayData(el)));
          stream.write(`<response xmlns='${NS.sasl}'>${response}</response>`);
        } else if (el.is('success', NS.sasl)) {
          successData = relay ? relayData(el) : el.getText().trim();
          exchange?.success(unb64(successData));
          done = true;
        } else if (el.is('failure', NS.sasl)) {
          const condition = el.getChildElements().find((c) => c.name !== 'text')?.name ?? 'not-authorized';
          throw new SaslFailure(condition, el.getChildText('text') ?? undefined);
        } else {
          throw new UpstreamError(`unexpected <${el.name}> during upstream SASL`);
        }
      }
      stream.restart();
      features = await reader.open(options.domain);
      reader.detach();
      return new UpstreamLink(stream, options, { features, credential: relay ? undefined : (auth as PlainCredential), secure, offered, successData });
    } catch (err) {
      stream.destroy();
      throw err instanceof SaslFailure || err instanceof UpstreamError ? err : new UpstreamError((err as Error).message);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Sends serialized XML (a stanza or nonza) to the server; `custody` is the serial of a client
   * stanza held in custody (custody.ts), recorded in the SM counts so that a resumed server
   * session tells which held stanzas it had. Undefined for the proxy's own stanzas.
   */
  send(xml: string, custody?: number): void {
    this.#writes++;
    this.#sm?.countOut(xml, custody);
    this.#stream.write(xml);
  }

  /** The server's stream management on this link, once {@link enableSm} asked for it. */
  get sm(): ServerSm | undefined {
    return this.#sm;
  }

  /**
   * Enables the server's XEP-0198 acks (without resumption) when its features offer
   * `urn:xmpp:sm:3`; call right after binding, before any other stanza (XEP-0198 §3).
   * @returns the link's ServerSm, or undefined when the server does not offer SM.
   */
  enableSm(): ServerSm | undefined {
    if (!this.#sm && this.features.getChild('sm', NS.sm)) this.#sm = this.#newSm();
    return this.#sm;
  }

  /**
   * Resumes the server's SM session of an earlier link (XEP-0198 §5), in place of binding.
   * Resolves with the server's `h` (how many of our stanzas it handled) once `<resumed/>` came,
   * or undefined on `<failed/>`, timeout or a closed link (the link may still bind then).
   * The stanzas the server re-sends right after `<resumed/>` arrive as `element`s.
   */
  async resumeSm(previous: ServerSm, timeoutMs: number): Promise<number | undefined> {
    if (this.#sm || !this.features.getChild('sm', NS.sm)) return undefined;
    const sm = this.#newSm(previous);
    this.#sm = sm;
    return new Promise((resolve) => {
      const done = (h: number | undefined): void => {
        clearTimeout(timer);
        sm.off('state', onState);
        this.off('close', onClose);
        if (h === undefined && this.#sm === sm) this.#sm = undefined; // the link may enable afresh
        resolve(h);
      };
      const onState = (state: string, detail?: string): void => {
        if (state === 'resumed') done(Number(detail));
        else if (state === 'off') done(undefined);
      };
      const onClose = (): void => done(undefined);
      const timer = setTimeout(() => done(undefined), timeoutMs);
      sm.on('state', onState);
      this.once('close', onClose);
    });
  }

  /**
   * Sends an iq of the proxy's own (`build` gets the id to use) and resolves with the server's
   * answer (result or error), or undefined on timeout or a closed link. The answer is consumed
   * here, never emitted as `element`.
   */
  request(build: (id: string) => string, timeoutMs: number): Promise<TopLevel | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const id = `proxy-${++this.#iqSeq}`;
    return new Promise((resolve) => {
      // An answer that sits unread while reading is paused is not late.
      const expire = (): void => {
        if (this.#readingPaused && !this.closed) timer = setTimeout(expire, timeoutMs);
        else settle(undefined);
      };
      let timer = setTimeout(expire, timeoutMs);
      const settle = (answer: TopLevel | undefined): void => {
        clearTimeout(timer);
        this.#ownIqs.delete(id);
        resolve(answer);
      };
      this.#ownIqs.set(id, settle);
      this.send(build(id));
    });
  }

  /**
   * XEP-0199 ping to the server. Resolves true on any answer (a result, or an error such as
   * service-unavailable: either proves the link alive), false on timeout or a closed link.
   * The server handles a stream's stanzas in order (RFC 6120 §10.1), so an answer also proves
   * that everything sent before the ping arrived: the custody barrier (design §4.4).
   */
  async ping(timeoutMs: number): Promise<boolean> {
    const to = this.#options.domain;
    return (await this.request((id) => `<iq type='get' id='${id}' to='${to}'><ping xmlns='${NS.ping}'/></iq>`, timeoutMs)) !== undefined;
  }

  /**
   * Binds `resource` (RFC 6120 §7) on a fresh link. Resolves with the full JID the server
   * bound, or rejects with the server's error condition (e.g. `conflict`) or a timeout.
   */
  async bind(resource: string, timeoutMs: number): Promise<string> {
    const answer = await this.request(
      (id) => `<iq type='set' id='${id}'><bind xmlns='${NS.bind}'><resource>${escapeXML(resource)}</resource></bind></iq>`,
      timeoutMs,
    );
    if (!answer) throw new UpstreamError('no answer to resource binding');
    const el = answer.element();
    const jid = el.getChild('bind', NS.bind)?.getChildText('jid');
    if (el.attrs.type === 'result' && jid) return jid;
    const condition = el.getChild('error')?.getChildElements()[0]?.name ?? 'undefined-condition';
    throw new UpstreamError(`resource binding refused: ${condition}`);
  }

  #newSm(previous?: ServerSm): ServerSm {
    const sm = new ServerSm((xml) => this.#stream.write(xml), previous);
    sm.readingPaused = () => this.#readingPaused;
    return sm;
  }

  /**
   * Stops reading from the server (backpressure: the client does not take what it is sent, so
   * the server's TCP window fills and it holds the rest). Keepalive pings and answer timeouts
   * wait meanwhile: silence is then the proxy's doing, not a dead link's.
   */
  pauseReading(): void {
    this.#readingPaused = true;
    this.#stream.pauseReading();
  }

  /** Reads from the server again after {@link pauseReading}. */
  resumeReading(): void {
    this.#readingPaused = false;
    this.#stream.resumeReading();
  }

  async #keepalive(): Promise<void> {
    if (await this.ping(this.#options.pingTimeoutMs)) return;
    if (this.closed) return;
    this.#closeReason = `no answer to a ping within ${this.#options.pingTimeoutMs} ms`;
    this.#closeKind = 'timeout';
    this.destroy();
  }

  /** True once the link is closed or closing. */
  get closed(): boolean {
    return this.#stream.closed;
  }

  /** Closes the stream cleanly, optionally after a last stanza (e.g. unavailable presence). */
  close(last?: string): void {
    if (last) this.#stream.write(last);
    this.#closeReason = 'closed by the proxy';
    this.#closeKind = 'proxy';
    this.#byProxy = true;
    this.#stream.end();
  }

  /** Drops the TCP connection at once (the proxy's decision: a dead link, a replaced one). */
  destroy(): void {
    if (!this.#stream.closed) this.#byProxy = true;
    this.#stream.destroy();
  }

  #onElement(el: TopLevel): void {
    this.#reads++;
    if (this.#sm?.take(el)) return;
    if (el.name === 'iq' && this.#ownIqs.size > 0 && (el.attrs.type === 'result' || el.attrs.type === 'error')) {
      const settle = this.#ownIqs.get(el.attrs.id);
      if (settle) return settle(el);
    }
    if (el.name === 'message' && this.listenerCount('archive') > 0 && el.raw.includes(QUERY_PREFIX)) {
      const queryId = el.element().getChild('result')?.attrs.queryid;
      if (typeof queryId === 'string' && queryId.startsWith(QUERY_PREFIX)) return void this.emit('archive', el);
    }
    if (el.name === 'stream:error') {
      const condition = el.element().getChildElements().find((c) => c.name !== 'text')?.name ?? 'undefined-condition';
      this.#closeReason = `upstream stream error: ${condition}`;
      this.#closeKind = 'stream-error';
      this.#closeCondition = condition;
      // A server whose SM turned itself off may reject the <r/> it no longer knows.
      if (this.#sm?.awaiting && SM_REJECTED.has(condition)) this.#sm.abandon(`stream error ${condition} while an <r/> was outstanding`);
      else this.#rejectedInput = INPUT_REJECTED.has(condition);
      this.#stream.end();
      return;
    }
    this.emit('element', el);
  }
}

/** Sequential reads during negotiation: header + features, then one element at a time. */
/** A relayed SASL text from the server: only base64 goes on to the client (RFC 6120 §6.4). */
function relayData(el: Element): string {
  const data = el.getText().trim();
  if (data !== '' && !isSaslData(data)) throw new UpstreamError(`upstream sent a <${el.name}> that is not base64`);
  return data;
}

class Reader {
  #queue: Element[] = [];
  #waiter: { resolve: (el: Element) => void; reject: (err: Error) => void } | undefined;
  #error: Error | undefined;
  #paused = false;
  /** Rejected when the negotiation fails ({@link whileAlive}). */
  readonly #watchers: Array<(err: Error) => void> = [];
  readonly #stream: XmlStream;
  readonly #onElement = (top: TopLevel): void => {
    const el = top.element(); // negotiation looks inside everything
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.resolve(el);
    } else this.#queue.push(el);
  };
  readonly #onClose = (): void => this.abort(new UpstreamError('upstream closed the connection during negotiation', true));
  readonly #onStreamError = (err: Error): void => this.abort(new UpstreamError(`upstream sent bad XML: ${err.message}`));

  constructor(stream: XmlStream) {
    this.#stream = stream;
    stream.on('element', this.#onElement);
    stream.on('close', this.#onClose);
    stream.on('streamError', this.#onStreamError);
  }

  /** Sends our stream header and returns the server's `<stream:features/>`. */
  async open(domain: string): Promise<Element> {
    this.#stream.write(streamHeader({ to: domain, version: '1.0' }));
    const features = await this.next();
    if (features.name === 'stream:error') {
      const condition = features.getChildElements().find((c) => c.name !== 'text')?.name;
      throw new UpstreamError(`upstream stream error: ${condition}`);
    }
    if (features.name !== 'stream:features') throw new UpstreamError(`expected stream features, got <${features.name}>`);
    return features;
  }

  next(): Promise<Element> {
    if (this.#error) return Promise.reject(this.#error);
    const el = this.#queue.shift();
    if (el) return Promise.resolve(el);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** While TLS is negotiated the socket changes under the stream: a close is not an abort. */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
  }

  abort(err: Error): void {
    if (this.#paused && err.message.includes('closed the connection')) return;
    this.#error ??= err;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(err);
    for (const reject of this.#watchers.splice(0)) reject(this.#error);
  }

  /** `task`, unless the connection fails first (a relayed login waits for the client meanwhile). */
  whileAlive<T>(task: Promise<T>): Promise<T> {
    if (this.#error) return Promise.reject(this.#error);
    return Promise.race([task, new Promise<never>((_, reject) => this.#watchers.push(reject))]);
  }

  detach(): void {
    this.#stream.off('element', this.#onElement);
    this.#stream.off('close', this.#onClose);
    this.#stream.off('streamError', this.#onStreamError);
  }
}

function b64(s: string): string {
  return s === '' ? '=' : Buffer.from(s, 'utf8').toString('base64');
}

function unb64(s: string): string {
  const t = s.trim();
  return t === '=' ? '' : Buffer.from(t, 'base64').toString('utf8');
}

