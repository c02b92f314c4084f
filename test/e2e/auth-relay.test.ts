// SCRAM relay (issue 14, design §4.1.3) on real Prosody with @xmpp/client, which picks
// SCRAM-SHA-1 when offered: the exchange is relayed to a new upstream login (the proxy holds no
// secret); a wrong password gets the upstream's not-authorized; a channel-binding gs2 header a
// clean failure and no upstream login; an upstream restart closes each client's connection once,
// the client resumes with a new relayed login and nothing is lost or duplicated.
import t from 'tap';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, waitFor, ACCOUNTS, clientFor, bodiesOf } from '../harness/proxy.ts';
import { xml } from '@xmpp/client';
import { FAST_UPSTREAM, chatPair, count, sessionOf, sleep } from '../harness/chat.ts';
import { RawClient } from '../harness/raw-client.ts';

const prosody = await startProsody({ tls: 'required', accounts: ACCOUNTS });
t.teardown(() => prosody.stop());
// The upstream timeout covers a relayed login's client turns too: generous, timing is not under test.
const tp = await startTestProxy(prosody, { upstream: { ...FAST_UPSTREAM, connectTimeoutSeconds: 20 }, auth: { mode: 'scram-relay' } });
t.teardown(() => tp.close());

t.test('the proxy offers the upstream SCRAM mechanisms without -PLUS, and no PLAIN', async (t) => {
  const c = await RawClient.tls({ port: tp.port });
  t.teardown(() => c.destroy());
  const features = c.received.filter((el) => el.name === 'stream:features').at(-1)!;
  const offered = features.getChild('mechanisms')!.getChildren('mechanism').map((m) => m.getText());
  t.same(offered, ['SCRAM-SHA-1'], 'what Prosody offers over TLS 1.3 (SCRAM-SHA-1 and PLAIN), PLAIN removed');
});

t.test('@xmpp/client logs in with SCRAM-SHA-1 relayed, chats, and resumes across an upstream restart: nothing lost or duplicated', async (t) => {
  const { alice, bob, aliceGot, bobGot, say } = await chatPair(tp);
  await say(alice, 'bob@proxy.test/b', 'before');
  await waitFor(() => bobGot.includes('before'), 'bob gets the first message');
  const aliceSession = sessionOf(tp, 'alice@proxy.test/a');
  t.ok(aliceSession.relayed, 'a relayed session: the proxy holds no credential');
  let aliceDrops = 0;
  alice.on('disconnect', () => aliceDrops++);
  const bobSession = sessionOf(tp, 'bob@proxy.test/b');
  const resumed = Promise.all([aliceSession, bobSession].map((s) => new Promise((resolve) => s.once('resumed', resolve))));
  const results: string[] = [];
  const onLogin = (result: string) => results.push(result);
  tp.proxy.manager.events.on('client-login', onLogin);
  await prosody.restart();
  await resumed;
  tp.proxy.manager.events.off('client-login', onLogin);
  // The clients come back while Prosody is still starting: their logins wait for it (nothing
  // was relayed yet), rather than fail and leave them waiting out a deadline or a backoff.
  t.same(results, ['success', 'success'], 'one relayed login each, neither refused');
  // Sent once both are back (@xmpp/client does not queue what is sent while it is offline).
  for (let i = 1; i <= 5; i++) {
    await say(alice, 'bob@proxy.test/b', `a${i}`);
    await say(bob, 'alice@proxy.test/a', `b${i}`);
  }
  await waitFor(() => [1, 2, 3, 4, 5].every((i) => bobGot.includes(`a${i}`) && aliceGot.includes(`b${i}`)), 'every message delivered after the resume', 30_000);
  await sleep(500);
  for (const body of ['before', 'a1', 'a2', 'a3', 'a4', 'a5']) t.equal(count(bobGot, body), 1, `${body} reached bob once`);
  for (let i = 1; i <= 5; i++) t.equal(count(aliceGot, `b${i}`), 1, `b${i} reached alice once`);
  t.ok(aliceDrops >= 1, 'alice saw her connection closed and came back');
  t.equal(sessionOf(tp, 'alice@proxy.test/a'), aliceSession, 'the same session resumed');
  await alice.stop();
  await bob.stop();
});

t.test("@xmpp/client's network drops in relay mode: it logs in again (relayed, used as proof only) and resumes; the upstream link was never touched, 30 messages once, in order (issue 14 §2, §5)", async (t) => {
  const alice = clientFor(tp, 'alice', 'alice-pw', { resource: 'phone' });
  const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'desk' });
  const aliceGot = bodiesOf(alice);
  await alice.start();
  await bob.start();
  await waitFor(() => sessionOf(tp, 'alice@proxy.test/phone').sm.enabled, 'SM enabled');
  const session = sessionOf(tp, 'alice@proxy.test/phone');
  t.ok(session.relayed, 'relayed: the proxy holds no credential');
  let upstreamDrops = 0;
  session.on('upstream-down', () => upstreamDrops++);
  const smId = alice.streamManagement.id;

  alice.reconnect.stop();
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  alice.socket.socket.destroy();
  await hibernating;
  const bodies = Array.from({ length: 30 }, (_, i) => `while away ${i + 1}`);
  for (const body of bodies) await bob.send(xml('message', { to: 'alice@proxy.test/phone', type: 'chat' }, xml('body', {}, body)));
  await waitFor(() => session.sm.queue.length >= 30, 'the proxy queues the 30');

  const resumed = new Promise((resolve) => alice.streamManagement.once('resumed', resolve));
  await alice.reconnect.reconnect();
  await resumed;
  t.equal(alice.streamManagement.id, smId, 'the same SM session');
  t.equal(sessionOf(tp, 'alice@proxy.test/phone'), session, 'the same proxy session');
  await waitFor(() => aliceGot.length >= 30, 'alice gets the 30');
  await sleep(300);
  t.same(aliceGot, bodies, 'each once, in order');
  t.equal(upstreamDrops, 0, 'the upstream link stayed up throughout (the new login was proof only)');
  t.ok(session.upstreamLinked, 'and is still the link');
  await alice.stop();
  await bob.stop();
});

t.test('metrics: logins by mode and result, relay reconnects (issue 14 §6)', async (t) => {
  const text = await tp.proxy.metrics.registry.metrics();
  const value = (line: string) => Number(text.split('\n').find((l) => l.startsWith(line + ' '))?.split(' ').pop() ?? NaN);
  t.ok(value('xmpp_sm_proxy_client_logins_total{mode="scram-relay",result="success"}') >= 4, 'relayed logins counted (two logins, two after the restart)');
  t.equal(value('xmpp_sm_proxy_client_logins_total{mode="plain",result="success"}'), 0, 'no PLAIN login in scram-relay mode');
  t.ok(value('xmpp_sm_proxy_relay_reconnects_total') >= 2, 'each client was sent to log in again once');
});
