/**
 * Two @xmpp/client users chatting through a test proxy, for the fault-injection tests.
 */
import { xml } from '@xmpp/client';
import pino from 'pino';
import { clientFor, waitFor, bodiesOf, startTestProxy, ACCOUNTS, type TestProxy } from './proxy.ts';
import { startProsody, type ProsodyInstance, type ProsodyOptions } from './prosody.ts';
import { TcpRelay } from './tcp-relay.ts';
import type { Session } from '../../src/session/session.ts';

/** Fast failure detection and retries, so faults resolve within a test's patience. */
export const FAST_UPSTREAM = { keepaliveSeconds: 1, pingTimeoutSeconds: 2, reconnectDelayMs: 200, reconnectMaxDelaySeconds: 1, connectTimeoutSeconds: 3 };

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The proxy's session for `fullJid`; throws when there is none. */
export function sessionOf(tp: TestProxy, fullJid: string): Session {
  const s = [...tp.proxy.sessions].find((x) => x.fullJid === fullJid);
  if (!s) throw new Error(`no session ${fullJid}`);
  return s;
}

/** How often `body` occurs in `list`. */
export const count = (list: string[], body: string) => list.filter((b) => b === body).length;

/**
 * alice (resource a) and bob (resource b) on @xmpp/client through the proxy, SM enabled and
 * available. `aliceGot`/`bobGot` are the bodies each received (live arrays); `drops` counts
 * client-side disconnects (`drops.why`: each disconnect and client error, for a failure
 * message); `say` sends a chat message.
 */
export async function chatPair(tp: TestProxy) {
  const alice = clientFor(tp, 'alice', 'alice-pw', { resource: 'a' });
  const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'b' });
  const drops = { n: 0, why: [] as string[] };
  for (const [name, c] of [['alice', alice], ['bob', bob]] as const) {
    c.on('disconnect', (info?: { clean?: boolean; reason?: unknown }) => {
      drops.n++;
      drops.why.push(`${name} disconnected (clean: ${info?.clean}, reason: ${String(info?.reason ?? '')})`);
    });
    c.on('error', (err: Error & { condition?: string }) => drops.why.push(`${name} error: ${err.condition ?? ''} ${err.message}`));
  }
  const aliceGot = bodiesOf(alice);
  const bobGot = bodiesOf(bob);
  await alice.start();
  await bob.start();
  await alice.send(xml('presence'));
  await bob.send(xml('presence'));
  await waitFor(() => sessionOf(tp, 'alice@proxy.test/a').sm.enabled && sessionOf(tp, 'bob@proxy.test/b').sm.enabled, 'SM enabled');
  const say = (from: typeof alice, to: string, body: string) => from.send(xml('message', { to, type: 'chat' }, xml('body', {}, body)));
  return { alice, bob, aliceGot, bobGot, drops, say };
}

/**
 * A Prosody (STARTTLS required, {@link ACCOUNTS}) behind a {@link TcpRelay} for fault
 * injection, and the proxy in front with {@link FAST_UPSTREAM}; all stopped at the end of `t`.
 */
export async function prosodyBehindRelay(
  t: { teardown(fn: () => unknown): void },
  prosodyOptions: ProsodyOptions = {},
  overrides: Omit<Parameters<typeof startTestProxy>[1], 'upstream'> = {},
): Promise<{ prosody: ProsodyInstance; relay: TcpRelay; tp: TestProxy; logTail(): string }> {
  const prosody = await startProsody({ tls: 'required', accounts: ACCOUNTS, ...prosodyOptions });
  t.teardown(() => prosody.stop());
  const relay = await TcpRelay.start(prosody.c2sPort);
  t.teardown(() => relay.close());
  // The proxy's info lines (session events, never per stanza), the last LOG_TAIL kept for a
  // failure message: fault tests that fail only under load must say why.
  const lines: string[] = [];
  const log = pino({ level: process.env.PROXY_LOG_LEVEL ?? 'info' }, {
    write(line: string) {
      if (process.env.PROXY_LOG_LEVEL) process.stderr.write(line);
      lines.push(line.trimEnd());
      if (lines.length > LOG_TAIL) lines.shift();
    },
  });
  // A plain-text upstream (tls 'none') lets the relay match what the proxy sends (TcpRelay.killOn).
  const tls = prosodyOptions.tls === 'none' ? { tls: 'none' as const } : {};
  const tp = await startTestProxy(prosody, { ...overrides, upstream: { ...FAST_UPSTREAM, port: relay.port, ...tls } }, log);
  t.teardown(() => tp.close());
  return { prosody, relay, tp, logTail: () => lines.join('\n') };
}

/** Proxy log lines kept by {@link prosodyBehindRelay}. */
const LOG_TAIL = 400;

/**
 * alice and bob of {@link chatPair} send each other numbered messages in turn (`a1`, `b1`,
 * `a2`…), one pair every `pauseMs`, until `stop()`, which resolves with how many pairs were sent.
 */
export function twoWayStream(pair: Awaited<ReturnType<typeof chatPair>>, pauseMs: number): { stop(): Promise<number> } {
  const { alice, bob, say, drops } = pair;
  let sent = 0;
  let streaming = true;
  const stream = (async () => {
    while (streaming) {
      sent++;
      await say(alice, 'bob@proxy.test/b', `a${sent}`);
      await say(bob, 'alice@proxy.test/a', `b${sent}`);
      await sleep(pauseMs);
    }
  })().catch((err: unknown) => {
    // A client that lost its connection cannot send: the stream ends there (the test's
    // assertions report it), rather than as an unhandled rejection that stalls the file.
    drops.why.push(`sending failed: ${(err as Error).message}`);
  });
  return {
    async stop() {
      streaming = false;
      await stream;
      return sent;
    },
  };
}
