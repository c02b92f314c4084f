/**
 * Memory under abuse and slowness (issue 10 §3), on real Prosody:
 * - a client sending while the server cannot take anything (its link frozen) is read only up to
 *   `upstream.maxCustodyBytes`; the rest waits in TCP, and all of it arrives once the server is
 *   back (before: 30 MB were read and held);
 * - a client that stops reading makes the proxy stop reading its upstream, and after
 *   `limits.sendTimeoutSeconds` without progress its session ends with the queue settled:
 *   every message reaches the account's next login (before: read and buffered without limit).
 */
import type { SessionEnd } from '../../src/session/events.ts';
import t from 'tap';
import { startProsody } from '../harness/prosody.ts';
import { ACCOUNTS, startTestProxy, waitFor } from '../harness/proxy.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { RawClient } from '../harness/raw-client.ts';
import { FAST_UPSTREAM, sessionOf } from '../harness/chat.ts';

const prosody = await startProsody({ tls: 'required', accounts: ACCOUNTS });
t.teardown(() => prosody.stop());
const relay = await TcpRelay.start(prosody.c2sPort);
t.teardown(() => relay.close());
const maxCustodyBytes = 128 * 1024;
const tp = await startTestProxy(prosody, {
  upstream: { ...FAST_UPSTREAM, port: relay.port, maxCustodyBytes },
  limits: { maxSendBufferBytes: 64 * 1024, sendTimeoutSeconds: 2 },
  sm: { maxQueueBytes: 64 * 1024 * 1024, maxQueueSize: 5000, maxHeldMessages: 5000 },
});
t.teardown(() => tp.close());

const filler = 'x'.repeat(5000);
const message = (to: string, i: number) => `<message to='${to}' type='chat' id='m${i}'><body>${i} ${filler}</body></message>`;
const bodiesOf = (c: RawClient, from = 0) => c.received.slice(from).filter((el) => el.name === 'message').map((el) => el.getChildText('body')?.split(' ')[0]);

async function smClient(user: string, resource: string): Promise<RawClient> {
  const { client } = await RawClient.login({ port: tp.port, user, password: `${user}-pw`, resource });
  client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  await client.next((el) => el.name === 'enabled');
  client.send(`<presence/>`);
  return client;
}

t.test('a client sending while the server takes nothing is read only up to maxCustodyBytes; nothing is lost', async (t) => {
  // bob straight at the server: only alice's side goes through the frozen relay.
  const { client: bob } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'in' });
  bob.send(`<presence/>`);
  const alice = await smClient('alice', 'out');
  t.teardown(() => [alice, bob].forEach((c) => c.destroy()));
  const session = sessionOf(tp, 'alice@proxy.test/out');
  relay.freeze(); // the server hears nothing and answers nothing
  const n = 400; // 2 MB
  let most = 0;
  const watch = setInterval(() => (most = Math.max(most, session.custodyBytes)), 5);
  t.teardown(() => clearInterval(watch));
  for (let i = 1; i <= n; i++) alice.send(message('bob@proxy.test/in', i));
  // Long enough for the proxy to have read all 2 MB if it read without limit.
  await waitFor(() => session.custodyBytes > maxCustodyBytes, 'custody to fill');
  await new Promise((r) => setTimeout(r, 1000));
  most = Math.max(most, session.custodyBytes);
  t.comment(`custody peaked at ${most} bytes of the ${n * 5100} sent`);
  // One read (64 KiB) may land after the pause is asked for.
  t.ok(most <= maxCustodyBytes + 80 * 1024, `held at most maxCustodyBytes plus one read (${most})`);
  relay.thaw();
  await waitFor(() => bodiesOf(bob).length >= n, `all ${n} messages at bob`, 60_000);
  const got = bodiesOf(bob);
  t.equal(got.length, n, 'each exactly once');
  t.same(got, Array.from({ length: n }, (_, i) => String(i + 1)), 'in order');
  await waitFor(() => session.custodyBytes === 0, 'the server to confirm the last of them');
  t.pass('nothing left in custody');
  // Leave cleanly: the next test needs alice's next session to be her only one.
  alice.send('</stream:stream>');
  await waitFor(() => !tp.proxy.sessions.has(session), 'alice/out to end');
});

t.test('a client that stops reading: the upstream is not read, the session ends, nothing is lost', async (t) => {
  const bob = await smClient('bob', 'sender');
  const alice = await smClient('alice', 'sleepy');
  t.teardown(() => [alice, bob].forEach((c) => c.destroy()));
  const session = sessionOf(tp, 'alice@proxy.test/sleepy');
  let reason = '';
  session.once('ended', (end: SessionEnd) => (reason = end.cause));
  alice.socket.pause(); // reads nothing more
  const n = 2000; // 10 MB: more than loopback's socket buffers take in
  for (let i = 1; i <= n; i++) bob.send(message('alice@proxy.test/sleepy', i));
  await waitFor(() => reason !== '', 'the session to end', 60_000);
  t.equal(reason, 'client-stalled');
  alice.destroy();
  // The next login of the account gets everything: held by the proxy, or offline at the server.
  const again = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'awake' });
  t.teardown(() => again.client.destroy());
  again.client.send(`<presence/>`);
  await waitFor(() => bodiesOf(again.client).length >= n, `all ${n} messages at the next login`, 60_000).catch((err: Error) => {
    const got = bodiesOf(again.client);
    const missing = Array.from({ length: n }, (_, i) => String(i + 1)).filter((b) => !got.includes(b));
    throw new Error(`${err.message}: ${got.length} arrived, missing ${missing.length}: ${missing.slice(0, 20).join(' ')}…`);
  });
  const got = bodiesOf(again.client);
  t.equal(new Set(got).size, n, 'every message');
  t.equal(got.length, n, 'each exactly once');
});
