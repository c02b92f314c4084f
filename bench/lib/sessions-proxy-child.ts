/**
 * The proxy for `bench/sessions.ts`, alone in its own process so that its memory can be read
 * without the benchmark's clients in it. Started by the benchmark as
 *
 *   node --expose-gc --import tsx bench/lib/sessions-proxy-child.ts
 *
 * with an IPC channel and its settings in the environment variable SESSIONS_PROXY_CONFIG (JSON:
 * domain, upstreamPort, hibernationSeconds, maxQueueSize). The config is built like
 * test/harness/proxy.ts `testConfig`, except: plain TCP upstream (`tls: 'none'`), one STARTTLS
 * listener on a free loopback port (no direct TLS), log level warn (to stderr).
 *
 * IPC, every request carries an `id` that the answer repeats:
 * - `{cmd:'mem'}`   → `{id, mem: process.memoryUsage()}` after two full GCs.
 * - `{cmd:'stats'}` → `{id, stats: {sessions, hibernating, attached, queued, queuedChars}}`.
 * - `{cmd:'heapsnapshot', file}` → `{id, file}` after v8.writeHeapSnapshot(file) (diagnostics).
 * - `{cmd:'exit'}`  → exits at once (the benchmark measures nothing after it).
 * At start it sends `{ready: true, port}` (or `{error}`).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import v8 from 'node:v8';
import pino from 'pino';
import { startProxy, type Proxy } from '../../src/proxy.ts';
import { DEFAULTS, type Config } from '../../src/config/config.ts';

interface ChildSettings {
  domain: string;
  upstreamPort: number;
  hibernationSeconds: number;
  maxQueueSize: number;
}

export interface ProxyStats {
  /** Live sessions (attached or hibernating). */
  sessions: number;
  hibernating: number;
  /** Sessions with a client stream attached. */
  attached: number;
  /** Unacked stanzas over all sessions (sm.queue.length). */
  queued: number;
}

export interface ProxyStatsDetail extends ProxyStats {
  /** Total length (UTF-16 code units) of the queued stanzas' XML. */
  queuedChars: number;
}

const send = (msg: unknown): void => {
  process.send?.(msg);
};

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (!g) throw new Error('run with node --expose-gc');
  g();
  g();
}

function stats(proxy: Proxy, detail: boolean): ProxyStats | ProxyStatsDetail {
  let hibernating = 0;
  let queued = 0;
  let queuedChars = 0;
  for (const s of proxy.sessions) {
    if (s.hibernating) hibernating++;
    queued += s.sm.queue.length;
    if (detail) for (const q of s.sm.unacked()) queuedChars += q.xml.length;
  }
  const base = { sessions: proxy.sessions.size, hibernating, attached: proxy.sessions.size - hibernating, queued };
  return detail ? { ...base, queuedChars } : base;
}

async function main(): Promise<void> {
  if (!process.send) throw new Error('start me with an IPC channel (from bench/sessions.ts)');
  const settings = JSON.parse(process.env.SESSIONS_PROXY_CONFIG ?? '{}') as ChildSettings;
  const config: Config = {
    ...DEFAULTS,
    domains: [settings.domain],
    upstream: { ...DEFAULTS.upstream, host: '127.0.0.1', port: settings.upstreamPort, tls: 'none' },
    listen: { starttls: [{ host: '127.0.0.1', port: 0 }], directTls: [] },
    tls: {},
    sm: { ...DEFAULTS.sm, hibernationSeconds: settings.hibernationSeconds, maxQueueSize: settings.maxQueueSize },
    // Every client of the benchmark connects from 127.0.0.1, and a batch of resumes (200 by
    // default) is unauthenticated at once: the per-address limit would refuse most of it.
    limits: { ...DEFAULTS.limits, maxUnauthenticated: 100_000, maxUnauthenticatedPerIp: 100_000 },
    storage: { dataDir: mkdtempSync(join(tmpdir(), 'bench-proxy-data-')) },
    metrics: { listen: null },
    log: { level: 'warn' },
  };
  const proxy = await startProxy(config, pino({ level: 'warn' }, pino.destination(2)));
  process.on('message', (msg: { cmd: string; id: number; detail?: boolean; file?: string }) => {
    switch (msg.cmd) {
      case 'mem':
        gc();
        // Let anything queued by finalizers run, then collect once more.
        setImmediate(() => {
          gc();
          send({ id: msg.id, mem: process.memoryUsage() });
        });
        return;
      case 'stats':
        send({ id: msg.id, stats: stats(proxy, msg.detail === true) });
        return;
      case 'heapsnapshot':
        gc();
        send({ id: msg.id, file: v8.writeHeapSnapshot(msg.file) });
        return;
      case 'exit':
        process.exit(0);
    }
  });
  process.on('disconnect', () => process.exit(0));
  send({ ready: true, port: proxy.addresses.starttls[0]!.port, pid: process.pid });
}

main().catch((err: Error) => {
  send({ error: err.stack ?? err.message });
  process.exitCode = 1;
  setTimeout(() => process.exit(1), 100);
});
