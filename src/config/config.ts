/**
 * The proxy's configuration: one zod schema ({@link ConfigSchema}) declares every key once, with
 * its type, bounds, default and documentation (`.describe()`, read by tests and tools). The
 * {@link Config} type and {@link DEFAULTS} are derived from it. Defaults follow Prosody's
 * mod_smacks where the option exists there (design.md §5). Units are in the key names:
 * `...Seconds`, `...Ms`, `...Bytes`.
 *
 * Validation messages are written for `load.ts`, which names the key and the layer: a message
 * starting with `must be` is a type or bound ("config: KEY must be ... (got VALUE)"), one
 * starting with `config: ` is a whole sentence (the cross-key checks), anything else follows
 * "config: KEY: ".
 */
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { z } from 'zod';

/**
 * Largest value allowed for a `...Seconds` key: Node timers overflow above 2^31-1 ms (about
 * 24.8 days) and then fire at once, which would turn a long hibernation into none at all.
 */
export const MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

/** pino's levels, the allowed values of `log.level`. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

// ---------------------------------------------------------------------------------------------
// Leaf types. One `error` per leaf: every failure of it (type, integer, bound) reads the same.

function integer(min: number, max: number, what: string) {
  const error = `must be ${what}`;
  return z.int({ error }).min(min, { error }).max(max, { error });
}

/** A count: an integer >= `min` (0: "non-negative"). */
const count = (min: number) =>
  integer(min, Number.MAX_SAFE_INTEGER, min === 0 ? 'a non-negative integer' : `an integer >= ${min}`);

/** Whole seconds, usable as a Node timer (at most {@link MAX_SECONDS}). */
const seconds = (min: 0 | 1) =>
  integer(min, MAX_SECONDS, `a ${min === 0 ? 'non-negative' : 'positive'} integer (seconds, at most ${MAX_SECONDS})`);

const port = integer(1, 65535, 'a port number (integer 1..65535)');

const bool = z.boolean({ error: 'must be true or false' });

const HOST_ERROR = 'must be a host name or IP address';
const hostname = z.string({ error: HOST_ERROR }).regex(/^\S+$/, { error: HOST_ERROR });

/** A readable regular file (checked when the configuration is loaded, not later). */
const readableFile = z
  .string({ error: 'must be a file path' })
  .min(1, { error: 'must be a file path' })
  .superRefine((path, ctx) => {
    try {
      if (!statSync(path).isFile()) {
        ctx.addIssue({ code: 'custom', message: `"${path}" is not a regular file`, input: path, continue: false });
        return;
      }
      accessSync(path, fsConstants.R_OK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code;
      ctx.addIssue({ code: 'custom', message: `cannot read "${path}" (${why})`, input: path, continue: false });
    }
  });

const DOMAIN_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const domainName = z
  .string({ error: 'must be a domain name' })
  .refine((d) => d === d.toLowerCase(), { error: 'must be a lowercase domain name', abort: true })
  .refine((d) => d.length <= 253 && d.split('.').every((l) => DOMAIN_LABEL.test(l)), {
    error: 'must be a valid domain name (ASCII letters, digits, "-"; IDNs in xn-- form)',
  });

// ---------------------------------------------------------------------------------------------
// Listen addresses

const hostPort = z.strictObject(
  { host: hostname, port },
  { error: 'must be a "host:port" string or a {host, port} mapping' },
);

/** Where the proxy accepts connections. */
export type ListenAddress = z.output<typeof hostPort>;

/**
 * Parses one listen address spec: `"host:port"`, `"[::1]:5222"` (IPv6 in brackets), `":5222"`
 * or `"5222"` (host `0.0.0.0`); `""` and `"none"` mean "no listener" (null). Returns the reason
 * (a message) for anything else. `load.ts`'s parseListen is the throwing form.
 */
export function listenSpec(spec: string): { address: ListenAddress | null } | { error: string } {
  const s = spec.trim();
  if (s === '' || s.toLowerCase() === 'none') return { address: null };
  const bad = (why: string) => ({
    error: `invalid listen address ${JSON.stringify(spec)}: ${why} (expected host:port, [ipv6]:port, :port or port)`,
  });
  let host: string;
  let portText: string;
  if (/^\d+$/.test(s)) {
    host = '0.0.0.0';
    portText = s;
  } else if (s.startsWith('[')) {
    const m = /^\[([^\]]*)\]:(.*)$/.exec(s);
    if (!m) return bad('expected [ipv6]:port');
    host = m[1]!;
    portText = m[2]!;
    if (!isIPv6(host)) return bad(`"${host}" is not an IPv6 address`);
  } else {
    const i = s.lastIndexOf(':');
    if (i < 0) return bad('no port');
    host = s.slice(0, i);
    portText = s.slice(i + 1);
    if (host.includes(':')) return bad('IPv6 addresses need brackets, e.g. [::1]:5222');
    if (host === '') host = '0.0.0.0';
    else if (!/^[A-Za-z0-9.-]+$/.test(host)) return bad(`"${host}" is not a host name or IP address`);
  }
  if (!/^\d+$/.test(portText)) return bad(`port "${portText}" is not a number`);
  const n = Number(portText);
  if (n < 1 || n > 65535) return bad(`port ${n} is out of range 1..65535`);
  return { address: { host, port: n } };
}

/** One address: a spec string (see {@link listenSpec}) or a {host, port} mapping; null for "none". */
const listenAddress = z.preprocess((value, ctx) => {
  // A YAML `- ` item (null) is not "none": only the word disables.
  if (value === null) return undefined;
  if (typeof value !== 'string') return value;
  const parsed = listenSpec(value);
  if ('error' in parsed) {
    ctx.addIssue({ code: 'custom', message: parsed.error, input: value, continue: false });
    return z.NEVER;
  }
  return parsed.address;
}, hostPort.nullable());

/** A list of listeners: a list of addresses, or one spec string; `"none"` alone gives []. */
const listenList = z
  .preprocess(
    (value) => (typeof value === 'string' ? [value] : value),
    z.array(listenAddress, { error: 'must be a list of "host:port" listen addresses' }),
  )
  .superRefine((items, ctx) => {
    if (items.length < 2) return;
    items.forEach((item, i) => {
      if (item === null) ctx.addIssue({ code: 'custom', message: '"none" cannot be combined with addresses', path: [i], continue: false });
    });
  })
  .transform((items) => items.filter((a): a is ListenAddress => a !== null));

// ---------------------------------------------------------------------------------------------
// The schema

/** A section of the config file: a mapping of known keys, each defaulted when absent. */
function section<S extends z.core.$ZodLooseShape>(shape: S) {
  // Every field has a default or is optional, so {} parses; TypeScript cannot see that for a generic shape.
  return z.strictObject(shape, { error: 'must be a mapping' }).prefault({} as never);
}

/** A key holding a file or folder path: relative in a config file, it is resolved against the file's folder. */
const PATH_META = { path: true } as const;

const upstreamTlsMode = z.enum(['auto', 'required', 'none'], { error: 'must be one of auto, required, none' });

/**
 * How the proxy secures its link to the upstream server: `auto` (STARTTLS whenever the upstream
 * offers it, required if the upstream requires it), `required` (refuse an upstream that does not
 * offer STARTTLS) or `none` (never STARTTLS, for loopback-only deployments; refused if the
 * upstream requires TLS).
 */
export type UpstreamTlsMode = z.output<typeof upstreamTlsMode>;

const fields = z.strictObject({
  domains: z
    .array(domainName, { error: 'must be a list of domain names' })
    .superRefine((list, ctx) => {
      list.forEach((d, i) => {
        if (list.indexOf(d) !== i) ctx.addIssue({ code: 'custom', message: 'must be listed once only', path: [i], input: d, continue: false });
      });
    })
    .default(() => [])
    .describe('The XMPP domain(s) served (required, lowercase): a stream opened `to` another domain gets `host-unknown`.'),
  upstream: section({
    host: hostname.default('127.0.0.1').describe("The legacy server's c2s host (name or IP address)."),
    port: port.default(15222).describe("The legacy server's c2s port (its listener moved off 5222)."),
    tls: upstreamTlsMode
      .default('auto')
      .describe(
        'STARTTLS towards the upstream: auto (whenever offered; required if the upstream requires it), required (refuse an upstream without it), none (never; loopback-only deployments, refused if the upstream requires TLS).',
      ),
    caFile: readableFile
      .optional()
      .meta({ ...PATH_META, description: 'PEM file with CA certificates trusted for the upstream (in addition to the system CAs).' }),
    acceptSelfSigned: bool
      .default(false)
      .describe('Accept any upstream certificate, self-signed included (explicit opt-in; loopback only).'),
    connectTimeoutSeconds: seconds(1)
      .default(10)
      .describe(
        "Give up connecting after this long; also how long a client's login keeps trying an unreachable upstream, and the limit of a relayed login including the client's turns (seconds).",
      ),
    keepaliveSeconds: seconds(1)
      .default(15)
      .describe(
        "A link with nothing sent or nothing received for this long gets an XEP-0199 ping to the server (seconds): a half-open link is found within 2 × this + `pingTimeoutSeconds` at worst, and a server-side idle disconnect (Openfire's) never ends a session, hibernated ones included.",
      ),
    pingTimeoutSeconds: seconds(1)
      .default(10)
      .describe('A ping (keepalive or custody barrier) unanswered for this long means the link is dead (seconds).'),
    reconnectDelayMs: count(1)
      .default(500)
      .describe('First reconnect after a lost link after about this long (ms, ±50 % jitter); doubles per failure.'),
    reconnectMaxDelaySeconds: seconds(1).default(30).describe('Longest wait between reconnect tries (seconds).'),
    reconnectGiveUpSeconds: seconds(1)
      .default(300)
      .describe('A link down this long ends its sessions (seconds); a refused login ends them at once.'),
    maxConcurrentLogins: count(1)
      .default(16)
      .describe('Upstream logins in flight at once, proxy-wide (spreads the reconnects after an outage).'),
    streamManagement: bool
      .default(true)
      .describe(
        "Use the server's own XEP-0198 for custody when it offers it (acks; a lost link's server session is resumed by the next link when the server granted resumption); a server whose acks stop answering or count wrong falls back to ping barriers (design §4.4).",
      ),
    credentialCacheSeconds: seconds(0)
      .default(60)
      .describe(
        "A client's password is checked against a live session's cached credential, without a new upstream login, only while the server accepted that credential within this many seconds (seconds; 0: always log in). Bounds how long a changed password still resumes a session.",
      ),
    duplicateWindow: count(0)
      .default(256)
      .describe(
        "Messages remembered per session to drop a second copy that an upstream fault caused (a stanza sent again after a drop, a server's re-delivery from offline storage); keyed by sender full JID, stanza id (or XEP-0359 origin-id) and body (count; 0 turns it off).",
      ),
    maxCustodyBytes: count(1024)
      .default(1024 * 1024)
      .describe(
        'Bytes of client stanzas a session may hold in custody (design §4.4: sent or waiting for a link, not yet confirmed by the server). Past it the proxy stops reading that client until the server confirms some (TCP backpressure): nothing is lost, a client sending while the server is down cannot grow the proxy\'s memory.',
      ),
    gapFillPageSize: count(1)
      .default(100)
      .describe(
        "Archive results asked for per page (XEP-0059 `<max/>`) when the proxy reads the account's archive (XEP-0313) after an upstream reconnect, to recover what the dead link lost (design §4.5); the server may send fewer.",
      ),
    gapFillMaxPasses: count(1)
      .default(3)
      .describe(
        "Reads of the archive per gap fill: it is read again until a read only extends the one before it (a server catching up after a reconnect may still be archiving); at most this many (count).",
      ),
  }),
  listen: section({
    starttls: listenList
      .default(() => [{ host: '0.0.0.0', port: 5222 }])
      .describe('STARTTLS listeners (RFC 6120 §5): "host:port" strings or {host, port} mappings; "none" (or []) disables.'),
    directTls: listenList
      .default(() => [{ host: '0.0.0.0', port: 5223 }])
      .describe('Direct TLS listeners (XEP-0368): "host:port" strings or {host, port} mappings; "none" (or []) disables.'),
  }),
  tls: section({
    certFile: readableFile
      .optional()
      .meta({ ...PATH_META, description: 'PEM certificate (chain) file; needs `keyFile`. With no certificate at all, a self-signed one is generated at start.' }),
    keyFile: readableFile.optional().meta({ ...PATH_META, description: 'PEM private key file of `certFile`.' }),
    pkcs12File: readableFile
      .optional()
      .meta({ ...PATH_META, description: "PKCS#12 keystore (Openfire's), instead of `certFile`/`keyFile`." }),
    pkcs12Password: z
      .string({ error: 'must be a string' })
      .optional()
      .describe('Password of `pkcs12File` (better: XMPP_SM_PROXY_PKCS12_PASSWORD in the environment).'),
  }),
  sm: section({
    hibernationSeconds: seconds(0)
      .default(600)
      .describe("How long a vanished client's session is kept for resumption (seconds; mod_smacks: 600)."),
    maxUnackedStanzas: count(0)
      .default(0)
      .describe('Unacked stanzas tolerated before the proxy sends `<r/>` (count; mod_smacks: 0).'),
    maxQueueSize: count(1)
      .default(500)
      .describe('Unacked outbound stanzas kept per session before it becomes unresumable (count; mod_smacks: 500).'),
    maxAckDelaySeconds: seconds(0)
      .default(30)
      .describe('No ack for this long fires the ack-delayed event (seconds; mod_smacks: 30).'),
    maxOldSessions: count(0)
      .default(10)
      .describe("Old sessions' `h` remembered per account for late resumes (count; mod_smacks: 10)."),
    maxHeldMessages: count(0)
      .default(1000)
      .describe(
        "Chat/normal messages the proxy holds per account when a session ends unacked and it was the account's last one (design §4.3), delivered at the next login; the oldest go first (count).",
      ),
    heldMessagesTtlSeconds: seconds(1)
      .default(7 * 86400)
      .describe("Held messages older than this are dropped (seconds; like an offline store's expiry)."),
    maxHeldBytes: count(0)
      .default(64 * 1024 * 1024)
      .describe('Bytes of held messages proxy-wide; past it the oldest are dropped (and logged).'),
    maxQueueBytes: count(1024)
      .default(4 * 1024 * 1024)
      .describe(
        "Bytes of unacked outbound stanzas kept per session, beside `maxQueueSize`'s count: past either the session is no longer resumable (XEP-0198 §5 resource-constraint).",
      ),
    maxAckRequests: count(1)
      .default(100)
      .describe(
        'More `<r/>` than this from a client within `ackRequestWindowSeconds`, with no stanza between them, is a flood: `policy-violation` (count). An honest client asks after sending, or now and then to probe the link.',
      ),
    ackRequestWindowSeconds: seconds(1).default(10).describe('The window of `maxAckRequests` (seconds).'),
  }),
  limits: section({
    maxStanzaBytes: count(1024).default(256 * 1024).describe('Largest top-level element accepted from a client (bytes).'),
    maxDepth: count(4).default(32).describe('Deepest element nesting accepted inside a stanza (levels).'),
    c2sTimeoutSeconds: seconds(1)
      .default(30)
      .describe(
        "A client connection must finish negotiation (TLS, SASL, resource binding or resumption) within this time, or it gets `connection-timeout` (seconds; Prosody's c2s_timeout).",
      ),
    maxUnauthenticated: count(1)
      .default(1000)
      .describe('Connections not yet authenticated, proxy-wide; more are refused with `resource-constraint` (count).'),
    maxUnauthenticatedPerIp: count(1)
      .default(100)
      .describe('Connections not yet authenticated from one IP address; more get `policy-violation` (count).'),
    tcpKeepaliveSeconds: seconds(0)
      .default(60)
      .describe('TCP keepalive on client sockets: first probe after this much idle time (seconds; 0: off).'),
    readTimeoutSeconds: seconds(1)
      .default(840)
      .describe(
        "No input from an authenticated client for this long: the proxy probes it (`<r/>` with XEP-0198, else an XEP-0199 ping), and a client silent for `sm.maxAckDelaySeconds` more has vanished: it hibernates when resumable, else its session ends (seconds; Prosody's network_settings.read_timeout).",
      ),
    maxSendBufferBytes: count(1024)
      .default(1024 * 1024)
      .describe(
        "Bytes written to a client and not yet taken by its TCP connection: past this the proxy stops reading that session's upstream until the client catches up (backpressure).",
      ),
    sendTimeoutSeconds: seconds(1)
      .default(60)
      .describe('A client that takes none of its pending output for this long ends (seconds); its queue is settled.'),
    maxAuthFailures: count(1)
      .default(5)
      .describe(
        "Failed logins allowed per IP address and per account within `authFailurePeriodSeconds` (count; mod_limit_auth's limit_auth_max).",
      ),
    authFailurePeriodSeconds: seconds(0)
      .default(30)
      .describe("The window of `maxAuthFailures` (seconds; mod_limit_auth's limit_auth_period)."),
    maxAuthAttempts: count(1)
      .default(3)
      .describe('SASL failures allowed on one client connection before its stream is closed (count; RFC 6120 §6.4.5).'),
    maxPipelined: count(1)
      .default(100)
      .describe(
        'Elements a client may pipeline behind its `<resume/>` before the answer (XEP-0198 §5); more get `policy-violation` (count).',
      ),
    closeGraceSeconds: seconds(1)
      .default(5)
      .describe(
        'After the proxy closes a client stream (`</stream:stream>`, with or without a stream error), the client has this long to close its side before its socket is destroyed (seconds).',
      ),
  }),
  storage: section({
    dataDir: z
      .string({ error: 'must be a folder path' })
      .min(1, { error: 'must be a folder path' })
      .default('/var/lib/xmpp-sm-proxy')
      .meta({
        ...PATH_META,
        description:
          "Folder of the durable store (held messages, old sessions' `h`, push registrations), writable by the proxy's user; not checked here: the store opens it at start and the proxy does not start if it cannot.",
      }),
  }),
  muc: section({
    rejoin: bool
      .default(true)
      .describe(
        "After an upstream reconnect (a new server session, which every joined room saw leave), rejoin each room the client is in with its last presence to it, asking history since the last message it got; a room that refuses gets it the not-joined notice (status 110 + 333).",
      ),
    maxRoomsPerSession: count(1)
      .default(1000)
      .describe('Rooms tracked per session (joined or joining); joins beyond it are not tracked (no rejoin, no notice) (rooms).'),
    pingDelaySeconds: seconds(0)
      .default(60)
      .describe("Wait after a trigger (an s2s error from a room's domain, an error from the room, a resume after hibernation, an idle room) before the XEP-0410 self-ping (Prosody's ping_muc_delay) (seconds)."),
    pingTimeoutSeconds: seconds(1)
      .default(30)
      .describe('A self-ping unanswered this long counts as no answer: undecided, retried with backoff, never a kick (seconds).'),
    maxPingsPerSecond: count(1)
      .default(20)
      .describe('Self-pings sent per second, proxy-wide; more wait their turn, none is dropped (pings/s).'),
    idlePingSeconds: seconds(0)
      .default(3600)
      .describe(
        'A joined room silent this long gets a self-ping (0: never); busy rooms never do. Keep sessions × quiet rooms ÷ this under maxPingsPerSecond (seconds).',
      ),
  }),
  auth: section({
    mode: z
      .enum(['plain', 'scram-relay', 'auto'], { error: 'must be one of plain, scram-relay, auto' })
      .default('auto')
      .describe(
        "How clients log in (design §4.1.3): plain offers SASL PLAIN only (the proxy logs in for the client and again after an upstream loss: the client never sees it); scram-relay offers the upstream's SCRAM mechanisms without -PLUS and relays the exchange to a new upstream login (no secret held; after an upstream loss the client's connection is closed and it resumes); auto (the default: nobody is locked out) offers both, each session in the mode of the mechanism its client chose.",
      ),
  }),
  push: section({
    enabled: bool
      .default(true)
      .describe(
        "Answer XEP-0357 enable/disable for the clients and send their pushes (mod_cloud_notify): the upstream never sees them. Off: push iqs go to the upstream like any other.",
      ),
    maxDevices: count(1)
      .default(5)
      .describe("Push registrations kept per account; one more evicts the oldest (mod_cloud_notify's push_max_devices) (registrations)."),
    maxErrors: count(1)
      .default(16)
      .describe("Failed pushes in a row (app server errors other than type wait, or no answer within replyTimeoutSeconds) that remove a registration; a success resets the count (push_max_errors)."),
    maxHibernationSeconds: seconds(1)
      .default(72 * 3600)
      .describe(
        "A hibernated session of an account with push registrations is kept this long until its first important push went out; the normal sm.hibernationSeconds run from that push (push_max_hibernation_timeout) (seconds).",
      ),
    withBody: bool
      .default(false)
      .describe("Put the message body into the push (last-message-body): it then passes the app server and the phone vendor's push service (push_notification_with_body). Off by default for privacy."),
    withSender: bool
      .default(false)
      .describe("Put the sender's JID into the push (last-message-sender) (push_notification_with_sender). Off by default for privacy."),
    importantBody: z
      .string({ error: 'must be a string' })
      .max(1024, { error: 'must be at most 1024 characters' })
      .default('New Message!')
      .describe(
        "last-message-body of pushes for important stanzas when withBody is off, so that apps show a notification (push_notification_important_body); empty: every push is unimportant and any push ends the hibernation extension.",
      ),
    batchSeconds: seconds(0)
      .default(1)
      .describe("Stanzas for a sleeping client are collected this long before one push per registration goes out (0: next event-loop turn) (seconds)."),
    replyTimeoutSeconds: seconds(1)
      .default(60)
      .describe("An app server that has not answered a push in this long counts as a failed push (seconds)."),
  }),
  metrics: section({
    listen: listenAddress
      .default(() => ({ host: '127.0.0.1', port: 9464 }))
      .describe(
        'Prometheus metrics and health endpoint (`/metrics`, `/healthz`, `/readyz`): one "host:port" or {host, port}; "none" disables. ' +
          "Loopback by default on purpose (a security requirement): the endpoint has no authentication and shows the proxy's internals (sessions, upstream health), so expose it beyond the host only behind a firewall or an authenticating proxy.",
      ),
  }),
  shutdown: section({
    timeoutSeconds: seconds(1)
      .default(10)
      .describe('SIGTERM/SIGINT: the process exits within this long whatever state the sessions are in (exit code 1 if cut short) (seconds).'),
    ackWaitMs: integer(0, 2 ** 31 - 1, 'a non-negative integer (ms)')
      .default(3000)
      .describe(
        "At shutdown, each session waits this long at most for its client's ack of what it was sent and for the server's confirmation of what the client sent, so that neither is delivered twice after the restart (ms; less than `timeoutSeconds`).",
      ),
    closeGraceMs: integer(0, 2 ** 31 - 1, 'a non-negative integer (ms)')
      .default(1000)
      .describe(
        'At shutdown, clients and servers get this long to close their side after the proxy closed its streams, before their sockets are destroyed (ms; less than `timeoutSeconds`).',
      ),
  }),
  log: section({
    level: z
      .enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(', ')}` })
      .default('info')
      .describe('Log level (pino): fatal, error, warn, info, debug, trace or silent.'),
  }),
});

/**
 * Checks between keys, run only when every key is valid on its own (every issue above aborts): `domains` given, the TLS identity
 * (PEM pair both or neither, PKCS#12 exclusive), at least one client listener, no address used
 * twice, the shutdown grace within its deadline.
 */
function crossKeyChecks(c: z.output<typeof fields>, ctx: z.core.$RefinementCtx<z.output<typeof fields>>): void {
  const issue = (path: (string | number)[], message: string, blame?: string) =>
    ctx.addIssue({ code: 'custom', path, message, params: blame === undefined ? undefined : { blame } });
  if (c.domains.length === 0) {
    issue(['domains'], 'config: domains is required (the XMPP domain the proxy serves)');
  }
  const { tls, listen } = c;
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    const [missing, given] = tls.certFile === undefined ? ['certFile', 'keyFile'] : ['keyFile', 'certFile'];
    issue(['tls', missing], `config: tls.${missing} is required when tls.${given} is set (both or neither)`, `tls.${given}`);
  }
  if (tls.pkcs12File !== undefined && tls.certFile !== undefined) {
    issue(
      ['tls', 'pkcs12File'],
      'config: tls.pkcs12File and tls.certFile/tls.keyFile are exclusive (give a PKCS#12 keystore or PEM files, not both)',
    );
  }
  if (listen.starttls.length === 0 && listen.directTls.length === 0) {
    issue(['listen'], 'config: listen: no listeners (listen.starttls and listen.directTls are both empty)');
  }
  const seen = new Map<string, string>();
  const use = (a: ListenAddress, path: (string | number)[], key: string): void => {
    const id = `${a.host}:${a.port}`;
    const first = seen.get(id);
    if (first !== undefined) issue(path, `config: ${key}: ${id} is already used by ${first}`);
    else seen.set(id, key);
  };
  for (const name of ['starttls', 'directTls'] as const) {
    listen[name].forEach((a, i) => use(a, ['listen', name, i], `listen.${name}[${i}]`));
  }
  if (c.metrics.listen !== null) use(c.metrics.listen, ['metrics', 'listen'], 'metrics.listen');
  if (c.shutdown.ackWaitMs + c.shutdown.closeGraceMs >= c.shutdown.timeoutSeconds * 1000) {
    issue(
      ['shutdown', 'closeGraceMs'],
      `config: shutdown.ackWaitMs + shutdown.closeGraceMs (${c.shutdown.ackWaitMs + c.shutdown.closeGraceMs} ms) must be less than shutdown.timeoutSeconds (${c.shutdown.timeoutSeconds} s), or the deadline cuts every shutdown short`,
    );
  }
}

/**
 * The whole configuration: every key with its type, bounds, default and description, plus the
 * cross-key checks. Parse the merged layers with it (load.ts's buildConfig does, and turns its
 * issues into ConfigErrors); unknown keys are rejected at every level.
 */
export const ConfigSchema = fields.superRefine(crossKeyChecks);

/** The validated configuration (see {@link ConfigSchema} for every key's meaning and unit). */
export type Config = z.output<typeof ConfigSchema>;

/**
 * Every default in one object, derived from the schema (`domains` is empty: it has no default).
 * A fresh, unfrozen object: harnesses spread it to build a Config by hand.
 */
export const DEFAULTS: Config = fields.parse({});
