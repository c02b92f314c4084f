/**
 * The proxy's configuration: one typed object, built from defaults, a config file and CLI flags
 * (later sources win). Defaults follow Prosody's mod_smacks where the option exists there
 * (design.md §5). Units are in the key names: `...Seconds`, `...Bytes`.
 */

/** How the proxy secures its link to the upstream server. */
export type UpstreamTlsMode =
  /** STARTTLS whenever the upstream offers it (required if the upstream requires it). */
  | 'auto'
  /** Refuse an upstream that does not offer STARTTLS. */
  | 'required'
  /** Never STARTTLS (loopback-only deployments); refused if the upstream requires TLS. */
  | 'none';

export interface ListenAddress {
  host: string;
  port: number;
}

export interface Config {
  /** The XMPP domain(s) served: a stream opened `to` another domain gets `host-unknown`. */
  domains: string[];
  upstream: {
    host: string;
    port: number;
    tls: UpstreamTlsMode;
    /** PEM file with CA certificates trusted for the upstream (in addition to the system CAs). */
    caFile?: string;
    /** Accept any upstream certificate, self-signed included (explicit opt-in). */
    acceptSelfSigned: boolean;
    /** Give up connecting after this long (seconds). */
    connectTimeoutSeconds: number;
    /**
     * A link with nothing sent or nothing received for this long gets an XEP-0199 ping to the
     * server (seconds): a half-open link is found within 2 × this + `pingTimeoutSeconds` at
     * worst, and a server-side idle disconnect (Openfire's) never ends a session, hibernated
     * ones included.
     */
    keepaliveSeconds: number;
    /** A ping (keepalive or custody barrier) unanswered for this long means the link is dead (seconds). */
    pingTimeoutSeconds: number;
    /** First reconnect after a lost link after about this long (ms, ±50 % jitter); doubles per failure. */
    reconnectDelayMs: number;
    /** Longest wait between reconnect tries (seconds). */
    reconnectMaxDelaySeconds: number;
    /** A link down this long ends its sessions (seconds); a refused login ends them at once. */
    reconnectGiveUpSeconds: number;
    /** Upstream logins in flight at once, proxy-wide (spreads the reconnects after an outage). */
    maxConcurrentLogins: number;
    /**
     * Use the server's own XEP-0198 for custody when it offers it (acks; a lost link's server
     * session is resumed by the next link when the server granted resumption); a server whose
     * acks stop answering or count wrong falls back to ping barriers (design §4.4).
     */
    streamManagement: boolean;
    /**
     * A client's password is checked against a live session's cached credential, without a new
     * upstream login, only while the server accepted that credential within this many seconds
     * (seconds; 0: always log in). Bounds how long a changed password still resumes a session.
     */
    credentialCacheSeconds: number;
    /**
     * Messages remembered per session to drop a second copy that an upstream fault caused
     * (a stanza sent again after a drop, a server's re-delivery from offline storage); keyed by
     * sender full JID, stanza id (or XEP-0359 origin-id) and body. 0 turns it off.
     */
    duplicateWindow: number;
    /**
     * Bytes of client stanzas a session may hold in custody (design §4.4: sent or waiting for a
     * link, not yet confirmed by the server). Past it the proxy stops reading that client until
     * the server confirms some (TCP backpressure): nothing is lost, a client sending while the
     * server is down cannot grow the proxy's memory.
     */
    maxCustodyBytes: number;
  };
  listen: {
    /** STARTTLS listeners (RFC 6120 §5); empty disables. Default 0.0.0.0:5222. */
    starttls: ListenAddress[];
    /** Direct TLS listeners (XEP-0368); empty disables. Default 0.0.0.0:5223. */
    directTls: ListenAddress[];
  };
  tls: {
    /** PEM certificate (chain) and key files. */
    certFile?: string;
    keyFile?: string;
    /** PKCS#12 keystore (Openfire's) and its password. */
    pkcs12File?: string;
    pkcs12Password?: string;
  };
  sm: {
    /** How long a vanished client's session is kept for resumption (seconds; mod_smacks: 600). */
    hibernationSeconds: number;
    /** Unacked stanzas tolerated before the proxy sends `<r/>` (mod_smacks: 0). */
    maxUnackedStanzas: number;
    /** Unacked outbound stanzas kept per session before it becomes unresumable (mod_smacks: 500). */
    maxQueueSize: number;
    /** No ack for this long fires the ack-delayed event (seconds; mod_smacks: 30). */
    maxAckDelaySeconds: number;
    /** Old sessions' `h` remembered per account for late resumes (mod_smacks: 10). */
    maxOldSessions: number;
    /**
     * Chat/normal messages the proxy holds per account when a session ends unacked and it was
     * the account's last one (design §4.3), delivered at the next login; the oldest go first.
     */
    maxHeldMessages: number;
    /** Held messages older than this are dropped (seconds; like an offline store's expiry). */
    heldMessagesTtlSeconds: number;
    /** Bytes of held messages proxy-wide; past it the oldest are dropped (and logged). */
    maxHeldBytes: number;
    /**
     * Bytes of unacked outbound stanzas kept per session, beside `maxQueueSize`'s count: past
     * either the session is no longer resumable (XEP-0198 §5 resource-constraint).
     */
    maxQueueBytes: number;
  };
  limits: {
    /** Largest top-level element accepted from a client (bytes). */
    maxStanzaBytes: number;
    /** Deepest element nesting accepted inside a stanza. */
    maxDepth: number;
    /**
     * A client connection must finish negotiation (TLS, SASL, resource binding or resumption)
     * within this time, or it gets `connection-timeout` (seconds; Prosody's c2s_timeout).
     */
    c2sTimeoutSeconds: number;
    /** Connections not yet authenticated, proxy-wide; more are refused with `resource-constraint`. */
    maxUnauthenticated: number;
    /** Connections not yet authenticated from one IP address; more get `policy-violation`. */
    maxUnauthenticatedPerIp: number;
    /** TCP keepalive on client sockets: first probe after this much idle time (seconds; 0: off). */
    tcpKeepaliveSeconds: number;
    /**
     * No input from an authenticated client for this long: the proxy probes it (`<r/>` with
     * XEP-0198, else an XEP-0199 ping), and a client silent for `sm.maxAckDelaySeconds` more
     * has vanished: it hibernates when resumable, else its session ends (seconds; Prosody's
     * network_settings.read_timeout).
     */
    readTimeoutSeconds: number;
    /**
     * Bytes written to a client and not yet taken by its TCP connection: past this the proxy
     * stops reading that session's upstream until the client catches up (backpressure).
     */
    maxSendBufferBytes: number;
    /** A client that takes none of its pending output for this long ends (seconds); its queue is settled. */
    sendTimeoutSeconds: number;
    /** Failed logins allowed per IP address and per account within `authFailurePeriodSeconds` (mod_limit_auth's limit_auth_max). */
    maxAuthFailures: number;
    /** The window of `maxAuthFailures` (seconds; mod_limit_auth's limit_auth_period). */
    authFailurePeriodSeconds: number;
  };
  log: {
    level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  };
}

/** Every default in one place. */
export const DEFAULTS: Config = {
  domains: [],
  upstream: {
    host: '127.0.0.1',
    port: 15222,
    tls: 'auto',
    acceptSelfSigned: false,
    connectTimeoutSeconds: 10,
    keepaliveSeconds: 15,
    pingTimeoutSeconds: 10,
    reconnectDelayMs: 500,
    reconnectMaxDelaySeconds: 30,
    reconnectGiveUpSeconds: 300,
    maxConcurrentLogins: 16,
    streamManagement: true,
    credentialCacheSeconds: 60,
    duplicateWindow: 256,
    maxCustodyBytes: 1024 * 1024,
  },
  listen: {
    starttls: [{ host: '0.0.0.0', port: 5222 }],
    directTls: [{ host: '0.0.0.0', port: 5223 }],
  },
  tls: {},
  sm: {
    hibernationSeconds: 600,
    maxUnackedStanzas: 0,
    maxQueueSize: 500,
    maxAckDelaySeconds: 30,
    maxOldSessions: 10,
    maxHeldMessages: 1000,
    heldMessagesTtlSeconds: 7 * 86400,
    maxHeldBytes: 64 * 1024 * 1024,
    maxQueueBytes: 4 * 1024 * 1024,
  },
  limits: {
    maxStanzaBytes: 256 * 1024,
    maxDepth: 32,
    c2sTimeoutSeconds: 30,
    maxUnauthenticated: 1000,
    maxUnauthenticatedPerIp: 100,
    tcpKeepaliveSeconds: 60,
    readTimeoutSeconds: 840,
    maxSendBufferBytes: 1024 * 1024,
    sendTimeoutSeconds: 60,
    maxAuthFailures: 5,
    authFailurePeriodSeconds: 30,
  },
  log: { level: 'info' },
};
