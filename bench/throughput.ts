/**
 * Throughput, latency, ack latency and CPU-per-message benchmark: client pairs talking (a)
 * directly to Prosody (its native mod_smacks) and (b) through the proxy (the proxy's own
 * XEP-0198 with custody acks), with SM enabled by the clients in both cases; plus a direct run
 * without SM as a reference. The proxy phases run once per custody mode, each with its own proxy
 * child: `server-sm` (upstream.streamManagement: true, custody by Prosody's own XEP-0198 acks)
 * and `ping` (false, custody by XEP-0199 ping barriers).
 *
 *   npm run bench -- [--pairs 8] [--window 16] [--seconds 10] [--warmup 2]
 *                    [--upstream-tls none|auto] [--paced-fraction 0.2] [--custody server-sm,ping]
 *                    [--profile] [--quick]
 *
 * See bench/README.md for what is measured and how.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startProsody, freePort, type ProsodyInstance } from '../test/harness/prosody.ts';
import { runPhase, type Custody, type PhaseResult, type PhaseSpec } from './lib/phase.ts';
import { startProxyProcess, type ProxyProcess } from './lib/proxy-process.ts';
import { clockTicks } from './lib/proc.ts';
import { formatSummary, summarizeProfile, type ProfileSummary } from './lib/cpuprofile.ts';
import { numArg } from './lib/args.ts';
import { gitCommit, srcSha256 } from './lib/source-info.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench', 'results');
const DOMAIN = 'proxy.test';
const PASSWORD = 'bench-password';

const TARGET_THROUGHPUT_RATIO = 0.95;
const TARGET_CPU_RATIO = 0.33;

/** The proxy's custody modes, in run order, and the config each proxy child gets. */
const CUSTODY_MODES: Record<Custody, { streamManagement: boolean; what: string }> = {
  'server-sm': { streamManagement: true, what: "Prosody's own XEP-0198 acks" },
  ping: { streamManagement: false, what: 'XEP-0199 ping barriers' },
};
/** The proxy's warn line when server SM is abandoned on a link (src/upstream/upstream.ts). */
const SM_FALLBACK_LOG = 'custody falls back to ping barriers';

const USAGE = `usage: npm run bench -- [options]   (or: npx tsx bench/throughput.ts [options])

  --pairs N             sender/receiver client pairs (default 8)
  --window W            messages in flight per sender at saturation (default 16)
  --seconds D           measured seconds per phase (default 10)
  --warmup S            warm-up seconds per phase before measuring (default 2)
  --upstream-tls MODE   proxy to Prosody: none (plain TCP, default) or auto
                        (STARTTLS verified with --upstream-ca <Prosody's certificate>)
  --paced-fraction F    paced phases run at F x the direct SM saturation rate (default 0.2)
  --paced-rate R        paced phases run at R msg/s in total (overrides --paced-fraction)
  --custody LIST        proxy custody modes to run, comma-separated (default server-sm,ping):
                        server-sm = upstream.streamManagement true (Prosody's XEP-0198 acks),
                        ping = upstream.streamManagement false (XEP-0199 ping barriers)
  --prosody-nodelay     diagnostic: turn Nagle's algorithm off in Prosody
                        (network_settings = { nagle = false }; Prosody's default is on)
  --profile             run the proxy under node --cpu-prof and summarize the hot spots
  --quick               short smoke run (2 pairs, 1 s + 0.5 s warm-up per phase)
  --proxy-log-level L   the proxy's --log-level (default warn); each proxy's output is kept in
                        bench/results/proxy-<custody>.log
  --client-r-every N    clients send <r/> after every N stanzas they send (default 50)
  --check               exit 1 when a target is missed in any custody mode (errors always exit 1)
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
  custody: Custody[];
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
      custody: { type: 'string' },
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
  const quick = values.quick === true;
  const upstreamTls = values['upstream-tls'] ?? 'none';
  if (upstreamTls !== 'none' && upstreamTls !== 'auto') throw new Error(`--upstream-tls must be none or auto (got ${upstreamTls})`);
  const custody = (values.custody ?? 'server-sm,ping').split(',').map((c) => c.trim());
  const known = Object.keys(CUSTODY_MODES);
  const unknown = custody.filter((c) => !known.includes(c));
  if (unknown.length || custody.length === 0) throw new Error(`--custody takes ${known.join(', ')} (got ${JSON.stringify(values.custody)})`);
  return {
    pairs: Math.floor(numArg('pairs', values.pairs, quick ? 2 : 8, 1)),
    window: Math.floor(numArg('window', values.window, 16, 1)),
    seconds: numArg('seconds', values.seconds, quick ? 1 : 10, 0.1),
    warmup: numArg('warmup', values.warmup, quick ? 0.5 : 2, 0),
    upstreamTls,
    pacedFraction: numArg('paced-fraction', values['paced-fraction'], 0.2, 0.001),
    pacedRate: values['paced-rate'] === undefined ? undefined : numArg('paced-rate', values['paced-rate'], 0, 1),
    custody: [...new Set(custody as Custody[])],
    profile: values.profile === true,
    prosodyNoDelay: values['prosody-nodelay'] === true,
    proxyLogLevel: values['proxy-log-level'] ?? 'warn',
    rEvery: Math.floor(numArg('client-r-every', values['client-r-every'], 50, 1)),
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

const f = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
const pct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(0)}%` : '-');

function mainTable(results: PhaseResult[]): string {
  return table(
    ['phase', 'msg/s', 'p50 ms', 'p99 ms', 'ack p50 ms', 'ack p99 ms', 'proxy µs/msg', 'prosody µs/msg', 'bench µs/msg', 'errors'],
    results.map((r) => [
      r.label,
      f(r.rate),
      f(r.latencyMs.p50, 2),
      f(r.latencyMs.p99, 2),
      f(r.ackMs.p50, 2),
      f(r.ackMs.p99, 2),
      f(r.usPerMsg.proxy, 1),
      f(r.usPerMsg.prosody, 1),
      f(r.usPerMsg.bench, 1),
      r.checks.errors.length ? String(r.checks.errors.length) : '0',
    ]),
  );
}

function detailTable(results: PhaseResult[]): string {
  const sc = (rd: number, wr: number): string => `${f(rd, 2)} / ${f(wr, 2)}`;
  const opt = (x: number | null, digits: number): string => (x === null ? '-' : f(x, digits));
  return table(
    ['phase', 'proxy core', 'prosody core', 'bench core', 'other core', 'machine busy', 'proxy rd/wr syscalls/msg', 'srv <r/>/100msg', 'srv <a/> per <r/>'],
    results.map((r) => [
      r.label,
      pct(r.coreShare.proxy),
      pct(r.coreShare.prosody),
      pct(r.coreShare.bench),
      pct(r.coreShare.other),
      pct(r.cpu.machineBusy),
      sc(r.syscallsPerMsg.proxyRead, r.syscallsPerMsg.proxyWrite),
      opt(r.checks.serverAckRequestsPer100, 1),
      opt(r.checks.serverAcksPerClientRequest, 2),
    ]),
  );
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** One proxy child (one custody mode) and its two phases. */
interface ProxyRun {
  custody: Custody;
  /** The proxy's `--config` file content. */
  config: Record<string, unknown>;
  command: string;
  exit: { code: number | null; signal: NodeJS.Signals | null };
  /** Its whole output (bench/results/proxy-<custody>.log). */
  logFile: string;
  output: string;
  /** Warn lines saying a link's server SM was abandoned for ping barriers (server-sm only). */
  smFallbacks: number;
  sat: PhaseResult;
  paced: PhaseResult;
  profile: ProfileSummary | undefined;
}

/** The proxy-vs-direct ratios of one custody mode. */
function proxyRatios(run: ProxyRun, directSat: PhaseResult, directPaced: PhaseResult) {
  const { sat, paced } = run;
  return {
    throughput: sat.rate / directSat.rate,
    cpuSaturation: sat.usPerMsg.proxy / sat.usPerMsg.prosody,
    cpuPaced: paced.usPerMsg.proxy / paced.usPerMsg.prosody,
    proxyVsDirectProsodyCpuSaturation: sat.usPerMsg.proxy / directSat.usPerMsg.prosody,
    addedLatencyPacedP50Ms: paced.latencyMs.p50 - directPaced.latencyMs.p50,
    addedLatencyPacedP99Ms: paced.latencyMs.p99 - directPaced.latencyMs.p99,
    /** Custody-ack latency at the paced rate / mod_smacks' ack latency there (p50). */
    ackLatencyPacedP50VsDirect: paced.ackMs.p50 / directPaced.ackMs.p50,
  };
}

async function main(): Promise<number> {
  const o = options(process.argv.slice(2));
  const accountsNeeded = o.pairs * 2;
  log(`xmpp-sm-proxy benchmark: ${o.pairs} pairs, window ${o.window}, ${o.seconds} s measured after ${o.warmup} s warm-up per phase, upstream TLS ${o.upstreamTls}, custody ${o.custody.join(', ')}${o.quick ? ' (quick)' : ''}`);
  const src = { commit: gitCommit(), srcSha256: srcSha256() };
  log(`proxy source: commit ${src.commit.slice(0, 12)}, src/ sha256 ${src.srcSha256} (the working tree as the proxy children load it at start)`);
  log(`machine: ${os.cpus().length} cpus (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, prosody ${prosodyVersion()}, CLK_TCK ${clockTicks()}`);

  let prosody: ProsodyInstance | undefined;
  let proxy: ProxyProcess | undefined;
  const results: PhaseResult[] = [];
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
    log(`Prosody pid ${prosody.pid} on 127.0.0.1:${prosody.c2sPort}`);

    // One directory per run: node writes one .cpuprofile per thread (tsx's loader hooks run in a
    // worker thread); the main thread's is the one with the most busy time.
    const profileDir = path.join(RESULTS, 'profiles', new Date().toISOString().replace(/[:.]/g, '-'));
    await mkdir(RESULTS, { recursive: true });

    const base = {
      pairs: o.pairs,
      window: o.window,
      warmupMs: o.warmup * 1000,
      measureMs: o.seconds * 1000,
      domain: DOMAIN,
      host: '127.0.0.1',
      accounts: (i: number) => ({ sender: `user${2 * i + 1}`, receiver: `user${2 * i + 2}`, password: PASSWORD }),
      rEvery: o.rEvery,
    };
    const run = async (spec: PhaseSpec): Promise<PhaseResult> => {
      log(`phase ${spec.name}: ${spec.label}`);
      const r = await runPhase(spec, log);
      results.push(r);
      // Let the servers finish closing the sessions before the next phase.
      await new Promise((res) => setTimeout(res, 500));
      return r;
    };

    // Direct to Prosody (no proxy running).
    const direct = { ...base, target: 'direct' as const, port: prosody.c2sPort, pids: { prosody: prosody.pid } };
    const directNoSm = await run({ ...direct, name: 'direct-nosm-sat', label: 'direct, no SM, saturation', sm: false, mode: 'saturation' });
    const directSat = await run({ ...direct, name: 'direct-sm-sat', label: 'direct, SM, saturation', sm: true, mode: 'saturation' });
    const pacedRate = Math.max(1, Math.round(o.pacedRate ?? directSat.rate * o.pacedFraction));
    const pacedLabel = o.pacedRate !== undefined ? `${pacedRate}/s` : `${pacedRate}/s = ${o.pacedFraction} x direct SM sat`;
    await run({ ...direct, name: 'direct-nosm-paced', label: `direct, no SM, paced ${pacedRate}/s`, sm: false, mode: 'paced', rate: pacedRate });
    const directPaced = await run({ ...direct, name: 'direct-sm-paced', label: `direct, SM, paced ${pacedRate}/s`, sm: true, mode: 'paced', rate: pacedRate });

    // Through the proxy: one proxy child per custody mode, started for its two phases only.
    const proxyRuns: ProxyRun[] = [];
    for (const custody of o.custody) {
      const config = { upstream: { streamManagement: CUSTODY_MODES[custody].streamManagement } };
      const listenPort = await freePort();
      const dir = path.join(profileDir, custody);
      if (o.profile) await mkdir(dir, { recursive: true });
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
        listenTlsPort: await freePort(),
        nodeArgs: o.profile ? ['--cpu-prof', '--cpu-prof-dir', dir] : [],
        logLevel: o.proxyLogLevel,
        config,
      });
      const command = proxy.command.join(' ');
      log(`proxy custody=${custody} (${CUSTODY_MODES[custody].what}): pid ${proxy.pid} on 127.0.0.1:${listenPort} (STARTTLS), --config ${JSON.stringify(config)}`);
      log(`proxy command: ${command}`);
      log(`proxy upstream TLS: ${o.upstreamTls === 'auto' ? `auto (STARTTLS to Prosody, verified with --upstream-ca ${prosody.caFile})` : 'none (plain TCP to Prosody)'}`);

      const viaProxy = { ...base, target: 'proxy' as const, custody, port: listenPort, pids: { proxy: proxy.pid, prosody: prosody.pid } };
      const sat = await run({ ...viaProxy, name: `proxy-${custody}-sat`, label: `proxy, custody=${custody}, saturation`, sm: true, mode: 'saturation' });
      const paced = await run({ ...viaProxy, name: `proxy-${custody}-paced`, label: `proxy, custody=${custody}, paced ${pacedRate}/s`, sm: true, mode: 'paced', rate: pacedRate });

      const exit = await proxy.stop();
      const output = proxy.output().trim();
      proxy = undefined;
      const logFile = path.join(RESULTS, `proxy-${custody}.log`);
      await writeFile(logFile, output ? output + '\n' : '');
      let profile: ProfileSummary | undefined;
      if (o.profile) {
        const files = (await readdir(dir)).filter((n) => n.endsWith('.cpuprofile'));
        profile = files.map((n) => summarizeProfile(path.join(dir, n), 25)).sort((a, b) => b.busyMs - a.busyMs)[0];
        if (!profile) log(`no CPU profile was written by the custody=${custody} proxy (exit: ${JSON.stringify(exit)})`);
      }
      const smFallbacks = output.split('\n').filter((l) => l.includes(SM_FALLBACK_LOG)).length;
      proxyRuns.push({ custody, config, command, exit, logFile, output, smFallbacks, sat, paced, profile });
    }

    const byCustody = proxyRuns.map((r) => {
      const ratios = proxyRatios(r, directSat, directPaced);
      const throughputOk = ratios.throughput >= TARGET_THROUGHPUT_RATIO;
      const cpuOk = ratios.cpuSaturation <= TARGET_CPU_RATIO;
      return { run: r, ratios, throughputOk, cpuOk };
    });
    const smCostDirect = directSat.rate / directNoSm.rate;
    const allTargetsMet = byCustody.every((c) => c.throughputOk && c.cpuOk);
    const errors = results.flatMap((r) => r.checks.errors.map((e) => `${r.name}: ${e}`));

    const out: string[] = [];
    out.push('');
    out.push(`Results (${o.pairs} pairs, window ${o.window}, ${o.seconds} s measured per phase after ${o.warmup} s warm-up; ~100-byte bodies; proxy upstream TLS: ${o.upstreamTls})`);
    out.push('');
    out.push(mainTable(results));
    out.push('');
    out.push(detailTable(results));
    out.push('');
    out.push('  ack ms = a sender\'s <r/> (every ' + o.rEvery + ' stanzas) until the first <a h/> covering it (h >= stanzas sent before it):');
    out.push('  direct, Prosody\'s mod_smacks; through the proxy, its custody ack (counts only what Prosody confirmed).');
    out.push('  µs/msg = CPU time (utime+stime) of that process during the measured window / messages delivered in it.');
    out.push('  syscalls/msg = the proxy\'s read / write system calls (/proc/PID/io syscr, syscw) per message delivered.');
    out.push('  (Not shown for Prosody: LuaSocket\'s send/recv on plain sockets are not counted there, only TLS read/write.)');
    out.push('  core = CPU time / wall time (100% = one core). bench = this process (all clients); other = every other process on');
    out.push(`  the machine (${os.cpus().length} cores; a busy "other" means the figures are disturbed). srv <r/>/100msg = ack requests`);
    out.push('  the server (Prosody or proxy) sent to receivers per 100 messages delivered. srv <a/> per <r/> = <a/> the senders');
    out.push('  received per periodic <r/> they sent (above 1: unrequested <a/> as well).');
    out.push('');
    out.push(`  Prosody SM cost, direct: SM / no-SM throughput          = ${f(smCostDirect, 3)}   (issue note: mod_smacks ~0.72)`);
    for (const { run: r, ratios, throughputOk, cpuOk } of byCustody) {
      const { sat, paced } = r;
      out.push('');
      out.push(`  proxy, custody=${r.custody} (upstream.streamManagement: ${CUSTODY_MODES[r.custody].streamManagement}, ${CUSTODY_MODES[r.custody].what}):`);
      out.push(`    proxy / direct throughput at saturation, SM on       = ${f(ratios.throughput, 3)}   target >= ${TARGET_THROUGHPUT_RATIO}: ${throughputOk ? 'MET' : 'MISSED'}`);
      out.push(`    proxy CPU/msg / Prosody CPU/msg, proxy phase, sat    = ${f(ratios.cpuSaturation, 3)}   target <= ${TARGET_CPU_RATIO}: ${cpuOk ? 'MET' : 'MISSED'}`);
      out.push(`      (${f(sat.usPerMsg.proxy, 1)} µs vs ${f(sat.usPerMsg.prosody, 1)} µs; at the paced rate: ${f(paced.usPerMsg.proxy, 1)} µs vs ${f(paced.usPerMsg.prosody, 1)} µs = ${f(ratios.cpuPaced, 3)})`);
      out.push(`    proxy CPU/msg vs Prosody CPU/msg when direct (sat)    = ${f(ratios.proxyVsDirectProsodyCpuSaturation, 3)}`);
      out.push(`    latency added by the proxy at ${pacedLabel}: p50 ${f(ratios.addedLatencyPacedP50Ms, 2)} ms, p99 ${f(ratios.addedLatencyPacedP99Ms, 2)} ms`);
      out.push(`    ack latency at ${pacedRate}/s: p50 ${f(paced.ackMs.p50, 2)} ms, p99 ${f(paced.ackMs.p99, 2)} ms (direct: p50 ${f(directPaced.ackMs.p50, 2)} ms, p99 ${f(directPaced.ackMs.p99, 2)} ms)`);
      if (r.custody === 'server-sm') {
        out.push(`    server SM abandoned for ping barriers on ${r.smFallbacks} upstream link(s) (proxy warn lines "${SM_FALLBACK_LOG}")`);
      }
    }
    if (errors.length) {
      out.push('');
      out.push('ERRORS:');
      for (const e of errors) out.push(`  ${e}`);
    }
    for (const r of proxyRuns) {
      if (r.exit.code !== 0) out.push(`\nproxy custody=${r.custody} exited with code ${r.exit.code} (signal ${r.exit.signal})`);
      if (!r.output) continue;
      out.push('');
      out.push(`proxy custody=${r.custody} output (log level ${o.proxyLogLevel}; all of it in ${path.relative(ROOT, r.logFile)}):`);
      out.push(r.output.split('\n').slice(-20).map((l) => `  ${l}`).join('\n'));
    }
    for (const r of proxyRuns) {
      if (!r.profile) continue;
      out.push('');
      out.push(`proxy custody=${r.custody}:`);
      out.push(formatSummary(r.profile));
    }
    process.stdout.write(out.join('\n') + '\n');

    const json = {
      date: new Date().toISOString(),
      command: `npx tsx bench/throughput.ts ${process.argv.slice(2).join(' ')}`.trim(),
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version, prosody: prosodyVersion(), clkTck: clockTicks() },
      options: { pairs: o.pairs, window: o.window, seconds: o.seconds, warmup: o.warmup, upstreamTls: o.upstreamTls, pacedRate, custody: o.custody, quick: o.quick, prosodyNoDelay: o.prosodyNoDelay, clientREvery: o.rEvery, proxyLogLevel: o.proxyLogLevel },
      source: { commit: gitCommit(), srcSha256: srcSha256() },
      proxies: proxyRuns.map((r) => ({
        custody: r.custody,
        config: r.config,
        command: r.command,
        exit: r.exit,
        logFile: path.relative(ROOT, r.logFile),
        smFallbacks: r.custody === 'server-sm' ? r.smFallbacks : null,
        profile: r.profile ? { file: path.relative(ROOT, r.profile.file), busyMs: r.profile.busyMs, modules: r.profile.modules, self: r.profile.self, inclusive: r.profile.inclusive } : undefined,
      })),
      phases: results,
      ratios: {
        smCostDirect,
        byCustody: Object.fromEntries(byCustody.map((c) => [c.run.custody, c.ratios])),
      },
      targets: Object.fromEntries(
        byCustody.map((c) => [
          c.run.custody,
          {
            throughput: { target: TARGET_THROUGHPUT_RATIO, value: c.ratios.throughput, met: c.throughputOk },
            cpu: { target: TARGET_CPU_RATIO, value: c.ratios.cpuSaturation, met: c.cpuOk },
          },
        ]),
      ),
      errors,
    };
    await mkdir(path.dirname(o.out), { recursive: true });
    await writeFile(o.out, JSON.stringify(json, null, 2) + '\n');
    log(`wrote ${path.relative(process.cwd(), o.out) || o.out}`);
    if (errors.length) return 1;
    if (o.check && !allTargetsMet) return 1;
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
