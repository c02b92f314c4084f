import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type * as tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { escapeXML, type Element } from 'ltx';
import type { TopLevel } from '../xml/top-level.ts';
import type { Logger } from 'pino';
import { LivenessMonitor } from './liveness.ts';
import { checkClientElement, relayedNonzas, CLIENT_STREAM_ERROR } from './stanza-check.ts';
import { XmlStream } from '../xml/xml-stream.ts';
import { StreamError } from '../xml/stream-error.ts';
import { NS, streamHeader } from '../xml/stream-header.ts';
import type { StreamLimits } from '../xml/stream-parser.ts';
import { SaslFailure, UpstreamError, type SaslRelay, type UpstreamLink } from '../upstream/link.ts';
import type { PlainCredential } from '../upstream/sasl.ts';
import type { Handover } from '../session/handover.ts';
import { prepDomain } from '../jid.ts';
import { parsePlain } from './sasl-plain.ts';
import { checkClientFirst, isSaslData } from './scram-relay.ts';
import type { Admission } from './connection-gate.ts';
import type { AuthThrottle } from './auth-throttle.ts';

/** How a client logged in (metrics): PLAIN (the proxy logs in for it), a relayed SCRAM exchange, or another mechanism (refused). */
export type LoginMode = 'plain' | 'scram-relay' | 'other';

/** A client stream's limits: the config's `limits` section (these keys of it). */
export interface ClientLimits extends StreamLimits {
  /** SASL failures on one connection before its stream is closed (RFC 6120 §6.4.5 lets the server limit retries). */
  maxAuthAttempts: number;
  /** Elements a client may pipeline behind its `<resume/>` before the answer (XEP-0198 §5). */
  maxPipelined: number;
  /** After the proxy closes the stream, the client has this long to close its side (seconds). */
  closeGraceSeconds: number;
}

/** What a client stream needs from the rest of the proxy, passed in by name. */
export interface ClientStreamDeps {
  /** Domains served (lowercase). */
  domains: ReadonlySet<string>;
  secureContext: tls.SecureContext;
  limits: ClientLimits;
  log: Logger;
  /**
   * TLS, SASL and resource binding (or resumption) must be done this long after the TCP accept
   * (ms; `limits.c2sTimeoutSeconds`), or the stream ends with `connection-timeout` (RFC 6120
   * §4.9.3.4), or is dropped mid-TLS-handshake; an upstream login it holds is closed.
   */
  negotiationTimeoutMs: number;
  /**
   * Failed logins per client address and per account (`limits.maxAuthFailures` within
   * `limits.authFailurePeriodSeconds`): while either is throttled, `<auth/>` gets
   * `temporary-auth-failure` without an upstream login.
   */
  authThrottle: AuthThrottle;
  /**
   * Logs in upstream as the client (design §4.1.2), trying again for a while when the upstream
   * cannot be reached; `signal` aborts when the client leaves.
   * @throws SaslFailure (the upstream's verdict) or UpstreamError (unreachable).
   */
  login(cred: PlainCredential, domain: string, signal?: AbortSignal): Promise<UpstreamLink>;
  /**
   * The SASL mechanisms offered to clients (`auth.mode`, design §4.1.3): PLAIN (the proxy logs in
   * for the client and can do so again), and the upstream's SCRAM mechanisms without -PLUS,
   * whose exchange is relayed to a new upstream login.
   */
  mechanisms(): readonly string[];
  /**
   * Logs in upstream by relaying the client's SCRAM exchange (design §4.1.3).
   * @throws SaslFailure (the upstream's verdict) or UpstreamError (unreachable, or it died mid-exchange).
   */
  relayLogin(relay: SaslRelay, domain: string): Promise<UpstreamLink>;
  /**
   * Checks the credential against the one cached by a live session of the same account
   * (design §4.3: resumption is verified against the cached credential). Resolves with that
   * session's upstream post-auth features when it matches, undefined otherwise.
   */
  verifyCached(cred: PlainCredential, bareJid: string): Promise<Element | undefined>;
  /**
   * The client asks to bind `resource`: a live session of the same account holding it is
   * retired (as the server would kick it) and what it held is handed over (design §4.3).
   */
  takeover(bareJid: string, resource: string): Handover | undefined;
  /**
   * Told the outcome of every SASL exchange: `success`, or the RFC 6120 §6.5 condition the
   * client got (for metrics; never a JID or a credential).
   */
  loginResult?(result: string, mode: LoginMode): void;
  /** The upstream bound a resource: create the session (design §4.1.4). */
  bound(client: ClientStream, link: UpstreamLink, fullJid: string, handover: Handover | undefined): void;
  /**
   * `<resume/>` after SASL (XEP-0198 §5); the handler answers on `client`. Resolves true when
   * a session took the stream over, false when the stream stays unbound (it may bind instead).
   */
  resume(client: ClientStream, el: TopLevel): Promise<boolean>;
  /**
   * Liveness of an established client (issue 10 B, see liveness.ts), in ms: after
   * `readTimeoutMs` without any input (`limits.readTimeoutSeconds`) the client is probed (an
   * XEP-0198 `<r/>` when {@link ClientStream.smEnabled}, else an XEP-0199 ping), and without
   * input `probeTimeoutMs` later (`sm.maxAckDelaySeconds`) its connection is dropped without a
   * stream error, as a network loss: its session hibernates or ends.
   */
  liveness: { readTimeoutMs: number; probeTimeoutMs: number };
}

type State = 'pre-tls' | 'sasl' | 'authenticating' | 'authenticated' | 'resuming' | 'binding' | 'established' | 'closed';

/**
 * One client's c2s stream from TCP accept to the end of negotiation (RFC 6120 §4–§7): stream
 * header checks, STARTTLS, SASL PLAIN (verified by logging in upstream), the post-auth features
 * and resource binding (relayed) or resumption. After that, one session owns it
 * ({@link establish}): only that owner gets its elements, and none once the stream failed.
 *
 * Events:
 * - `end` (): the client closed its stream cleanly (`</stream:stream>`).
 * - `close` (): the connection is gone (with or without a clean close before).
 * - `drain` (): all output was taken by the connection, after {@link bufferedBytes} read non-zero.
 */
export class ClientStream extends EventEmitter {
  readonly #stream: XmlStream;
  readonly #deps: ClientStreamDeps;
  log: Logger;
  #state: State;
  #domain: string | undefined;
  #link: UpstreamLink | undefined;
  /** Post-auth features of the upstream (from #link, or from the session that verified us). */
  #upstreamFeatures: Element | undefined;
  /** Kept only between a cache-verified SASL success and the bind that needs a fresh link. */
  #pendingCred: PlainCredential | undefined;
  /** A relayed login failed while the client had its turn: one late `<response/>` is ignored. */
  #relayFailed = false;
  /** Aborted when the connection closes: no further upstream login attempt for it. */
  readonly #gone = new AbortController();
  /** A relayed exchange waiting for the client's `<response/>` (RFC 6120 §6.4.3). */
  #relayWait: { resolve(data: string): void; reject(err: Error): void } | undefined;
  #authAttempts = 0;
  /** How the current SASL attempt logs in (for metrics), from the mechanism the client chose. */
  #loginMode: LoginMode = 'other';
  /** Whether our header for the current stream (since the last restart) went out. */
  #headerSent = false;
  /** Where established elements go: the owning session's handler (one owner at a time). */
  #owner: ((el: TopLevel) => void) | undefined;
  /** Elements pipelined behind a `<resume/>` awaiting its outcome. */
  #pipelined: TopLevel[] = [];
  /** A retired session's stanzas, until the bind that took its resource is answered. */
  #handover: Handover | undefined;
  /** Nonza namespaces relayed once established (stanza-check.ts), fixed at {@link establish}. */
  #nonzas: ReadonlySet<string> = new Set();
  /** Watches the established stream for a silent peer (liveness.ts). */
  #liveness: LivenessMonitor | undefined;
  /** Random prefix of this stream's liveness ping ids, from the first ping on. */
  #pingPrefix: string | undefined;
  #pingSeq = 0;
  /** Reading stopped for backpressure ({@link pauseReading}). */
  #readingPaused = false;
  /** The stream error the proxy closed this stream with (see {@link failure}). */
  #failure: StreamError | undefined;
  /** The authenticated account (prepared bare JID, RFC 7622), after SASL. */
  bareJid: string | undefined;
  /** Set by the owning session once XEP-0198 is enabled on this stream. */
  smEnabled = false;
  /** This connection's place among the unauthenticated ones (released at SASL success). */
  readonly #admission: Admission;
  /** Fires at the negotiation deadline (cleared once established or closed). */
  #deadline: NodeJS.Timeout | undefined;
  /** Between `<proceed/>` and the end of the TLS handshake: no stream to put an error in. */
  #tlsHandshaking = false;

  /**
   * @param direct true for direct TLS (XEP-0368): the socket is already a TLSSocket.
   * @param admission from the connection gate at TCP accept: the deadline counts from then.
   */
  constructor(socket: Socket, direct: boolean, deps: ClientStreamDeps, admission: Admission) {
    super();
    this.#deps = deps;
    this.#admission = admission;
    const left = Math.max(0, deps.negotiationTimeoutMs - (Date.now() - admission.acceptedAt));
    this.#deadline = setTimeout(this.#onDeadline, left).unref();
    this.log = deps.log.child({ remote: `${socket.remoteAddress}:${socket.remotePort}` });
    this.#state = direct ? 'sasl' : 'pre-tls';
    socket.setNoDelay(true);
    this.#stream = new XmlStream(socket, deps.limits, deps.limits.closeGraceSeconds * 1000);
    this.#stream.on('start', (attrs: Record<string, string>) => this.#onHeader(attrs));
    this.#stream.on('element', (el: TopLevel) => this.#onElement(el));
    this.#stream.on('streamError', (err: StreamError) => this.fail(err));
    this.#stream.on('handlerError', (err: unknown) => this.internalError(err, 'handling a client element'));
    this.#stream.on('end', () => {
      this.emit('end');
      this.#stream.end();
    });
    this.#stream.once('close', () => this.#onClose());
    this.#stream.on('drain', () => this.emit('drain'));
  }

  /** The domain the client opened its stream to. */
  get domain(): string {
    return this.#domain ?? '';
  }

  /** True once the connection is closed or closing. */
  get closed(): boolean {
    return this.#stream.closed;
  }

  /** True once a session owns the stream (bound or resumed). */
  get established(): boolean {
    return this.#state === 'established';
  }

  /**
   * The stream error the proxy itself closed this stream with (its first {@link fail}), undefined
   * when it did not: the client left, vanished, or was closed without an error. A session can
   * tell a client closed for abuse (`invalid-namespace`, `unsupported-stanza-type`,
   * `invalid-xml`, `policy-violation`…) from one whose network failed.
   */
  get failure(): StreamError | undefined {
    return this.#failure;
  }

  /** Writes serialized XML to the client. */
  write(xml: string): void {
    this.#stream.write(xml);
  }

  /** Ends the stream with a stream error (logged at info: the client misbehaved or is replaced). */
  fail(err: StreamError): void {
    if (this.#stream.closed) return;
    this.#failure = err;
    // RFC 6120 §4.9.1.1: an error before our stream header still goes inside a stream.
    if (!this.#headerSent) this.#writeHeader(this.#domain);
    this.log.info({ condition: err.condition }, `closing client stream: ${err.message}`);
    this.#stream.fail(err);
  }

  /**
   * A bug of the proxy's met this stream: logged with its stack for the operator, and the
   * stream alone ends with `internal-server-error` (no internal text reaches the client).
   */
  internalError(err: unknown, what: string): void {
    this.log.error({ err }, `internal error ${what}`);
    this.fail(new StreamError('internal-server-error'));
  }

  /** Closes the stream cleanly. */
  end(): void {
    this.#stream.end();
  }

  /** Drops the TCP connection without a closing tag (tests; dead peers). */
  destroy(): void {
    this.#stream.destroy();
  }

  /**
   * Output written to the client and not yet taken by its connection (bytes), cheap enough for
   * every stanza: the socket's own count, without this turn's coalesced output.
   */
  get backlog(): number {
    return this.#stream.socket.writableLength;
  }

  /** Like {@link backlog} with this turn's output counted too; a `drain` event follows once it is all taken. */
  get bufferedBytes(): number {
    return this.#stream.bufferedBytes;
  }

  /**
   * Stops reading the client (backpressure: the server cannot take its stanzas yet). Its
   * silence is then the proxy's doing: the read timeout waits until {@link resumeReading}.
   */
  pauseReading(): void {
    if (this.#readingPaused) return;
    this.#readingPaused = true;
    this.#stream.pauseReading();
    this.#liveness?.stop();
    this.#liveness = undefined;
  }

  /** Reads the client again after {@link pauseReading}. */
  resumeReading(): void {
    if (!this.#readingPaused) return;
    this.#readingPaused = false;
    this.#stream.resumeReading();
    if (this.#state === 'established' && this.#owner && !this.#stream.closed) this.#liveness ??= this.#watchLiveness();
  }

  /**
   * A session has taken over: from now on every element goes to `owner` (and to nobody else)
   * until {@link release}. Elements pipelined behind a `<resume/>` follow at once.
   */
  establish(owner: (el: TopLevel) => void): void {
    this.#state = 'established';
    this.#owner = owner;
    clearTimeout(this.#deadline);
    // The session owns the link now; a listener left here would keep this stream (socket,
    // parser, logger: ~12 KB) alive for as long as the session hibernates.
    this.#link?.off('close', this.#onLinkClose);
    // Checked on every element from now on: what the upstream offers is fixed for the stream.
    this.#nonzas = relayedNonzas(this.#upstreamFeatures);
    if (!this.#stream.closed && !this.#readingPaused) this.#liveness ??= this.#watchLiveness();
  }

  /** The session let go of this stream (it was replaced): its elements go nowhere any more. */
  release(): void {
    this.#owner = undefined;
    this.#liveness?.stop();
  }

  /** The read timeout of an established stream (issue 10 B; liveness.ts). */
  #watchLiveness(): LivenessMonitor {
    const { readTimeoutMs, probeTimeoutMs } = this.#deps.liveness;
    return new LivenessMonitor({
      idleMs: readTimeoutMs,
      probeTimeoutMs,
      // Node counts the bytes anyway (cleartext ones on a TLS socket): nothing to do per chunk.
      inputCount: () => this.#stream.socket.bytesRead,
      probe: () => this.#probe(),
      vanished: () => {
        this.log.info(`client silent for ${readTimeoutMs / 1000} s and ${probeTimeoutMs / 1000} s after a probe: dropping its connection as lost`);
        this.destroy();
      },
    });
  }

  /**
   * Asks a silent client for a sign of life: `<r/>` with XEP-0198 (any `<a/>` will do), else an
   * XEP-0199 ping (RFC 6120 §4.6.4 "Checking of Idle Connections"), whose answer
   * {@link #isPingAnswer} keeps from the session.
   */
  #probe(): void {
    if (this.smEnabled) return this.#stream.write(`<r xmlns='${NS.sm}'/>`);
    this.#pingPrefix ??= `${newId()}-`;
    this.#stream.write(`<iq type='get' id='${this.#pingPrefix}${++this.#pingSeq}' from='${this.#domain}'><ping xmlns='${NS.ping}'/></iq>`);
  }

  /**
   * An answer (result or error) to one of this stream's liveness pings: consumed, it is the
   * proxy's own exchange. Only while XEP-0198 is off: once the client counts its stanzas, the
   * answer must be counted in `h` like any other (the session relays it; servers drop an iq
   * result they did not ask for, RFC 6120 §8.2.3).
   */
  #isPingAnswer(el: TopLevel): boolean {
    return !this.smEnabled && el.name === 'iq' && (el.attrs.type === 'result' || el.attrs.type === 'error') && el.attrs.id?.startsWith(this.#pingPrefix!) === true;
  }

  /**
   * Hands the upstream link opened for this login to a resumed session whose own link is down
   * (a relayed login, design §4.1.3); the stream no longer owns it.
   */
  takeLink(): UpstreamLink | undefined {
    const link = this.#link;
    link?.off('close', this.#onLinkClose);
    this.#link = undefined;
    return link;
  }

  /**
   * After a resume the upstream link opened for this login is not needed: closes it and returns
   * the password the server has just accepted (undefined when the login was checked against the
   * cache instead).
   */
  closeSpareLink(): PlainCredential | undefined {
    const link = this.#link;
    link?.close();
    this.#link = undefined;
    this.#pendingCred = undefined;
    return link?.credential;
  }

  #writeHeader(domain: string | undefined): void {
    const from = domain && this.#deps.domains.has(domain) ? domain : [...this.#deps.domains][0];
    this.#stream.write(streamHeader({ from, id: newId(), version: '1.0', 'xml:lang': 'en' }));
    this.#headerSent = true;
  }

  #onHeader(attrs: Record<string, string>): void {
    const to = (attrs.to ?? '').toLowerCase();
    this.#writeHeader(to);
    if (attrs['xmlns:stream'] !== NS.stream) return this.fail(new StreamError('invalid-namespace', 'wrong stream namespace'));
    if (attrs.xmlns !== NS.client) return this.fail(new StreamError('invalid-namespace', 'only jabber:client streams are served'));
    if (!this.#deps.domains.has(to)) return this.fail(new StreamError('host-unknown', `this proxy does not serve ${to || 'an unnamed domain'}`));
    if (this.#domain !== undefined && this.#domain !== to) return this.fail(new StreamError('host-unknown', 'domain changed on stream restart'));
    if (attrs.version !== '1.0') return this.fail(new StreamError('unsupported-version', 'XMPP 1.0 streams only'));
    this.#domain = to;
    this.#stream.write(this.#features());
  }

  #features(): string {
    switch (this.#state) {
      case 'pre-tls':
        return `<stream:features><starttls xmlns='${NS.tls}'><required/></starttls></stream:features>`;
      case 'sasl':
        return `<stream:features><mechanisms xmlns='${NS.sasl}'>${this.#deps.mechanisms().map((m) => `<mechanism>${m}</mechanism>`).join('')}</mechanisms></stream:features>`;
      default:
        return postAuthFeatures(this.#upstreamFeatures!);
    }
  }

  #onElement(el: TopLevel): void {
    // RFC 6120 §4.9.1.1: nothing from a stream we failed or closed is processed.
    if (this.#stream.closed) return;
    switch (this.#state) {
      case 'established': {
        if (this.#pingPrefix !== undefined && this.#isPingAnswer(el)) return;
        // Issue 10 A: nothing the server would close the upstream stream for goes upstream.
        const verdict = checkClientElement(el, this.#nonzas);
        if (verdict === undefined) return this.#owner?.(el);
        if (verdict === CLIENT_STREAM_ERROR) {
          const condition = el.element().getChildElements().find((c) => c.name !== 'text')?.name;
          return this.log.info({ condition }, 'the client sent a stream error');
        }
        return this.fail(verdict);
      }
      case 'resuming':
        // One outcome at a time: a second <resume/> or a bind waits for the first answer.
        if (this.#pipelined.push(el) > this.#deps.limits.maxPipelined) this.fail(new StreamError('policy-violation', 'too much sent before the resume was answered'));
        return;
      case 'pre-tls':
        if (el.is('starttls', NS.tls)) return this.#own(this.#startTls(), 'during STARTTLS');
        // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here; nothing else before it.
        return this.fail(new StreamError('policy-violation', 'STARTTLS is required before anything else'));
      case 'sasl':
        // The client's answer to a challenge of a relayed login that failed meanwhile (its upstream died): a race it could not avoid.
        if (this.#relayFailed && el.is('response', NS.sasl)) {
          this.#relayFailed = false;
          return;
        }
        if (el.is('auth', NS.sasl)) return this.#own(this.#authenticate(el), 'during SASL');
        if (el.is('abort', NS.sasl)) return this.#stream.write(`<failure xmlns='${NS.sasl}'><aborted/></failure>`);
        // As Prosody's mod_smacks answers them: nothing to enable or resume before SASL.
        if (el.is('enable', NS.sm)) return this.#stream.write(`<failed xmlns='${NS.sm}'><service-unavailable xmlns='${NS.stanzas}'/></failed>`);
        if (el.is('resume', NS.sm)) return this.#stream.write(`<failed xmlns='${NS.sm}'><item-not-found xmlns='${NS.stanzas}'/></failed>`);
        return this.fail(new StreamError('not-authorized', 'authenticate first'));
      case 'authenticating':
        if (this.#relayWait && el.is('response', NS.sasl)) {
          const data = el.element().getText().trim();
          // Written into the upstream stream as it is: only base64 may pass (RFC 6120 §6.5.3).
          if (!isSaslData(data)) return this.#relayWait.reject(new SaslFailure('incorrect-encoding'));
          return this.#relayWait.resolve(data);
        }
        if (this.#relayWait && el.is('abort', NS.sasl)) return this.#relayWait.reject(new SaslFailure('aborted'));
        // RFC 6120 §6.4.2: nothing but the SASL exchange until it ends.
        return this.fail(new StreamError('not-authorized', 'SASL negotiation in progress'));
      case 'authenticated':
        if (el.name === 'iq' && el.attrs.type === 'set' && el.element().getChild('bind', NS.bind)) return this.#own(this.#bind(el.element()), 'during resource binding');
        if (el.is('resume', NS.sm)) return this.#own(this.#resume(el), 'during resumption');
        if (el.is('enable', NS.sm)) {
          // XEP-0198 §3: enable only after binding.
          return this.#stream.write(`<failed xmlns='${NS.sm}'><unexpected-request xmlns='${NS.stanzas}'/></failed>`);
        }
        // RFC 6120 §7.1: no stanzas before a resource is bound.
        return this.fail(new StreamError('not-authorized', 'bind a resource first'));
      case 'binding':
        return this.fail(new StreamError('not-authorized', 'resource binding in progress'));
      case 'closed':
        return;
    }
  }

  /** Every async step of negotiation has this stream as its owner: a bug ends it alone. */
  #own(task: Promise<void>, what: string): void {
    task.catch((err: unknown) => this.internalError(err, what));
  }

  async #resume(el: TopLevel): Promise<void> {
    this.#state = 'resuming';
    const resumed = await this.#deps.resume(this, el);
    if (this.#stream.closed) return;
    if (!resumed) this.#state = 'authenticated';
    // What the client pipelined behind its <resume/> now meets the outcome, in order.
    const pipelined = this.#pipelined;
    this.#pipelined = [];
    for (let i = 0; i < pipelined.length; i++) {
      if (this.#state === 'resuming') {
        this.#pipelined.push(...pipelined.slice(i));
        return;
      }
      this.#onElement(pipelined[i]!);
    }
  }

  async #startTls(): Promise<void> {
    this.#stream.write(`<proceed xmlns='${NS.tls}'/>`);
    this.#state = 'sasl';
    this.#headerSent = false;
    this.#tlsHandshaking = true;
    try {
      await this.#stream.upgradeServer(this.#deps.secureContext);
    } catch (err) {
      this.log.info(`client TLS handshake failed: ${(err as Error).message}`);
    } finally {
      this.#tlsHandshaking = false;
    }
  }

  /**
   * Negotiation took too long (a silent, stalled or half-done client): `connection-timeout`
   * (RFC 6120 §4.9.3.4), or a plain drop in the middle of a TLS handshake. An upstream login
   * made for this stream (authenticated, never bound) is closed at once.
   */
  readonly #onDeadline = (): void => {
    this.#deadline = undefined;
    if (this.#state === 'established' || this.#stream.closed) return;
    const seconds = Math.round(this.#deps.negotiationTimeoutMs / 1000);
    if (this.#tlsHandshaking) {
      this.log.info(`TLS handshake not done within ${seconds} s of connecting: dropping the connection`);
      this.destroy();
    } else {
      this.fail(new StreamError('connection-timeout', `negotiation not done within ${seconds} s`));
    }
    this.#link?.close();
  };

  async #authenticate(el: TopLevel): Promise<void> {
    const mechanism = el.attrs.mechanism ?? '';
    this.#loginMode = mechanism === 'PLAIN' ? 'plain' : mechanism.startsWith('SCRAM-') ? 'scram-relay' : 'other';
    if (!this.#deps.mechanisms().includes(mechanism)) return this.#saslFailure('invalid-mechanism');
    if (mechanism !== 'PLAIN') return this.#relay(mechanism, el);
    const cred = parsePlain(el.element().getText(), this.#domain!);
    if ('condition' in cred) return this.#saslFailure(cred.condition);
    const bareJid = `${cred.username}@${prepDomain(this.#domain!)}`;
    if (this.#throttled(bareJid)) return;
    this.#state = 'authenticating';
    try {
      // A returning client (most often about to resume) needs no new upstream login.
      const cachedFeatures = await this.#deps.verifyCached(cred, bareJid);
      if (cachedFeatures) {
        this.#upstreamFeatures = cachedFeatures;
        this.#pendingCred = cred;
      } else {
        this.#adoptLink(await this.#deps.login(cred, this.#domain!, this.#gone.signal));
      }
      if (this.#stream.closed) return this.#link?.close();
      this.bareJid = bareJid;
      this.#state = 'authenticated';
      // No longer among the unauthenticated connections (the negotiation deadline still runs).
      this.#admission.release();
      this.#stream.write(`<success xmlns='${NS.sasl}'/>`);
      this.#stream.restart();
      this.#headerSent = false;
      this.log = this.log.child({ account: this.bareJid });
      this.log.info(cachedFeatures ? 'authenticated against a live session' : 'authenticated upstream');
      this.#deps.loginResult?.('success', this.#loginMode);
    } catch (err) {
      this.#state = 'sasl';
      if (err instanceof SaslFailure) {
        this.log.info({ condition: err.condition }, 'upstream refused the login');
        // The server's verdict on the credential counts; its own temporary trouble does not.
        if (err.condition !== 'temporary-auth-failure') this.#deps.authThrottle.failed(this.#admission.address, bareJid);
        this.#saslFailure(err.condition);
      } else {
        this.log.warn(`upstream login failed: ${(err as Error).message}`);
        this.#saslFailure('temporary-auth-failure');
        this.#unreachable(err);
      }
    }
  }

  /**
   * After `temporary-auth-failure` for an upstream that stayed unreachable through the retries:
   * the stream is closed (RFC 6120 §4.9.3.16 `remote-connection-failed`) so that the client
   * reconnects with its own backoff, rather than sit on the connection until the negotiation
   * deadline (@xmpp/client does not try SASL again by itself).
   */
  #unreachable(err: unknown): void {
    if (err instanceof UpstreamError && err.transient && !this.#stream.closed) {
      this.fail(new StreamError('remote-connection-failed', 'the server cannot be reached at the moment: try again later'));
    }
  }

  /**
   * A SCRAM login relayed byte for byte to a new upstream login (design §4.1.3): the upstream's
   * verdict (success with its server signature, or its failure condition) is the client's. The
   * client's first message is checked here first (no upstream login for bad input); a link
   * lost mid-exchange is `temporary-auth-failure` and leaves no upstream login behind.
   */
  async #relay(mechanism: string, el: TopLevel): Promise<void> {
    const initial = el.element().getText().trim();
    const first = checkClientFirst(initial, this.#domain!);
    if ('condition' in first) return this.#saslFailure(first.condition, first.text);
    const bareJid = `${first.username}@${prepDomain(this.#domain!)}`;
    if (this.#throttled(bareJid)) return;
    this.#state = 'authenticating';
    let challenged = false;
    const relay: SaslRelay = {
      mechanism,
      initial,
      signal: this.#gone.signal,
      get challenged() {
        return challenged;
      },
      challenge: (data) => {
        challenged = true;
        if (this.#stream.closed) return Promise.reject(new Error('the client left during SASL'));
        this.#stream.write(`<challenge xmlns='${NS.sasl}'>${data}</challenge>`);
        return new Promise<string>((resolve, reject) => {
          this.#relayWait = { resolve, reject };
        }).finally(() => (this.#relayWait = undefined));
      },
    };
    let link: UpstreamLink;
    try {
      link = await this.#deps.relayLogin(relay, this.#domain!);
    } catch (err) {
      this.#state = 'sasl';
      // The upstream may have died while the client had its turn: its answer may still come.
      this.#relayFailed = this.#relayWait !== undefined;
      this.#relayWait = undefined;
      if (this.#stream.closed) return;
      if (err instanceof SaslFailure) {
        this.log.info({ condition: err.condition, mechanism }, 'upstream refused the relayed login');
        if (err.condition === 'not-authorized') this.#deps.authThrottle.failed(this.#admission.address, bareJid);
        return this.#saslFailure(err.condition, err.text);
      }
      this.log.warn(`relayed upstream login failed: ${(err as Error).message}`);
      this.#saslFailure('temporary-auth-failure');
      // Died mid-exchange: one broken connection, the client may try again on this stream.
      if (!challenged) this.#unreachable(err);
      return;
    }
    if (this.#stream.closed) return link.close();
    this.#adoptLink(link);
    this.bareJid = bareJid;
    this.#state = 'authenticated';
    this.#admission.release();
    // The upstream's additional data (SCRAM's server signature), as it sent it.
    this.#stream.write(`<success xmlns='${NS.sasl}'>${link.successData}</success>`);
    this.#stream.restart();
    this.#headerSent = false;
    this.log = this.log.child({ account: this.bareJid });
    this.log.info({ mechanism }, 'authenticated upstream (relayed)');
    this.#deps.loginResult?.('success', this.#loginMode);
  }

  /**
   * Password guessing (mod_limit_auth, mod_fail2ban): true, after answering
   * `temporary-auth-failure`, while the address or the account is throttled; no upstream login then.
   */
  #throttled(bareJid: string): boolean {
    const throttled = this.#deps.authThrottle.check(this.#admission.address, bareJid);
    if (!throttled) return false;
    this.log.info({ account: bareJid }, `login refused: too many failed logins ${throttled === 'address' ? 'from this address' : 'for this account'}`);
    this.#saslFailure('temporary-auth-failure', 'too many failed logins, try again later');
    return true;
  }

  /** RFC 6120 §6.4.5 `<failure/>` with `condition` and an optional `<text/>` (escaped). */
  #saslFailure(condition: string, text?: string): void {
    this.#deps.loginResult?.(condition, this.#loginMode);
    const textEl = text ? `<text xml:lang='en'>${escapeXML(text)}</text>` : '';
    this.#stream.write(`<failure xmlns='${NS.sasl}'><${condition}/>${textEl}</failure>`);
    if (++this.#authAttempts >= this.#deps.limits.maxAuthAttempts) {
      this.fail(new StreamError('policy-violation', 'too many failed authentication attempts'));
    }
  }

  #adoptLink(link: UpstreamLink): void {
    this.#link = link;
    this.#upstreamFeatures = link.features;
    link.once('close', this.#onLinkClose);
  }

  /** Before binding, the link is this stream's: losing it ends the stream. */
  readonly #onLinkClose = (reason: string): void => {
    if (this.#state !== 'established') this.fail(new StreamError('remote-connection-failed', `upstream: ${reason}`));
  };

  async #bind(iq: Element): Promise<void> {
    this.#state = 'binding';
    if (!this.#link) {
      // A relayed login that went to the session this stream tried to resume (which then
      // ended): no credential to log in with again, so the client must.
      if (!this.#pendingCred) return this.fail(new StreamError('remote-connection-failed', 'the upstream login of this stream is gone: log in again'));
      // Verified against a live session, but binding a new resource needs its own login.
      try {
        this.#adoptLink(await this.#deps.login(this.#pendingCred, this.#domain!, this.#gone.signal));
      } catch (err) {
        this.log.warn(`upstream login for bind failed: ${(err as Error).message}`);
        return this.fail(new StreamError(err instanceof SaslFailure ? 'not-authorized' : 'remote-connection-failed', 'the upstream login failed'));
      } finally {
        this.#pendingCred = undefined;
      }
      if (this.#stream.closed) return this.#link!.close();
    }
    const link = this.#link!;
    const id = iq.attrs.id ?? newId();
    iq.attrs.id = id;
    // Taking a resource a session of this account holds (a client whose resume failed binds
    // its old resource again): retire that session before the server kicks its link, so it
    // neither logs in again to take the resource back nor loses what it held.
    const resource = iq.getChild('bind', NS.bind)?.getChildText('resource')?.trim();
    if (resource) this.#handover ??= this.#deps.takeover(this.bareJid!, resource);
    const onReply = (el: TopLevel): void => {
      if (el.name !== 'iq' || el.attrs.id !== id || (el.attrs.type !== 'result' && el.attrs.type !== 'error')) return;
      link.off('element', onReply);
      if (this.#stream.closed) return;
      const jid = el.element().getChild('bind', NS.bind)?.getChildText('jid');
      if (el.attrs.type === 'result' && jid) {
        this.#stream.write(el.raw);
        const handover = this.#handover;
        this.#handover = undefined;
        this.#deps.bound(this, link, jid, handover);
      } else {
        // Relay the server's refusal (conflict, not-allowed…) and let the client try again.
        this.#state = 'authenticated';
        this.#stream.write(el.raw);
      }
    };
    link.on('element', onReply);
    link.send(iq.toString());
  }

  #onClose(): void {
    const wasEstablished = this.#state === 'established';
    this.#state = 'closed';
    this.#gone.abort();
    clearTimeout(this.#deadline);
    this.#admission.release();
    this.#owner = undefined;
    this.#relayWait?.reject(new Error('the client left during SASL'));
    this.#pipelined = [];
    this.#liveness?.stop();
    // A client that leaves before binding leaves nothing behind upstream.
    if (!wasEstablished && this.#link) this.#link.close();
    this.#handover?.settle();
    this.#handover = undefined;
    this.emit('close');
  }
}

/** Post-auth features (design §4.1.4): the upstream's, with the proxy's SM in place of any other. */
export function postAuthFeatures(upstream: Element): string {
  const kept = upstream.getChildElements().filter((c) => !String(c.attrs.xmlns ?? '').startsWith('urn:xmpp:sm:'));
  return `<stream:features>${kept.map((c) => c.toString()).join('')}<sm xmlns='${NS.sm}'/></stream:features>`;
}

function newId(): string {
  return randomBytes(9).toString('base64url');
}
