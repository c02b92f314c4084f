/**
 * Test harness: runs a real Prosody (Debian's 0.12 package) on loopback as the "legacy" upstream
 * that the proxy sits in front of. Used by the end-to-end tests, the benchmark and the demo.
 *
 * Every instance gets its own temp dir holding the generated config, the data store, the log,
 * the pidfile and (unless tls is 'none') a self-signed certificate, so instances never share
 * state with each other or with a system-wide Prosody.
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { findExecutable, freePort, removeDir, removeDirAtExit, run, ServerInstance, type ServerPlace } from './server-process.ts';

/** Free loopback TCP port (see server-process.ts); exported here for the tests, bench and demo. */
export { freePort };

/** Options for {@link startProsody}. Every field is optional; defaults suit the proxy tests. */
export interface ProsodyOptions {
  /** XMPP domain of the single VirtualHost. Default 'proxy.test'. */
  domain?: string;
  /**
   * Whether Prosody's own XEP-0198 (mod_smacks) is on. Default false: the proxy under test must
   * supply Stream Management itself, so the upstream must not advertise `urn:xmpp:sm:*`.
   * true is for differential tests against Prosody's native implementation.
   */
  smacks?: boolean;
  /**
   * Upstream TLS mode. Default 'optional'.
   * - 'none': no certificate, mod_tls not loaded, no STARTTLS offered; PLAIN is allowed in clear
   *   (otherwise Prosody would hide PLAIN on an unencrypted stream).
   * - 'optional': STARTTLS offered, `c2s_require_encryption = false`.
   * - 'required': `c2s_require_encryption = true` (like Openfire's default).
   */
  tls?: 'none' | 'optional' | 'required';
  /** Load mod_mam with `archive_expires_after = "1d"` and `default_archive_policy = true`. */
  mam?: boolean;
  /** Extra module names (without the `mod_` prefix) to add to `modules_enabled`. */
  modules?: string[];
  /** Accounts created with prosodyctl before the server starts. */
  accounts?: Array<{ user: string; password: string }>;
  /** c2s port to listen on. Default: a free port picked at start (see {@link freePort}). */
  c2sPort?: number;
  /** Prosody log level written to {@link ProsodyInstance.logFile}. Default 'info'. */
  logLevel?: 'debug' | 'info';
  /**
   * Extra Lua lines appended to the global section (before the VirtualHost), so they override
   * the generated ones. Do not redirect `log`: readiness is confirmed from the log file.
   */
  config?: string;
}

/** A running (or stopped) Prosody started by {@link startProsody}. */
export interface ProsodyInstance {
  /** The VirtualHost domain. */
  domain: string;
  /** Prosody listens on loopback IPv4 only. */
  host: '127.0.0.1';
  /** The c2s (STARTTLS / plain) port. */
  c2sPort: number;
  /** Temp dir with config, data, log, pidfile and certificate. Removed by stop(). */
  dir: string;
  /** Path of the generated Prosody config (for running prosodyctl or reading it in a failure). */
  configFile: string;
  /** PEM of the self-signed certificate Prosody serves (tls != 'none'); tests trust it as a CA. */
  caFile?: string;
  /** Prosody's log file inside dir. */
  logFile: string;
  /** Create an account; works while the server runs (prosodyctl writes the same data dir). */
  register(user: string, password: string): Promise<void>;
  /** SIGTERM, wait for exit (SIGKILL after 5 s), then remove the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** Send a raw signal to the Prosody process (e.g. SIGSTOP/SIGCONT/SIGKILL to simulate faults). */
  kill(signal: NodeJS.Signals): void;
  /** Stop the process (keeping the data dir, hence accounts and archives) and start it again on the same port. */
  restart(): Promise<void>;
  /** PID of the running Prosody, undefined while it is not running. */
  pid: number | undefined;
}

const NOT_INSTALLED = 'prosody not found: apt-get install prosody lua-unbound';
const READY_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 5_000;

/** Quote a JS string as a Lua string literal (paths and user input go into the config). */
export function lua(value: string): string {
  let out = '"';
  for (const ch of value) {
    const code = ch.codePointAt(0)!;
    if (ch === '\\' || ch === '"') out += '\\' + ch;
    else if (code < 0x20 || code === 0x7f) out += '\\' + code.toString().padStart(3, '0');
    else out += ch;
  }
  return out + '"';
}

/** Try one TCP connect; resolves true when something accepted it. */
function tryConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      sock.removeAllListeners();
      sock.on('error', () => {});
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** Modules from core 0.12 that a proxy's clients plausibly use; nothing that opens other ports or the network. */
const BASE_MODULES = [
  'roster',
  'saslauth',
  'disco',
  'carbons',
  'ping',
  'offline',
  'csi_simple',
  'time',
  'version',
  'blocklist',
  'private',
];

function buildConfig(o: {
  dir: string;
  domain: string;
  port: number;
  smacks: boolean;
  tls: 'none' | 'optional' | 'required';
  mam: boolean;
  modules: string[];
  logLevel: 'debug' | 'info';
  extra: string;
  certFile?: string;
  keyFile?: string;
  logFile: string;
}): string {
  const enabled = [...BASE_MODULES];
  if (o.tls !== 'none') enabled.push('tls');
  if (o.smacks) enabled.push('smacks');
  if (o.mam) enabled.push('mam');
  for (const m of o.modules) if (!enabled.includes(m)) enabled.push(m);

  // s2s and s2s_auth_certs are autoloaded by Prosody; with them gone a stanza to a remote domain
  // is bounced at once ("not-allowed") instead of triggering DNS lookups that leave loopback.
  // smacks is listed explicitly so a future default-on cannot sneak XEP-0198 into the upstream.
  const disabled = ['s2s', 's2s_auth_certs', 'smacks'].filter((m) => !enabled.includes(m));

  const list = (xs: string[]): string => `{ ${xs.map(lua).join('; ')} }`;
  const lines: string[] = [
    '-- Generated by test/harness/prosody.ts; removed with its temp dir by stop().',
    // The tests run as root; without this Prosody refuses to start (or switches to user prosody).
    'run_as_root = true',
    `pidfile = ${lua(path.join(o.dir, 'prosody.pid'))}`,
    `data_path = ${lua(path.join(o.dir, 'data'))}`,
    // The certificate directory defaults to "certs" next to the config; point it at our dir
    // so Prosody never scans /etc/prosody/certs.
    `certificates = ${lua(path.join(o.dir, 'certs'))}`,
    `log = { { levels = { min = ${lua(o.logLevel)} }; to = "file"; filename = ${lua(o.logFile)} } }`,
    // Loopback only: the tests and the benchmark must not expose anything.
    'interfaces = { "127.0.0.1" }',
    `c2s_ports = { ${o.port} }`,
    'c2s_direct_tls_ports = {}',
    'legacy_ssl_ports = {}',
    's2s_ports = {}',
    'http_ports = {}',
    'https_ports = {}',
    'component_ports = {}',
    // internal_hashed stores SCRAM data, so SCRAM-SHA-1 and PLAIN are both offered.
    'authentication = "internal_hashed"',
    'storage = "internal"',
    `modules_enabled = ${list(enabled)}`,
    `modules_disabled = ${list(disabled)}`,
    // mod_limits is not enabled, so c2s is not throttled; if a caller enables it, keep the
    // ceiling far above what a benchmark pushes.
    'limits = { c2s = { rate = "100mb/s"; burst = "10s" } }',
    `c2s_require_encryption = ${o.tls === 'required' ? 'true' : 'false'}`,
  ];
  if (o.tls === 'none') {
    // Without TLS Prosody hides PLAIN; a no-TLS test upstream should still accept it.
    lines.push('allow_unencrypted_plain_auth = true');
  }
  if (o.mam) {
    lines.push('archive_expires_after = "1d"', 'default_archive_policy = true');
  }
  if (o.extra.trim()) {
    lines.push('', '-- extra config from ProsodyOptions.config', o.extra);
  }
  lines.push('', `VirtualHost ${lua(o.domain)}`);
  if (o.certFile && o.keyFile) {
    lines.push(`  ssl = { certificate = ${lua(o.certFile)}; key = ${lua(o.keyFile)} }`);
  }
  return lines.join('\n') + '\n';
}

/** Implementation of {@link ProsodyInstance}; one Prosody process at a time, restartable. */
class Instance extends ServerInstance implements ProsodyInstance {
  constructor(
    place: ServerPlace,
    readonly caFile: string | undefined,
    private readonly bin: { prosody: string; prosodyctl: string; setpriv: string | undefined },
  ) {
    super('prosody', place, STOP_GRACE_MS);
  }

  /** Spawn Prosody in the foreground and wait until the c2s port accepts connections. */
  async launch(): Promise<void> {
    const args = ['--config', this.configFile, '-F'];
    // setpriv --pdeathsig makes the kernel SIGKILL Prosody if this Node process dies without
    // running its 'exit' handlers (SIGKILL from tap's timeout, a fatal signal). setpriv execs
    // Prosody, so the PID is Prosody's own and kill() reaches it directly. Caveat: the kernel
    // ties pdeathsig to the spawning *thread*; libuv spawns on the calling thread, so a Prosody
    // started from a worker_thread dies with that worker.
    const [file, argv] = this.bin.setpriv
      ? [this.bin.setpriv, ['--pdeathsig', 'KILL', this.bin.prosody, ...args]]
      : [this.bin.prosody, args];
    await this.startServer(file, argv, undefined, {
      serving: `accept connections on 127.0.0.1:${this.c2sPort}`,
      timeoutMs: READY_TIMEOUT_MS,
      pollMs: 50,
      // Prosody does not exit when it cannot bind its port: it logs an error and runs on with
      // "Activated service 'c2s' on no ports". A TCP connect alone would then succeed against
      // whoever holds the port, so the log of this launch must also confirm the listener.
      portTaken: (log) => /Failed to open server port|Activated service 'c2s' on no ports/.test(log),
      ready: async (log) => log.includes(`Activated service 'c2s' on [127.0.0.1]:${this.c2sPort}`) && (await tryConnect(this.c2sPort)),
    });
  }

  async register(user: string, password: string): Promise<void> {
    await run(this.bin.prosodyctl, ['--config', this.configFile, 'register', user, this.domain, password]);
  }
}

/**
 * Generate a config in a fresh temp dir, register the accounts, start Prosody in the
 * foreground and resolve once its c2s port accepts TCP connections.
 *
 * Throws (rather than letting tests skip) when Prosody is not installed: a silently skipped
 * end-to-end suite would look green while testing nothing.
 */
export async function startProsody(opts: ProsodyOptions = {}): Promise<ProsodyInstance> {
  const prosodyBin = await findExecutable('prosody');
  const prosodyctlBin = await findExecutable('prosodyctl');
  if (!prosodyBin || !prosodyctlBin) throw new Error(NOT_INSTALLED);
  const setprivBin = await findExecutable('setpriv');

  const domain = opts.domain ?? 'proxy.test';
  const tls = opts.tls ?? 'optional';
  const port = opts.c2sPort ?? (await freePort());

  const dir = await mkdtemp(path.join(os.tmpdir(), 'prosody-harness-'));
  removeDirAtExit(dir);
  try {
    await mkdir(path.join(dir, 'data'));
    await mkdir(path.join(dir, 'certs'));
    const logFile = path.join(dir, 'prosody.log');
    const configFile = path.join(dir, 'prosody.cfg.lua');

    let certFile: string | undefined;
    let keyFile: string | undefined;
    if (tls !== 'none') {
      // Named <domain>.crt/.key inside the certs dir so Prosody's automatic lookup agrees
      // with the explicit ssl option.
      certFile = path.join(dir, 'certs', `${domain}.crt`);
      keyFile = path.join(dir, 'certs', `${domain}.key`);
      // 2-day validity: a leftover cert from a crashed run must not be trusted for long.
      await run('openssl', [
        'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
        '-subj', `/CN=${domain}`, '-addext', `subjectAltName=DNS:${domain}`,
        '-keyout', keyFile, '-out', certFile,
      ]);
    }

    await writeFile(
      configFile,
      buildConfig({
        dir,
        domain,
        port,
        smacks: opts.smacks ?? false,
        tls,
        mam: opts.mam ?? false,
        modules: opts.modules ?? [],
        logLevel: opts.logLevel ?? 'info',
        extra: opts.config ?? '',
        certFile,
        keyFile,
        logFile,
      }),
    );

    const place = { domain, c2sPort: port, dir, configFile, logFile };
    const inst = new Instance(place, certFile, { prosody: prosodyBin, prosodyctl: prosodyctlBin, setpriv: setprivBin });
    for (const a of opts.accounts ?? []) await inst.register(a.user, a.password);
    await inst.launch();
    return inst;
  } catch (err) {
    await removeDir(dir);
    throw err;
  }
}
