import { EventEmitter } from 'node:events';
import { parse, type Element } from 'ltx';
import type { TopLevel } from '../xml/top-level.ts';
import type { Logger } from 'pino';
import type { ClientStream } from '../c2s/client-stream.ts';
import { INPUT_REJECTED, type LinkEndKind, type UpstreamLink } from '../upstream/link.ts';
import { verifyPassword, type PlainCredential } from '../upstream/sasl.ts';
import { Upstream, type UpstreamDeps, type UpstreamFailure } from '../upstream/upstream.ts';
import { StreamManagement, type SmOptions } from '../sm/stream-management.ts';
import type { SessionRegistry } from '../sm/registry.ts';
import { diffH, parseH } from '../sm/counter.ts';
import { NS, isStanzaName } from '../xml/stream-header.ts';
import { StreamError } from '../xml/stream-error.ts';
import type { QueuedStanza } from '../sm/outbound-queue.ts';
import { prepJid, splitJid } from '../jid.ts';
import type { HeldMessages } from './held-messages.ts';
import type { HibernationJournal } from './hibernation-journal.ts';
import type { Handover } from './handover.ts';
import { settle } from './settle.ts';
import { DuplicateWindow } from './duplicates.ts';
import type { EndCause, ResumeFailure, SettleCounts, StanzaHook, StanzaHooks } from './events.ts';

/** The end cause of each way the upstream side gives up. */
const UPSTREAM_END_CAUSES: Record<UpstreamFailure, EndCause> = {
  refused: 'upstream-refused',
  unreachable: 'upstream-unreachable',
  conflict: 'upstream-conflict',
  internal: 'upstream-error',
  rejected: 'upstream-rejected',
};

/** What the client is told when the session ends because the upstream gave up (design §4.5). */
const UPSTREAM_FAILURES: Record<UpstreamFailure, StreamError> = {
  refused: new StreamError('not-authorized', 'the server no longer accepts this account\'s credentials'),
  unreachable: new StreamError('remote-connection-failed', 'the server has been unreachable for too long'),
  // RFC 6120 §4.9.3.3: the server gave this resource to another connection.
  conflict: new StreamError('conflict', 'replaced by a new connection binding the same resource'),
  internal: new StreamError('internal-server-error'),
  // The server's own condition replaces this one (see #onUpstreamFailed).
  rejected: new StreamError('policy-violation', 'the server rejected a stanza sent on this stream'),
};

/** What a session needs from the proxy, passed in by name. */
export interface SessionDeps {
  registry: SessionRegistry<Session>;
  sm: SmOptions;
  /** Hibernation time (seconds), also advertised as `max` in `<enabled/>`. */
  hibernationSeconds: number;
  /**
   * Backpressure towards a client that does not take its output: past `maxSendBufferBytes`
   * (bytes) not yet taken by its connection the upstream is not read; after `sendTimeoutSeconds`
   * (seconds) without progress the session ends.
   */
  output: { maxSendBufferBytes: number; sendTimeoutSeconds: number };
  /** Messages held for accounts whose last session ended with them unacked. */
  held: HeldMessages;
  /** Journals the queues of hibernated sessions in the store, for a crash (design §4.8); none without a store. */
  journal?: HibernationJournal<Session>;
  /** Messages remembered per session to drop a second copy (`upstream.duplicateWindow`). */
  duplicateWindow: number;
  /** True when `session` is the only live session of its account at the proxy. */
  isLastSession(session: Session): boolean;
  /** For the session's upstream side: re-login, throttle, reconnect policy. */
  upstream: Omit<UpstreamDeps, 'log'>;
  /** Features' stanza hooks (events.ts), shared by every session. */
  hooks: StanzaHooks;
  log: Logger;
}

/**
 * One authenticated client resource (design §2): the client stream (may vanish: hibernation),
 * the upstream link, and the XEP-0198 state between them. The per-stanza path is
 * `#fromClient` and `#fromUpstream`.
 *
 * Events (the SessionManager re-emits them, with the session, as the proxy's event surface:
 * see ProxyEventMap in events.ts for the payloads):
 * - `sm-enabled` (resume: boolean): the client enabled XEP-0198.
 * - `hibernating` (): the client vanished; the session waits for a resume.
 * - `resumed` ({ hibernatedMs, resent }): a client resumed it.
 * - `resume-failed` (reason: ResumeFailure): a `<resume/>` of this session got `<failed/>`.
 * - `ack-requested` ({ unacked }), `ack-received` ({ acked, unacked }): XEP-0198 §4 traffic.
 * - `ack-delayed` ({ unacked: number }): an ack request to the attached client has gone
 *   unanswered for `sm.maxAckDelaySeconds` (mod_smacks' smacks-ack-delayed); `unacked` stanzas
 *   wait for it.
 * - `upstream-down` ({ reason, kind }): the upstream link dropped; the session reconnects it.
 * - `upstream-up` ({ downMs, resumed }): a new upstream link is bound and the state replayed.
 * - `custody-confirmed` ({ stanzas, latencyMs }): a custody barrier answered (design §4.4).
 * - `duplicate-dropped` (): a second copy of a message did not reach the client.
 * - `relay-reconnect` (): the upstream link is lost and the login was relayed: the client's
 *   connection is closed so that it logs in again and resumes (design §4.1.3).
 * - `ending` ({ held, cause }): the session is ending and its unacked stanzas are settled (`held`: those
 *   kept for the account's next login); its upstream link is still open (last chance to send).
 * - `ended` (end: SessionEnd): the session is over, with a cause from END_CAUSES.
 *
 * One client stream owns the session at a time: attaching one detaches (and releases) the
 * other, and of several resumes in flight only the latest may attach.
 */
export class Session extends EventEmitter {
  /** The account, prepared (RFC 7622) as every comparison of accounts expects. */
  readonly bareJid: string;
  /** `bareJid` plus the bound resource. */
  readonly fullJid: string;
  readonly sm: StreamManagement;
  log: Logger;
  #client: ClientStream | undefined;
  readonly #upstream: Upstream;
  /** The upstream's deps; its `log` follows the session's (see {@link #follow}). */
  readonly #upstreamDeps: UpstreamDeps;
  /** The bound resource, a binding of every log line of the session. */
  readonly #resource: string;
  #resumeId: string | undefined;
  #hibernationTimer: NodeJS.Timeout | undefined;
  /** When the client vanished (ms since the epoch), while hibernating. */
  #hibernatedAt = 0;
  #ended = false;
  #endCause: EndCause | undefined;
  /** Whether the client sent its initial presence (held messages follow it, RFC 6121 §4.2). */
  #available = false;
  /** Bumped by every resume: of several in flight, only the latest may attach. */
  #resumeSeq = 0;
  /** Stanzas a retired session of this resource handed over, delivered with the initial presence. */
  #handedOver: QueuedStanza[] = [];
  /** What the client already got, so that an upstream fault's second copy is dropped. */
  readonly #duplicates: DuplicateWindow;
  /** Set while the upstream is not read because the client does not take its output. */
  #stallTimer: NodeJS.Timeout | undefined;
  readonly #deps: SessionDeps;

  /** @param handover what a session retired by this bind of its resource left (design §4.3). */
  constructor(deps: SessionDeps, client: ClientStream, upstream: UpstreamLink, fullJid: string, handover?: Handover) {
    super();
    this.#deps = deps;
    const { bare, resource = '' } = splitJid(fullJid);
    this.bareJid = bare;
    this.fullJid = prepJid(fullJid);
    this.#resource = resource;
    this.log = client.log.child({ resource });
    this.sm = new StreamManagement(deps.sm);
    this.#duplicates = new DuplicateWindow(deps.duplicateWindow);
    this.sm.on('overflow', () => this.#onOverflow());
    // mod_smacks' smacks-ack-delayed: the client may be gone without a word (push reacts to it).
    this.sm.on('ack-delayed', () => {
      this.log.debug({ unacked: this.sm.queue.length }, `no ack within ${deps.sm.maxAckDelaySeconds} s`);
      this.emit('ack-delayed', { unacked: this.sm.queue.length });
    });
    this.sm.on('ack-offset', (n: number) => this.log.info(`client counted ${n} stanzas sent before <enabled/>; tolerated`));
    this.sm.on('requested', (unacked: number) => this.emit('ack-requested', { unacked }));
    this.sm.on('acked', (acked: number, unacked: number) => this.emit('ack-received', { acked, unacked }));
    this.#upstreamDeps = { ...deps.upstream, log: this.log, relinkState: () => this.#relinkState() };
    this.#upstream = new Upstream(this.#upstreamDeps, upstream, this.fullJid);
    this.#upstream.on('element', (el: TopLevel) => this.#fromUpstream(el));
    this.#upstream.on('confirmed', (counted: number) => this.sm.confirm(counted));
    this.#upstream.on('down', (reason: string, kind: LinkEndKind) => {
      this.log.warn({ kind }, `upstream link lost (${reason}): reconnecting`);
      this.emit('upstream-down', { reason, kind });
    });
    this.#upstream.on('up', (info: { downMs: number; resumed: boolean }) => this.emit('upstream-up', info));
    this.#upstream.custody.on('barrier', (stanzas: number, latencyMs: number) => this.emit('custody-confirmed', { stanzas, latencyMs }));
    // Issue 10: while the server has not confirmed maxCustodyBytes of this client's stanzas
    // (it is down, or slow), the client is not read: TCP holds the rest, nothing is lost.
    this.#upstream.custody.on('full', () => {
      this.log.debug(`over ${deps.upstream.maxCustodyBytes} bytes of stanzas await the server: not reading the client`);
      this.#client?.pauseReading();
    });
    this.#upstream.custody.on('room', () => this.#client?.resumeReading());
    this.#upstream.on('failed', (reason: string, kind: UpstreamFailure, condition?: string) => this.#onUpstreamFailed(reason, kind, condition));
    this.#upstream.on('login-needed', () => this.#onLoginNeeded());
    if (handover) this.#takeOver(handover);
    this.#attach(client);
  }

  /** The upstream's post-authentication stream features (offered again to resuming clients). */
  get upstreamFeatures(): Element {
    return this.#upstream.features;
  }

  /** Bytes of this client's stanzas the server has not confirmed yet (custody, design §4.4). */
  get custodyBytes(): number {
    return this.#upstream.custody.pendingBytes;
  }

  /** True while the session's upstream link is up (false while it reconnects). */
  get upstreamLinked(): boolean {
    return this.#upstream.linked;
  }

  /** When the server last accepted this session's credential (ms since the epoch: its last login). */
  get credentialAcceptedAt(): number {
    return this.#upstream.credentialAcceptedAt;
  }

  /** A credential the server has just accepted for this account replaces the cached one. */
  renewCredential(credential: PlainCredential): void {
    this.#upstream.renewCredential(credential);
  }

  /** True when `password` matches the credential this session logged in with (constant time). */
  verifyPassword(password: string): boolean {
    const credential = this.#upstream.credential;
    return credential !== undefined && verifyPassword(credential, password);
  }

  /** True when the session's upstream login was relayed from the client (no credential, design §4.1.3). */
  get relayed(): boolean {
    return this.#upstream.relayed;
  }

  /**
   * The upstream link is lost and the login was relayed (design §4.1.3): only the client can log
   * in again. Its connection is closed without a stream error, so it hibernates the session and
   * comes back, logs in (relayed: the new upstream link) and resumes; what it sent meanwhile
   * stays in custody, what the server sends waits in the queue.
   */
  #onLoginNeeded(): void {
    this.emit('relay-reconnect');
    const client = this.#client;
    if (!client) return; // hibernated: the client's resume brings the new login
    this.log.info('upstream link lost, relayed login: closing the client connection so that it logs in again and resumes');
    client.destroy();
  }

  /** True while a client stream is attached. */
  get hibernating(): boolean {
    return this.#client === undefined && !this.#ended;
  }

  // ---- the per-stanza path -------------------------------------------------------------------

  #fromClient(el: TopLevel): void {
    if (isStanzaName(el.name)) {
      this.sm.countInbound();
      if (this.#deps.hooks.fromClient.length > 0 && this.#consumedBy(this.#deps.hooks.fromClient, el)) return this.#upstream.handledLocally();
      this.#upstream.sendStanza(el);
      if (!this.#available && el.name === 'presence' && !el.attrs.to && !el.attrs.type) this.#onInitialPresence();
      return;
    }
    if (el.attrs.xmlns === NS.sm) return this.#smFromClient(el);
    // Other nonzas (CSI, …) are the server's business.
    this.#upstream.sendNonza(el);
  }

  #fromUpstream(el: TopLevel): void {
    if (!isStanzaName(el.name)) return; // upstream nonzas are for the proxy's link, never the client
    if (this.#ended) return this.#settleLate(el);
    if (this.#client === undefined && el.name === 'iq' && this.#isServerPing(el)) {
      // Design §4.3: answer the server's liveness checks for a hibernated client.
      this.#upstream.sendOwn(`<iq type='result' id='${escapeAttr(el.attrs.id)}' to='${escapeAttr(el.attrs.from ?? this.#domain)}'/>`);
      return;
    }
    if (this.#deps.hooks.fromUpstream.length > 0 && this.#consumedBy(this.#deps.hooks.fromUpstream, el)) return;
    if (this.#duplicates.seen(el)) {
      this.log.debug({ from: el.attrs.from, id: el.attrs.id }, 'second copy of a message dropped (sent again after an upstream fault)');
      this.emit('duplicate-dropped');
      return;
    }
    const now = Date.now();
    this.sm.send(el.raw, now);
    const client = this.#client;
    if (!client) return this.#deps.journal?.queued(this, { xml: el.raw, receivedAt: now });
    if (this.#stallTimer === undefined && client.backlog > this.#deps.output.maxSendBufferBytes) this.#holdUpstream(client);
  }

  /** Runs the stanza hooks of one direction: true when one consumed `el` (events.ts). */
  #consumedBy(hooks: readonly StanzaHook[], el: TopLevel): boolean {
    for (const hook of hooks) {
      try {
        if (hook(el, this) === true) return true;
      } catch (err) {
        // A feature's bug must not cost the stanza, nor the session.
        this.log.error({ err }, 'a stanza hook failed; the stanza goes on');
      }
    }
    return false;
  }

  /** What the features send on a new upstream link (StanzaHooks.relink); a feature's bug costs only its part. */
  #relinkState(): string[] {
    const out: string[] = [];
    for (const hook of this.#deps.hooks.relink) {
      try {
        out.push(...hook(this));
      } catch (err) {
        this.log.error({ err }, 'a relink hook failed');
      }
    }
    return out;
  }

  /**
   * Sends a stanza of the proxy's own to the client (an answer or a notice of a feature): it
   * goes through the unacked queue like any other, so it survives hibernation.
   * @returns false when the session has ended.
   */
  sendToClient(xml: string): boolean {
    if (this.#ended) return false;
    this.sm.send(xml, Date.now());
    return true;
  }

  /**
   * Sends a stanza of the proxy's own to the server on the session's upstream link (an answer or
   * a request of a feature, e.g. an XEP-0410 self-ping). It is not in custody: not re-sent after
   * a drop, and it does not count in the client's `h`.
   * @returns false when it was not sent: the session ended or its link is down.
   */
  sendToUpstream(xml: string): boolean {
    if (this.#ended || !this.#upstream.linked) return false;
    this.#upstream.sendOwn(xml);
    return true;
  }

  /** An XEP-0199 ping from the server itself (its domain, or no `from`). */
  #isServerPing(el: TopLevel): boolean {
    const from = el.attrs.from;
    return el.attrs.type === 'get' && (from === undefined || from === this.#domain) &&
      el.raw.includes(NS.ping) && el.element().getChild('ping', NS.ping) !== undefined;
  }

  get #domain(): string {
    return this.bareJid.slice(this.bareJid.indexOf('@') + 1);
  }

  #onInitialPresence(): void {
    this.#available = true;
    const handedOver = this.#handedOver;
    this.#handedOver = [];
    if (handedOver.length > 0) this.log.info({ count: handedOver.length }, 'delivering what the retired session of this resource left unacked');
    for (const s of handedOver) this.sm.send(withDelay(s.xml, s.receivedAt, this.#domain), s.receivedAt);
    const held = this.#deps.held.take(this.bareJid);
    if (held.length === 0) return;
    this.log.info({ count: held.length }, 'delivering messages held since the last session ended');
    for (const s of held) this.sm.send(withDelay(s.xml, s.receivedAt, this.#domain), s.receivedAt);
  }

  #onOverflow(): void {
    const { length, bytes } = this.sm.queue;
    this.log.warn({ unacked: length, bytes }, `unacked queue over sm.maxQueueSize (${this.#deps.sm.maxQueueSize}) or sm.maxQueueBytes: session no longer resumable`);
    // mod_smacks: the session cannot be resumed any more, so it ends now (design §4.3).
    this.#client?.fail(new StreamError('resource-constraint', 'too many unacknowledged stanzas'));
    this.end('queue-overflow', 'unacked queue overflowed');
  }

  // ---- backpressure -------------------------------------------------------------------------

  /**
   * The client does not take its output: stop reading the server (its TCP window fills and it
   * holds the rest) until the client has taken it all; a client that takes nothing for
   * `sendTimeoutSeconds` ends (its queue settled), so a non-reader holds bounded memory.
   */
  #holdUpstream(client: ClientStream): void {
    const { maxSendBufferBytes, sendTimeoutSeconds } = this.#deps.output;
    this.log.debug({ buffered: client.bufferedBytes }, `client output over ${maxSendBufferBytes} bytes: upstream reading paused`);
    this.#upstream.pauseReading(true);
    let left = client.bufferedBytes;
    this.#stallTimer = setInterval(() => {
      const now = client.bufferedBytes;
      if (now < left) {
        left = now;
        return;
      }
      this.log.info(`client took none of its output for ${sendTimeoutSeconds} s: ending the session`);
      client.fail(new StreamError('connection-timeout', 'output not read'));
      this.end('client-stalled', 'client stopped reading');
    }, sendTimeoutSeconds * 1000);
    this.#stallTimer.unref();
    client.once('drain', () => this.#releaseUpstream());
  }

  #releaseUpstream(): void {
    if (this.#stallTimer === undefined) return;
    clearInterval(this.#stallTimer);
    this.#stallTimer = undefined;
    if (!this.#ended) this.#upstream.pauseReading(false);
  }

  // ---- XEP-0198 negotiation on the live stream ----------------------------------------------

  #smFromClient(el: TopLevel): void {
    const client = this.#client!;
    try {
      if (this.sm.handleNonza(el)) return;
    } catch (err) {
      if (!(err instanceof StreamError)) throw err; // a bug: internal-server-error (xml-stream.ts)
      return client.fail(err);
    }
    if (el.name === 'enable') {
      if (this.sm.enabled) return client.write(failed('unexpected-request'));
      this.sm.enable();
      client.smEnabled = true; // its liveness probe is an <r/> from now on
      this.#upstream.custody.startCounting();
      const resume = el.attrs.resume === 'true' || el.attrs.resume === '1';
      if (resume) {
        this.#resumeId = this.#deps.registry.add(this);
        client.write(`<enabled xmlns='${NS.sm}' id='${this.#resumeId}' resume='true' max='${this.#deps.hibernationSeconds}'/>`);
      } else {
        client.write(`<enabled xmlns='${NS.sm}'/>`);
      }
      this.log.info({ resume }, 'stream management enabled');
      this.emit('sm-enabled', resume);
      return;
    }
    if (el.name === 'resume') return client.write(failed('unexpected-request'));
  }

  // ---- client attach / hibernation / resumption ---------------------------------------------

  #attach(client: ClientStream): void {
    this.#client = client;
    let cleanEnd = false;
    client.on('end', () => {
      cleanEnd = true;
    });
    client.once('close', () => {
      if (this.#client !== client || this.#ended) return;
      this.#detach();
      // A client the proxy closed with a stream error (abuse, a flood, a rejected stanza) does
      // not hibernate, as with Prosody: only a vanished one does. The proxy's own bug does not count.
      const failure = client.failure?.condition;
      const closedByUs = failure !== undefined && failure !== 'internal-server-error';
      if (cleanEnd) this.end('client-closed', 'client closed its stream');
      else if (closedByUs) this.end('client-error', `client stream closed with ${failure}`);
      else if (!this.#resumeId || this.sm.overflowed) this.end('client-lost', 'client connection lost');
      else this.#hibernate();
    });
    this.sm.attach((xml) => client.write(xml));
    client.establish((el) => this.#fromClient(el));
    // The server cannot take more of this client's stanzas yet (custody full): read no more of them.
    if (this.#upstream.custody.full) client.pauseReading();
  }

  /**
   * The session's log lines (and its upstream's) name `client`'s connection from now on: its
   * `remote`, not that of the connection the session started on.
   */
  #follow(client: ClientStream): void {
    this.log = client.log.child({ resource: this.#resource });
    this.#upstreamDeps.log = this.log;
  }

  /** The client stream lets go: its elements stop reaching the session. */
  #detach(): ClientStream | undefined {
    const client = this.#client;
    this.#client = undefined;
    // Hibernated, the session reads the server again: the unacked queue's bounds apply.
    this.#releaseUpstream();
    this.sm.attach(undefined);
    client?.release();
    return client;
  }

  #hibernate(): void {
    this.log.info(`client vanished: hibernating for up to ${this.#deps.hibernationSeconds} s`);
    this.#hibernatedAt = Date.now();
    this.#deps.journal?.hibernating(this, this.sm.unacked());
    this.#startHibernationTimer();
    this.emit('hibernating');
  }

  /**
   * Restarts the hibernation timer so that the session ends `seconds` from now unless resumed
   * (mod_cloud_notify's extended watchdog: push keeps a hibernated session until its first push).
   * @returns false when no client is absent (nothing to extend) or the session ended.
   */
  setHibernationTimeout(seconds: number): boolean {
    if (this.#ended || this.#hibernationTimer === undefined) return false;
    clearTimeout(this.#hibernationTimer);
    this.#hibernationTimer = undefined;
    this.#hibernationTimer = setTimeout(() => this.end('hibernation-timeout', 'hibernation timed out'), seconds * 1000);
    this.#hibernationTimer.unref();
    return true;
  }

  /** Runs while no client owns the session, resumes in flight included (idempotent). */
  #startHibernationTimer(): void {
    this.#hibernationTimer ??= setTimeout(() => this.end('hibernation-timeout', 'hibernation timed out'), this.#deps.hibernationSeconds * 1000);
    this.#hibernationTimer.unref();
  }

  /**
   * A client asks to resume this session (XEP-0198 §5); the registry already matched the id to
   * the client's authenticated account. Takes over from an older client stream if one is
   * still attached (it gets a `conflict` stream error). Until the resume commits the session
   * counts as hibernated (its timer runs), so a resuming client that vanishes strands nothing;
   * of several resumes in flight only the latest attaches, the others get `conflict`.
   * Resolves false after answering `<failed/>` (the client stream stays unbound and may bind
   * instead) or when the client left or was superseded meanwhile.
   * @param takeLogin hands over the client's new upstream login (a relayed session whose link is
   *   down, design §4.1.3); called only once the resume goes ahead, so a client answered
   *   `<failed/>` keeps its login to bind with.
   */
  async resume(client: ClientStream, el: TopLevel, takeLogin?: () => UpstreamLink | undefined): Promise<boolean> {
    const h = parseH(el.attrs.h);
    if (h === undefined) {
      client.write(failed('bad-request'));
      return this.#resumeFailed('bad-request');
    }
    if (this.sm.overflowed) {
      client.write(failed('resource-constraint'));
      return this.#resumeFailed('overflowed');
    }
    const login = takeLogin?.();
    const seq = ++this.#resumeSeq;
    const old = this.#detach();
    if (old) {
      old.fail(new StreamError('conflict', 'replaced by a resumed stream'));
      this.#startHibernationTimer();
    }
    // The link is down and the client logged in again (relayed, design §4.1.3): its new login
    // replaces the link first, so that the held stanzas are confirmed before <resumed h/>.
    const relinked = login === undefined || (await this.#upstream.adopt(login));
    if (!relinked && !this.#upstream.linked && seq === this.#resumeSeq && !this.#ended) {
      // The new login dropped while it was being set up as the link, and only the client can
      // log in again: its connection is closed unanswered (the session stays hibernated) and it
      // tries again, as after any loss of a relayed link.
      this.emit('relay-reconnect');
      client.destroy();
      return this.#resumeFailed('no-upstream');
    }
    // The h in <resumed/> must cover every stanza already relayed, or the client sends them
    // again: wait for the server to confirm them.
    const settled = this.#upstream.linked && (await this.#upstream.custody.settled());
    if (this.#ended) {
      client.write(failed('item-not-found', this.sm.inbound));
      return this.#resumeFailed('ended');
    }
    if (seq !== this.#resumeSeq) {
      client.fail(new StreamError('conflict', 'replaced by a newer resumption of this session'));
      return this.#resumeFailed('superseded');
    }
    if (client.closed) return this.#resumeFailed('client-left');
    if (!this.sm.ackOnResume(h)) {
      // As mod_smacks: an h that cannot be right leaves no consistent state to resume, so the
      // session ends (its queue settled) after <failed h/> and a stream error.
      const tooHigh = diffH(h, this.sm.queue.acked) < 2 ** 31;
      const app = tooHigh ? `<handled-count-too-high xmlns='${NS.sm}' h='${h}' send-count='${this.sm.queue.sent}'/>` : '';
      client.write(failed('undefined-condition', this.sm.inbound, app));
      const text = tooHigh ? 'client acknowledged more stanzas than were sent' : 'client acknowledged fewer stanzas than it already had';
      client.fail(new StreamError('undefined-condition', text, app || undefined));
      this.#resumeFailed('invalid-h');
      this.end('resume-invalid-h', `resume with an impossible h (${text})`);
      return false;
    }
    if (!settled) {
      // Without a link, the proxy lets go of what was never confirmed and the client re-sends
      // it (custody rule, design §4.2).
      this.#upstream.custody.release();
      this.sm.forgetUnconfirmed();
    }
    clearTimeout(this.#hibernationTimer);
    this.#hibernationTimer = undefined;
    client.write(`<resumed xmlns='${NS.sm}' previd='${this.#resumeId}' h='${this.sm.inbound}'/>`);
    this.#follow(client);
    this.#attach(client);
    this.#deps.journal?.release(this);
    const stanzas = this.sm.unacked();
    for (const s of stanzas) client.write(withDelay(s.xml, s.receivedAt, this.#domain));
    this.sm.requestAck();
    const hibernatedMs = this.#hibernatedAt === 0 ? 0 : Date.now() - this.#hibernatedAt;
    this.#hibernatedAt = 0;
    this.log.info({ resent: stanzas.length, hibernatedMs }, 'session resumed');
    this.emit('resumed', { hibernatedMs, resent: stanzas.length });
    return true;
  }

  #resumeFailed(reason: ResumeFailure): false {
    this.log.info({ reason }, 'resume failed');
    this.emit('resume-failed', reason);
    return false;
  }

  // ---- a new bind of the same resource --------------------------------------------------------

  /**
   * Retires the session because a new stream of its account binds its resource (design §4.3):
   * as the server would, the attached client (if any) is kicked with `conflict`; the upstream
   * session is closed (cleanly: the server still handles what was sent on it); nothing it held
   * is settled, it is handed over instead. Call before the new bind reaches the server.
   */
  retire(): Handover {
    this.#client?.fail(UPSTREAM_FAILURES.conflict);
    const unacked = [...this.#handedOver, ...this.sm.queue.drain()];
    this.#handedOver = [];
    // Sent on a live link, they are handled before its close; without one, they go again.
    const unconfirmed = this.#upstream.custody.release();
    this.#finish('replaced', 'retired: a new stream binds its resource');
    let settled = false;
    return {
      unacked,
      unconfirmed,
      settle: () => {
        if (settled) return;
        settled = true;
        this.#deps.held.batch(() => this.#settleAll(unacked));
        if (unconfirmed.length > 0) this.log.warn({ lost: unconfirmed.length }, 'client stanzas of a retired session are lost: the bind that took its resource failed');
      },
    };
  }

  #takeOver(handover: Handover): void {
    this.log.info({ unacked: handover.unacked.length, unconfirmed: handover.unconfirmed.length }, 'took over from the retired session of this resource');
    for (const raw of handover.unconfirmed) this.#upstream.custody.push(raw);
    // Presence and answers to the old client's requests mean nothing to the new one.
    this.#handedOver = handover.unacked.filter((s) => {
      const el = parse(s.xml) as Element;
      return el.attrs.type !== 'error' && (el.name === 'message' || (el.name === 'iq' && (el.attrs.type === 'get' || el.attrs.type === 'set')));
    });
  }

  // ---- the end ------------------------------------------------------------------------------

  #onUpstreamFailed(reason: string, kind: UpstreamFailure, condition?: string): void {
    if (this.#ended) return;
    const known = UPSTREAM_FAILURES[kind];
    const serverSaid = kind === 'rejected' && condition ? INPUT_REJECTED.get(condition) : undefined;
    this.#client?.fail(serverSaid ? new StreamError(serverSaid, known.text) : known);
    this.end(UPSTREAM_END_CAUSES[kind], `upstream: ${reason}`);
  }

  /**
   * The proxy is stopping (SIGTERM, design §4.8): an attached client is read no more, asked for
   * a last ack (its `<a/>` spares it re-sent messages after the restart) and given the final
   * `h` once the server confirmed what it sent (so it re-sends nothing the server has); then it
   * gets the `system-shutdown` stream error and the session ends with cause `shutdown`, its
   * unacked messages held for the account's next login (design §4.3, every session counting as
   * the account's last: none of them stays).
   * @param waitMs longest wait for the client's ack and the server's confirmation (ms).
   */
  async shutdown(waitMs: number): Promise<void> {
    const client = this.#client;
    if (client && !client.closed && !this.#ended) {
      client.pauseReading();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)));
      await Promise.race([this.#lastAcks(client), timeout]);
      clearTimeout(timer);
      if (this.#client === client && !this.#ended) {
        if (this.sm.enabled) client.write(`<a xmlns='${NS.sm}' h='${this.sm.inbound}'/>`);
        client.fail(new StreamError('system-shutdown', 'the proxy is restarting'));
      }
    }
    this.end('shutdown', 'the proxy is shutting down');
  }

  /** Until the client acked its queue and the server confirmed the client's stanzas. */
  async #lastAcks(client: ClientStream): Promise<void> {
    const acked = new Promise<void>((resolve) => {
      if (!this.sm.enabled || this.sm.queue.length === 0) return resolve();
      const check = (): void => {
        if (this.sm.queue.length > 0 && !client.closed) return;
        this.sm.off('acked', check);
        resolve();
      };
      this.sm.on('acked', check);
      client.once('close', check);
      this.sm.requestAck();
    });
    const confirmed = this.#upstream.linked ? this.#upstream.custody.settled() : Promise.resolve(false);
    await Promise.all([acked, confirmed]);
  }

  /**
   * Ends the session (hibernation timeout, overflow, clean close, upstream loss, shutdown):
   * forgets the resumption id (remembering `h`), settles the unacked stanzas the mod_smacks way
   * (design §4.3) and closes the upstream session with an unavailable presence.
   * @param cause one of END_CAUSES (logged, counted by metrics).
   * @param detail free text for the log line (default: the cause).
   */
  end(cause: EndCause, detail: string = cause): void {
    if (this.#ended) return;
    // One store transaction: what is held, the journal deleted and the old h reach the disk together.
    this.#deps.held.batch(() => {
      const last = cause === 'shutdown' || this.#deps.isLastSession(this);
      const held: QueuedStanza[] = [];
      const counts = this.#settleAll([...this.#handedOver, ...this.sm.queue.drain()], last, held);
      this.#handedOver = [];
      // The upstream link is still open: a feature may still send on it (push, design §4.7).
      this.emit('ending', { held, cause });
      this.#finish(cause, detail, `<presence type='unavailable'/>`, counts);
    });
  }

  /** Settles stanzas of an ending session the mod_smacks way (design §4.3); returns the counts. */
  #settleAll(stanzas: QueuedStanza[], last = this.#deps.isLastSession(this), held?: QueuedStanza[]): SettleCounts {
    const counts = { archived: 0, hold: 0, bounce: 0, drop: 0 };
    for (const stanza of stanzas) {
      const outcome = settle(stanza, this.bareJid, last);
      counts[outcome.action]++;
      if (outcome.action === 'hold') {
        this.#hold(stanza);
        held?.push(stanza);
      }
      else if (outcome.action === 'bounce') this.#upstream.sendOwn(outcome.reply);
    }
    if (counts.bounce > 0 && !this.#upstream.linked) {
      this.log.warn({ bounce: counts.bounce }, 'error replies to the senders of unacked stanzas are lost: no upstream link');
    }
    return counts;
  }

  /** The end itself: forget the id (remembering `h`), close both sides, tell the proxy. */
  #finish(cause: EndCause, detail: string, last?: string, settled?: SettleCounts): void {
    const hibernating = this.#hibernatedAt !== 0;
    this.#ended = true;
    this.#endCause = cause;
    this.#deps.journal?.release(this);
    clearTimeout(this.#hibernationTimer);
    if (this.#resumeId) {
      this.#deps.registry.remove(this.#resumeId, this, this.sm.inbound, this.sm.overflowed ? 'resource-constraint' : undefined);
    }
    this.#upstream.close(last);
    this.#detach()?.end();
    this.sm.close();
    this.log.info(settled ? { cause, unacked: settled } : { cause }, `session ended: ${detail}`);
    this.emit('ended', { cause, detail, hibernating, settled });
  }

  /** A stanza the server sent after the session ended: hold it when it is a chat message. */
  #settleLate(el: TopLevel): void {
    const stanza = { xml: el.raw, receivedAt: Date.now() };
    const outcome = settle(stanza, this.bareJid, this.#endCause === 'shutdown' || this.#deps.isLastSession(this));
    if (outcome.action === 'hold') this.#hold(stanza);
  }

  /** Keeps a message for the account's next login (design §4.3); a bound that drops one is logged. */
  #hold(stanza: QueuedStanza): void {
    if (!this.#deps.held.hold(this.bareJid, stanza)) this.log.warn('held messages over a bound (per account, proxy-wide bytes or age): the oldest were dropped');
  }
}

/** `<failed/>` of XEP-0198 with a stanza error condition, optionally `h` and extra children. */
export function failed(condition: string, h?: number, extra = ''): string {
  const hAttr = h === undefined ? '' : ` h='${h}'`;
  return `<failed xmlns='${NS.sm}'${hAttr}><${condition} xmlns='${NS.stanzas}'/>${extra}</failed>`;
}

function escapeAttr(value: string): string {
  return value.replace(/[&<>'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Adds an XEP-0203 delay stamp to a message or presence being re-sent (XEP-0198 §5). */
function withDelay(xml: string, receivedAt: number, domain: string): string {
  if (!xml.startsWith('<message') && !xml.startsWith('<presence')) return xml;
  const el = parse(xml) as Element;
  el.c('delay', { xmlns: NS.delay, from: domain, stamp: new Date(receivedAt).toISOString() });
  return el.toString();
}
