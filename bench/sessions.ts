/**
 * Session benchmark: memory per hibernated session (idle, and with queued stanzas) and resume
 * latency, with the proxy in a child process in front of a real Prosody.
 *
 *   npx tsx bench/sessions.ts [--sessions 10000] [--resumes 1000] [--quick] [--help]
 *
 * See the "sessions.ts" section of bench/README.md for what is measured and how.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startProsody, type ProsodyInstance } from '../test/harness/prosody.ts';
import { BenchClient } from './lib/client.ts';
import { LatencyRecorder, type LatencySummary } from './lib/stats.ts';
import { cpuDelta, cpuSnapshot, type CpuDelta, type CpuSnapshot } from './lib/proc.ts';
import type { ProxyStats, ProxyStatsDetail } from './lib/sessions-proxy-child.ts';
import { intArg } from './lib/args.ts';
import { gitCommit, srcSha256 } from './lib/source-info.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench', 'results');
const CHILD = path.join(ROOT, 'bench', 'lib', 'sessions-proxy-child.ts');
const DOMAIN = 'proxy.test';
const PASSWORD = 'bench-password';
const RESOURCE = 'bench';
const SENDER = 'sender';
const NOFILE = 200_000;

const USAGE = `usage: npx tsx bench/sessions.ts [options]

  --sessions N            sessions logged in, hibernated and measured (default 10000)
  --resumes R             sessions resumed for the latency figures (default 1000, at most N)
  --resume-batch B        resumes started together, batch after batch (default 200)
  --login-concurrency C   logins in flight (default 50)
  --queued Q              chat messages queued per hibernated session (default 100)
  --body-bytes S          body length of those messages (default 150)
  --send-window W         messages sent to Prosody but not yet queued at the proxy (default 4000;
                          the proxy's count is polled every 20 ms)
  --live-sessions L       sessions live at the same time for the "live" memory figure
                          (default N, capped so that the proxy's two descriptors per live
                          session fit under the file descriptor limit; the other N - L sessions
                          then log in and drop at once, C at a time, right after the first L
                          have hibernated)
  --hibernation-seconds H the proxy's sm.hibernationSeconds (default 3600: no session may time
                          out during the run)
  --quick                 smoke run: 500 sessions, 100 resumes
  --heap-snapshots        diagnostics: also write a V8 heap snapshot of the proxy at each memory
                          step (bench/results/sessions-heap/<step>.heapsnapshot; slow at large N)
  --out FILE              JSON output (default bench/results/sessions-latest.json,
                          sessions-quick.json with --quick)
  -h, --help              this text

File descriptors (per process): the proxy needs 2 per live session (client socket, upstream
link) and 1 per hibernated one; the clients (this process) 1 per live session; Prosody 1 per
session. When the soft limit is below 2 x N + 2000 the benchmark tries
'prlimit --pid <own pid> --nofile=${NOFILE}:${NOFILE}' (its children inherit the limit; going past
the hard limit needs CAP_SYS_RESOURCE). If that fails, fewer sessions are live at once (see
--live-sessions); N itself must stay below the limit.
`;

interface Options {
  sessions: number;
  resumes: number;
  resumeBatch: number;
  loginConcurrency: number;
  queued: number;
  bodyBytes: number;
  sendWindow: number;
  hibernationSeconds: number;
  liveSessions: number | undefined;
  heapSnapshots: boolean;
  quick: boolean;
  out: string;
}

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      sessions: { type: 'string' },
      resumes: { type: 'string' },
      'resume-batch': { type: 'string' },
      'login-concurrency': { type: 'string' },
      queued: { type: 'string' },
      'body-bytes': { type: 'string' },
      'send-window': { type: 'string' },
      'hibernation-seconds': { type: 'string' },
      'live-sessions': { type: 'string' },
      quick: { type: 'boolean' },
      'heap-snapshots': { type: 'boolean' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const quick = values.quick === true;
  const sessions = intArg('sessions', values.sessions, quick ? 500 : 10_000, 1);
  return {
    sessions,
    resumes: Math.min(sessions, intArg('resumes', values.resumes, quick ? 100 : 1000, 1)),
    resumeBatch: intArg('resume-batch', values['resume-batch'], 200, 1),
    loginConcurrency: intArg('login-concurrency', values['login-concurrency'], 50, 1),
    queued: intArg('queued', values.queued, 100, 1),
    bodyBytes: intArg('body-bytes', values['body-bytes'], 150, 16),
    sendWindow: intArg('send-window', values['send-window'], 4000, 1),
    hibernationSeconds: intArg('hibernation-seconds', values['hibernation-seconds'], 3600, 60),
    liveSessions: values['live-sessions'] === undefined ? undefined : Math.min(sessions, intArg('live-sessions', values['live-sessions'], sessions, 1)),
    heapSnapshots: values['heap-snapshots'] === true,
    quick,
    out: values.out ?? path.join(RESULTS, quick ? 'sessions-quick.json' : 'sessions-latest.json'),
  };
}

const t0 = performance.now();
function log(line: string): void {
  process.stdout.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- environment ----------------------------------------------------------------------------

function softNofile(): number {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === 'unlimited' ? Infinity : Number(soft);
}

/**
 * Raises RLIMIT_NOFILE of this process (children inherit it) when it is below `wanted`, with
 * prlimit on our own pid. That needs CAP_SYS_RESOURCE to go past the hard limit: in containers
 * that drop it (as on the machine this was written on: hard limit 20000 even for root) the
 * limit stays, and the benchmark works around it (see `liveCap` in main).
 */
function raiseNofile(wanted: number): { limit: number; note: string } {
  const before = softNofile();
  if (before >= wanted) return { limit: before, note: `nofile ${before} (enough for ~${wanted})` };
  try {
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${NOFILE}:${NOFILE}`], { stdio: 'pipe' });
  } catch (err) {
    const why = ((err as { stderr?: Buffer }).stderr?.toString() || (err as Error).message).trim().split('\n')[0];
    return {
      limit: before,
      note: `nofile ${before}: 'prlimit --pid ${process.pid} --nofile=${NOFILE}:${NOFILE}' failed (${why}); ~${wanted} wanted`,
    };
  }
  const after = softNofile();
  return { limit: after, note: `nofile raised from ${before} to ${after} with prlimit (~${wanted} wanted)` };
}

/** Open file descriptors of a process (/proc/PID/fd entries), NaN when unknown. */
function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

function prosodyVersion(): string {
  try {
    return execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'prosody'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/** Resident set size of a process in bytes (/proc/PID/status VmRSS), NaN when unknown. */
function rssOf(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

// ---- accounts -------------------------------------------------------------------------------

/**
 * Creates `users` as copies of the account file prosodyctl wrote for `template` (internal_hashed:
 * data/<escaped host>/accounts/<user>.dat holding salt, iteration count, stored and server key).
 * Same password, hence the same salt and keys in every copy: SCRAM and PLAIN work unchanged;
 * only the salt is shared, which matters for security, not for this benchmark. Prosody's
 * internal storage reads the file at each login, so copies made while it runs are seen.
 */
async function cloneAccounts(prosody: ProsodyInstance, template: string, users: string[]): Promise<void> {
  const data = path.join(prosody.dir, 'data');
  let dir: string | undefined;
  for (const host of await readdir(data)) {
    const candidate = path.join(data, host, 'accounts');
    if (existsSync(path.join(candidate, `${template}.dat`))) dir = candidate;
  }
  if (!dir) throw new Error(`cannot find ${template}.dat under ${data}`);
  const src = path.join(dir, `${template}.dat`);
  for (let i = 0; i < users.length; i += 500) {
    await Promise.all(users.slice(i, i + 500).map((u) => copyFile(src, path.join(dir!, `${u}.dat`))));
  }
}

// ---- the proxy child ------------------------------------------------------------------------

interface Mem {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

class ProxyChild {
  readonly pid: number;
  readonly port: number;
  readonly command: string;
  #child: ChildProcess;
  #seq = 0;
  #pending = new Map<number, (msg: Record<string, unknown>) => void>();
  #output = '';
  #exited = false;

  private constructor(child: ChildProcess, pid: number, port: number, command: string) {
    this.#child = child;
    this.pid = pid;
    this.port = port;
    this.command = command;
    child.on('message', (msg: Record<string, unknown>) => {
      const id = msg.id as number | undefined;
      if (id === undefined) return;
      this.#pending.get(id)?.(msg);
      this.#pending.delete(id);
    });
  }

  static async start(settings: { domain: string; upstreamPort: number; hibernationSeconds: number; maxQueueSize: number }): Promise<ProxyChild> {
    const nodeArgs = ['--expose-gc', '--import', 'tsx', CHILD];
    // setpriv --pdeathsig: the kernel kills the child if the benchmark dies without cleaning up
    // (setpriv execs node: the PID, the IPC fd and the environment stay the same).
    const setpriv = existsSync('/usr/bin/setpriv') ? '/usr/bin/setpriv' : undefined;
    const [file, argv] = setpriv ? [setpriv, ['--pdeathsig', 'KILL', process.execPath, ...nodeArgs]] : [process.execPath, nodeArgs];
    const child = spawn(file, argv, {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: { ...process.env, SESSIONS_PROXY_CONFIG: JSON.stringify(settings) },
    });
    let output = '';
    const collect = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-4 * 1024 * 1024);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    process.once('exit', () => child.kill('SIGKILL'));
    const ready = await new Promise<{ port: number; pid: number }>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`proxy child not ready within 60 s:\n${output}`)), 60_000);
      child.on('message', (msg: { ready?: boolean; port?: number; pid?: number; error?: string }) => {
        if (msg.ready) {
          clearTimeout(t);
          resolve({ port: msg.port!, pid: msg.pid! });
        } else if (msg.error) {
          clearTimeout(t);
          reject(new Error(`proxy child failed to start: ${msg.error}\n${output}`));
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(t);
        reject(new Error(`proxy child exited during startup (code ${code}, signal ${signal}):\n${output}`));
      });
    });
    const pc = new ProxyChild(child, ready.pid, ready.port, [process.execPath, ...nodeArgs].join(' '));
    child.stdout!.off('data', collect);
    child.stderr!.off('data', collect);
    pc.#output = output;
    const keep = (chunk: Buffer): void => {
      pc.#output = (pc.#output + chunk.toString('utf8')).slice(-4 * 1024 * 1024);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    child.once('exit', (code, signal) => {
      pc.#exited = true;
      const err = { error: `proxy child exited (code ${code}, signal ${signal})` };
      for (const resolve of pc.#pending.values()) resolve(err);
      pc.#pending.clear();
    });
    return pc;
  }

  output(): string {
    return this.#output;
  }

  #request(msg: Record<string, unknown>, timeoutMs = 120_000): Promise<Record<string, unknown>> {
    if (this.#exited) return Promise.reject(new Error('proxy child has exited'));
    const id = ++this.#seq;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`proxy child did not answer ${JSON.stringify(msg)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, (answer) => {
        clearTimeout(t);
        if (answer.error) reject(new Error(String(answer.error)));
        else resolve(answer);
      });
      this.#child.send({ ...msg, id });
    });
  }

  async mem(): Promise<Mem> {
    return (await this.#request({ cmd: 'mem' })).mem as Mem;
  }

  async stats(): Promise<ProxyStats> {
    return (await this.#request({ cmd: 'stats' })).stats as ProxyStats;
  }

  async statsDetail(): Promise<ProxyStatsDetail> {
    return (await this.#request({ cmd: 'stats', detail: true })).stats as ProxyStatsDetail;
  }

  async heapSnapshot(file: string): Promise<string> {
    return String((await this.#request({ cmd: 'heapsnapshot', file }, 600_000)).file);
  }

  async stop(): Promise<void> {
    if (this.#exited) return;
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    try {
      this.#child.send({ cmd: 'exit', id: 0 });
    } catch {
      this.#child.kill('SIGKILL');
    }
    const t = setTimeout(() => this.#child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
}

/** Polls the proxy's stats until `cond` holds; throws with the last stats after `timeoutMs`. */
async function waitStats(proxy: ProxyChild, what: string, cond: (s: ProxyStats) => boolean, timeoutMs: number): Promise<ProxyStats> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await proxy.stats();
    if (cond(s)) return s;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}; proxy stats: ${JSON.stringify(s)}`);
    await sleep(100);
  }
}

/** Runs `fn(i)` for i in [0, n) with at most `limit` in flight; rejects on the first failure. */
async function pool(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (next < n && failed === undefined) {
      const i = next++;
      try {
        await fn(i);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  if (failed !== undefined) throw failed;
}

// ---- report helpers -------------------------------------------------------------------------

const f = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
const mb = (x: number): string => f(x / 2 ** 20, 1);

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

interface Snapshot {
  label: string;
  proxy: Mem;
  prosodyRss: number;
  stats: ProxyStats;
}

interface Delta {
  heapUsed: number;
  external: number;
  rss: number;
}

const delta = (a: Mem, b: Mem, div: number): Delta => ({
  heapUsed: (b.heapUsed - a.heapUsed) / div,
  external: (b.external - a.external) / div,
  rss: (b.rss - a.rss) / div,
});

interface ResumeRun {
  queued: number;
  count: number;
  batch: number;
  /** TCP connect → `<resumed/>`. */
  fullToResumed: LatencySummary;
  /** TCP connect → last re-sent stanza. */
  fullToAll: LatencySummary;
  /** `<resume/>` sent → `<resumed/>`. */
  resumeToResumed: LatencySummary;
  /** `<resume/>` sent → last re-sent stanza. */
  resumeToAll: LatencySummary;
  /** Wall time of the whole run (all batches). */
  wallSeconds: number;
}

// ---- main -----------------------------------------------------------------------------------

async function main(): Promise<number> {
  const o = options(process.argv.slice(2));
  const N = o.sessions;
  const Q = o.queued;
  const command = `npx tsx bench/sessions.ts ${process.argv.slice(2).join(' ')}`.trim();
  log(`xmpp-sm-proxy session benchmark: ${N} sessions, ${Q} queued each, ${o.resumes} resumes (${o.resumeBatch} at a time)${o.quick ? ' (quick)' : ''}`);
  log(`machine: ${os.cpus().length} cpus, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, node ${process.version}, prosody ${prosodyVersion()}, commit ${gitCommit().slice(0, 12)}, src/ sha256 ${srcSha256()}`);
  const fd = raiseNofile(2 * N + 2000);
  log(fd.note);
  // The proxy needs one descriptor per hibernated session (its upstream link) and two per live
  // one (client socket + upstream link); every process inherits our limit.
  if (N + o.resumeBatch + 500 > fd.limit) {
    throw new Error(`${N} hibernated sessions need more than the ${fd.limit} file descriptors allowed per process; use fewer --sessions or raise the limit (ulimit -n ${NOFILE} as root)`);
  }

  const errors: string[] = [];
  const phases: Record<string, number> = {};
  /** CPU charged to the measured phases, with the count of operations (logins, messages, resumes). */
  const cpu: Array<{ phase: string; ops: number; unit: string; delta: CpuDelta }> = [];
  let cpuAt: CpuSnapshot | undefined;
  const cpuStart = (): void => {
    cpuAt = cpuSnapshot(proxy?.pid, prosody?.pid);
  };
  const cpuEnd = (phase: string, ops: number, unit: string): void => {
    cpu.push({ phase, ops, unit, delta: cpuDelta(cpuAt!, cpuSnapshot(proxy?.pid, prosody?.pid)) });
  };
  const snapshots: Snapshot[] = [];
  let prosody: ProsodyInstance | undefined;
  let proxy: ProxyChild | undefined;
  /** src/ as the proxy child loaded it. */
  let srcAtStart = '';
  try {
    // -- upstream ------------------------------------------------------------------------------
    let t = performance.now();
    prosody = await startProsody({ domain: DOMAIN, tls: 'none', smacks: false, accounts: [{ user: 'user0', password: PASSWORD }] });
    const users = Array.from({ length: N }, (_, i) => `user${i}`);
    await cloneAccounts(prosody, 'user0', [...users.slice(1), SENDER]);
    phases.prosodyStartAndAccounts = (performance.now() - t) / 1000;
    log(`Prosody pid ${prosody.pid} on 127.0.0.1:${prosody.c2sPort} (tls none, smacks off); ${N + 1} accounts (user0 by prosodyctl, the rest copies of its file) in ${f(phases.prosodyStartAndAccounts, 1)} s`);

    // -- proxy ---------------------------------------------------------------------------------
    srcAtStart = srcSha256();
    proxy = await ProxyChild.start({ domain: DOMAIN, upstreamPort: prosody.c2sPort, hibernationSeconds: o.hibernationSeconds, maxQueueSize: Math.max(500, Q * 2) });
    log(`proxy child pid ${proxy.pid} on 127.0.0.1:${proxy.port} (STARTTLS; upstream plain TCP): ${proxy.command}`);
    const snap = async (label: string): Promise<Snapshot> => {
      const stats = await proxy!.stats();
      const s: Snapshot = { label, proxy: await proxy!.mem(), prosodyRss: rssOf(prosody!.pid), stats };
      snapshots.push(s);
      if (o.heapSnapshots) {
        const dir = path.join(RESULTS, 'sessions-heap');
        await mkdir(dir, { recursive: true });
        const file = await proxy!.heapSnapshot(path.join(dir, `${snapshots.length}-${label.replace(/[^a-z0-9]+/gi, '-')}.heapsnapshot`));
        log(`heap snapshot: ${path.relative(ROOT, file)}`);
      }
      log(`memory [${label}]: proxy heapUsed ${mb(s.proxy.heapUsed)} MiB, external ${mb(s.proxy.external)} MiB, rss ${mb(s.proxy.rss)} MiB; Prosody rss ${mb(s.prosodyRss)} MiB; ${JSON.stringify(stats)}`);
      return s;
    };
    await sleep(500);
    const base = await snap('baseline');
    let liveSnap: Snapshot | undefined;

    // -- logins: L live at once, then hibernation -------------------------------------------
    // The proxy holds 2 descriptors per live session: with a low limit only liveCap can be live.
    const proxyBaseFds = fdCount(proxy.pid);
    const liveCap = Math.floor((fd.limit - (Number.isFinite(proxyBaseFds) ? proxyBaseFds : 100) - 200) / 2 / 100) * 100;
    const L = Math.min(o.liveSessions ?? N, liveCap, N);
    if (L < N) log(`only ${L} of the ${N} sessions can be live at once under the ${fd.limit} descriptor limit (proxy: 2 per live session, ${proxyBaseFds} open at start): the live figure is for ${L}`);
    const clients: Array<BenchClient | undefined> = new Array(L);
    const smIds: string[] = new Array(N);
    const hAtDrop = new Array<number>(N).fill(0);
    const login = async (i: number): Promise<BenchClient> => {
      const c = await BenchClient.login({ host: '127.0.0.1', port: proxy!.port, domain: DOMAIN, user: users[i]!, password: PASSWORD, resource: RESOURCE, sm: true, timeoutMs: 60_000 });
      if (!c.smId) throw new Error(`no resumption id for ${users[i]}`);
      smIds[i] = c.smId;
      return c;
    };
    let done = 0;
    const progress = setInterval(() => log(`  logged in ${done}/${N}`), 10_000);
    try {
      t = performance.now();
      cpuStart();
      await pool(L, o.loginConcurrency, async (i) => {
        clients[i] = await login(i);
        done++;
      });
      phases.login = (performance.now() - t) / 1000;
      cpuEnd('login', L, 'login');
      log(`${L} logins (STARTTLS, SASL PLAIN, bind, enable resume) in ${f(phases.login, 1)} s = ${f(L / phases.login)}/s with ${o.loginConcurrency} in flight`);
      await waitStats(proxy, `${L} attached sessions`, (s) => s.sessions === L && s.attached === L, 60_000);
      await sleep(500);
      const live = await snap(`${L} live sessions`);

      // -- drop every client -> hibernation ---------------------------------------------------
      t = performance.now();
      for (let i = 0; i < L; i++) {
        const c = clients[i]!;
        hAtDrop[i] = c.h;
        if (c.error) errors.push(`${users[i]}: ${c.error}`);
        c.destroy();
        clients[i] = undefined;
      }
      await waitStats(proxy, `${L} hibernating sessions`, (s) => s.hibernating === L, 120_000);
      phases.hibernate = (performance.now() - t) / 1000;
      log(`all ${L} clients dropped their TCP connection; ${L} sessions hibernating after ${f(phases.hibernate, 1)} s`);
      if (L < N) {
        t = performance.now();
        cpuStart();
        await pool(N - L, o.loginConcurrency, async (k) => {
          const i = L + k;
          const c = await login(i);
          hAtDrop[i] = c.h;
          if (c.error) errors.push(`${users[i]}: ${c.error}`);
          c.destroy();
          done++;
        });
        await waitStats(proxy, `${N} hibernating sessions`, (s) => s.hibernating === N, 120_000);
        phases.loginAndDropRest = (performance.now() - t) / 1000;
        cpuEnd('login + drop', N - L, 'login');
        log(`the other ${N - L} sessions logged in and dropped at once (${o.loginConcurrency} at a time) in ${f(phases.loginAndDropRest, 1)} s; ${N} hibernating`);
      }
      liveSnap = live;
    } finally {
      clearInterval(progress);
    }
    await sleep(1000);
    const idle = await snap(`${N} hibernated, idle`);

    // -- Q messages to every hibernated session ----------------------------------------------
    t = performance.now();
    cpuStart();
    const sender = await BenchClient.login({ host: '127.0.0.1', port: prosody.c2sPort, domain: DOMAIN, user: SENDER, password: PASSWORD, resource: 'sender', sm: false });
    const total = N * Q;
    let sent = 0;
    const jids = users.map((u) => `${u}@${DOMAIN}/${RESOURCE}`);
    const bodyFor = (k: number, i: number): string => {
      const head = `m${k} to ${i} `;
      return head + 'x'.repeat(Math.max(0, o.bodyBytes - head.length));
    };
    let lastLog = Date.now();
    while (sent < total) {
      const s = await proxy.stats();
      const room = Math.min(o.sendWindow - (sent - s.queued), total - sent);
      for (let n = 0; n < room; n++, sent++) {
        const k = Math.floor(sent / N);
        const i = sent % N;
        sender.sendMessage(jids[i]!, `q${k}-${i}`, bodyFor(k, i));
      }
      if (Date.now() - lastLog > 10_000) {
        lastLog = Date.now();
        log(`  sent ${sent}/${total}, queued at the proxy ${s.queued}`);
      }
      // Each poll walks every session in the proxy: keep it rare enough not to weigh on its CPU.
      await sleep(20);
      if (sender.error) throw new Error(`sender: ${sender.error}`);
    }
    const queuedStats = await waitStats(proxy, `${total} queued stanzas`, (s) => s.queued >= total, 120_000);
    phases.send = (performance.now() - t) / 1000;
    cpuEnd('send', total, 'msg');
    log(`${total} messages (${o.bodyBytes}-byte bodies) sent to the hibernated sessions through Prosody in ${f(phases.send, 1)} s = ${f(total / phases.send)}/s`);
    if (queuedStats.queued !== total) errors.push(`proxy queued ${queuedStats.queued} stanzas, expected ${total}`);
    if (queuedStats.hibernating !== N) errors.push(`${queuedStats.hibernating} sessions hibernating after the send, expected ${N}`);
    await sender.close();
    await sleep(1000);
    const detail = await proxy.statsDetail();
    const avgStanzaChars = detail.queuedChars / Math.max(1, detail.queued);
    const withQueue = await snap(`${N} hibernated, ${Q} queued each`);

    // -- resume latency ------------------------------------------------------------------------
    const R = o.resumes;
    const hNow = hAtDrop.slice();
    const resumeRun = async (queued: number): Promise<ResumeRun> => {
      const fullToResumed = new LatencyRecorder();
      const fullToAll = new LatencyRecorder();
      const resumeToResumed = new LatencyRecorder();
      const resumeToAll = new LatencyRecorder();
      const start = performance.now();
      for (let b = 0; b < R; b += o.resumeBatch) {
        const idx = Array.from({ length: Math.min(o.resumeBatch, R - b) }, (_, k) => b + k);
        const settled = await Promise.allSettled(
          idx.map((i) =>
            BenchClient.resume({ host: '127.0.0.1', port: proxy!.port, domain: DOMAIN, user: users[i]!, password: PASSWORD, previd: smIds[i]!, h: hNow[i]!, expect: queued }),
          ),
        );
        const resumed: BenchClient[] = [];
        for (const [k, s] of settled.entries()) {
          if (s.status === 'rejected') {
            errors.push(`resume (${queued} queued) ${users[idx[k]!]}: ${(s.reason as Error).message}`);
            continue;
          }
          const c = s.value;
          resumed.push(c);
          fullToResumed.add(c.times.resumed - c.times.start);
          fullToAll.add(c.times.allAt - c.times.start);
          resumeToResumed.add(c.times.resumed - c.times.resumeSent);
          resumeToAll.add(c.times.allAt - c.times.resumeSent);
          if (c.serverH !== 0) errors.push(`${users[idx[k]!]}: <resumed h='${c.serverH}'/>, expected 0 (the client sent no stanzas)`);
          if (c.resent !== queued) errors.push(`${users[idx[k]!]}: ${c.resent} stanzas re-sent after <resumed/>, expected ${queued}`);
        }
        // Not measured: acknowledge everything, then drop again (the session hibernates empty).
        await Promise.all(
          resumed.map(async (c) => {
            try {
              await c.ackAll();
            } catch (err) {
              errors.push(`ack after resume: ${(err as Error).message}`);
            }
            c.destroy();
          }),
        );
        for (const [k, s] of settled.entries()) if (s.status === 'fulfilled') hNow[idx[k]!] = s.value.h;
      }
      const wallSeconds = (performance.now() - start) / 1000;
      return {
        queued,
        count: fullToResumed.count,
        batch: o.resumeBatch,
        fullToResumed: fullToResumed.summary(),
        fullToAll: fullToAll.summary(),
        resumeToResumed: resumeToResumed.summary(),
        resumeToAll: resumeToAll.summary(),
        wallSeconds,
      };
    };
    t = performance.now();
    const resumes: ResumeRun[] = [];
    cpuStart();
    resumes.push(await resumeRun(Q));
    cpuEnd(`resume, ${Q} queued`, R, 'resume');
    log(`${R} resumes with ${Q} queued each in ${f(resumes[0]!.wallSeconds, 1)} s`);
    // Every resumed session acked its queue and was dropped again: N hibernating, R of them empty.
    await waitStats(proxy, `${N} hibernating, ${R} of them empty`, (s) => s.hibernating === N && s.queued === (N - R) * Q, 120_000);
    cpuStart();
    resumes.push(await resumeRun(0));
    cpuEnd('resume, 0 queued', R, 'resume');
    log(`${R} resumes with 0 queued in ${f(resumes[1]!.wallSeconds, 1)} s`);
    phases.resume = (performance.now() - t) / 1000;
    const end = await proxy.stats();
    if (end.sessions !== N) errors.push(`${end.sessions} sessions at the end, expected ${N}`);

    // -- report --------------------------------------------------------------------------------
    const perSession = {
      live: delta(base.proxy, liveSnap!.proxy, L),
      hibernatedIdle: delta(base.proxy, idle.proxy, N),
      hibernatedQueued: delta(base.proxy, withQueue.proxy, N),
    };
    const perStanza = delta(idle.proxy, withQueue.proxy, N * Q);
    const totalSeconds = (performance.now() - t0) / 1000;
    const proxyOutput = proxy.output().trim();

    const out: string[] = [''];
    out.push(`Proxy memory (child process, after global.gc() x2), ${N} sessions`);
    out.push('');
    out.push(
      table(
        ['state', 'heapUsed MiB', 'external MiB', 'rss MiB', 'Prosody rss MiB'],
        snapshots.map((s) => [s.label, mb(s.proxy.heapUsed), mb(s.proxy.external), mb(s.proxy.rss), mb(s.prosodyRss)]),
      ),
    );
    out.push('');
    const row = (label: string, d: Delta): string[] => [label, f(d.heapUsed), f(d.external), f(d.heapUsed + d.external), f(d.rss)];
    out.push(
      table(
        ['bytes per session (delta vs baseline / sessions)', 'heapUsed', 'external', 'heap+ext', 'rss'],
        [
          row(`live, client attached over TLS (/ ${L})`, perSession.live),
          row('hibernated, idle', perSession.hibernatedIdle),
          row(`hibernated, ${Q} queued`, perSession.hibernatedQueued),
        ],
      ),
    );
    out.push('');
    out.push(
      table(
        [`bytes per queued stanza (delta ${Q} queued vs idle / ${N * Q})`, 'heapUsed', 'external', 'heap+ext', 'rss'],
        [row(`stanza XML ${f(avgStanzaChars)} chars on average`, perStanza)],
      ),
    );
    out.push('');
    const lat = (s: LatencySummary): string => `${f(s.p50, 1)} / ${f(s.p99, 1)}`;
    out.push(`Resume latency, ms p50 / p99 (${R} sessions, ${o.resumeBatch} started together per batch)`);
    out.push('');
    out.push(
      table(
        ['queued', 'resumes', 'connect→<resumed/>', 'connect→last re-sent', '<resume/>→<resumed/>', '<resume/>→last re-sent', 'wall s'],
        resumes.map((r) => [String(r.queued), String(r.count), lat(r.fullToResumed), lat(r.fullToAll), lat(r.resumeToResumed), lat(r.resumeToAll), f(r.wallSeconds, 1)]),
      ),
    );
    out.push('');
    out.push('  connect→ = TCP connect, STARTTLS, SASL PLAIN, stream restart, <resume/>; "last re-sent" = the last');
    out.push('  queued stanza parsed by the client (= <resumed/> when nothing is queued). Times in the benchmark process,');
    out.push('  which runs the clients' + "' TLS too; the machine's cores are shared by clients, proxy and Prosody.");
    out.push('');
    const share = (us: number, d: CpuDelta): string => `${f((us / 1000 / d.wallMs) * 100)}%`;
    const perOp = (us: number, ops: number, unit: string): string => (unit === 'msg' ? `${f(us / ops, 1)} µs` : `${f(us / ops / 1000, 2)} ms`);
    out.push(
      table(
        ['CPU by phase', 'wall s', 'proxy', 'Prosody', 'bench', 'other', 'proxy CPU per op', 'Prosody CPU per op'],
        cpu.map(({ phase, ops, unit, delta: d }) => [
          `${phase} (${ops} ${unit}s)`,
          f(d.wallMs / 1000, 1),
          share(d.proxyUs, d),
          share(d.prosodyUs, d),
          share(d.benchUs, d),
          share(d.otherUs, d),
          perOp(d.proxyUs, ops, unit),
          perOp(d.prosodyUs, ops, unit),
        ]),
      ),
    );
    out.push('  % = CPU time / wall time (100% = one core); other = every other process on the machine (a busy "other"');
    out.push(`  means the run was disturbed: ${os.cpus().length} cores in all). Resume phases include each client's ack and drop.`);
    out.push('');
    out.push(`Phases (s): ${Object.entries(phases).map(([k, v]) => `${k} ${f(v, 1)}`).join(', ')}; total run ${f(totalSeconds, 1)} s`);
    if (errors.length) {
      out.push('');
      out.push(`ERRORS (${errors.length}):`);
      for (const e of errors.slice(0, 30)) out.push(`  ${e}`);
      if (errors.length > 30) out.push(`  … ${errors.length - 30} more in the JSON`);
    }
    if (proxyOutput) {
      out.push('');
      out.push('proxy output (log level warn), last lines:');
      out.push(proxyOutput.split('\n').slice(-10).map((l) => `  ${l}`).join('\n'));
    }
    process.stdout.write(out.join('\n') + '\n');

    const json = {
      date: new Date().toISOString(),
      command,
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, totalMemGiB: os.totalmem() / 2 ** 30, node: process.version, prosody: prosodyVersion() },
      commit: gitCommit(),
      srcSha256: srcAtStart,
      options: { ...o, out: path.relative(ROOT, o.out) },
      fdLimit: { ...fd, proxyBaseFds, liveCap, live: L },
      proxyCommand: proxy.command,
      snapshots,
      perSessionBytes: perSession,
      perQueuedStanzaBytes: { ...perStanza, avgStanzaChars },
      resumes,
      cpu,
      phasesSeconds: phases,
      totalSeconds,
      errors,
    };
    await mkdir(path.dirname(o.out), { recursive: true });
    await writeFile(o.out, JSON.stringify(json, null, 2) + '\n');
    if (proxyOutput) await writeFile(path.join(RESULTS, 'sessions-proxy.log'), proxyOutput + '\n');
    log(`wrote ${path.relative(process.cwd(), o.out) || o.out}`);
    return errors.length ? 1 : 0;
  } finally {
    if (proxy) await proxy.stop();
    if (prosody) await prosody.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
