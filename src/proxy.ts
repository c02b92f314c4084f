import * as fs from 'node:fs';
import type { AddressInfo, Server, Socket } from 'node:net';
import * as tls from 'node:tls';
import type { TopLevel } from './xml/top-level.ts';
import type { Logger } from 'pino';
import type { Config } from './config/config.ts';
import { CertificateError, loadTlsCredentials, type CertificateOptions } from './tls/certificates.ts';
import { listenC2s } from './c2s/listener.ts';
import { ConnectionGate } from './c2s/connection-gate.ts';
import { AuthThrottle } from './c2s/auth-throttle.ts';
import { ClientStream, type ClientStreamDeps } from './c2s/client-stream.ts';
import { SaslFailure, UpstreamLink, type UpstreamOptions } from './upstream/link.ts';
import { LoginLimiter } from './upstream/login-limiter.ts';
import { withLoginRetry, type LoginRetryOptions } from './upstream/login-retry.ts';
import { clientMechanisms } from './c2s/scram-relay.ts';
import { SessionRegistry } from './sm/registry.ts';
import type { Session } from './session/session.ts';
import { SessionManager } from './session/manager.ts';
import { HeldMessages } from './session/held-messages.ts';
import { HibernationJournal } from './session/hibernation-journal.ts';
import { openStore } from './storage/sqlite-store.ts';
import { createMetrics, type Metrics } from './metrics/metrics.ts';
import { MucFeature } from './muc/feature.ts';
import { PushFeature } from './push/feature.ts';
import { PushRegistrations } from './push/registrations.ts';
import { startMetricsServer, type MetricsServer } from './metrics/server.ts';
import type { Store } from './storage/store.ts';
import { StreamError } from './xml/stream-error.ts';

/** Longest wait between two attempts of a client's login while the upstream is unreachable (ms). */
const LOGIN_RETRY_MAX_DELAY_MS = 2000;

/** A running proxy. */
export interface Proxy {
  /** The bound listener addresses (ports resolved when 0 was asked), STARTTLS then direct TLS. */
  addresses: { starttls: AddressInfo[]; directTls: AddressInfo[] };
  /** Live sessions, attached or hibernating. */
  sessions: ReadonlySet<Session>;
  /** The sessions, and the proxy's event surface and stanza hooks for features (events.ts). */
  manager: SessionManager;
  /** Messages held for accounts with no session (design §4.3). */
  held: HeldMessages;
  /** When the certificate in use expires (it changes with {@link reloadTls}). */
  readonly certificateNotAfter: Date;
  /** The Prometheus metrics (design §3 `metrics/`); served on `metricsAddress` unless `metrics.listen` is none. */
  metrics: Metrics;
  /** The metrics endpoint's bound address (`/metrics`, `/healthz`, `/readyz`), if it listens. */
  metricsAddress: AddressInfo | undefined;
  /** Group chats: the rooms of each session (design §4.6). */
  muc: MucFeature;
  /** Push notifications (design §4.7); undefined with `push.enabled` false. */
  push: PushFeature | undefined;
  /**
   * Re-reads the certificate (the PEM pair or PKCS#12 file of `tlsOptions`, default the config's
   * `tls` section) and uses it for every later TLS handshake, STARTTLS and direct TLS; open
   * connections keep theirs. Resolves false (the old certificate stays, an error is logged naming
   * the file) when the new one is unreadable or its key does not match; true otherwise, including
   * for a generated self-signed certificate, which has no file to re-read. Never rejects.
   */
  reloadTls(tlsOptions?: CertificateOptions): Promise<boolean>;
  /** Stops listening, ends every session (clients get `system-shutdown`) and closes upstream links. */
  close(): Promise<void>;
}

/**
 * Starts the proxy: loads the certificate, opens the c2s listeners and wires client streams,
 * upstream links and sessions together (design §2–§4).
 * @throws CertificateError for unusable certificates; Error when a port cannot be bound.
 */
export async function startProxy(config: Config, log: Logger): Promise<Proxy> {
  const certificate = await loadTlsCredentials(config.tls, config.domains);
  log.info({ source: certificate.source, names: certificate.names, notAfter: certificate.notAfter }, 'TLS certificate loaded');
  if (certificate.notAfter.getTime() < Date.now()) log.warn('the TLS certificate has expired');
  let secureContext = tls.createSecureContext({ key: certificate.key, cert: certificate.cert });
  let certificateNotAfter = certificate.notAfter;

  // Design §4.8: what the proxy keeps for users outlives it. A store that cannot be opened or
  // read fails the start (StoreError names the file).
  const store = openStore(config.storage.dataDir, { log });
  let registry: SessionRegistry<Session>;
  let held: HeldMessages;
  let pushRegistrations: PushRegistrations;
  try {
    registry = new SessionRegistry<Session>(config.sm.maxOldSessions, { store });
    held = new HeldMessages(config.sm.maxHeldMessages, { ttlMs: config.sm.heldMessagesTtlSeconds * 1000, maxBytes: config.sm.maxHeldBytes, store });
    pushRegistrations = new PushRegistrations({ store, maxPerAccount: config.push.maxDevices, maxFailures: config.push.maxErrors });
  } catch (err) {
    store.close();
    throw err;
  }
  log.info({ path: store.path, held: held.size, heldAccounts: held.accounts, oldAccounts: registry.oldAccounts, pushRegistrations: pushRegistrations.size }, 'storage opened');
  let metricsServer: MetricsServer | undefined;
  let metrics: Metrics | undefined;
  /** Undoes a start that failed after the store was opened. */
  const release = async (err: unknown): Promise<never> => {
    await metricsServer?.close();
    metrics?.close();
    store.close();
    throw err;
  };
  const logins = new LoginLimiter(config.upstream.maxConcurrentLogins);
  const clients = new Set<ClientStream>();
  const upstreamTrust = config.upstream.caFile
    ? tls.createSecureContext({ ca: [...tls.rootCertificates, fs.readFileSync(config.upstream.caFile, 'utf8')] })
    : undefined;

  const upstreamOptions = (domain: string): UpstreamOptions => ({
    host: config.upstream.host,
    port: config.upstream.port,
    domain,
    tls: config.upstream.tls,
    secureContext: upstreamTrust,
    acceptSelfSigned: config.upstream.acceptSelfSigned,
    timeoutMs: config.upstream.connectTimeoutSeconds * 1000,
    keepaliveMs: config.upstream.keepaliveSeconds * 1000,
    pingTimeoutMs: config.upstream.pingTimeoutSeconds * 1000,
    limits: { maxStanzaBytes: Math.max(config.limits.maxStanzaBytes * 4, 1 << 20), maxDepth: config.limits.maxDepth * 2 },
  });

  /**
   * A client's login while the upstream cannot be reached is tried again for as long as one
   * attempt may take (login-retry.ts): a restarting server is back within that.
   */
  const loginRetry = (signal: AbortSignal | undefined): LoginRetryOptions => ({
    windowMs: config.upstream.connectTimeoutSeconds * 1000,
    delayMs: config.upstream.reconnectDelayMs,
    maxDelayMs: LOGIN_RETRY_MAX_DELAY_MS,
    signal,
  });

  // Design §4.1.3: the SCRAM mechanisms offered to clients are the upstream's, as last seen.
  let upstreamMechanisms: readonly string[] | undefined;
  const learnMechanisms = (link: UpstreamLink): UpstreamLink => {
    upstreamMechanisms = link.offeredMechanisms;
    return link;
  };
  // Asked again while unknown (the upstream was down at start) or when a client's mechanism was
  // refused (the upstream's offer changed), at most every 5 s.
  let probing = false;
  let probedAt = 0;
  const probeMechanisms = (): void => {
    const domain = config.domains[0];
    if (config.auth.mode === 'plain' || domain === undefined || probing || Date.now() - probedAt < 5000) return;
    probing = true;
    probedAt = Date.now();
    UpstreamLink.mechanisms(upstreamOptions(domain))
      .then(
        (offered) => {
          upstreamMechanisms = offered;
          log.info({ mechanisms: offered }, 'upstream SASL mechanisms');
        },
        (err: Error) => log.warn(`cannot learn the upstream's SASL mechanisms yet (${err.message}): offering ${clientMechanisms(config.auth.mode, upstreamMechanisms).join(', ')} meanwhile`),
      )
      .finally(() => (probing = false));
  };
  probeMechanisms();

  const manager = new SessionManager({
    registry,
    credentialCacheSeconds: config.upstream.credentialCacheSeconds,
    sm: config.sm,
    hibernationSeconds: config.sm.hibernationSeconds,
    output: { maxSendBufferBytes: config.limits.maxSendBufferBytes, sendTimeoutSeconds: config.limits.sendTimeoutSeconds },
    held,
    journal: new HibernationJournal<Session>(store.heldMessages, (fn) => store.transaction(fn)),
    duplicateWindow: config.upstream.duplicateWindow,
    upstream: {
      open: (credential, domain) => UpstreamLink.open(upstreamOptions(domain), credential),
      throttle: (task) => logins.run(task),
      reconnect: {
        initialDelayMs: config.upstream.reconnectDelayMs,
        maxDelayMs: config.upstream.reconnectMaxDelaySeconds * 1000,
        giveUpMs: config.upstream.reconnectGiveUpSeconds * 1000,
        requestTimeoutMs: config.upstream.pingTimeoutSeconds * 1000,
      },
      serverAcks: config.upstream.streamManagement,
      maxCustodyBytes: config.upstream.maxCustodyBytes,
      gapFill: { pageSize: config.upstream.gapFillPageSize, maxPasses: config.upstream.gapFillMaxPasses },
    },
    log,
  });
  // First among the stanza hooks: hooks run in order and a consuming one stops the rest.
  let listening = false;
  metrics = createMetrics({ manager, held, pushRegistrations, certificateNotAfter: () => certificateNotAfter, ready: () => listening });
  if (config.metrics.listen) metricsServer = await startMetricsServer(config.metrics.listen, metrics, log).catch(release);
  const muc = new MucFeature(manager, config.muc, log);
  const push = config.push.enabled ? new PushFeature(manager, pushRegistrations, config.push, config.sm.hibernationSeconds, log) : undefined;

  const clientDeps: ClientStreamDeps = {
    domains: new Set(config.domains),
    // A getter: a client stream takes the current context at its STARTTLS, so a reload reaches it.
    get secureContext() {
      return secureContext;
    },
    limits: config.limits,
    liveness: { readTimeoutMs: config.limits.readTimeoutSeconds * 1000, probeTimeoutMs: config.sm.maxAckDelaySeconds * 1000 },
    log,
    negotiationTimeoutMs: config.limits.c2sTimeoutSeconds * 1000,
    authThrottle: new AuthThrottle({ maxFailures: config.limits.maxAuthFailures, periodMs: config.limits.authFailurePeriodSeconds * 1000, log }),
    login: (cred, domain, signal) =>
      withLoginRetry(() => logins.run(() => UpstreamLink.open(upstreamOptions(domain), cred)), () => false, loginRetry(signal)).then(learnMechanisms),
    mechanisms: () => {
      if (upstreamMechanisms === undefined) probeMechanisms();
      return clientMechanisms(config.auth.mode, upstreamMechanisms);
    },
    relayLogin: (relay, domain) =>
      // Until the client has the server's first challenge, its first message may go to another connection.
      withLoginRetry(() => logins.run(() => UpstreamLink.open(upstreamOptions(domain), relay)), () => relay.challenged, loginRetry(relay.signal)).then(
        learnMechanisms,
        (err: unknown) => {
          if (err instanceof SaslFailure && err.offered) upstreamMechanisms = err.offered;
          throw err;
        },
      ),
    loginResult: (result, mode) => manager.emit('client-login', result, mode),
    verifyCached: async (cred, bareJid) => manager.verifyCached(cred, bareJid),
    takeover: (bareJid, resource) => manager.takeover(bareJid, resource),
    bound: (client, link, fullJid, handover) => void manager.start(client, link, fullJid, handover),
    resume: (client: ClientStream, el: TopLevel) => manager.resume(client, el),
  };

  const gate = new ConnectionGate({ maxTotal: config.limits.maxUnauthenticated, maxPerIp: config.limits.maxUnauthenticatedPerIp, log });
  const listenOptions = {
    gate,
    keepaliveMs: config.limits.tcpKeepaliveSeconds * 1000,
    handshakeTimeoutMs: config.limits.c2sTimeoutSeconds * 1000,
    domain: config.domains[0] ?? '',
  };
  const servers: Server[] = await listenC2s(config.listen, certificate, listenOptions, (socket: Socket, direct: boolean, admission) => {
    const client = new ClientStream(socket, direct, clientDeps, admission);
    clients.add(client);
    client.once('close', () => clients.delete(client));
  }).catch(release);
  listening = true;
  const addresses = {
    starttls: servers.slice(0, config.listen.starttls.length).map((s) => s.address() as AddressInfo),
    directTls: servers.slice(config.listen.starttls.length).map((s) => s.address() as AddressInfo),
  };
  log.info({ starttls: addresses.starttls.map((a) => a.port), directTls: addresses.directTls.map((a) => a.port), upstream: `${config.upstream.host}:${config.upstream.port}` }, 'proxy listening');

  const directServers = servers.slice(config.listen.starttls.length) as tls.Server[];
  let tlsSection: CertificateOptions = config.tls;

  return {
    addresses,
    sessions: manager.sessions,
    manager,
    held,
    get certificateNotAfter() {
      return certificateNotAfter;
    },
    metrics,
    metricsAddress: metricsServer?.address,
    muc,
    push,
    async reloadTls(tlsOptions = tlsSection) {
      try {
        if (tlsOptions.certFile === undefined && tlsOptions.keyFile === undefined && tlsOptions.pkcs12File === undefined) {
          log.info('TLS reload: no certificate file configured, nothing to reload (the certificate in use stays)');
          return true;
        }
        const fresh = await loadTlsCredentials(tlsOptions, config.domains);
        const options = { key: fresh.key, cert: fresh.cert };
        const context = tls.createSecureContext(options);
        for (const server of directServers) server.setSecureContext(options);
        secureContext = context;
        certificateNotAfter = fresh.notAfter;
        tlsSection = tlsOptions;
        log.info({ source: fresh.source, names: fresh.names, notAfter: fresh.notAfter }, 'TLS certificate reloaded');
        if (fresh.notAfter.getTime() < Date.now()) log.warn('the reloaded TLS certificate has expired');
        return true;
      } catch (err) {
        const file = err instanceof CertificateError ? err.file : undefined;
        log.error({ err, file }, `TLS reload failed, the previous certificate stays in use: ${(err as Error).message}`);
        return false;
      }
    },
    async close() {
      listening = false; // /readyz: 503 while draining
      // server.close() waits for open connections: stop accepting, end the streams, then wait.
      const closed = Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
      gate.close();
      for (const client of [...clients]) if (!client.established) client.fail(new StreamError('system-shutdown', 'the proxy is shutting down'));
      await manager.shutdown(config.shutdown.ackWaitMs);
      // Peers get a moment to close their side; then their sockets go.
      const grace = new Promise((resolve) => setTimeout(resolve, config.shutdown.closeGraceMs).unref());
      await Promise.race([closed, grace]);
      for (const client of [...clients]) client.destroy();
      await closed;
      await metricsServer?.close();
      muc.close();
      push?.close();
      metrics.close();
      store.close();
    },
  };
}
