/**
 * Test harness: runs a real Prosody (Debian's 0.12 package) on loopback as the "legacy" upstream
 * that the proxy sits in front of. Used by the end-to-end tests, the benchmark and the demo.
 *
 * Every instance gets its own temp dir holding the generated config, the data store, the log,
 * the pidfile and (unless tls is 'none') a self-signed certificate, so instances never share
 * state with each other or with a system-wide Prosody.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { constants as fsConstants, rmSync } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

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
/** Bytes of stdout/stderr kept per process, for error messages. */
const OUTPUT_TAIL_BYTES = 64 * 1024;

/**
 * Processes started by this module that have not exited yet. A test that crashes or forgets
 * stop() must not leave a server behind holding a port, so the 'exit' handler below kills them.
 */
const live = new Set<ChildProcess>();
/** Temp dirs of instances not stop()ped yet (the process may be gone): removed at exit too. */
const liveDirs = new Set<string>();
let exitHandlerInstalled = false;

function installExitHandler(): void {
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  // 'exit' handlers must be synchronous: a plain SIGKILL is all we can do here. SIGKILL also
  // works on a SIGSTOPped process, which SIGTERM would not. Then the temp dirs go, so a crash,
  // process.exit() or a second Ctrl-C in the demo leaves no /tmp/prosody-harness-* behind
  // (a SIGKILL of this process still does: nothing runs then, only pdeathsig stops Prosody).
  process.on('exit', () => {
    for (const child of live) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of liveDirs) {
      try {
        // maxRetries: a Prosody just SIGKILLed may not be gone yet (ENOTEMPTY/EBUSY are retried).
        rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      } catch {
        // best effort: nothing can be done about it during exit
      }
    }
  });
}

/**
 * Ask the kernel for a free TCP port: bind port 0 on 127.0.0.1, read the port, close.
 * Another process could grab it before it is used; on a test machine that race is acceptable.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('freePort: unexpected server address'));
        return;
      }
      const { port } = addr;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** Find an executable on PATH (plus /usr/sbin, /usr/bin where Debian puts prosody). */
async function findExecutable(name: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** Quote a JS string as a Lua string literal (paths and user input go into the config). */
function lua(value: string): string {
  let out = '"';
  for (const ch of value) {
    const code = ch.codePointAt(0)!;
    if (ch === '\\' || ch === '"') out += '\\' + ch;
    else if (code < 0x20 || code === 0x7f) out += '\\' + code.toString().padStart(3, '0');
    else out += ch;
  }
  return out + '"';
}

/** Run a command, resolving with stdout; the error carries stdout and stderr because prosodyctl reports on either. */
function run(file: string, args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`${path.basename(file)} ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`.trim()));
      } else {
        resolve(stdout);
      }
    });
  });
}

/** Last n lines of a file, or a note saying it could not be read. */
async function tailFile(file: string, n: number): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.split('\n').slice(-n - 1).join('\n');
  } catch (err) {
    return `(cannot read ${file}: ${(err as Error).message})`;
  }
}

/** Size of a file, 0 when it does not exist yet. */
async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

/** File contents from a byte offset on ('' when missing). */
async function readFrom(file: string, offset: number): Promise<string> {
  try {
    return (await readFile(file)).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
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

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

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
class Instance implements ProsodyInstance {
  readonly host = '127.0.0.1' as const;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private output = '';
  private stopped = false;

  constructor(
    readonly domain: string,
    readonly c2sPort: number,
    readonly dir: string,
    readonly configFile: string,
    readonly logFile: string,
    readonly caFile: string | undefined,
    private readonly prosodyBin: string,
    private readonly prosodyctlBin: string,
    private readonly setprivBin: string | undefined,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Spawn Prosody in the foreground and wait until the c2s port accepts connections. */
  async launch(): Promise<void> {
    const args = ['--config', this.configFile, '-F'];
    // setpriv --pdeathsig makes the kernel SIGKILL Prosody if this Node process dies without
    // running its 'exit' handlers (SIGKILL from tap's timeout, a fatal signal). setpriv execs
    // Prosody, so the PID is Prosody's own and kill() reaches it directly. Caveat: the kernel
    // ties pdeathsig to the spawning *thread*; libuv spawns on the calling thread, so a Prosody
    // started from a worker_thread dies with that worker.
    const [file, argv] = this.setprivBin
      ? [this.setprivBin, ['--pdeathsig', 'KILL', this.prosodyBin, ...args]]
      : [this.prosodyBin, args];
    // restart() appends to the same log; readiness must only look at this launch's lines.
    const logOffset = await fileSize(this.logFile);
    const child = spawn(file, argv, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.output = '';
    live.add(child);
    installExitHandler();

    const collect = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_BYTES);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);

    let exitInfo: string | undefined;
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        exitInfo = signal ? `signal ${signal}` : `code ${code}`;
        live.delete(child);
        if (this.child === child) this.child = undefined;
        resolve();
      });
      // spawn failures (ENOENT etc.) emit 'error' and may never emit 'exit'.
      child.once('error', (err) => {
        exitInfo = `spawn error: ${err.message}`;
        live.delete(child);
        if (this.child === child) this.child = undefined;
        resolve();
      });
    });

    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (exitInfo !== undefined) {
        throw new Error(
          `prosody exited during startup (${exitInfo}); output:\n${this.output.trim()}\n` +
            `--- last log lines (${this.logFile}):\n${await tailFile(this.logFile, 30)}`,
        );
      }
      // Prosody does not exit when it cannot bind its port: it logs an error and runs on with
      // "Activated service 'c2s' on no ports". A TCP connect alone would then succeed against
      // whoever holds the port, so the log of this launch must also confirm the listener.
      const log = await readFrom(this.logFile, logOffset);
      if (/Failed to open server port|Activated service 'c2s' on no ports/.test(log)) {
        await this.terminate();
        throw new Error(
          `prosody could not listen on 127.0.0.1:${this.c2sPort} (port in use?)\n` +
            `--- log of this launch (${this.logFile}):\n${log.trim()}`,
        );
      }
      if (log.includes(`Activated service 'c2s' on [127.0.0.1]:${this.c2sPort}`) && (await tryConnect(this.c2sPort))) {
        if (exitInfo === undefined) return;
        continue;
      }
      if (Date.now() > deadline) {
        const log = await tailFile(this.logFile, 30);
        await this.terminate();
        throw new Error(
          `prosody did not accept connections on 127.0.0.1:${this.c2sPort} within ${READY_TIMEOUT_MS} ms\n` +
            `--- last log lines (${this.logFile}):\n${log}\n--- stdout/stderr:\n${this.output.trim()}`,
        );
      }
      await sleep(50);
    }
  }

  /** SIGTERM, SIGKILL after the grace period; resolves once the process has exited. */
  private async terminate(): Promise<void> {
    const child = this.child;
    if (!child) return;
    try {
      child.kill('SIGTERM');
      // A SIGSTOPped process (fault-injection tests) only acts on SIGTERM once continued.
      child.kill('SIGCONT');
    } catch {
      // exited meanwhile
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), STOP_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      try {
        child.kill('SIGKILL');
      } catch {
        // exited meanwhile
      }
      await this.exited;
    }
  }

  async register(user: string, password: string): Promise<void> {
    await run(this.prosodyctlBin, ['--config', this.configFile, 'register', user, this.domain, password]);
  }

  async stop(): Promise<void> {
    await this.terminate();
    if (this.stopped) return;
    this.stopped = true;
    await rm(this.dir, { recursive: true, force: true });
    liveDirs.delete(this.dir);
  }

  kill(signal: NodeJS.Signals): void {
    const child = this.child;
    if (!child || child.pid === undefined) throw new Error(`prosody is not running (cannot send ${signal})`);
    process.kill(child.pid, signal);
  }

  async restart(): Promise<void> {
    if (this.stopped) throw new Error('prosody instance was stopped; its dir is gone');
    await this.terminate();
    await this.launch();
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
  liveDirs.add(dir);
  installExitHandler();
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

    const inst = new Instance(domain, port, dir, configFile, logFile, certFile, prosodyBin, prosodyctlBin, setprivBin);
    for (const a of opts.accounts ?? []) await inst.register(a.user, a.password);
    await inst.launch();
    return inst;
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
    throw err;
  }
}
