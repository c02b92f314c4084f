import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type * as tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { Element } from 'ltx';
import type { TopLevel } from '../xml/top-level.ts';
import type { Logger } from 'pino';
import { XmlStream } from '../xml/xml-stream.ts';
import { StreamError } from '../xml/stream-error.ts';
import { NS, streamHeader } from '../xml/stream-header.ts';
import type { StreamLimits } from '../xml/stream-parser.ts';
import { SaslFailure, type UpstreamLink } from '../upstream/link.ts';
import type { CachedCredential, PlainCredential } from '../upstream/sasl.ts';

/** What a client stream needs from the rest of the proxy, passed in by name. */
export interface ClientStreamDeps {
  /** Domains served (lowercase). */
  domains: ReadonlySet<string>;
  secureContext: tls.SecureContext;
  limits: StreamLimits;
  log: Logger;
  /**
   * Logs in upstream as the client (design §4.1.2).
   * @throws SaslFailure (the upstream's verdict) or UpstreamError (unreachable).
   */
  login(cred: PlainCredential, domain: string): Promise<UpstreamLink>;
  /**
   * Checks the credential against the one cached by a live session of the same account
   * (design §4.3: resumption is verified against the cached credential). Resolves with that
   * session's upstream post-auth features when it matches, undefined otherwise.
   */
  verifyCached(cred: PlainCredential, bareJid: string): Promise<Element | undefined>;
  /** The upstream bound a resource: create the session (design §4.1.4). */
  bound(client: ClientStream, link: UpstreamLink, fullJid: string): void;
  /** `<resume/>` after SASL (XEP-0198 §5); the handler answers on `client`. */
  resume(client: ClientStream, el: TopLevel): void;
}

type State = 'pre-tls' | 'sasl' | 'authenticating' | 'authenticated' | 'binding' | 'established' | 'closed';

/** SASL failures allowed before the stream is closed (RFC 6120 §6.4.5 lets the server limit retries). */
const MAX_AUTH_ATTEMPTS = 3;

/**
 * One client's c2s stream from TCP accept to the end of negotiation (RFC 6120 §4–§7): stream
 * header checks, STARTTLS, SASL PLAIN (verified by logging in upstream), the post-auth features
 * and resource binding (relayed) or resumption. After that, a session owns it.
 *
 * Events:
 * - `element` (el: TopLevel): a top-level element after negotiation (for the session).
 * - `end` (): the client closed its stream cleanly (`</stream:stream>`).
 * - `close` (): the connection is gone (with or without a clean close before).
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
  #authAttempts = 0;
  /** Whether our header for the current stream (since the last restart) went out. */
  #headerSent = false;
  #bindId: string | undefined;
  /** The authenticated account, after SASL. */
  bareJid: string | undefined;

  /** @param direct true for direct TLS (XEP-0368): the socket is already a TLSSocket. */
  constructor(socket: Socket, direct: boolean, deps: ClientStreamDeps) {
    super();
    this.#deps = deps;
    this.log = deps.log.child({ remote: `${socket.remoteAddress}:${socket.remotePort}` });
    this.#state = direct ? 'sasl' : 'pre-tls';
    socket.setNoDelay(true);
    this.#stream = new XmlStream(socket, deps.limits);
    this.#stream.on('start', (attrs: Record<string, string>) => this.#onHeader(attrs));
    this.#stream.on('element', (el: TopLevel) => this.#onElement(el));
    this.#stream.on('streamError', (err: StreamError) => this.fail(err));
    this.#stream.on('end', () => {
      this.emit('end');
      this.#stream.end();
    });
    this.#stream.once('close', () => this.#onClose());
  }

  /** The domain the client opened its stream to. */
  get domain(): string {
    return this.#domain ?? '';
  }

  /** True once the connection is closed or closing. */
  get closed(): boolean {
    return this.#stream.closed;
  }

  /** Writes serialized XML to the client. */
  write(xml: string): void {
    this.#stream.write(xml);
  }

  /** Ends the stream with a stream error (logged at info: the client misbehaved or is replaced). */
  fail(err: StreamError): void {
    if (this.#stream.closed) return;
    // RFC 6120 §4.9.1.1: an error before our stream header still goes inside a stream.
    if (!this.#headerSent) this.#writeHeader(this.#domain);
    this.log.info({ condition: err.condition }, `closing client stream: ${err.message}`);
    this.#stream.fail(err);
  }

  /** Closes the stream cleanly. */
  end(): void {
    this.#stream.end();
  }

  /** Drops the TCP connection without a closing tag (tests; dead peers). */
  destroy(): void {
    this.#stream.destroy();
  }

  /** The session has taken over: elements now go to `element` listeners. */
  establish(): void {
    this.#state = 'established';
    // The session owns the link now; a listener left here would keep this stream (socket,
    // parser, logger: ~12 KB) alive for as long as the session hibernates.
    this.#link?.off('close', this.#onLinkClose);
  }

  /**
   * After a resume the upstream link opened for this login is not needed: closes it and returns
   * its credential (undefined when the login was checked against the cache instead).
   */
  closeSpareLink(): CachedCredential | undefined {
    const link = this.#link;
    link?.close();
    this.#link = undefined;
    this.#pendingCred = undefined;
    return link?.credential;
  }

  /** A resume failed or was refused: the stream stays in the post-auth state (XEP-0198 §5). */
  get awaitingBind(): boolean {
    return this.#state === 'authenticated';
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
        return `<stream:features><mechanisms xmlns='${NS.sasl}'><mechanism>PLAIN</mechanism></mechanisms></stream:features>`;
      default:
        return postAuthFeatures(this.#upstreamFeatures!);
    }
  }

  #onElement(el: TopLevel): void {
    switch (this.#state) {
      case 'established':
        this.emit('element', el);
        return;
      case 'pre-tls':
        if (el.is('starttls', NS.tls)) return void this.#startTls();
        // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here; nothing else before it.
        return this.fail(new StreamError('policy-violation', 'STARTTLS is required before anything else'));
      case 'sasl':
        if (el.is('auth', NS.sasl)) return void this.#authenticate(el);
        if (el.is('abort', NS.sasl)) return this.#stream.write(`<failure xmlns='${NS.sasl}'><aborted/></failure>`);
        // As Prosody's mod_smacks answers them: nothing to enable or resume before SASL.
        if (el.is('enable', NS.sm)) return this.#stream.write(`<failed xmlns='${NS.sm}'><service-unavailable xmlns='${NS.stanzas}'/></failed>`);
        if (el.is('resume', NS.sm)) return this.#stream.write(`<failed xmlns='${NS.sm}'><item-not-found xmlns='${NS.stanzas}'/></failed>`);
        return this.fail(new StreamError('not-authorized', 'authenticate first'));
      case 'authenticating':
        // RFC 6120 §6.4.2: nothing but the SASL exchange until it ends.
        return this.fail(new StreamError('not-authorized', 'SASL negotiation in progress'));
      case 'authenticated':
        if (el.name === 'iq' && el.attrs.type === 'set' && el.element().getChild('bind', NS.bind)) return void this.#bind(el.element());
        if (el.is('resume', NS.sm)) return this.#deps.resume(this, el);
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

  async #startTls(): Promise<void> {
    this.#stream.write(`<proceed xmlns='${NS.tls}'/>`);
    this.#state = 'sasl';
    this.#headerSent = false;
    try {
      await this.#stream.upgradeServer(this.#deps.secureContext);
    } catch (err) {
      this.log.info(`client TLS handshake failed: ${(err as Error).message}`);
    }
  }

  async #authenticate(el: TopLevel): Promise<void> {
    if (el.attrs.mechanism !== 'PLAIN') {
      return this.#saslFailure('invalid-mechanism');
    }
    const cred = parsePlain(el.element().getText(), this.#domain!);
    if (!cred) return this.#saslFailure('malformed-request');
    this.#state = 'authenticating';
    const bareJid = `${cred.username}@${this.#domain}`;
    try {
      // A returning client (most often about to resume) needs no new upstream login.
      const cachedFeatures = await this.#deps.verifyCached(cred, bareJid);
      if (cachedFeatures) {
        this.#upstreamFeatures = cachedFeatures;
        this.#pendingCred = cred;
      } else {
        this.#adoptLink(await this.#deps.login(cred, this.#domain!));
      }
      if (this.#stream.closed) return this.#link?.close();
      this.bareJid = bareJid;
      this.#state = 'authenticated';
      this.#stream.write(`<success xmlns='${NS.sasl}'/>`);
      this.#stream.restart();
      this.#headerSent = false;
      this.log = this.log.child({ account: this.bareJid });
      this.log.info(cachedFeatures ? 'authenticated against a live session' : 'authenticated upstream');
    } catch (err) {
      this.#state = 'sasl';
      if (err instanceof SaslFailure) {
        this.log.info({ condition: err.condition }, 'upstream refused the login');
        this.#saslFailure(err.condition);
      } else {
        this.log.warn(`upstream login failed: ${(err as Error).message}`);
        this.#saslFailure('temporary-auth-failure');
      }
    }
  }

  #saslFailure(condition: string): void {
    this.#stream.write(`<failure xmlns='${NS.sasl}'><${condition}/></failure>`);
    if (++this.#authAttempts >= MAX_AUTH_ATTEMPTS) {
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
      // Verified against a live session, but binding a new resource needs its own login.
      try {
        this.#adoptLink(await this.#deps.login(this.#pendingCred!, this.#domain!));
      } catch (err) {
        this.log.warn(`upstream login for bind failed: ${(err as Error).message}`);
        return this.fail(new StreamError(err instanceof SaslFailure ? 'not-authorized' : 'remote-connection-failed', 'the upstream login failed'));
      } finally {
        this.#pendingCred = undefined;
      }
      if (this.#stream.closed) return this.#link!.close();
    }
    const link = this.#link!;
    const id = (this.#bindId = iq.attrs.id ?? newId());
    iq.attrs.id = id;
    const onReply = (el: TopLevel): void => {
      if (el.name !== 'iq' || el.attrs.id !== id || (el.attrs.type !== 'result' && el.attrs.type !== 'error')) return;
      link.off('element', onReply);
      if (this.#stream.closed) return;
      const jid = el.element().getChild('bind', NS.bind)?.getChildText('jid');
      if (el.attrs.type === 'result' && jid) {
        this.#stream.write(el.raw);
        this.#deps.bound(this, link, jid);
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
    // A client that leaves before binding leaves nothing behind upstream.
    if (!wasEstablished && this.#link) this.#link.close();
    this.emit('close');
  }
}

/** Post-auth features (design §4.1.4): the upstream's, with the proxy's SM in place of any other. */
export function postAuthFeatures(upstream: Element): string {
  const kept = upstream.getChildElements().filter((c) => !String(c.attrs.xmlns ?? '').startsWith('urn:xmpp:sm:'));
  return `<stream:features>${kept.map((c) => c.toString()).join('')}<sm xmlns='${NS.sm}'/></stream:features>`;
}

/** RFC 4616 PLAIN message: [authzid] NUL authcid NUL passwd. Undefined when malformed. */
export function parsePlain(b64: string, domain: string): PlainCredential | undefined {
  const text = b64.trim();
  if (text === '' || text === '=') return undefined;
  const parts = Buffer.from(text, 'base64').toString('utf8').split('\0');
  if (parts.length !== 3) return undefined;
  const [authzid, authcid, password] = parts as [string, string, string];
  // Some clients send the bare JID as authcid; the account is its localpart on this domain.
  const username = authcid.toLowerCase().endsWith(`@${domain}`) ? authcid.slice(0, -(domain.length + 1)) : authcid;
  if (username === '' || password === '' || username.includes('@')) return undefined;
  if (authzid !== '' && authzid.toLowerCase() !== `${username}@${domain}`.toLowerCase()) return undefined;
  return { username, password };
}

function newId(): string {
  return randomBytes(9).toString('base64url');
}
