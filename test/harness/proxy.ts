/**
 * Starts the proxy in-process in front of a harness Prosody, on loopback ports picked by the
 * kernel, and builds @xmpp/client instances pointed at it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import { client as xmppClient } from '@xmpp/client';
import { startProxy, type Proxy } from '../../src/proxy.ts';
import { DEFAULTS, type Config } from '../../src/config/config.ts';
import type { Element } from 'ltx';
import { startProsody, type ProsodyInstance, type ProsodyOptions } from './prosody.ts';

// The proxy serves a self-signed certificate; clients under test accept it.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
process.removeAllListeners('warning');

export interface TestProxy {
  proxy: Proxy;
  config: Config;
  /** STARTTLS port. */
  port: number;
  /** Direct TLS port. */
  tlsPort: number;
  close(): Promise<void>;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

/** What the proxy needs of a harness server (Prosody or ejabberd). */
export interface UpstreamServer {
  domain: string;
  c2sPort: number;
  /** The server's self-signed certificate, trusted as a CA for the upstream link. */
  caFile?: string;
}

/** Proxy config for a harness server: upstream STARTTLS verified against its certificate. */
export function testConfig(prosody: UpstreamServer, overrides: DeepPartial<Config> = {}): Config {
  return {
    ...DEFAULTS,
    domains: [prosody.domain],
    upstream: { ...DEFAULTS.upstream, port: prosody.c2sPort, caFile: prosody.caFile, ...overrides.upstream },
    listen: { starttls: [{ host: '127.0.0.1', port: 0 }], directTls: [{ host: '127.0.0.1', port: 0 }] },
    tls: {},
    sm: { ...DEFAULTS.sm, ...overrides.sm },
    limits: { ...DEFAULTS.limits, ...overrides.limits },
    // Each proxy its own store (a data dir is locked by the proxy using it); no metrics port.
    storage: { dataDir: overrides.storage?.dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'proxy-data-')) },
    metrics: { listen: null, ...overrides.metrics },
    muc: { ...DEFAULTS.muc, ...overrides.muc },
    push: { ...DEFAULTS.push, ...overrides.push },
    // plain unless a test says otherwise: most e2e tests check transparent reconnects, and
    // @xmpp/client picks SCRAM whenever it is offered (the default, auto, is tested on its own).
    auth: { ...DEFAULTS.auth, mode: 'plain', ...overrides.auth },
    shutdown: { ...DEFAULTS.shutdown, ackWaitMs: 1000, ...overrides.shutdown },
    log: { level: 'silent' },
  };
}

/** @param log the proxy's logger (default: stderr at PROXY_LOG_LEVEL, silent when unset) */
export async function startTestProxy(prosody: UpstreamServer, overrides: DeepPartial<Config> = {}, log?: Logger): Promise<TestProxy> {
  const config = testConfig(prosody, overrides);
  const level = process.env.PROXY_LOG_LEVEL ?? 'silent';
  const proxy = await startProxy(config, log ?? pino({ level }, pino.destination(2)));
  return {
    proxy,
    config,
    port: proxy.addresses.starttls[0]!.port,
    tlsPort: proxy.addresses.directTls[0]!.port,
    async close() {
      await proxy.close();
      if (!overrides.storage?.dataDir) rmSync(config.storage.dataDir, { recursive: true, force: true });
    },
  };
}

/** An @xmpp/client for `user` through the proxy (STARTTLS, or direct TLS with `direct`). */
export function clientFor(tp: TestProxy, user: string, password: string, opts: { resource?: string; direct?: boolean } = {}) {
  const service = opts.direct ? `xmpps://127.0.0.1:${tp.tlsPort}` : `xmpp://127.0.0.1:${tp.port}`;
  // timeout: @xmpp/client's default of 2 s per negotiation step fails under load (CI: two test
  // files side by side on 2 cores); it bounds steps, it measures nothing here.
  const xmpp = xmppClient({ service, domain: tp.config.domains[0], username: user, password, resource: opts.resource, timeout: 15_000 });
  xmpp.on('error', () => {});
  return xmpp;
}

/** Polls `cond` every 20 ms until true; rejects after `timeoutMs` with `what`. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The two accounts most end-to-end tests use. */
export const ACCOUNTS = [
  { user: 'alice', password: 'alice-pw' },
  { user: 'bob', password: 'bob-pw' },
];

/**
 * A Prosody (STARTTLS required, like Openfire) with {@link ACCOUNTS} and the proxy in front,
 * both stopped at the end of test `t`.
 */
export async function startProsodyAndProxy(
  t: { teardown(fn: () => unknown): void },
  prosodyOptions: ProsodyOptions = {},
  overrides: DeepPartial<Config> = {},
  log?: Logger,
): Promise<{ prosody: ProsodyInstance; tp: TestProxy }> {
  const prosody = await startProsody({ tls: 'required', accounts: ACCOUNTS, ...prosodyOptions });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody, overrides, log);
  t.teardown(() => tp.close());
  return { prosody, tp };
}

/** Message bodies an @xmpp/client receives, in order (a live array). */
export function bodiesOf(client: { on(ev: 'stanza', cb: (s: Element) => void): void }): string[] {
  const got: string[] = [];
  client.on('stanza', (s) => {
    const body = s.is('message') ? s.getChildText('body') : null;
    if (body !== null) got.push(body);
  });
  return got;
}
