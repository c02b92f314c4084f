/**
 * Fault injection: the upstream dies during SASL, during the bind and during a reconnect's
 * replay, and bugs are injected into one session's handlers; each costs that stream at most,
 * never the process, and the other sessions keep chatting throughout. Runs on a plain-text
 * upstream so that the relay can see what the proxy sends and reset the link at the moment.
 */
import t from 'tap';
import { xml } from '@xmpp/client';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, clientFor, bodiesOf, waitFor } from '../harness/proxy.ts';
import { FAST_UPSTREAM, count, sessionOf, sleep } from '../harness/chat.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { RawClient } from '../harness/raw-client.ts';
import { Session } from '../../src/session/session.ts';

const rejections: unknown[] = [];
process.on('unhandledRejection', (reason) => rejections.push(reason));

const accounts = ['alice', 'bob', 'carol'].map((user) => ({ user, password: `${user}-pw` }));
const prosody = await startProsody({ tls: 'none', accounts });
t.teardown(() => prosody.stop());
const relay = await TcpRelay.start(prosody.c2sPort);
t.teardown(() => relay.close());
const tp = await startTestProxy(prosody, { upstream: { ...FAST_UPSTREAM, port: relay.port, tls: 'none' } });
t.teardown(() => tp.close());

// bob and carol chat all along: nothing that happens to alice may disturb them.
const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'b' });
const carol = clientFor(tp, 'carol', 'carol-pw', { resource: 'c' });
const carolGot = bodiesOf(carol);
await bob.start();
await carol.start();
let chatted = 0;
let chatting = true;
const background = (async () => {
  while (chatting) {
    chatted++;
    await bob.send(xml('message', { to: 'carol@proxy.test/c', type: 'chat' }, xml('body', {}, `bc${chatted}`)));
    await sleep(50);
  }
})();
t.teardown(async () => {
  chatting = false;
  await background;
  await bob.stop().catch(() => {});
  await carol.stop().catch(() => {});
});

t.test('the upstream dies during SASL: the proxy logs in again on a new connection, the client sees only success', async (t) => {
  relay.killOn(/<auth /);
  const c = await RawClient.tls({ port: tp.port });
  const answer = await c.auth('alice', 'alice-pw');
  t.equal(relay.killed, 1, 'the fault happened');
  t.equal(answer.name, 'success', 'the login was tried again (the proxy holds the password) and succeeded');
  c.send('</stream:stream>');
});

t.test('the upstream dies during the bind: that stream alone ends with remote-connection-failed', async (t) => {
  relay.killOn(/xmpp-bind/);
  const c = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  c.send(`<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>`);
  t.equal(await c.streamError(), 'remote-connection-failed');
  t.notOk([...tp.proxy.sessions].some((s) => s.bareJid === 'alice@proxy.test'), 'no half-made session left');
});

t.test('the upstream dies during a reconnect\'s replay: the session reconnects again, the client sees nothing', async (t) => {
  const alice = clientFor(tp, 'alice', 'alice-pw', { resource: 'a' });
  let drops = 0;
  alice.on('disconnect', () => drops++);
  await alice.start();
  await alice.send(xml('presence'));
  const session = sessionOf(tp, 'alice@proxy.test/a');
  await waitFor(() => session.sm.enabled, 'SM enabled');
  const killedBefore = relay.killed;
  // First her link dies as she sends; then the new link dies as the proxy replays her presence.
  relay.killOn(/kill-me/);
  relay.killOn(/<presence/);
  let ups = 0;
  session.on('upstream-up', () => ups++);
  await alice.send(xml('message', { to: 'carol@proxy.test/c', type: 'chat' }, xml('body', {}, 'kill-me')));
  await waitFor(() => relay.killed === killedBefore + 2 && session.upstreamLinked, 'both faults hit and a third link is up', 20_000);
  await waitFor(() => carolGot.includes('kill-me'), 'the message sent into the first fault arrives', 20_000);
  await alice.send(xml('message', { to: 'carol@proxy.test/c', type: 'chat' }, xml('body', {}, 'after')));
  await waitFor(() => carolGot.includes('after'), 'alice chats on');
  await sleep(300);
  t.equal(count(carolGot, 'kill-me'), 1, 'delivered once');
  t.equal(drops, 0, 'alice saw nothing');
  t.equal(sessionOf(tp, 'alice@proxy.test/a'), session, 'the same session carried on');
  t.ok(ups >= 1, 'the session reported its upstream back');
  await alice.stop();
});

t.test('a bug in a session\'s element handler ends that stream alone with internal-server-error', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'buggy' });
  client.send(`<enable xmlns='urn:xmpp:sm:3'/>`);
  await client.next((el) => el.name === 'enabled');
  const session = sessionOf(tp, 'alice@proxy.test/buggy');
  (session.sm as { handleNonza: unknown }).handleNonza = () => {
    throw new Error('injected bug: secret internals');
  };
  client.send(`<r xmlns='urn:xmpp:sm:3'/>`);
  t.equal(await client.streamError(), 'internal-server-error');
  const error = client.received.find((el) => el.name === 'stream:error')!;
  t.notOk(error.getChild('text'), 'no internal text reaches the client');
  t.notMatch(error.toString(), /injected|secret/);
  await client.closed;
});

t.test('a bug in the resume path ends that stream alone; the process lives on', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'resumer' });
  client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const id = (await client.next((el) => el.name === 'enabled')).attrs.id as string;
  const session = sessionOf(tp, 'alice@proxy.test/resumer');
  client.destroy();
  await waitFor(() => session.hibernating, 'hibernating');
  const original = Session.prototype.resume;
  Session.prototype.resume = async function () {
    throw new Error('injected async bug');
  };
  t.teardown(() => {
    Session.prototype.resume = original;
  });
  const again = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  again.send(`<resume xmlns='urn:xmpp:sm:3' previd='${id}' h='0'/>`);
  t.equal(await again.streamError(), 'internal-server-error');
  Session.prototype.resume = original;
  const third = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  third.send(`<resume xmlns='urn:xmpp:sm:3' previd='${id}' h='0'/>`);
  t.equal((await third.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed', 'the session is still there to resume');
  third.send('</stream:stream>');
});

t.test('bob and carol chatted through all of it; no promise went unhandled', async (t) => {
  const upTo = chatted;
  await waitFor(() => carolGot.includes(`bc${upTo}`), 'the latest background message arrives', 20_000);
  const want = Array.from({ length: upTo }, (_, i) => `bc${i + 1}`);
  t.same(want.filter((b) => !carolGot.includes(b)), [], `none of ${upTo} lost`);
  t.same(rejections, []);
});
