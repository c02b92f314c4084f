/**
 * The proxy's Prometheus metrics (design §3 `metrics/`, issue 11.4): one prom-client Registry per
 * proxy, fed by the SessionManager's events and two observe-only stanza hooks, and by gauges and
 * counters read from their sources when scraped. Holds no per-session state; every label comes
 * from a fixed set (labels.ts). The HTTP endpoint is server.ts.
 */
import { readFileSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SessionManager } from '../session/manager.ts';
import { PUSH_OUTCOMES, type ProxyEventMap, type StanzaHook } from '../session/events.ts';
import {
  END_CAUSES,
  HIBERNATION_ENDS,
  LINK_END_KINDS,
  LOGIN_MODES,
  LOGIN_RESULTS,
  OTHER,
  RESUME_FAILURES,
  SESSION_STATES,
  SETTLE_OUTCOMES,
  STANZA_KINDS,
  fixedLabelCounter,
} from './labels.ts';

/** Name prefix of the proxy's own metrics (Node's process metrics keep their standard names). */
export const PREFIX = 'xmpp_sm_proxy_';

/**
 * What the metrics read from the held messages (session/held-messages.ts HeldMessages), at each
 * scrape. Counters are monotonically increasing numbers of messages; `stored` and `delivered`
 * are optional until HeldMessages has them (their metrics have no sample while absent).
 */
export interface HeldMessagesSource {
  /** Messages held now, all accounts. */
  readonly size: number;
  /** Size of the messages held now (characters ≈ bytes). */
  readonly bytes: number;
  /** Accounts with messages held now. */
  readonly accounts: number;
  /** Messages dropped for any reason (account full, expired, proxy-wide size), ever. */
  readonly dropped: number;
  /** Of `dropped`: older than the TTL. */
  readonly droppedExpired: number;
  /** Messages taken into the hold, ever. */
  readonly stored?: number;
  /** Held messages delivered at a login, ever. */
  readonly delivered?: number;
}

/** Where the metrics come from. */
export interface MetricsSources {
  /** The proxy's sessions: events, stanza hooks and `counts()` (Proxy.manager). */
  manager: Pick<SessionManager, 'events' | 'hooks' | 'counts'>;
  /** Messages held for accounts with no session (Proxy.held). */
  held: HeldMessagesSource;
  /** Push registrations (Proxy's PushRegistrations): their count is read at each scrape. */
  pushRegistrations?: { readonly size: number };
  /** When the TLS certificate in use expires; read at each scrape (it changes on reload). */
  certificateNotAfter: () => Date;
  /** True once the proxy serves clients (its listeners are up): `/readyz`. */
  ready: () => boolean;
  /** `build_info`'s version; default: package.json's. */
  version?: string;
}

/** The proxy's metrics: a registry to scrape, and the readiness the endpoint reports. */
export interface Metrics {
  readonly registry: Registry;
  /** `MetricsSources.ready`. */
  ready(): boolean;
  /**
   * Stops listening to the manager (events and hooks); the registry keeps its last values.
   * (prom-client's process collectors, e.g. its event-loop monitor, cannot be stopped.)
   */
  close(): void;
}

/** prom-client default metrics left out: gauges with a `_total` suffix. */
const MISNAMED_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

// Buckets. Queue depth in stanzas (mod_smacks' default queue limit is 500); times in seconds.
const QUEUE_DEPTH_BUCKETS = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500];
const RECONNECT_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const CUSTODY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
// Hibernation lasts up to sm.hibernationSeconds (600 s), up to 72 h with push (design §4.7).
const HIBERNATION_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400, 259200];

/**
 * Builds the registry (with Node's default process metrics) and subscribes to `sources.manager`.
 * Metrics (prefix {@link PREFIX}; deploy/grafana-dashboard.json shows each of them):
 * sessions by state, logins by result, stanzas by direction and kind, SM acks and queue depth,
 * resumptions, hibernations, session starts and ends, held messages, duplicates, upstream
 * reconnects and their duration, custody-ack latency, certificate expiry, build info.
 */
export function createMetrics(sources: MetricsSources): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Gauges named like counters (promtool flags them); each is the sum of its labeled sibling
  // (e.g. sum(nodejs_active_handles)), so nothing is lost.
  for (const name of MISNAMED_DEFAULT_METRICS) registry.removeSingleMetric(name);
  const registers = [registry];
  const { manager, held } = sources;

  const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
    new Counter<L>({ name: PREFIX + name, help, labelNames, registers });
  /** A histogram's observe; a value that is not a finite number is skipped (prom-client would throw into the emitter). */
  const histogram = (name: string, help: string, buckets: number[]) => {
    const h = new Histogram({ name: PREFIX + name, help, buckets, registers });
    return (value: number) => Number.isFinite(value) && h.observe(value);
  };
  /** A counter whose value is a monotonically increasing number of the source, read at each scrape. */
  const sourcedCounter = (name: string, help: string, read: () => number | undefined) =>
    new Counter({
      name: PREFIX + name,
      help,
      registers,
      collect() {
        const value = read();
        if (value === undefined) return this.remove();
        this.reset();
        this.inc(value);
      },
    });
  const sourcedGauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name: PREFIX + name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });

  new Gauge({
    name: PREFIX + 'build_info',
    help: 'Always 1; the version label names the proxy release.',
    labelNames: ['version'],
    registers,
  }).set({ version: sources.version ?? packageVersion() }, 1);

  new Gauge({
    name: PREFIX + 'sessions',
    help: 'Live sessions by state: attached, hibernated (waiting for a resume), reconnecting (upstream link being replaced) (sessions).',
    labelNames: ['state'],
    registers,
    collect() {
      const counts = manager.counts();
      for (const state of SESSION_STATES) this.set({ state }, counts[state]);
    },
  });

  // ---- stanzas: counted in plain integers by observe-only hooks, exposed at scrape -------------
  // Index by kind: message, presence, iq, other. A prom-client inc() per stanza costs far more.
  const stanzasIn = [0, 0, 0, 0];
  const stanzasOut = [0, 0, 0, 0];
  const kindIndex = (name: string): number => (name === 'message' ? 0 : name === 'presence' ? 1 : name === 'iq' ? 2 : 3);
  const countIn: StanzaHook = (el) => void stanzasIn[kindIndex(el.name)]!++;
  const countOut: StanzaHook = (el) => void stanzasOut[kindIndex(el.name)]!++;
  new Counter({
    name: PREFIX + 'stanzas_total',
    help: 'Stanzas relayed, by direction (in: from clients, out: from the upstream towards clients, duplicates included) and kind (stanzas).',
    labelNames: ['direction', 'kind'],
    registers,
    collect() {
      this.reset();
      for (const [direction, counts] of [['in', stanzasIn], ['out', stanzasOut]] as const) {
        STANZA_KINDS.forEach((kind, i) => this.inc({ direction, kind }, counts[i]!));
        if (counts[3]! > 0) this.inc({ direction, kind: OTHER }, counts[3]!);
      }
    },
  });

  // ---- counters fed by events -------------------------------------------------------------------
  const loginsCounter = counter(
    'client_logins_total',
    'Client SASL logins by mode (plain: the proxy logs in for the client; scram-relay: the exchange relayed; other: a mechanism not offered) and result: success, or the RFC 6120 §6.5 condition the client got (logins).',
    ['mode', 'result'],
  );
  const loginsBy = new Map<string, (result: string) => void>(LOGIN_MODES.map((mode) => [mode, fixedLabelCounter(loginsCounter, 'result', LOGIN_RESULTS, { mode })]));
  const logins = (result: string, mode: string) => (loginsBy.get(mode) ?? loginsBy.get(OTHER)!)(result);
  const relayReconnects = counter('relay_reconnects_total', "Upstream losses of relayed (SCRAM) sessions: the client's connection was closed so that it logs in again and resumes (sessions).");
  const sessionsStarted = counter('sessions_started_total', 'Sessions started: a client bound a resource (sessions).');
  const sessionsEnded = fixedLabelCounter(counter('sessions_ended_total', 'Sessions ended, by cause (sessions).', ['cause']), 'cause', END_CAUSES);
  const settled = fixedLabelCounter(
    counter('settled_stanzas_total', "Unacked stanzas of ended sessions (stanzas), by how they were settled: archived by the server, held for the account's next login, bounced to the sender, dropped.", ['outcome']),
    'outcome',
    SETTLE_OUTCOMES,
  );
  const acksReceived = counter('sm_acks_received_total', 'XEP-0198 acks (<a/>) received from clients (acks).');
  const ackRequests = counter('sm_ack_requests_total', 'XEP-0198 ack requests (<r/>) sent to clients (requests).');
  const acksDelayed = counter('sm_acks_delayed_total', 'Ack requests to clients left unanswered for sm.maxAckDelaySeconds (requests).');
  const queueDepth = histogram('sm_queue_depth', "Stanzas in a client's unacked queue when an ack request went out (stanzas).", QUEUE_DEPTH_BUCKETS);
  const resumptions = counter('resumptions_total', 'XEP-0198 resumption attempts by result, and reason of a failure: none for a success (attempts).', ['result', 'reason']);
  const resumedOk = fixedLabelCounter(resumptions, 'reason', ['none'], { result: 'success' });
  const resumeFailed = fixedLabelCounter(resumptions, 'reason', RESUME_FAILURES, { result: 'failed' });
  const hibernations = counter('hibernations_total', 'Sessions that started hibernating: their client vanished (hibernations).');
  const hibernationEnds = fixedLabelCounter(
    counter('hibernation_ends_total', 'Hibernations ended, by cause: resumed, or the cause of the session end (hibernations).', ['cause']),
    'cause',
    HIBERNATION_ENDS,
  );
  const hibernationDuration = histogram('hibernation_duration_seconds', 'How long a session hibernated before it was resumed (seconds).', HIBERNATION_BUCKETS);
  const duplicates = counter('duplicates_dropped_total', 'Second copies of messages dropped before reaching the client (messages).');
  const reconnects = fixedLabelCounter(
    counter('upstream_reconnects_total', "Upstream links lost while their session went on (the proxy reconnects), by how the link ended (links).", ['reason']),
    'reason',
    LINK_END_KINDS,
  );
  const restored = fixedLabelCounter(
    counter('upstream_links_restored_total', "Upstream links replaced after a loss (links), by how: resumed with the server's own SM, or bound after a new login.", ['how']),
    'how',
    ['resumed', 'bound'],
  );
  const reconnectDuration = histogram('upstream_reconnect_duration_seconds', 'Time from an upstream link loss to its replacement (seconds).', RECONNECT_BUCKETS);
  const mucRejoins = fixedLabelCounter(
    counter('muc_rejoins_total', 'Group chat rejoins after an upstream reconnect, by outcome: joined, or refused by the room (rejoins).', ['outcome']),
    'outcome',
    ['joined', 'refused'],
  );
  const mucSelfPings = fixedLabelCounter(
    counter('muc_self_pings_total', 'XEP-0410 self-ping rounds (with their retries) by outcome: joined, joined-nick-changed, not-joined, undecided (rounds).', ['outcome']),
    'outcome',
    ['joined', 'joined-nick-changed', 'not-joined', 'undecided'],
  );
  const mucNotices = counter('muc_notices_total', 'Not-joined notices (status 110 + 333) sent to clients for rooms they were out of (notices).');
  const pushes = fixedLabelCounter(
    counter('pushes_total', "XEP-0357 pushes by outcome: sent (the app server accepted it), error (it answered an error), timeout (no answer within push.replyTimeoutSeconds), unconfirmed (its answer could not come back: the link dropped or the session ended) (pushes).", ['outcome']),
    'outcome',
    PUSH_OUTCOMES,
  );
  const pushExtensions = counter('push_hibernation_extensions_total', 'Hibernations extended to push.maxHibernationSeconds until the first push (hibernations).');
  const custodyLatency = histogram('custody_ack_latency_seconds', 'Time from a custody barrier (ping or <r/>) to the upstream confirming it (seconds).', CUSTODY_BUCKETS);

  // ---- gauges and counters read from sources ---------------------------------------------------
  sourcedGauge('held_messages', 'Messages held now for accounts with no session (messages).', () => held.size);
  sourcedGauge('held_messages_bytes', 'Size of the messages held now (bytes, counted as characters).', () => held.bytes);
  sourcedGauge('held_messages_accounts', 'Accounts with messages held now (accounts).', () => held.accounts);
  sourcedCounter('held_messages_stored_total', 'Messages taken into the hold (messages).', () => held.stored);
  sourcedCounter('held_messages_delivered_total', 'Held messages delivered at a login (messages).', () => held.delivered);
  sourcedCounter('held_messages_expired_total', 'Held messages dropped as older than the TTL (messages).', () => held.droppedExpired);
  sourcedCounter('held_messages_dropped_total', 'Held messages dropped for any reason, expiry included (messages).', () => held.dropped);
  sourcedGauge('push_registrations', 'XEP-0357 push registrations stored, all accounts (registrations).', () => sources.pushRegistrations?.size ?? 0);
  // A timestamp, not a countdown (Prometheus practice): days left = (this - time()) / 86400.
  sourcedGauge('tls_certificate_expiry_timestamp_seconds', "When the proxy's TLS certificate expires (Unix time, seconds).", () => sources.certificateNotAfter().getTime() / 1000);

  // ---- subscriptions --------------------------------------------------------------------------
  const listeners: { [K in keyof ProxyEventMap]?: (...args: ProxyEventMap[K]) => void } = {
    'client-login': (result, mode) => logins(result, mode),
    'relay-reconnect': () => relayReconnects.inc(),
    'session-started': () => sessionsStarted.inc(),
    'session-hibernating': () => hibernations.inc(),
    'session-resumed': (_s, { hibernatedMs }) => {
      resumedOk('none');
      // A resume that took a still-attached stream over (hibernatedMs 0) ended no hibernation.
      if (hibernatedMs > 0) {
        hibernationEnds('resumed');
        hibernationDuration(hibernatedMs / 1000);
      }
    },
    'resume-failed': (reason) => resumeFailed(reason),
    'session-ended': (_s, end) => {
      sessionsEnded(end.cause);
      if (end.hibernating) hibernationEnds(end.cause);
      if (end.settled) for (const outcome of SETTLE_OUTCOMES) if (end.settled[outcome] > 0) settled(outcome, end.settled[outcome]);
    },
    'ack-requested': (_s, { unacked }) => {
      ackRequests.inc();
      queueDepth(unacked);
    },
    'ack-received': () => acksReceived.inc(),
    'ack-delayed': () => acksDelayed.inc(),
    'upstream-down': (_s, { kind }) => reconnects(kind),
    'upstream-up': (_s, { downMs, resumed }) => {
      restored(resumed ? 'resumed' : 'bound');
      reconnectDuration(downMs / 1000);
    },
    'custody-confirmed': (_s, { latencyMs }) => custodyLatency(latencyMs / 1000),
    'duplicate-dropped': () => duplicates.inc(),
    'muc-rejoin': (_s, outcome) => mucRejoins(outcome),
    'muc-notice': () => mucNotices.inc(),
    'muc-self-ping': (_s, verdict) => mucSelfPings(verdict),
    'push-outcome': (outcome) => pushes(outcome),
    'push-hibernation-extended': () => pushExtensions.inc(),
  };
  const entries = Object.entries(listeners) as [keyof ProxyEventMap, (...args: unknown[]) => void][];
  for (const [name, listener] of entries) manager.events.on(name, listener as never);
  // Hooks run in order and a consuming hook stops the rest: wire metrics before other features.
  manager.hooks.fromClient.push(countIn);
  manager.hooks.fromUpstream.push(countOut);

  return {
    registry,
    ready: sources.ready,
    close() {
      for (const [name, listener] of entries) manager.events.off(name, listener as never);
      for (const [list, hook] of [[manager.hooks.fromClient, countIn], [manager.hooks.fromUpstream, countOut]] as const) {
        const at = list.indexOf(hook);
        if (at >= 0) list.splice(at, 1);
      }
    },
  };
}

/** The proxy's version from package.json ('unknown' when unreadable). */
function packageVersion(): string {
  try {
    return String(JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version);
  } catch {
    return 'unknown';
  }
}
