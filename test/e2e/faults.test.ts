/**
 * Network faults on the upstream link (a TCP relay between proxy and Prosody that resets every
 * connection at once) while @xmpp/client users chat through the proxy.
 *
 * Zero loss in the server-to-client direction needs the server to know what it lost: either its
 * archive (MAM: the proxy fills the gap) or its own stream management (unacked messages go to
 * offline storage when the link dies). Each scenario runs against both. A server with neither
 * loses what it had written into the dead connection; that is not the proxy's to recover.
 * Order holds in both: with MAM the new link's traffic waits for the gap fill; with SM the
 * replayed presence is pipelined behind the bind, so offline storage empties before anything
 * live reaches the new resource.
 */
import t, { type Test } from 'tap';
import { xml } from '@xmpp/client';
import type { ProsodyOptions } from '../harness/prosody.ts';
import { clientFor, waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { chatPair, prosodyBehindRelay, sessionOf, sleep, twoWayStream } from '../harness/chat.ts';

const VARIANTS: Array<{ name: string; prosody: ProsodyOptions }> = [
  { name: 'Prosody with MAM, without SM', prosody: { mam: true } },
  { name: 'Prosody with its own SM (resumed by the proxy after a drop), without MAM', prosody: { smacks: true } },
];

async function setup(t: Test, prosodyOptions: ProsodyOptions) {
  const { relay, tp, logTail } = await prosodyBehindRelay(t, prosodyOptions);
  const pair = await chatPair(tp);
  // On a failure, why a client dropped and what the proxy did (these failed only under load).
  t.teardown(() => {
    if (!t.passing()) t.comment(`${pair.drops.why.join('\n')}\nproxy log:\n${logTail()}`);
  });
  return { relay, tp, ...pair };
}

/** What of `want` is missing from `got`, for a failure message. */
const missing = (want: string[], got: string[]) => want.filter((b) => !got.includes(b));

for (const variant of VARIANTS) {
  t.test(`${variant.name}: the upstream link is cut with 100 messages in flight`, async (t) => {
    const { relay, alice, bob, bobGot, drops } = await setup(t, variant.prosody);
    const bodies = Array.from({ length: 100 }, (_, i) => `m${i + 1}`);
    // Straight into the socket, no awaiting: the cut lands while they are in flight.
    for (const body of bodies) void alice.send(xmlMessage('bob@proxy.test/b', body));
    await sleep(5);
    relay.cutAll();
    await waitFor(() => bodies.every((b) => bobGot.includes(b)), 'all 100 delivered', 30_000).catch(() => {});
    t.same(missing(bodies, bobGot), [], 'none lost');
    await sleep(500);
    t.same(bobGot, bodies, 'each once, in order: nothing sent again reached bob twice');
    t.equal(drops.n, 0, 'no client saw the cut');
    t.ok(relay.accepted >= 4, 'both links were re-established through the relay');
    await alice.stop();
    await bob.stop();
  });

  t.test(`${variant.name}: ten upstream drops in a row during a two-way message stream`, async (t) => {
    const pair = await setup(t, variant.prosody);
    const { relay, tp, alice, bob, aliceGot, bobGot, drops } = pair;
    const downs = { n: 0 };
    for (const jid of ['alice@proxy.test/a', 'bob@proxy.test/b']) sessionOf(tp, jid).on('upstream-down', () => downs.n++);
    const stream = twoWayStream(pair, 20);
    for (let i = 0; i < 10; i++) {
      await sleep(400);
      relay.cutAll();
    }
    await sleep(300);
    const sent = await stream.stop();
    const want = (p: string) => Array.from({ length: sent }, (_, i) => `${p}${i + 1}`);
    await waitFor(() => missing(want('a'), bobGot).length + missing(want('b'), aliceGot).length === 0, 'everything delivered', 30_000).catch(() => {});
    t.same(missing(want('a'), bobGot), [], `none of ${sent} lost from alice to bob`);
    t.same(missing(want('b'), aliceGot), [], `none of ${sent} lost from bob to alice`);
    await sleep(500);
    t.same(bobGot, want('a'), 'alice to bob: each once, in order');
    t.same(aliceGot, want('b'), 'bob to alice: each once, in order');
    t.equal(drops.n, 0, 'no client saw any of the ten drops');
    // How many cuts hit a live link depends on the machine's speed; that they hit, and that
    // both sessions are linked again at the end, does not.
    t.ok(downs.n >= 1, `the cuts hit the upstream links (${downs.n} drops seen)`);
    await waitFor(() => sessionOf(tp, 'alice@proxy.test/a').upstreamLinked && sessionOf(tp, 'bob@proxy.test/b').upstreamLinked, 'both linked again');
    await alice.stop();
    await bob.stop();
  });
}

t.test('Prosody with MAM: a recipient outside the proxy gets each message once after a cut (the sender\'s archive is checked before re-sending)', async (t) => {
  const { prosody, relay, tp } = await prosodyBehindRelay(t, { mam: true });
  // bob talks to Prosody directly: the proxy's duplicate window cannot help him.
  const { client: bob } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'direct' });
  bob.send('<presence/>');
  const alice = clientFor(tp, 'alice', 'alice-pw', { resource: 'a' });
  await alice.start();
  const session = sessionOf(tp, 'alice@proxy.test/a');
  await waitFor(() => session.sm.enabled, 'SM enabled');
  const bodies = Array.from({ length: 100 }, (_, i) => `m${i + 1}`);
  const got = () => bob.received.filter((el) => el.name === 'message').map((el) => el.getChildText('body')).filter((b) => b !== null);
  for (const body of bodies) void alice.send(xmlMessage('bob@proxy.test/direct', body));
  await waitFor(() => got().length >= 20, 'some reached bob before the cut');
  relay.cutAll();
  await waitFor(() => bodies.every((b) => got().includes(b)), 'all 100 delivered', 30_000).catch(() => {});
  await sleep(1000);
  t.same(got(), bodies, 'each once, in order');
  await alice.stop();
  bob.send('</stream:stream>');
});

function xmlMessage(to: string, body: string) {
  return xml('message', { to, type: 'chat' }, xml('body', {}, body));
}
