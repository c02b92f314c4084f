import t from 'tap';
import type { Element } from 'ltx';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, waitFor, ACCOUNTS } from '../harness/proxy.ts';
import { FAST_UPSTREAM, chatPair, count, prosodyBehindRelay, sessionOf, sleep } from '../harness/chat.ts';
import { RawClient } from '../harness/raw-client.ts';

t.test('Prosody restarts while two clients chat: no client sees it, every message arrives once', async (t) => {
  const prosody = await startProsody({ tls: 'required', accounts: ACCOUNTS });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody, { upstream: FAST_UPSTREAM });
  t.teardown(() => tp.close());
  const { alice, bob, aliceGot, bobGot, drops, say } = await chatPair(tp);
  await say(alice, 'bob@proxy.test/b', 'before');
  await waitFor(() => bobGot.includes('before'), 'bob gets the first message');

  const aliceSession = sessionOf(tp, 'alice@proxy.test/a');
  const down = new Promise((resolve) => aliceSession.once('upstream-down', resolve));
  const restarting = prosody.restart();
  // Messages both ways while the server is gone or coming back.
  for (let i = 1; i <= 5; i++) {
    await say(alice, 'bob@proxy.test/b', `a${i}`);
    await say(bob, 'alice@proxy.test/a', `b${i}`);
    await sleep(50);
  }
  await restarting;
  await down;
  await waitFor(() => aliceSession.upstreamLinked && sessionOf(tp, 'bob@proxy.test/b').upstreamLinked, 'both links re-established', 20_000);
  await waitFor(() => [1, 2, 3, 4, 5].every((i) => bobGot.includes(`a${i}`) && aliceGot.includes(`b${i}`)), 'all messages of the outage delivered', 20_000);
  await say(alice, 'bob@proxy.test/b', 'after');
  await waitFor(() => bobGot.includes('after'), 'chat goes on');
  await sleep(300);
  for (let i = 1; i <= 5; i++) {
    t.equal(count(bobGot, `a${i}`), 1, `a${i} reached bob exactly once`);
    t.equal(count(aliceGot, `b${i}`), 1, `b${i} reached alice exactly once`);
  }
  t.equal(drops.n, 0, 'neither client saw a disconnect');
  t.equal(sessionOf(tp, 'alice@proxy.test/a'), aliceSession, 'the same session carried on');
  await alice.stop();
  await bob.stop();
});

t.test('a half-open upstream (Prosody stopped with SIGSTOP) is detected and replaced', async (t) => {
  const prosody = await startProsody({ tls: 'required', accounts: ACCOUNTS });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody, { upstream: FAST_UPSTREAM });
  t.teardown(() => tp.close());
  const { alice, bob, aliceGot, bobGot, drops, say } = await chatPair(tp);
  const session = sessionOf(tp, 'alice@proxy.test/a');
  prosody.kill('SIGSTOP');
  const stoppedAt = Date.now();
  await say(alice, 'bob@proxy.test/b', 'into the void?');
  await waitFor(() => !session.upstreamLinked, 'the dead link is noticed', 10_000);
  const detectMs = Date.now() - stoppedAt;
  t.ok(detectMs <= (FAST_UPSTREAM.keepaliveSeconds + FAST_UPSTREAM.pingTimeoutSeconds) * 1000 + 1500, `detected within the configured time (${detectMs} ms)`);
  prosody.kill('SIGCONT');
  await waitFor(() => session.upstreamLinked, 'replaced by a new link', 20_000);
  await waitFor(() => bobGot.includes('into the void?'), 'the message sent into the half-open link arrives', 20_000);
  await say(bob, 'alice@proxy.test/a', 'back');
  await waitFor(() => aliceGot.includes('back'), 'and the other way');
  t.equal(drops.n, 0, 'no client saw anything');
  await alice.stop();
  await bob.stop();
});

t.test('a client hibernated when the upstream drops still resumes and gets everything', async (t) => {
  const { prosody, relay, tp } = await prosodyBehindRelay(t);
  const { client: alice } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'phone' });
  alice.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const id = (await alice.next((el) => el.name === 'enabled')).attrs.id as string;
  alice.send(`<presence/>`);
  const session = sessionOf(tp, 'alice@proxy.test/phone');
  alice.destroy();
  await waitFor(() => session.hibernating, 'hibernating');
  relay.cutAll();
  const bob = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'direct' });
  for (let i = 1; i <= 5; i++) bob.client.send(`<message to='alice@proxy.test/phone' type='chat'><body>while both were gone ${i}</body></message>`);
  await waitFor(() => session.upstreamLinked, 'upstream re-established while hibernated', 20_000);
  for (let i = 6; i <= 8; i++) bob.client.send(`<message to='alice@proxy.test/phone' type='chat'><body>while both were gone ${i}</body></message>`);
  await waitFor(() => session.sm.queue.unacked().filter((s) => s.xml.includes('while both were gone')).length === 8, 'all 8 queued for alice', 20_000);

  const again = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  again.send(`<resume xmlns='urn:xmpp:sm:3' previd='${id}' h='0'/>`);
  t.equal((await again.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');
  const got: Element[] = [];
  while (got.length < 8) got.push(await again.next((el) => el.name === 'message'));
  t.same(
    got.map((m) => m.getChildText('body')),
    Array.from({ length: 8 }, (_, i) => `while both were gone ${i + 1}`),
    'offline messages of the gap and the later ones, in order',
  );
  again.send('</stream:stream>');
  bob.client.send('</stream:stream>');
});

