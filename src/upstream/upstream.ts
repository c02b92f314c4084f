import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { unescapeXML, type Element } from 'ltx';
import type { Logger } from 'pino';
import { SaslFailure, UpstreamLink, type LinkEnd, type LinkEndKind } from './link.ts';
import { Custody } from './custody.ts';
import type { ServerSm } from './server-sm.ts';
import { archiveId, archivedOwnIds, fillGap, hasArchive, type ArchivePaging } from './gap-fill.ts';
import type { PlainCredential } from './sasl.ts';
import type { TopLevel } from '../xml/top-level.ts';

/** Reconnect policy (design §4.5). Times in milliseconds. */
export interface ReconnectOptions {
  /** First retry after about this long; doubles per failure (with ±50 % jitter). */
  initialDelayMs: number;
  /** Longest wait between tries. */
  maxDelayMs: number;
  /** Stop trying (the session ends) when the link has been down this long. */
  giveUpMs: number;
  /** Answer time allowed for a custody barrier or a bind before the link counts as dead. */
  requestTimeoutMs: number;
}

/** What an Upstream needs, passed in by name. */
export interface UpstreamDeps {
  /** Opens and authenticates a new link (the proxy's UpstreamLink.open with its options). */
  open(credential: PlainCredential, domain: string): Promise<UpstreamLink>;
  /** Runs `task` when a proxy-wide login slot is free, so an outage's reconnects are spread out. */
  throttle<T>(task: () => Promise<T>): Promise<T>;
  reconnect: ReconnectOptions;
  /** Use the server's own XEP-0198 acks for custody when it offers them (design §4.4). */
  serverAcks: boolean;
  /**
   * Stanzas of the proxy's own for a new link (not a resumed one), sent after the replayed
   * presence and before the held client stanzas: features' state such as MUC rejoins (§4.6).
   */
  relinkState?: () => string[];
  /** Client stanzas held in custody (bytes) past which the client is not read (`upstream.maxCustodyBytes`). */
  maxCustodyBytes: number;
  /** How the archive is read to fill a gap after a reconnect (`upstream.gapFillPageSize`, `upstream.gapFillMaxPasses`). */
  gapFill: ArchivePaging;
  log: Logger;
}

/**
 * Why the upstream side gave up (the session ends; design §4.5):
 * - `refused`: the server rejected a fresh login with the kept credential (password changed,
 *   account deleted);
 * - `unreachable`: no link for `giveUpMs`;
 * - `conflict`: the server gave the resource to another connection (RFC 6120 §4.9.3.3); logging
 *   in again to take it back would kick that one in turn, so the proxy never does;
 * - `internal`: a bug of the proxy's in this session's upstream handling (logged with its stack);
 * - `rejected`: the server closed the stream with an error rejecting this client's input (a
 *   stanza the proxy let through but the server will not take, such as one over its size
 *   limit). Sending it again on a new link would be rejected again, login after login, so it
 *   is not: the client gets the server's condition, as it would from the server itself.
 */
export type UpstreamFailure = 'refused' | 'unreachable' | 'conflict' | 'internal' | 'rejected';

/** A link that lived less than this (ms) does not reset the reconnect backoff when it drops. */
const STABLE_LINK_MS = 30_000;

/**
 * A stanza tried alone that was in flight each time the server closed the link, this many times
 * in a row, is rejected (once is enough when the server said so with a stream error): a server
 * that drops the connection over a stanza, its stream error lost to a TCP reset, is told apart
 * from a network drop that happened to meet it. A link lost with nothing in flight (during its
 * setup, or half-open) breaks the row: the network is failing whatever the stanza is; so does a
 * server session resumed after the drop (XEP-0198 §5): the server did not end it over the stanza.
 */
const STRIKES = 2;

const NS_CARBONS = 'urn:xmpp:carbons:2';
/** The id attribute of a message's start tag. */
const MESSAGE_ID = /^<message\b[^>]*?\sid=(?:'([^']*)'|"([^"]*)")/;
const NS_CSI = 'urn:xmpp:csi:0';

/**
 * The upstream side of one session (design §2, §4.4–4.5): the current link to the server, the
 * custody of the client's stanzas until the server confirms them, and the reconnect that
 * replaces a dropped link without the client noticing: log in again with the cached credential,
 * bind the same resource, replay the session's state (last broadcast presence, carbons, CSI),
 * then every client stanza not yet confirmed, in order.
 *
 * Events:
 * - `element` (el: TopLevel): a top-level element from the server.
 * - `confirmed` (counted: number): more client stanzas reached the server (`counted` of them
 *   count in XEP-0198 `h`).
 * - `down` (reason: string, kind: LinkEndKind): the link dropped; reconnecting.
 * - `up` ({ downMs: number, resumed: boolean }): a replacement link is bound and the state
 *   replayed, `downMs` after the drop; `resumed` when the server's own XEP-0198 session was resumed.
 * - `failed` (reason: string, kind: UpstreamFailure, condition?: string): giving up; for
 *   `rejected`, `condition` is the server's stream error condition.
 */
export class Upstream extends EventEmitter {
  readonly custody: Custody;
  /** The server's post-authentication features (from the first link). */
  readonly features: Element;
  /** Undefined for a relayed login (`auth.mode` scram-relay): no re-login without the client. */
  #credential: PlainCredential | undefined;
  #credentialAcceptedAt = Date.now();
  readonly #deps: UpstreamDeps;
  readonly #resource: string;
  readonly #domain: string;
  readonly #fullJid: string;
  readonly #bareJid: string;
  /** The account's server archives messages (XEP-0313): gaps can be filled from it (undefined: not known yet). */
  #archive: boolean | undefined;
  /** Archive id of the last message handed to the session, and ids handed over since a drop. */
  #lastArchiveId: string | undefined;
  #idsSinceDrop: Set<string> | undefined;
  #link: UpstreamLink | undefined;
  /** The lost link's server SM session, to be resumed by the next link. */
  #lastSm: ServerSm | undefined;
  /** The server's SM was found broken on an earlier link: barriers only from now on. */
  #serverAcksBroken = false;
  /** Elements of a new link held back while the gap is filled, so the client gets server order. */
  #heldBack: TopLevel[] | undefined;
  #closed = false;
  #downSince = 0;
  /** When the current link came up (ms), and the backoff the next reconnect starts from. */
  #upSince = Date.now();
  #nextDelayMs: number;
  /** Server-side closes in a row with the same held stanza alone in flight. */
  #strikes = 0;
  /** The client does not take its output: links are not read (backpressure). */
  #readingPaused = false;
  /** Ids the proxy gives the client's messages that have none: unguessable prefix, counter. */
  readonly #idPrefix = `${randomBytes(6).toString('base64url')}-`;
  #idSeq = 0;
  /** Session state replayed on a new link (design §4.5). */
  #presence: string | undefined;
  #carbons: string | undefined;
  #csi: string | undefined;

  constructor(deps: UpstreamDeps, link: UpstreamLink, fullJid: string) {
    super();
    this.#deps = deps;
    this.#nextDelayMs = deps.reconnect.initialDelayMs;
    this.#resource = fullJid.slice(fullJid.indexOf('/') + 1);
    this.#domain = fullJid.slice(fullJid.indexOf('@') + 1, fullJid.indexOf('/'));
    this.#fullJid = fullJid;
    this.#bareJid = fullJid.slice(0, fullJid.indexOf('/'));
    this.#enableServerAcks(link);
    this.#own(this.#checkArchive(link), 'asking for archive support');
    this.features = link.features;
    this.#credential = link.credential;
    this.custody = new Custody(deps.reconnect.requestTimeoutMs, { maxBytes: deps.maxCustodyBytes });
    this.custody.on('confirmed', (_n: number, counted: number) => {
      this.#strikes = 0;
      this.emit('confirmed', counted);
    });
    // An unanswered barrier: the link is half-open; replace it.
    this.custody.on('timeout', () => this.#link?.destroy());
    this.custody.on('fault', (err: unknown) => {
      deps.log.error({ err }, 'internal error in a custody barrier: replacing the link');
      this.#link?.destroy();
    });
    this.#listen(link);
    this.#use(link);
    this.custody.attach(link);
  }

  /** The credential for re-logins, in memory only (design §4.1.3); undefined for a relayed login. */
  get credential(): PlainCredential | undefined {
    return this.#credential;
  }

  /**
   * True when a lost link can only be replaced by the client's next login (a relayed SCRAM
   * login, design §4.1.3: the proxy holds no secret): see `login-needed`.
   */
  get relayed(): boolean {
    return this.#credential === undefined;
  }

  /**
   * The client logged in again (relayed) while the link is down: `link` becomes the session's
   * link, as a reconnect's would (design §4.5). Resolves false when it could not be set up.
   */
  async adopt(link: UpstreamLink): Promise<boolean> {
    if (this.#link || this.#closed) {
      link.close();
      return this.#link !== undefined;
    }
    try {
      await this.#establish(link, 1);
      // A PLAIN login (auth.mode auto) gives the session a credential: later losses are transparent.
      const adopted = (this.#link as UpstreamLink | undefined) === link;
      if (adopted && link.credential) this.#credential = link.credential;
      return adopted;
    } catch (err) {
      this.#deps.log.info(`the client's new login could not replace the upstream link: ${(err as Error).message}`);
      link.destroy();
      return false;
    }
  }

  /** A credential the server has just accepted (a client's fresh login) replaces the cached one. */
  renewCredential(credential: PlainCredential): void {
    this.#credential = credential;
    this.#credentialAcceptedAt = Date.now();
  }

  /** When the server last accepted the credential (ms since the epoch): the last login. */
  get credentialAcceptedAt(): number {
    return this.#credentialAcceptedAt;
  }

  /** True while a link is up. */
  get linked(): boolean {
    return this.#link !== undefined;
  }

  /**
   * A client stanza: into custody (sent now if linked), and remembered when it is session state.
   * A message without an id gets one (RFC 6120 §8.1.3 recommends it): if it must be sent again
   * after a drop, the id is what tells its copies apart from new messages (duplicates.ts).
   */
  sendStanza(el: TopLevel): void {
    this.#track(el);
    this.custody.push(el.name === 'message' && el.attrs.id === undefined ? `<message id='${this.#idPrefix}${++this.#idSeq}'${el.raw.slice(8)}` : el.raw);
  }

  /**
   * A client stanza the proxy handled itself (a stanza hook consumed it): nothing goes to the
   * server, but custody confirms it in its place among the client's stanzas (XEP-0198 `h`).
   */
  handledLocally(): void {
    this.custody.push('');
  }

  /** A client nonza for the server (CSI…): sent when linked; CSI state is replayed later. */
  sendNonza(el: TopLevel): void {
    if (el.attrs.xmlns === NS_CSI) this.#csi = el.raw;
    this.#link?.send(el.raw);
  }

  /** Something of the proxy's own (an answer to the server's ping): sent only if linked. */
  sendOwn(xml: string): void {
    this.#link?.send(xml);
  }

  /**
   * Stops (true) or restarts (false) reading from the server, this link and the next ones:
   * backpressure from a client that does not take what it is sent.
   */
  pauseReading(paused: boolean): void {
    if (paused === this.#readingPaused) return;
    this.#readingPaused = paused;
    if (paused) this.#link?.pauseReading();
    else this.#link?.resumeReading();
  }

  /** Ends it: stops reconnecting and closes the link cleanly after `last` (if linked). */
  close(last?: string): void {
    this.#closed = true;
    this.#forgetCredential();
    const link = this.#link;
    this.#link = undefined;
    this.custody.detach();
    // What the server already wrote is read to the end (the session settles it), not dropped.
    this.#readingPaused = false;
    link?.resumeReading();
    link?.close(last);
  }

  #track(el: TopLevel): void {
    // RFC 6121 §4.2: a presence without 'to' is the broadcast one the server remembers.
    if (el.name === 'presence' && el.attrs.to === undefined) this.#presence = el.attrs.type === 'unavailable' ? undefined : el.raw;
    else if (el.name === 'iq' && el.attrs.type === 'set' && el.raw.includes(NS_CARBONS)) {
      const child = el.element().getChildElements()[0];
      if (child?.attrs.xmlns === NS_CARBONS) this.#carbons = child.name === 'enable' ? child.toString() : undefined;
    }
  }

  /** XEP-0198 without resumption on a freshly bound link, unless off or found broken. */
  #enableServerAcks(link: UpstreamLink): void {
    if (!this.#deps.serverAcks || this.#serverAcksBroken) return;
    const sm = link.enableSm();
    if (sm) this.#watchServerSm(sm);
  }

  /** Once the server's SM fails on a link, barriers only for the rest of the session. */
  #watchServerSm(sm: ServerSm): void {
    sm.on('state', (state: string, reason?: string) => {
      if (state !== 'broken') return this.#deps.log.debug(`upstream stream management ${state}`);
      this.#serverAcksBroken = true;
      this.#deps.log.warn(`upstream stream management unreliable (${reason}): custody falls back to ping barriers`);
    });
  }


  /** Listens to every element of `link` from its bind on; a listener's bug drops one element. */
  #listen(link: UpstreamLink): void {
    link.on('element', this.#fromLink);
    link.on('fault', (err: unknown) => this.#deps.log.error({ err }, 'internal error handling an element from the server: element dropped'));
  }

  /** An async path of this session's upstream: its failure is logged and ends the session alone. */
  #own(task: Promise<unknown>, what: string): void {
    task.catch((err: unknown) => {
      this.#deps.log.error({ err }, `internal error ${what}`);
      this.#giveUp(`internal error ${what}`, 'internal');
    });
  }

  /** Every element of every link, from its bind on (the server routes to a bound resource at once). */
  readonly #fromLink = (el: TopLevel): void => {
    if (this.#heldBack) this.#heldBack.push(el);
    else this.#deliver(el);
  };

  #use(link: UpstreamLink): void {
    this.#link = link;
    this.#upSince = Date.now();
    if (this.#readingPaused) link.pauseReading();
    link.once('close', (reason: string, condition: string | undefined, how: LinkEnd) => {
      if (this.#link !== link) return;
      this.#link = undefined;
      const suspects = how.byProxy ? 0 : this.custody.inFlight;
      const alone = this.custody.isolating && suspects === 1;
      // The server keeps this session for a while: the next link resumes it (XEP-0198 §5).
      this.#lastSm = link.sm?.resumable ? link.sm : undefined;
      this.custody.detach();
      if (this.#closed) return;
      // Another connection took the resource: taking it back would kick that one, and so on.
      if (condition === 'conflict') return this.#giveUp('the server gave this resource to another connection', 'conflict');
      // The server rejects what the client sent: replaying it would be rejected again on every
      // new link (a re-login loop). Without client stanzas in flight the input was the proxy's.
      if (suspects > 0) {
        if (alone || (how.rejectedInput && suspects === 1)) {
          if (how.rejectedInput || ++this.#strikes >= STRIKES) return this.#reject(condition);
        } else this.custody.isolate(suspects);
      } else this.#strikes = 0;
      this.#downSince = Date.now();
      // A link that dies soon after it came up keeps the backoff growing (no login storm).
      if (this.#downSince - this.#upSince >= STABLE_LINK_MS) this.#nextDelayMs = this.#deps.reconnect.initialDelayMs;
      if (this.#archive !== false) this.#idsSinceDrop ??= new Set();
      this.emit('down', reason, how.kind);
      // Relayed login: only the client can log in again (it will, to resume: adopt()).
      if (!this.#credential) return void this.emit('login-needed');
      this.#own(this.#reconnect(), 'reconnecting upstream');
    });
  }

  #deliver(el: TopLevel, id = this.#archive && el.name === 'message' ? archiveId(el.raw, this.#bareJid) : undefined): void {
    if (id !== undefined) {
      if (this.#idsSinceDrop?.has(id)) return; // already delivered live (gap fill overlap)
      this.#lastArchiveId = id;
      this.#idsSinceDrop?.add(id);
    }
    this.emit('element', el);
  }

  /**
   * Design §4.5: what the server wrote to the dead link comes back from its archive. The new
   * link's own traffic (offline messages, live ones) waits until then, so the client gets
   * everything in the server's order, each archived message once.
   */
  async #fillGap(link: UpstreamLink, downSince: number): Promise<void> {
    const { delivered, complete } = await fillGap(
      link,
      { bareJid: this.#bareJid, fullJid: this.#fullJid, afterId: this.#lastArchiveId, startMs: downSince - 5000, timeoutMs: this.#deps.reconnect.requestTimeoutMs, paging: this.#deps.gapFill },
      (message, id) => this.#deliver(message, id),
    );
    if (delivered > 0) this.#deps.log.info({ recovered: delivered }, 'messages of the upstream gap recovered from the archive');
    // The link dropped during the fill: what it held back stays held, and the next link's fill
    // goes on from the last id delivered (releasing now would skip the rest of the gap).
    if (!complete && link !== this.#link) return;
    this.#releaseHeldBack();
    if (link === this.#link) this.#idsSinceDrop = undefined;
  }

  async #reconnect(): Promise<void> {
    const { reconnect, log } = this.#deps;
    for (let attempt = 1; !this.#closed; attempt++) {
      const delay = this.#nextDelayMs;
      this.#nextDelayMs = Math.min(delay * 2, reconnect.maxDelayMs);
      // Full jitter: sessions that lost the server together come back spread out.
      await sleep(delay * (0.5 + Math.random()));
      if (this.#closed) return;
      if (Date.now() - this.#downSince > reconnect.giveUpMs) {
        return this.#giveUp(`upstream unreachable for ${Math.round((Date.now() - this.#downSince) / 1000)} s`, 'unreachable');
      }
      try {
        const link = await this.#deps.throttle(() => this.#deps.open(this.#credential!, this.#domain));
        await this.#establish(link, attempt);
        return;
      } catch (err) {
        if (err instanceof SaslFailure) return this.#giveUp(`the server refused the login (${err.condition})`, 'refused');
        this.#strikes = 0; // see STRIKES: a failed setup breaks the row
        log.info({ attempt }, `upstream reconnect failed: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Makes `link` (logged in, not bound) the session's link (design §4.5): resumes the server's own
   * XEP-0198 session or binds the same resource, replays the session's state and then the held
   * client stanzas, and emits `up`.
   * @throws Error when the link cannot be set up (it is closed); the caller tries another.
   */
  async #establish(link: UpstreamLink, attempt: number): Promise<void> {
    const { reconnect, log } = this.#deps;
    if (this.#archive) this.#heldBack ??= [];
    this.#listen(link);
    if (await this.#resume(link)) {
      // The server kept the session: it did not end it over the stanza in flight (a stream-level
      // rejection ends the session), so the drop that met it was the network (see STRIKES).
      this.#strikes = 0;
      return log.info({ attempt, downMs: Date.now() - this.#downSince }, 'upstream session resumed');
    }
    const binding = link.bind(this.#resource, reconnect.requestTimeoutMs);
    // Pipelined behind the bind (RFC 6120 §10.1: handled in order, in one read): nothing
    // routed to the new resource can come between its bind and its presence, so what
    // offline storage releases on that presence keeps its place before the live traffic.
    this.#enableServerAcks(link);
    this.#sendState(link);
    const jid = await binding.catch((err: Error) => {
      link.destroy();
      throw err;
    });
    if (jid.slice(jid.indexOf('/') + 1) !== this.#resource) {
      link.close();
      throw new Error(`the server bound another resource (${jid})`);
    }
    if (this.#archive === undefined) await this.#checkArchive(link);
    if (this.#archive && this.custody.pending > 0) await this.#skipArchived(link);
    if (this.#closed) {
      this.#releaseHeldBack();
      return link.close(`<presence type='unavailable'/>`);
    }
    if (link.closed) throw new Error('the new link dropped during setup');
    this.#use(link);
    this.custody.attach(link); // design §4.5: the held client stanzas, in their order
    this.#credentialAcceptedAt = Date.now();
    log.info({ attempt, downMs: Date.now() - this.#downSince }, 'upstream link re-established');
    this.emit('up', { downMs: Date.now() - this.#downSince, resumed: false });
    if (this.#archive) this.#own(this.#fillGap(link, this.#downSince), 'filling the gap from the archive');
    return;
  }

  /**
   * Resumes the server's own XEP-0198 session of the lost link on `link` (§5), when it granted
   * resumption and its counts held: the server re-sends what it wrote to the dead link, keeps
   * the session's state (presence, carbons, rooms) and has no old session left to route to.
   * The held client stanzas it had handled are confirmed; the rest go again. Resolves false
   * (the caller binds) when there is nothing to resume or the server refused.
   */
  async #resume(link: UpstreamLink): Promise<boolean> {
    const previous = this.#lastSm;
    this.#lastSm = undefined;
    if (!previous || this.#serverAcksBroken || !this.#deps.serverAcks) return false;
    const h = await link.resumeSm(previous, this.#deps.reconnect.requestTimeoutMs);
    if (h === undefined) return false;
    // Checked (defined) before <resumed/> was accepted. By serial, not by count: a ping barrier
    // may already have confirmed some of them (counting them again confirmed a stanza the
    // server never had: lost, yet acked to the client).
    const handled = new Set(previous.custodyHandled(h));
    this.#watchServerSm(link.sm!);
    if (this.#closed || link.closed) {
      if (!link.closed) link.close(`<presence type='unavailable'/>`);
      this.#releaseHeldBack();
      return true;
    }
    this.custody.confirmWhere((_raw, serial) => handled.has(serial));
    if (this.#csi) link.send(this.#csi);
    // The server re-sent what the dead link missed: no gap to fill.
    this.#releaseHeldBack();
    this.#idsSinceDrop = undefined;
    this.#use(link);
    this.custody.attach(link);
    this.#credentialAcceptedAt = Date.now();
    this.emit('up', { downMs: Date.now() - this.#downSince, resumed: true });
    return true;
  }

  /**
   * Design §4.5: a held message that the sender's own archive shows reached the server before
   * the drop is not sent again (its recipients would get it twice).
   */
  async #skipArchived(link: UpstreamLink): Promise<void> {
    const { requestTimeoutMs } = this.#deps.reconnect;
    // Sent on the old link, so unconfirmed for at most a barrier's time before the drop.
    const ids = await archivedOwnIds(link, { fullJid: this.#fullJid, startMs: this.#downSince - 2 * requestTimeoutMs - 10_000, timeoutMs: requestTimeoutMs, paging: this.#deps.gapFill });
    if (!ids || ids.size === 0) return;
    const skipped = this.custody.confirmWhere((raw) => {
      const id = raw.startsWith('<message') ? MESSAGE_ID.exec(raw) : null;
      return id !== null && ids.has(unescapeXML(id[1] ?? id[2]!));
    });
    if (skipped > 0) this.#deps.log.info({ skipped }, 'held messages the archive shows the server already had are not sent again');
  }

  /** Design §4.5: the session's state first (presence with caps, carbons, CSI). */
  #sendState(link: UpstreamLink): void {
    if (this.#presence) link.send(this.#presence);
    if (this.#carbons) {
      const carbons = this.#carbons;
      this.#own(link.request((id) => `<iq type='set' id='${id}'>${carbons}</iq>`, this.#deps.reconnect.requestTimeoutMs), 'replaying carbons');
    }
    if (this.#csi) link.send(this.#csi);
    for (const xml of this.#deps.relinkState?.() ?? []) link.send(xml);
  }

  /** Design §4.1.3: the password is kept only while the session lives. */
  #forgetCredential(): void {
    if (this.#credential) this.#credential = { username: this.#credential.username, password: '' };
  }

  #releaseHeldBack(): void {
    const heldBack = this.#heldBack ?? [];
    this.#heldBack = undefined;
    for (const el of heldBack) this.#deliver(el);
  }

  async #checkArchive(link: UpstreamLink): Promise<void> {
    this.#archive ??= await hasArchive(link, this.#bareJid, this.#deps.reconnect.requestTimeoutMs);
  }

  /** The held stanza the server would not take is dropped (counted as handled); the session ends. */
  #reject(condition: string | undefined): void {
    const raw = this.custody.reject() ?? '';
    const stanza = /^<(\w+)/.exec(raw)?.[1] ?? 'stanza';
    this.#giveUp(`the server closed the stream over a <${stanza}/> of this client's (${condition ?? 'no stream error'}); it is not sent again`, 'rejected', condition);
  }

  #giveUp(reason: string, kind: UpstreamFailure, condition?: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#forgetCredential();
    this.#releaseHeldBack();
    const link = this.#link;
    this.#link = undefined;
    this.custody.detach();
    link?.destroy();
    this.#deps.log.warn(`giving up on the upstream: ${reason}`);
    this.emit('failed', reason, kind, condition);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

