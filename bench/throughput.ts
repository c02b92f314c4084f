/**
 * Throughput, latency and CPU-per-message benchmark: client pairs talking (a) directly to
 * Prosody (its native mod_smacks) and (b) through the proxy (the proxy's own XEP-0198), with SM
 * enabled by the clients in both cases; plus a direct run without SM as a reference.
 *
 *   npm run bench -- [--pairs 8] [--window 16] [--seconds 10] [--warmup 2]
 *                    [--upstream-tls none|auto] [--paced-fraction 0.2] [--profile] [--quick]
 *
 * See bench/README.md for what is measured and how.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startProsody, freePort, type ProsodyInstance } from '../test/harness/prosody.ts';
import { runPhase, type PhaseResult, type PhaseSpec } from './lib/phase.ts';
import { startProxyProcess, type ProxyProcess } from './lib/proxy-process.ts';
import { clockTicks } from './lib/proc.ts';
import { formatSummary, summarizeProfile, type ProfileSummary } from './lib/cpuprofile.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench', 'results');
const DOMAIN = 'proxy.test';
const PASSWORD = 'bench-password';

const TARGET_THROUGHPUT_RATIO = 0.95;
const TARGET_CPU_RATIO = 0.33;

const USAGE = `usage: npm run bench -- [options]   (or: npx tsx bench/throughput.ts [options])

  --pairs N             sender/receiver client pairs (default 8)
  --window W            messages in flight per sender at saturation (default 16)
  --seconds D           measured seconds per phase (default 10)
  --warmup S            warm-up seconds per phase before measuring (default 2)
  --upstream-tls MODE   proxy to Prosody: none (plain TCP, default) or auto
                        (STARTTLS verified with --upstream-ca <Prosody's certificate>)
  --paced-fraction F    paced phases run at F x the direct SM saturation rate (default 0.2)
  --paced-rate R        paced phases run at R msg/s in total (overrides --paced-fraction)
  --prosody-nodelay     diagnostic: turn Nagle's algorithm off in Prosody
                        (network_settings = { nagle = false }; Prosody's default is on)
  --profile             run the proxy under node --cpu-prof and summarize the hot spots
  --quick               short smoke run (2 pairs, 1 s + 0.5 s warm-up per phase)
  --proxy-log-level L   the proxy's --log-level (default warn); its output is kept in
                        bench/results/proxy.log
  --client-r-every N    clients send <r/> after every N stanzas they send (default 50)
  --check               exit 1 when a target is missed (errors always exit 1)
  --out FILE            JSON output (default bench/results/latest.json, quick.json with --quick)
  -h, --help            this text
`;

interface Options {
  pairs: number;
  window: number;
  seconds: number;
  warmup: number;
  upstreamTls: 'none' | 'auto';
  pacedFraction: number;
  pacedRate: number | undefined;
  profile: boolean;
  prosodyNoDelay: boolean;
  proxyLogLevel: string;
  rEvery: number;
  quick: boolean;
  check: boolean;
  out: string;
}

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      pairs: { type: 'string' },
      window: { type: 'string' },
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      'upstream-tls': { type: 'string' },
      'paced-fraction': { type: 'string' },
      'paced-rate': { type: 'string' },
      profile: { type: 'boolean' },
      'prosody-nodelay': { type: 'boolean' },
      'proxy-log-level': { type: 'string' },
      'client-r-every': { type: 'string' },
      quick: { type: 'boolean' },
      check: { type: 'boolean' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const num = (name: string, v: string | undefined, def: number, min: number): number => {
    if (v === undefined) return def;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min} (got ${JSON.stringify(v)})`);
    return n;
  };
  const quick = values.quick === true;
  const upstreamTls = values['upstream-tls'] ?? 'none';
  if (upstreamTls !== 'none' && upstreamTls !== 'auto') throw new Error(`--upstream-tls must be none or auto (got ${upstreamTls})`);
  return {
    pairs: Math.floor(num('pairs', values.pairs, quick ? 2 : 8, 1)),
    window: Math.floor(num('window', values.window, 16, 1)),
    seconds: num('seconds', values.seconds, quick ? 1 : 10, 0.1),
    warmup: num('warmup', values.warmup, quick ? 0.5 : 2, 0),
    upstreamTls,
    pacedFraction: num('paced-fraction', values['paced-fraction'], 0.2, 0.001),
    pacedRate: values['paced-rate'] === undefined ? undefined : num('paced-rate', values['paced-rate'], 0, 1),
    profile: values.profile === true,
    prosodyNoDelay: values['prosody-nodelay'] === true,
    proxyLogLevel: values['proxy-log-level'] ?? 'warn',
    rEvery: Math.floor(num('client-r-every', values['client-r-every'], 50, 1)),
    quick,
    check: values.check === true,
    out: values.out ?? path.join(RESULTS, quick ? 'quick.json' : 'latest.json'),
  };
}

const t0 = performance.now();
function log(line: string): void {
  process.stdout.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);
}

function prosodyVersion(): string {
  try {
    return execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'prosody'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/** Which proxy code ran: the checked-out commit (read from .git, no git command) and a hash of src/. */
function sourceInfo(): { commit: string; srcSha256: string } {
  let commit = 'unknown';
  try {
    const head = readFileSync(path.join(ROOT, '.git', 'HEAD'), 'utf8').trim();
    if (head.startsWith('ref: ')) {
      const ref = head.slice(5);
      const loose = path.join(ROOT, '.git', ref);
      if (existsSync(loose)) commit = readFileSync(loose, 'utf8').trim();
      else {
        const packed = readFileSync(path.join(ROOT, '.git', 'packed-refs'), 'utf8');
        commit = packed.split('\n').find((l) => l.endsWith(` ${ref}`))?.split(' ')[0] ?? 'unknown';
      }
    } else commit = head;
  } catch {
    // not a git checkout
  }
  const hash = createHash('sha256');
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) hash.update(path.relative(ROOT, p)).update('\0').update(readFileSync(p)).update('\0');
    }
  };
  walk(path.join(ROOT, 'src'));
  return { commit, srcSha256: hash.digest('hex').slice(0, 16) };
}

const f = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
const pct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(0)}%` : '-');

function mainTable(results: PhaseResult[]): string {
  return table(
    ['phase', 'msg/s', 'p50 ms', 'p99 ms', 'proxy µs/msg', 'prosody µs/msg', 'bench µs/msg', 'errors'],
    results.map((r) => [
      r.label,
      f(r.rate),
      f(r.latencyMs.p50, 2),
      f(r.latencyMs.p99, 2),
      f(r.usPerMsg.proxy, 1),
      f(r.usPerMsg.prosody, 1),
      f(r.usPerMsg.bench, 1),
      r.checks.errors.length ? String(r.checks.errors.length) : '0',
    ]),
  );
}

function detailTable(results: PhaseResult[]): string {
  const sc = (rd: number, wr: number): string => `${f(rd, 2)} / ${f(wr, 2)}`;
  return table(
    ['phase', 'proxy core', 'prosody core', 'bench core', 'other core', 'machine busy', 'proxy rd/wr syscalls/msg', 'srv <r/>/100msg'],
    results.map((r) => [
      r.label,
      pct(r.coreShare.proxy),
      pct(r.coreShare.prosody),
      pct(r.coreShare.bench),
      pct(r.coreShare.other),
      pct(r.cpu.machineBusy),
      sc(r.syscallsPerMsg.proxyRead, r.syscallsPerMsg.proxyWrite),
      r.checks.serverAckRequestsPer100 === null ? '-' : f(r.checks.serverAckRequestsPer100, 1),
    ]),
  );
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

async function main(): Promise<number> {
  const o = options(process.argv.slice(2));
  const accountsNeeded = o.pairs * 2;
  log(`xmpp-sm-proxy benchmark: ${o.pairs} pairs, window ${o.window}, ${o.seconds} s measured after ${o.warmup} s warm-up per phase, upstream TLS ${o.upstreamTls}${o.quick ? ' (quick)' : ''}`);
  const src = sourceInfo();
  log(`proxy source: commit ${src.commit.slice(0, 12)}, src/ sha256 ${src.srcSha256} (the working tree as the proxy child loads it at start)`);
  log(`machine: ${os.cpus().length} cpus (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, prosody ${prosodyVersion()}, CLK_TCK ${clockTicks()}`);

  let prosody: ProsodyInstance | undefined;
  let proxy: ProxyProcess | undefined;
  const results: PhaseResult[] = [];
  let profile: ProfileSummary | undefined;
  try {
    log(`starting Prosody (mod_smacks on, tls optional${o.prosodyNoDelay ? ', Nagle off' : ''}) with ${accountsNeeded} accounts`);
    prosody = await startProsody({
      domain: DOMAIN,
      smacks: true,
      tls: 'optional',
      config: o.prosodyNoDelay ? 'network_settings = { nagle = false }' : undefined,
      accounts: Array.from({ length: accountsNeeded }, (_, i) => ({ user: `user${i + 1}`, password: PASSWORD })),
    });
    const keyFile = path.join(prosody.dir, 'certs', `${DOMAIN}.key`);
    const haveKey = prosody.caFile !== undefined && existsSync(keyFile);

    const listenPort = await freePort();
    const listenTlsPort = await freePort();
    // One directory per run: node writes one .cpuprofile per thread (tsx's loader hooks run in a
    // worker thread); the main thread's is the one with the most busy time.
    const profileDir = path.join(RESULTS, 'profiles', new Date().toISOString().replace(/[:.]/g, '-'));
    if (o.profile) await mkdir(profileDir, { recursive: true });
    proxy = await startProxyProcess({
      root: ROOT,
      domain: DOMAIN,
      upstreamHost: prosody.host,
      upstreamPort: prosody.c2sPort,
      upstreamTls: o.upstreamTls,
      upstreamCa: o.upstreamTls === 'auto' ? prosody.caFile : undefined,
      // Serve Prosody's certificate (same domain) instead of making the proxy generate one.
      cert: haveKey ? prosody.caFile : undefined,
      key: haveKey ? keyFile : undefined,
      listenPort,
      listenTlsPort,
      nodeArgs: o.profile ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [],
      logLevel: o.proxyLogLevel,
    });
    log(`Prosody pid ${prosody.pid} on 127.0.0.1:${prosody.c2sPort}; proxy pid ${proxy.pid} on 127.0.0.1:${listenPort} (STARTTLS)`);
    const proxyCommand = proxy.command.join(' ');
    log(`proxy command: ${proxyCommand}`);
    log(`proxy upstream TLS: ${o.upstreamTls === 'auto' ? `auto (STARTTLS to Prosody, verified with --upstream-ca ${prosody.caFile})` : 'none (plain TCP to Prosody)'}`);

    const base = {
      pairs: o.pairs,
      window: o.window,
      warmupMs: o.warmup * 1000,
      measureMs: o.seconds * 1000,
      domain: DOMAIN,
      host: '127.0.0.1',
      accounts: (i: number) => ({ sender: `user${2 * i + 1}`, receiver: `user${2 * i + 2}`, password: PASSWORD }),
      pids: { proxy: proxy.pid, prosody: prosody.pid },
      rEvery: o.rEvery,
    };
    const direct = { ...base, target: 'direct' as const, port: prosody.c2sPort };
    const viaProxy = { ...base, target: 'proxy' as const, port: listenPort };
    const run = async (spec: PhaseSpec): Promise<PhaseResult> => {
      log(`phase ${spec.name}: ${spec.label}`);
      const r = await runPhase(spec, log);
      results.push(r);
      // Let the servers finish closing the sessions before the next phase.
      await new Promise((res) => setTimeout(res, 500));
      return r;
    };

    await run({ ...direct, name: 'direct-nosm-sat', label: 'direct, no SM, saturation', sm: false, mode: 'saturation' });
    const directSat = await run({ ...direct, name: 'direct-sm-sat', label: 'direct, SM, saturation', sm: true, mode: 'saturation' });
    const pacedRate = Math.max(1, Math.round(o.pacedRate ?? directSat.rate * o.pacedFraction));
    const pacedLabel = o.pacedRate !== undefined ? `${pacedRate}/s` : `${pacedRate}/s = ${o.pacedFraction} x direct SM sat`;
    await run({ ...direct, name: 'direct-nosm-paced', label: `direct, no SM, paced ${pacedRate}/s`, sm: false, mode: 'paced', rate: pacedRate });
    await run({ ...direct, name: 'direct-sm-paced', label: `direct, SM, paced ${pacedRate}/s`, sm: true, mode: 'paced', rate: pacedRate });
    const proxySat = await run({ ...viaProxy, name: 'proxy-sm-sat', label: 'proxy, SM, saturation', sm: true, mode: 'saturation' });
    const proxyPaced = await run({ ...viaProxy, name: 'proxy-sm-paced', label: `proxy, SM, paced ${pacedRate}/s`, sm: true, mode: 'paced', rate: pacedRate });
    const directNoSm = results[0]!;
    const directPaced = results.find((r) => r.name === 'direct-sm-paced')!;

    const stopped = await proxy.stop();
    const proxyOutput = proxy.output().trim();
    await mkdir(RESULTS, { recursive: true });
    await writeFile(path.join(RESULTS, 'proxy.log'), proxyOutput ? proxyOutput + '\n' : '');
    proxy = undefined;
    if (o.profile) {
      const files = (await readdir(profileDir)).filter((n) => n.endsWith('.cpuprofile'));
      const summaries = files.map((n) => summarizeProfile(path.join(profileDir, n), 25));
      profile = summaries.sort((a, b) => b.busyMs - a.busyMs)[0];
      if (!profile) log(`no CPU profile was written (proxy exit: ${JSON.stringify(stopped)})`);
    }

    const ratios = {
      smCostDirect: directSat.rate / directNoSm.rate,
      throughput: proxySat.rate / directSat.rate,
      cpuSaturation: proxySat.usPerMsg.proxy / proxySat.usPerMsg.prosody,
      cpuPaced: proxyPaced.usPerMsg.proxy / proxyPaced.usPerMsg.prosody,
      proxyVsDirectProsodyCpuSaturation: proxySat.usPerMsg.proxy / directSat.usPerMsg.prosody,
      addedLatencyPacedP50Ms: proxyPaced.latencyMs.p50 - directPaced.latencyMs.p50,
      addedLatencyPacedP99Ms: proxyPaced.latencyMs.p99 - directPaced.latencyMs.p99,
    };
    const throughputOk = ratios.throughput >= TARGET_THROUGHPUT_RATIO;
    const cpuOk = ratios.cpuSaturation <= TARGET_CPU_RATIO;
    const errors = results.flatMap((r) => r.checks.errors.map((e) => `${r.name}: ${e}`));

    const out: string[] = [];
    out.push('');
    out.push(`Results (${o.pairs} pairs, window ${o.window}, ${o.seconds} s measured per phase after ${o.warmup} s warm-up; ~100-byte bodies; proxy upstream TLS: ${o.upstreamTls})`);
    out.push('');
    out.push(mainTable(results));
    out.push('');
    out.push(detailTable(results));
    out.push('');
    out.push('  µs/msg = CPU time (utime+stime) of that process during the measured window / messages delivered in it.');
    out.push('  syscalls/msg = the proxy\'s read / write system calls (/proc/PID/io syscr, syscw) per message delivered.');
    out.push('  (Not shown for Prosody: LuaSocket\'s send/recv on plain sockets are not counted there, only TLS read/write.)');
    out.push('  core = CPU time / wall time (100% = one core). bench = this process (all clients); other = every other process on');
    out.push(`  the machine (${os.cpus().length} cores; a busy "other" means the figures are disturbed). srv <r/>/100msg = ack requests`);
    out.push('  the server (Prosody or proxy) sent to receivers per 100 messages delivered.');
    out.push('');
    out.push(`  Prosody SM cost, direct: SM / no-SM throughput        = ${f(ratios.smCostDirect, 3)}   (issue note: mod_smacks ~0.72)`);
    out.push(`  proxy / direct throughput at saturation, SM on       = ${f(ratios.throughput, 3)}   target >= ${TARGET_THROUGHPUT_RATIO}: ${throughputOk ? 'MET' : 'MISSED'}`);
    out.push(`  proxy CPU/msg / Prosody CPU/msg, proxy phase, sat    = ${f(ratios.cpuSaturation, 3)}   target <= ${TARGET_CPU_RATIO}: ${cpuOk ? 'MET' : 'MISSED'}`);
    out.push(`    (${f(proxySat.usPerMsg.proxy, 1)} µs vs ${f(proxySat.usPerMsg.prosody, 1)} µs; at the paced rate: ${f(proxyPaced.usPerMsg.proxy, 1)} µs vs ${f(proxyPaced.usPerMsg.prosody, 1)} µs = ${f(ratios.cpuPaced, 3)})`);
    out.push(`  proxy CPU/msg vs Prosody CPU/msg when direct (sat)    = ${f(ratios.proxyVsDirectProsodyCpuSaturation, 3)}`);
    out.push(`  latency added by the proxy at ${pacedLabel}: p50 ${f(ratios.addedLatencyPacedP50Ms, 2)} ms, p99 ${f(ratios.addedLatencyPacedP99Ms, 2)} ms`);
    if (errors.length) {
      out.push('');
      out.push('ERRORS:');
      for (const e of errors) out.push(`  ${e}`);
    }
    if (proxyOutput) {
      out.push('');
      out.push(`proxy output (log level ${o.proxyLogLevel}; all of it in bench/results/proxy.log):`);
      out.push(proxyOutput.split('\n').slice(-20).map((l) => `  ${l}`).join('\n'));
    }
    if (profile) {
      out.push('');
      out.push(formatSummary(profile));
    }
    process.stdout.write(out.join('\n') + '\n');

    const json = {
      date: new Date().toISOString(),
      command: `npx tsx bench/throughput.ts ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, prosody: prosodyVersion(), clkTck: clockTicks() },
      options: { pairs: o.pairs, window: o.window, seconds: o.seconds, warmup: o.warmup, upstreamTls: o.upstreamTls, pacedRate, quick: o.quick, prosodyNoDelay: o.prosodyNoDelay, clientREvery: o.rEvery, proxyLogLevel: o.proxyLogLevel },
      source: sourceInfo(),
      proxyCommand,
      phases: results,
      ratios,
      targets: {
        throughput: { target: TARGET_THROUGHPUT_RATIO, value: ratios.throughput, met: throughputOk },
        cpu: { target: TARGET_CPU_RATIO, value: ratios.cpuSaturation, met: cpuOk },
      },
      errors,
      profile: profile ? { file: path.relative(ROOT, profile.file), busyMs: profile.busyMs, modules: profile.modules, self: profile.self, inclusive: profile.inclusive } : undefined,
    };
    await mkdir(path.dirname(o.out), { recursive: true });
    await writeFile(o.out, JSON.stringify(json, null, 2) + '\n');
    log(`wrote ${path.relative(process.cwd(), o.out) || o.out}`);
    if (errors.length) return 1;
    if (o.check && !(throughputOk && cpuOk)) return 1;
    return 0;
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
