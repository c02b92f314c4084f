/**
 * Reconnect benchmark: how long the proxy takes to replace a lost upstream link, as the proxy
 * sees it (`upstream-down` / `upstream-up`) and end to end (a message sent through the server
 * after the fault reaches the client), for 1, 50 and 200 sessions; and whether a client noticed.
 *
 *   npx tsx bench/reconnect.ts [--sessions 1,50,200] [--rounds 5] [--quick] [--help]
 *
 * See the "reconnect.ts" section of bench/README.md for what is measured and how.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startProsody, type ProsodyInstance } from '../test/harness/prosody.ts';
import { startTestProxy } from '../test/harness/proxy.ts';
import { TcpRelay } from '../test/harness/tcp-relay.ts';
import { DEFAULTS } from '../src/config/config.ts';
import { BenchClient } from './lib/client.ts';
import { intArg } from './lib/args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOMAIN = 'proxy.test';
const PASSWORD = 'bench-password';

const USAGE = `usage: npx tsx bench/reconnect.ts [options]

  --sessions LIST          session counts, one run each (default 1,50,200)
  --rounds R               relay.cutAll() rounds per run (default 5)
  --freeze-rounds F        half-open rounds per run: relay.freeze(), thaw() for new links (default 3)
  --probe-ms P             a session back up (upstream-up) without a probe yet gets another every P ms (default 500)
  --round-timeout S        give up waiting for a round after S seconds (default 30)
  --keepalive S            upstream.keepaliveSeconds (default 1)
  --ping-timeout S         upstream.pingTimeoutSeconds (default 2)
  --reconnect-delay-ms D   upstream.reconnectDelayMs (default 200)
  --reconnect-max-delay S  upstream.reconnectMaxDelaySeconds (default 2)
  --max-logins M           upstream.maxConcurrentLogins (default ${DEFAULTS.upstream.maxConcurrentLogins}, the proxy's default)
  --mam                    Prosody with mod_mam: the proxy can fill gaps from the archive
  --smacks                 Prosody with mod_smacks: the proxy uses its acks, and what Prosody wrote to a
                           dead link goes to offline storage
  --quick                  smoke run: sessions 1,10, 2 rounds, 1 freeze round
  --out FILE               JSON output (default bench/results/reconnect-latest.json, reconnect-quick.json with --quick)
  -h, --help               this text
`;

function options(argv: string[]) {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      sessions: { type: 'string' }, rounds: { type: 'string' }, 'freeze-rounds': { type: 'string' },
      'probe-ms': { type: 'string' }, 'round-timeout': { type: 'string' }, keepalive: { type: 'string' },
      'ping-timeout': { type: 'string' }, 'reconnect-delay-ms': { type: 'string' }, 'reconnect-max-delay': { type: 'string' },
      'max-logins': { type: 'string' }, mam: { type: 'boolean' }, smacks: { type: 'boolean' }, quick: { type: 'boolean' }, out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (v.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const quick = v.quick === true;
  const sessions = (v.sessions ?? (quick ? '1,10' : '1,50,200')).split(',').map((s) => intArg('sessions', s.trim(), 1, 1));
  return {
    sessions,
    rounds: intArg('rounds', v.rounds, quick ? 2 : 5, 0),
    freezeRounds: intArg('freeze-rounds', v['freeze-rounds'], quick ? 1 : 3, 0),
    probeMs: intArg('probe-ms', v['probe-ms'], 500, 10),
    roundTimeoutMs: intArg('round-timeout', v['round-timeout'], 30, 1) * 1000,
    upstream: {
      keepaliveSeconds: intArg('keepalive', v.keepalive, 1, 1),
      pingTimeoutSeconds: intArg('ping-timeout', v['ping-timeout'], 2, 1),
      reconnectDelayMs: intArg('reconnect-delay-ms', v['reconnect-delay-ms'], 200, 0),
      reconnectMaxDelaySeconds: intArg('reconnect-max-delay', v['reconnect-max-delay'], 2, 1),
      maxConcurrentLogins: intArg('max-logins', v['max-logins'], DEFAULTS.upstream.maxConcurrentLogins, 1),
    },
    mam: v.mam === true,
    smacks: v.smacks === true,
    quick,
    out: v.out ?? path.join(ROOT, 'bench', 'results', quick ? 'reconnect-quick.json' : 'reconnect-latest.json'),
  };
}
type Options = ReturnType<typeof options>;

const t0 = performance.now();
const log = (line: string): void => void process.stdout.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const f = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
const git = (...args: string[]): string => {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
};

/** Polls `cond` every 10 ms; resolves false after `timeoutMs`. */
async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

/** Runs `fn(i)` for i in [0, n) with at most `limit` in flight. */
async function pool(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
}

interface Summary { samples: number; p50: number; p95: number; max: number }
function summarize(xs: number[]): Summary {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  const at = (q: number): number => (s.length ? s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]! : NaN);
  return { samples: s.length, p50: at(0.5), p95: at(0.95), max: s.length ? s[s.length - 1]! : NaN };
}

function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** One fault kind in one run: ms from the fault, per session and round (NaN: never happened). */
interface Scenario {
  name: string;
  rounds: number;
  down: number[];
  up: number[];
  e2e: number[];
  /** Session-rounds without an upstream-up / a probe within the round timeout. */
  notUp: number;
  noProbe: number;
  /** Probes sent; those that never arrived, sent before / after the session's upstream-up. */
  probesSent: number;
  lostBeforeUp: number;
  lostAfterUp: number;
}
const scenario = (name: string): Scenario => ({ name, rounds: 0, down: [], up: [], e2e: [], notUp: 0, noProbe: 0, probesSent: 0, lostBeforeUp: 0, lostAfterUp: 0 });

/** Logs N sessions in through the proxy, then runs the cut and the freeze rounds. */
async function run(prosody: ProsodyInstance, relay: TcpRelay, peer: BenchClient, N: number, o: Options) {
  const tp = await startTestProxy(prosody, { upstream: { ...o.upstream, port: relay.port } });
  const resource = `n${N}`;
  const jids = Array.from({ length: N }, (_, i) => `user${i + 1}@${DOMAIN}/${resource}`);
  const clients: BenchClient[] = new Array(N);
  const downAt = new Array<number>(N).fill(NaN);
  const upAt = new Array<number>(N).fill(NaN);
  const gotAt = new Array<number>(N).fill(NaN);
  const received = new Map<number, Set<string>>();
  const counts = { clientDisconnects: 0, proxyHibernations: 0, proxyEnded: 0, upstreamDowns: 0, upstreamUps: 0, duplicates: 0, misrouted: 0 };
  const problems: string[] = [];
  let round = 0;
  let faultAt = 0;
  let closing = false;
  /** Sends session i a probe (set during a round). */
  let probeTo: ((i: number) => void) | undefined;
  try {
    const loginStart = performance.now();
    await pool(N, 20, async (i) => {
      const c = await BenchClient.login({ host: '127.0.0.1', port: tp.port, domain: DOMAIN, user: `user${i + 1}`, password: PASSWORD, resource, sm: true, timeoutMs: 60_000 });
      // Initial presence: the proxy replays it on each new link, and Prosody then hands over the
      // probes it stored offline while the resource was gone.
      c.send('<presence/>');
      c.onMessage = (body) => {
        const [tag, r, to] = body.split('/');
        if (tag !== 'p') return;
        if (Number(to) !== i) counts.misrouted++;
        const seen = received.get(Number(r));
        if (seen?.has(body)) counts.duplicates++;
        seen?.add(body);
        if (Number(r) === round && Number.isNaN(gotAt[i]!)) gotAt[i] = performance.now() - faultAt;
      };
      void c.closed.then(() => {
        if (closing) return;
        counts.clientDisconnects++;
        problems.push(`${jids[i]}: client disconnected (${c.error ?? 'connection closed'})`);
      });
      clients[i] = c;
    });
    const loginSeconds = (performance.now() - loginStart) / 1000;
    const sessions = () => [...tp.proxy.sessions].filter((s) => s.fullJid.endsWith(`/${resource}`));
    if (!(await until(() => sessions().length === N && sessions().every((s) => s.upstreamLinked), 30_000))) throw new Error(`${N} sessions not all up after login`);
    for (const s of sessions()) {
      const i = jids.indexOf(s.fullJid);
      s.on('upstream-down', () => {
        counts.upstreamDowns++;
        if (Number.isNaN(downAt[i]!)) downAt[i] = performance.now() - faultAt;
      });
      s.on('upstream-up', () => {
        counts.upstreamUps++;
        if (!Number.isNaN(upAt[i]!)) return;
        upAt[i] = performance.now() - faultAt;
        // The probe sent at the fault may have died with the old link: send one on the new path.
        if (Number.isNaN(gotAt[i]!)) probeTo?.(i);
      });
      s.on('hibernating', () => {
        if (!closing) counts.proxyHibernations++;
      });
      s.on('ended', (why: string) => {
        if (closing) return;
        counts.proxyEnded++;
        problems.push(`${s.fullJid}: session ended (${why})`);
      });
    }
    log(`${N} sessions logged in through the proxy in ${f(loginSeconds, 1)} s`);
    // Let each session's start-up exchanges with the server (disco#info for MAM, acks) finish first.
    await sleep(1000);

    const runRound = async (kind: 'cut' | 'freeze', sc: Scenario): Promise<void> => {
      const r = ++round;
      downAt.fill(NaN);
      upAt.fill(NaN);
      gotAt.fill(NaN);
      received.set(r, new Set());
      const sentAt = new Map<string, { i: number; at: number }>();
      const lastProbe = new Array<number>(N).fill(0);
      probeTo = (i) => {
        const body = `p/${r}/${i}/${sentAt.size}`;
        peer.sendMessage(jids[i]!, `p${r}-${i}-${sentAt.size}`, body);
        sentAt.set(body, { i, at: (lastProbe[i] = performance.now() - faultAt) });
      };
      faultAt = performance.now();
      if (kind === 'cut') relay.cutAll();
      else {
        relay.freeze();
        relay.thaw(); // the links open now stay frozen; new ones go through
      }
      for (let i = 0; i < N; i++) probeTo(i);
      // Safety net: a session back up but still without a probe gets another every probeMs.
      const retry = (up: number, i: number): void => {
        if (Number.isFinite(up) && Number.isNaN(gotAt[i]!) && performance.now() - faultAt - lastProbe[i]! >= o.probeMs) probeTo?.(i);
      };
      const timer = setInterval(() => upAt.forEach(retry), 50);
      await until(() => upAt.every(Number.isFinite) && gotAt.every(Number.isFinite), o.roundTimeoutMs);
      clearInterval(timer);
      probeTo = undefined;
      await sleep(1000); // probes still on their way
      sc.rounds++;
      sc.down.push(...downAt);
      sc.up.push(...upAt);
      sc.e2e.push(...gotAt);
      sc.notUp += upAt.filter(Number.isNaN).length;
      sc.noProbe += gotAt.filter(Number.isNaN).length;
      sc.probesSent += sentAt.size;
      let lost = 0;
      for (const [body, { i, at }] of sentAt) {
        if (received.get(r)!.has(body)) continue;
        lost++;
        if (at < upAt[i]!) sc.lostBeforeUp++;
        else sc.lostAfterUp++;
      }
      const up = summarize(upAt);
      const e2e = summarize(gotAt);
      log(`  ${kind} round ${sc.rounds}: upstream-up p50 ${f(up.p50)} max ${f(up.max)} ms (${N - up.samples} missing), probe p50 ${f(e2e.p50)} max ${f(e2e.max)} ms (${N - e2e.samples} missing), ${lost}/${sentAt.size} probes lost`);
      if (!(await until(() => sessions().every((s) => s.upstreamLinked), 60_000))) problems.push(`after ${kind} round ${sc.rounds}: ${sessions().filter((s) => !s.upstreamLinked).length} sessions still not linked after 60 s`);
      await sleep(500);
    };
    const cut = scenario('cut (RST)');
    const freeze = scenario('half-open');
    for (let r = 0; r < o.rounds; r++) await runRound('cut', cut);
    for (let r = 0; r < o.freezeRounds; r++) await runRound('freeze', freeze);
    const gone = N - sessions().length;
    if (gone) problems.push(`${gone} of ${N} sessions gone from the proxy at the end`);
    const limit = `within ${o.roundTimeoutMs / 1000} s`;
    for (const sc of [cut, freeze]) {
      if (sc.notUp) problems.push(`${N} sessions, ${sc.name}: ${sc.notUp} session-rounds without upstream-up ${limit}`);
      if (sc.noProbe) problems.push(`${N} sessions, ${sc.name}: ${sc.noProbe} session-rounds without a probe ${limit}`);
      if (sc.lostAfterUp) problems.push(`${N} sessions, ${sc.name}: ${sc.lostAfterUp} probes sent after upstream-up never arrived`);
    }
    if (counts.proxyHibernations) problems.push(`${N} sessions: the proxy lost ${counts.proxyHibernations} client streams (hibernating)`);
    if (counts.duplicates) problems.push(`${N} sessions: ${counts.duplicates} probes arrived twice`);
    if (counts.misrouted) problems.push(`${N} sessions: ${counts.misrouted} probes reached the wrong client`);
    return { sessions: N, loginSeconds, scenarios: [cut, freeze].filter((sc) => sc.rounds > 0), counts, problems };
  } finally {
    closing = true;
    await Promise.all(clients.filter(Boolean).map((c) => c.close()));
    await tp.close();
  }
}

async function main(): Promise<number> {
  const o = options(process.argv.slice(2));
  const command = ['npx tsx bench/reconnect.ts', ...process.argv.slice(2)].join(' ');
  const maxN = Math.max(...o.sessions);
  const accounts = [...Array.from({ length: maxN }, (_, i) => ({ user: `user${i + 1}`, password: PASSWORD })), { user: 'peer', password: PASSWORD }];
  const u = o.upstream;
  const settings = `upstream: keepalive ${u.keepaliveSeconds} s, ping timeout ${u.pingTimeoutSeconds} s, reconnect delay ${u.reconnectDelayMs} ms ` +
    `(±50 % jitter, doubling per failed try, at most ${u.reconnectMaxDelaySeconds} s), ${u.maxConcurrentLogins} upstream logins at once (proxy-wide)`;
  log(command);
  log(settings);
  log(`starting Prosody (tls required${o.mam ? ', mod_mam' : ''}${o.smacks ? ', mod_smacks' : ''}) with ${accounts.length} accounts`);
  const prosody = await startProsody({ tls: 'required', accounts, mam: o.mam, smacks: o.smacks });
  const relay = await TcpRelay.start(prosody.c2sPort);
  const runs: Array<Awaited<ReturnType<typeof run>>> = [];
  try {
    // The peer talks to Prosody directly: the relay's faults never touch it.
    const peer = await BenchClient.login({ host: '127.0.0.1', port: prosody.c2sPort, domain: DOMAIN, user: 'peer', password: PASSWORD, resource: 'peer', sm: false });
    for (const N of o.sessions) {
      log(`--- ${N} session(s): ${o.rounds} cut rounds, ${o.freezeRounds} half-open rounds`);
      runs.push(await run(prosody, relay, peer, N, o));
    }
    if (peer.error) throw new Error(`peer: ${peer.error}`);
    await peer.close();
  } finally {
    await relay.close();
    await prosody.stop();
  }

  const rows: string[][] = [];
  for (const r of runs) {
    for (const sc of r.scenarios) {
      const expected = r.sessions * sc.rounds;
      const row = (what: string, xs: number[], missing: number): string[] => {
        const s = summarize(xs);
        return ['', '', what, f(s.p50), f(s.p95), f(s.max), `${missing}/${expected}`];
      };
      const down = row('→ upstream-down', sc.down, expected - summarize(sc.down).samples);
      down[0] = String(r.sessions);
      down[1] = `${sc.name} ×${sc.rounds}`;
      rows.push(down, row('→ upstream-up', sc.up, sc.notUp), row('→ probe at client', sc.e2e, sc.noProbe));
    }
  }
  const out: string[] = ['', `Reconnect latency, ms from the fault (${settings})`, ''];
  out.push(table(['sessions', 'fault × rounds', 'until', 'p50', 'p95', 'max', 'missing'], rows));
  out.push('', '  probe = a chat message from a peer logged in directly to Prosody: one to every session at the fault, one more');
  out.push(`  at its upstream-up if none arrived yet (then every ${o.probeMs} ms); the figure is the first arrival.`);
  out.push(`  missing = session-rounds where it did not happen within ${o.roundTimeoutMs / 1000} s.`, '');
  const faults = runs.flatMap((r) => r.scenarios.map((sc) => [String(r.sessions), sc.name, String(sc.probesSent), String(sc.lostBeforeUp), String(sc.lostAfterUp)]));
  out.push(table(['sessions', 'fault', 'probes sent', 'lost: sent before upstream-up', 'lost: sent after'], faults));
  out.push('', '  Before upstream-up a probe is lost when Prosody writes it to the old link before it sees that link die');
  out.push("  (a frozen one: until the proxy closes it); only the server's SM or a MAM archive lets the proxy recover those (--smacks, --mam" + (o.mam || o.smacks ? '; one is on in this run).' : ').'));
  out.push('  Probes sent after upstream-up go to the new link: every one should arrive.', '');
  out.push(table(
    ['sessions', 'login s', 'client disconnects', 'proxy: client lost / session ended', 'upstream downs / ups (expected)', 'duplicate probes', 'misrouted'],
    runs.map((r) => [String(r.sessions), f(r.loginSeconds, 1), String(r.counts.clientDisconnects), `${r.counts.proxyHibernations} / ${r.counts.proxyEnded}`,
      `${r.counts.upstreamDowns} / ${r.counts.upstreamUps} (${r.sessions * (o.rounds + o.freezeRounds)})`, String(r.counts.duplicates), String(r.counts.misrouted)]),
  ));
  const problems = runs.flatMap((r) => r.problems);
  const disconnects = runs.reduce((n, r) => n + r.counts.clientDisconnects, 0);
  out.push('', `Client disconnects seen: ${disconnects}`);
  if (problems.length) {
    out.push('', `PROBLEMS (${problems.length}):`, ...problems.slice(0, 20).map((p) => `  ${p}`));
    if (problems.length > 20) out.push(`  … ${problems.length - 20} more in the JSON`);
  }
  process.stdout.write(out.join('\n') + '\n');

  const json = {
    date: new Date().toISOString(),
    command,
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
    options: { ...o, out: path.relative(ROOT, o.out) },
    commit: git('describe', '--always', '--dirty'),
    runs: runs.map((r) => ({ ...r, scenarios: r.scenarios.map((sc) => ({ ...sc, summary: { down: summarize(sc.down), up: summarize(sc.up), e2e: summarize(sc.e2e) } })) })),
    clientDisconnects: disconnects,
    problems,
    totalSeconds: (performance.now() - t0) / 1000,
  };
  await mkdir(path.dirname(o.out), { recursive: true });
  await writeFile(o.out, JSON.stringify(json, null, 2) + '\n');
  log(`wrote ${path.relative(process.cwd(), o.out) || o.out}`);
  return problems.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
