/**
 * Test harness: runs a real ejabberd (Debian's 23.01 package) on loopback as a second "legacy"
 * upstream, so end-to-end tests can run against ejabberd as well as Prosody (see prosody.ts,
 * whose ProsodyInstance shape this follows: an EjabberdInstance is assignable to it).
 *
 * Why ejabberd: with its default `auth_password_format: plain` it hands out a fresh random SCRAM
 * salt on every exchange, so SCRAM keys derived for one login never work for the next.
 *
 * How it runs (after reading Debian's /usr/sbin/ejabberdctl): the script's `foreground` runs
 * `su ejabberd -c erl ...` as a child of bash, so neither bash nor su would hand us beam.smp's
 * PID, and pdeathsig on the script would not reach the beam. The harness therefore builds the
 * same `erl` command line itself (ERL and ERL_LIBS are read from the script) and execs it through
 * `setpriv --reuid ejabberd --pdeathsig KILL`: erl execs erlexec, which execs beam.smp, so the
 * spawned PID *is* beam.smp. Differences from the script, all deliberate:
 * - Erlang distribution without epmd (`-start_epmd false -erl_epmd_port <free port>`, the
 *   script's ERL_DIST_PORT mode): nothing is left on port 4369 and instances never share an epmd.
 *   The distribution listener is bound to 127.0.0.1 (`-kernel inet_dist_use_interface`).
 * - A unique node name and a private HOME (holding a random .erlang.cookie) per instance.
 * - ERL_INETRC with file lookups only (Debian's falls back to the native resolver): no
 *   inet_gethost helper processes holding the beam's stdout/stderr, no DNS off loopback.
 * - Control commands (register, sync, ctl) run as short-lived hidden Erlang nodes
 *   (`-dist_listen false`) that rpc into the server, like `ejabberdctl` does.
 *
 * Every instance gets its own temp dir (config, Mnesia spool, logs, certificate, cookie), chowned
 * to the ejabberd user when the tests run as root.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { findExecutable, freePort, isExecutable, killAtExit, removeDirAtExit, run, ServerInstance, sleep, type ServerPlace } from './server-process.ts';

/** Free loopback TCP port (see server-process.ts), the same function prosody.ts exports. */
export { freePort };

/** Options for {@link startEjabberd}. Every field is optional; defaults suit the proxy tests. */
export interface EjabberdOptions {
  /** XMPP domain of the single host. Default 'proxy.test'. */
  domain?: string;
  /**
   * Accounts registered once the server is up (before startEjabberd resolves) and flushed to
   * disk, so they survive a SIGKILL + restart().
   */
  accounts?: Array<{ user: string; password: string }>;
  /**
   * Upstream TLS mode. Default 'required' (like Openfire):
   * - 'optional': STARTTLS offered, SASL also offered before it.
   * - 'required': `starttls_required: true`, nothing but STARTTLS before TLS.
   */
  tls?: 'optional' | 'required';
  /** Load mod_mam with `default: always` (every message archived). Default false. */
  mam?: boolean;
  /**
   * mod_stream_mgmt (XEP-0198, with resumption). Default false: the upstream must not advertise
   * `urn:xmpp:sm:*`, the proxy under test supplies it. true is for differential tests.
   */
  smacks?: boolean;
  /** Extra modules (`mod_x` or `x`) loaded with default options. */
  modules?: string[];
  /** c2s port to listen on. Default: a free port picked at start (see {@link freePort}). */
  c2sPort?: number;
  /** ejabberd log level written to {@link EjabberdInstance.logFile}. Default 'info'. */
  logLevel?: 'info' | 'debug';
  /** The c2s listener's max_stanza_size (bytes). Default 10 MiB. */
  maxStanzaSize?: number;
}

/** A running (or stopped) ejabberd started by {@link startEjabberd}. */
export interface EjabberdInstance {
  /** The host domain. */
  domain: string;
  /** ejabberd listens on loopback IPv4 only. */
  host: '127.0.0.1';
  /** The c2s (STARTTLS) port. */
  c2sPort: number;
  /** Temp dir with config, spool, logs, certificate and cookie. Removed by stop(). */
  dir: string;
  /** Path of the generated ejabberd.yml. */
  configFile: string;
  /** PEM of the self-signed certificate ejabberd serves; tests trust it as a CA. */
  caFile: string;
  /** ejabberd's main log file (error.log is next to it). */
  logFile: string;
  /** Erlang node name (unique per instance), e.g. `ejh1a2b3c4d@localhost`. */
  nodeName: string;
  /** Erlang distribution port of the running node (loopback only; changes on restart). */
  distPort: number;
  /**
   * Register an account on the running server, then flush the on-disk tables ({@link sync}) so
   * the account survives a SIGKILL. Rejects when the account exists.
   */
  register(user: string, password: string): Promise<void>;
  /**
   * Flush every Mnesia disc_only (dets) table (passwd, roster, offline, archive...) to disk.
   * Without it, writes of the last seconds are lost when the server is SIGKILLed.
   */
  sync(): Promise<void>;
  /** Run an ejabberdctl command (e.g. `['registered_users', domain]`); resolves with its stdout. */
  ctl(args: string[]): Promise<string>;
  /**
   * SIGTERM (a graceful init:stop), wait for exit (SIGKILL after 10 s), make sure no process of
   * this node is left, then remove the temp dir. Idempotent.
   */
  stop(): Promise<void>;
  /** Send a raw signal to the beam.smp process (SIGKILL/SIGSTOP/SIGCONT fault injection). */
  kill(signal: NodeJS.Signals): void;
  /** Stop the process (keeping the spool, hence accounts and archives) and start it again on the same c2s port. */
  restart(): Promise<void>;
  /** PID of the running beam.smp, undefined while it is not running. */
  pid: number | undefined;
}

const INSTALL_CMD = 'apt-get install -y --no-install-recommends ejabberd';
const NOT_INSTALLED = `ejabberd not found: ${INSTALL_CMD}`;
const READY_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
const CTL_TIMEOUT_MS = 30_000;
const STREAM_HEADER = (domain: string): string =>
  `<?xml version='1.0'?><stream:stream to='${domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;

interface Installation {
  /** The `erl` launcher ejabberdctl uses. */
  erl: string;
  /** ERL_LIBS as set by ejabberdctl (the dir holding ejabberd-23.01/ and its deps). */
  erlLibs: string;
  /** setpriv, for --pdeathsig and dropping root to the ejabberd user. */
  setpriv: string | undefined;
  /** uid/gid of the ejabberd user when the tests run as root; undefined otherwise. */
  runAs: { uid: number; gid: number } | undefined;
}

let installation: Promise<Installation> | undefined;

/** Locate erl and ejabberd's libraries the way Debian's ejabberdctl does; throws when missing. */
function findInstallation(): Promise<Installation> {
  installation ??= (async () => {
    const ctl = await findExecutable('ejabberdctl');
    if (!ctl) throw new Error(NOT_INSTALLED);
    const script = await readFile(ctl, 'utf8');
    const erl = /^\s*ERL="([^"]+)"/m.exec(script)?.[1] ?? '/usr/bin/erl';
    const erlLibs = /^\s*ERL_LIBS='([^']+)'/m.exec(script)?.[1] ?? `/usr/lib/${process.arch === 'x64' ? 'x86_64' : process.arch}-linux-gnu`;
    if (!(await isExecutable(erl))) throw new Error(`${erl} (from ${ctl}) is missing: ${INSTALL_CMD}`);
    let entries: string[] = [];
    try {
      entries = await readdir(erlLibs);
    } catch {
      // reported below
    }
    const appDir = entries.find((e) => /^ejabberd-\d/.test(e));
    if (!appDir || !(await isExecutable(path.join(erlLibs, appDir, 'ebin')))) {
      throw new Error(`no ejabberd-*/ebin under ERL_LIBS=${erlLibs} (from ${ctl}): ${INSTALL_CMD}`);
    }
    const setpriv = await findExecutable('setpriv');
    let runAs: Installation['runAs'];
    if (process.getuid?.() === 0 && setpriv) {
      const passwd = await readFile('/etc/passwd', 'utf8');
      const entry = passwd.split('\n').find((l) => l.startsWith('ejabberd:'));
      if (!entry) throw new Error(`no ejabberd user in /etc/passwd (broken package?): ${INSTALL_CMD}`);
      const [, , uid, gid] = entry.split(':');
      runAs = { uid: Number(uid), gid: Number(gid) };
    }
    return { erl, erlLibs, setpriv, runAs };
  })();
  // A failed lookup (not installed yet) must not be cached for the rest of the process.
  installation.catch(() => (installation = undefined));
  return installation;
}

/**
 * Open a stream and resolve with what arrived up to </stream:features>, or undefined when the
 * port does not answer with stream features in time (not listening, frozen, not XMPP).
 */
function probeFeatures(port: number, domain: string, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (result: string | undefined): void => {
      clearTimeout(timer);
      sock.removeAllListeners();
      sock.on('error', () => {});
      sock.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.setEncoding('utf8');
    sock.once('connect', () => sock.write(STREAM_HEADER(domain)));
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.includes('</stream:features>')) {
        sock.write('</stream:stream>');
        done(buf);
      }
    });
    sock.once('error', () => done(undefined));
    sock.once('close', () => done(undefined));
  });
}

/** A YAML double-quoted scalar (JSON string syntax is valid YAML). */
const yq = (s: string): string => JSON.stringify(s);

/** An Erlang string literal (for the `-mnesia dir` argument). */
const erlString = (s: string): string => `"${s.replace(/[\\"]/g, (c) => '\\' + c)}"`;

const hex = (s: string): string => Buffer.from(s, 'utf8').toString('hex');

function buildConfig(o: {
  domain: string;
  port: number;
  tls: 'optional' | 'required';
  mam: boolean;
  smacks: boolean;
  modules: string[];
  logLevel: 'info' | 'debug';
  certFile: string;
  maxStanzaSize: number;
}): string {
  const modules: string[] = [
    // Only what c2s chatting needs. Presence has no module (ejabberd_c2s + mod_roster do it);
    // blocking/privacy/vcard/pubsub/muc are left out on purpose.
    '  mod_roster: {}',
    '  mod_disco: {}',
    '  mod_carboncopy: {}',
    '  mod_ping: {}',
    '  mod_offline:',
    '    access_max_user_messages: max_user_offline_messages',
  ];
  if (o.mam) modules.push('  mod_mam:', '    db_type: mnesia', '    default: always');
  // Not listing mod_stream_mgmt is what keeps urn:xmpp:sm:* out of the features.
  if (o.smacks) modules.push('  mod_stream_mgmt:', '    resend_on_timeout: if_offline', '    resume_timeout: 300');
  for (const m of o.modules) {
    const name = m.startsWith('mod_') ? m : `mod_${m}`;
    if (!modules.some((l) => l.startsWith(`  ${name}:`))) modules.push(`  ${name}: {}`);
  }
  return [
    '# Generated by test/harness/ejabberd.ts; removed with its temp dir by stop().',
    'hosts:',
    `  - ${yq(o.domain)}`,
    `loglevel: ${o.logLevel}`,
    'log_rotate_count: 0',
    'hide_sensitive_log_data: false',
    'certfiles:',
    `  - ${yq(o.certFile)}`,
    // No ACME: nothing may try to reach Let's Encrypt (there is no HTTP listener anyway).
    'acme:',
    '  auto: false',
    // auth_method internal (Mnesia); auth_password_format is left at its default (plain), which
    // makes ejabberd pick a fresh random SCRAM salt on every exchange: the point of this upstream.
    'auth_method: internal',
    // No s2s listener below, and no outgoing s2s either (it would do DNS lookups off loopback).
    's2s_access: none',
    'shaper_rules:',
    '  c2s_shaper: none',
    '  max_user_sessions: 1000',
    '  max_user_offline_messages: 10000',
    // Loopback, c2s only: no s2s, HTTP, MQTT, STUN or component listeners.
    'listen:',
    '  -',
    `    port: ${o.port}`,
    `    ip: ${yq('127.0.0.1')}`,
    '    module: ejabberd_c2s',
    '    shaper: c2s_shaper',
    `    max_stanza_size: ${o.maxStanzaSize}`,
    // The default backlog (5) drops connects when a test opens many clients at once.
    '    backlog: 1024',
    '    starttls: true',
    `    starttls_required: ${o.tls === 'required'}`,
    'modules:',
    ...modules,
    '',
  ].join('\n');
}

/**
 * `pid -> { ppid, cmdline }` of every live process, from /proc. Synchronous (a few ms) so kill()
 * can take a snapshot before its signal lands.
 */
function processTable(): Map<number, { ppid: number; cmdline: string }> {
  const table = new Map<number, { ppid: number; cmdline: string }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const statText = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the parenthesised comm: state ppid ...
      const rest = statText.slice(statText.lastIndexOf(')') + 2).split(' ');
      if (rest[0] === 'Z') continue; // zombies hold nothing
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      table.set(Number(entry), { ppid: Number(rest[1]), cmdline });
    } catch {
      // exited while we looked
    }
  }
  return table;
}

/** Every descendant of `root` (children, their children...), pid -> cmdline. */
function descendants(root: number): Map<number, string> {
  const table = processTable();
  const found = new Map<number, string>();
  let frontier = [root];
  while (frontier.length > 0) {
    const next: number[] = [];
    for (const [pid, p] of table) {
      if (frontier.includes(p.ppid) && !found.has(pid)) {
        found.set(pid, p.cmdline);
        next.push(pid);
      }
    }
    frontier = next;
  }
  return found;
}

/** Implementation of {@link EjabberdInstance}; one beam at a time, restartable. */
class Instance extends ServerInstance implements EjabberdInstance {
  distPort = 0;
  /**
   * The beam's descendants seen so far (erl_child_setup and what it spawned), pid -> cmdline;
   * reapLeftovers() makes sure none outlives the beam. They hold the beam's stdout/stderr, so a
   * survivor would also keep this Node process from exiting.
   */
  private readonly helpers = new Map<number, string>();

  constructor(
    place: ServerPlace,
    readonly caFile: string,
    readonly nodeName: string,
    private readonly spoolDir: string,
    private readonly inst: Installation,
  ) {
    super('ejabberd', place, STOP_GRACE_MS);
  }

  /** Environment of the server and control nodes: nothing inherited that erl would read (ERL_FLAGS...). */
  private env(): NodeJS.ProcessEnv {
    return {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      LANG: 'C.UTF-8',
      // erl reads (and creates) .erlang.cookie in HOME; ejabberd keeps contrib modules there.
      HOME: this.dir,
      ERL_LIBS: this.inst.erlLibs,
      ERL_CRASH_DUMP_BYTES: '0',
      ERL_CRASH_DUMP: path.join(path.dirname(this.logFile), 'erl_crash.dump'),
      // Only consulted if an epmd were ever started (it is not: -start_epmd false).
      ERL_EPMD_ADDRESS: '127.0.0.1',
      ERL_MAX_PORTS: '32000',
      ERL_MAX_ETS_TABLES: '1400',
      // Name lookups from the hosts table only: no inet_gethost port programs, no DNS.
      ERL_INETRC: path.join(this.dir, 'inetrc'),
      EJABBERD_CONFIG_PATH: this.configFile,
      EJABBERD_LOG_PATH: this.logFile,
      CONTRIB_MODULES_PATH: path.join(this.dir, 'contrib'),
    };
  }

  /** Distribution flags shared by the server and the control nodes: no epmd, loopback only. */
  private distArgs(): string[] {
    return ['-kernel', 'inet_dist_use_interface', '{127,0,0,1}', '-erl_epmd_port', String(this.distPort), '-start_epmd', 'false'];
  }

  /** [file, argv] running erl as the ejabberd user (when root) with pdeathsig. */
  private command(erlArgs: string[]): [string, string[]] {
    const { setpriv, runAs, erl } = this.inst;
    if (!setpriv) return [erl, erlArgs];
    // setpriv applies --pdeathsig after the uid switch (which would otherwise clear it), then
    // execs erl -> erlexec -> beam.smp: the kernel SIGKILLs the beam if this Node process dies
    // without running its 'exit' handler. (pdeathsig is tied to the spawning thread.)
    const who = runAs ? ['--reuid', String(runAs.uid), '--regid', String(runAs.gid), '--clear-groups'] : [];
    return [setpriv, [...who, '--pdeathsig', 'KILL', '--', erl, ...erlArgs]];
  }

  /** Spawn the beam and wait until the c2s port answers a stream header with stream features. */
  async launch(): Promise<void> {
    // A fresh distribution port per launch: the old one may linger after a SIGKILL.
    this.distPort = await freePort();
    const [file, argv] = this.command([
      '-sname', this.nodeName,
      '-noinput',
      // No scheduler busy-waiting: tests share 2 cores with the proxy and another test file.
      '+sbwt', 'none', '+sbwtdcpu', 'none', '+sbwtdio', 'none',
      '+P', '250000',
      '-env', 'ERL_CRASH_DUMP_BYTES', '0',
      ...this.distArgs(),
      '-mnesia', 'dir', erlString(this.spoolDir),
      '-s', 'ejabberd',
    ]);
    const listening = `Start accepting TCP connections at 127.0.0.1:${this.c2sPort} for ejabberd_c2s`;
    await this.startServer(file, argv, this.env(), {
      serving: `serve XMPP on 127.0.0.1:${this.c2sPort}`,
      timeoutMs: READY_TIMEOUT_MS,
      pollMs: 100,
      portTaken: (log) => log.includes('address already in use'),
      // The log line proves this launch bound the port (not some other listener); the probe
      // proves it serves XMPP.
      ready: async (log) => log.includes(listening) && (await probeFeatures(this.c2sPort, this.domain, 2000)) !== undefined,
    });
    this.recordHelpers();
  }

  /** SIGTERM (+SIGCONT), SIGKILL after the grace period, then reap what the node left behind. */
  protected override async terminate(): Promise<void> {
    // beam.smp turns SIGTERM into init:stop(): ejabberd stops its modules, Mnesia closes its
    // dets files.
    this.recordHelpers();
    await super.terminate();
    await this.reapLeftovers();
  }

  /**
   * Kill any process still carrying this instance's unique node name (a control node stuck in an
   * rpc, a beam that escaped) and any recorded descendant of the beam still running the same
   * command (they normally exit on their own once the beam is gone). No epmd is ever started
   * (-start_epmd false), and no inet_gethost either (ERL_INETRC: file lookups only).
   */
  private async reapLeftovers(): Promise<void> {
    for (let round = 0; round < 20; round++) {
      const table = processTable();
      const left = [...table]
        .filter(([pid, p]) => pid !== process.pid && (p.cmdline.includes(this.nodeName) || this.helpers.get(pid) === p.cmdline))
        .map(([pid]) => pid);
      if (left.length === 0) break;
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      await sleep(50);
    }
    this.helpers.clear();
  }

  /** Remember the running beam's descendants so stop() can make sure they are gone. */
  private recordHelpers(): void {
    const pid = this.pid;
    if (pid === undefined) return;
    for (const [p, cmdline] of descendants(pid)) this.helpers.set(p, cmdline);
  }

  /** Run a short-lived hidden Erlang node with these extra arguments; resolves with stdout. */
  private runNode(extraArgs: string[]): Promise<string> {
    if (this.pid === undefined) return Promise.reject(new Error('ejabberd is not running'));
    const [file, argv] = this.command([
      '-sname', `ctl${randomBytes(4).toString('hex')}@localhost`,
      '-hidden',
      '-noinput',
      ...this.distArgs(),
      '-dist_listen', 'false',
      ...extraArgs,
    ]);
    return new Promise((resolve, reject) => {
      const child = execFile(file, argv, { cwd: this.dir, env: this.env(), timeout: CTL_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
        if (err) reject(new Error(`erl ${extraArgs.join(' ')} failed: ${err.message}\n${stdout}${stderr}`.trim()));
        else resolve(stdout);
      });
      killAtExit(child);
    });
  }

  ctl(args: string[]): Promise<string> {
    return this.runNode(['-s', 'ejabberd_ctl', '-extra', this.nodeName, ...args]);
  }

  /**
   * Register accounts (none: only sync) through rpc, then dets:sync every disc_only table. Strings
   * travel hex-encoded so no quoting or argv encoding can mangle them.
   */
  async registerAll(accounts: Array<{ user: string; password: string }>): Promise<void> {
    const code = [
      '[N | Hex] = init:get_plain_arguments(),',
      'Node = list_to_atom(N),',
      'D = fun(H) -> binary:decode_hex(list_to_binary(H)) end,',
      'Reg = fun Loop([U, H, P | T]) -> [{D(U), rpc:call(Node, ejabberd_auth, try_register, [D(U), D(H), D(P)])} | Loop(T)]; Loop([]) -> [] end,',
      'Rs = Reg(Hex),',
      'Tabs = rpc:call(Node, mnesia, system_info, [local_tables]),',
      'Ss = [{T, rpc:call(Node, dets, sync, [T])} || T <- Tabs, rpc:call(Node, mnesia, table_info, [T, storage_type]) =:= disc_only_copies],',
      'Bad = [R || {_, Res} = R <- Rs, Res =/= ok] ++ [S || {_, Res} = S <- Ss, Res =/= ok],',
      'io:format("registered ~p~nsynced ~p~n", [Rs, Ss]),',
      'halt(case {Bad, Ss} of {[], [_ | _]} -> 0; _ -> 1 end).',
    ].join(' ');
    const args = accounts.flatMap((a) => [hex(a.user), hex(this.domain), hex(a.password)]);
    await this.runNode(['-eval', code, '-extra', this.nodeName, ...args]);
  }

  register(user: string, password: string): Promise<void> {
    return this.registerAll([{ user, password }]);
  }

  sync(): Promise<void> {
    return this.registerAll([]);
  }

  override kill(signal: NodeJS.Signals): void {
    // A SIGKILLed beam cannot clean up: note its descendants first for the next stop()/restart().
    if (signal === 'SIGKILL') this.recordHelpers();
    super.kill(signal);
  }
}

/**
 * Generate a config in a fresh temp dir, start ejabberd, wait until its c2s port serves XMPP,
 * register the accounts and flush them to disk.
 *
 * Throws (rather than letting tests skip) when ejabberd is not installed: a silently skipped
 * end-to-end suite would look green while testing nothing.
 */
export async function startEjabberd(opts: EjabberdOptions = {}): Promise<EjabberdInstance> {
  const inst = await findInstallation();
  const domain = opts.domain ?? 'proxy.test';
  const port = opts.c2sPort ?? (await freePort());

  const dir = await mkdtemp(path.join(os.tmpdir(), 'ejabberd-harness-'));
  removeDirAtExit(dir);
  let instance: Instance | undefined;
  try {
    const spoolDir = path.join(dir, 'spool');
    const logDir = path.join(dir, 'log');
    await mkdir(spoolDir);
    await mkdir(logDir);
    const configFile = path.join(dir, 'ejabberd.yml');
    const logFile = path.join(logDir, 'ejabberd.log');
    const caFile = path.join(dir, 'cert.pem');
    const keyFile = path.join(dir, 'key.pem');
    const pemFile = path.join(dir, 'ejabberd.pem');

    // 2-day validity: a leftover cert from a crashed run must not be trusted for long. P-256
    // rather than RSA: generating an RSA key costs about a second on a loaded 2-core machine.
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', `/CN=${domain}`, '-addext', `subjectAltName=DNS:${domain}`,
      '-keyout', keyFile, '-out', caFile,
    ]);
    // ejabberd wants certificate and key in one PEM; caFile keeps the certificate alone.
    await writeFile(pemFile, (await readFile(caFile, 'utf8')) + (await readFile(keyFile, 'utf8')), { mode: 0o600 });
    await rm(keyFile);
    await writeFile(
      configFile,
      buildConfig({
        domain,
        port,
        tls: opts.tls ?? 'required',
        mam: opts.mam ?? false,
        smacks: opts.smacks ?? false,
        modules: opts.modules ?? [],
        logLevel: opts.logLevel ?? 'info',
        certFile: pemFile,
        maxStanzaSize: opts.maxStanzaSize ?? 10 * 1024 * 1024,
      }),
    );
    // Resolver config (ERL_INETRC): 'localhost' (the node names' host) from here and /etc/hosts;
    // no native resolver helper processes, and no DNS queries leaving loopback.
    await writeFile(path.join(dir, 'inetrc'), '{lookup, [file]}.\n{host, {127,0,0,1}, ["localhost"]}.\n');
    // Private cookie for this node and its control nodes (erl reads $HOME/.erlang.cookie).
    const cookieFile = path.join(dir, '.erlang.cookie');
    await writeFile(cookieFile, randomBytes(16).toString('hex').toUpperCase(), { mode: 0o400 });
    await chmod(dir, 0o755);
    if (inst.runAs) {
      for (const p of [dir, spoolDir, logDir, pemFile, cookieFile]) await chown(p, inst.runAs.uid, inst.runAs.gid);
    }

    const nodeName = `ejh${randomBytes(4).toString('hex')}@localhost`;
    instance = new Instance({ domain, c2sPort: port, dir, configFile, logFile }, caFile, nodeName, spoolDir, inst);
    await instance.launch();
    const accounts = opts.accounts ?? [];
    if (accounts.length > 0) await instance.registerAll(accounts);
    return instance;
  } catch (err) {
    if (instance) await instance.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
