/**
 * Issue 10 B: dead clients are noticed. A phone whose network silently died sends no FIN or RST;
 * before the read timeout its stream stayed attached for ever, so its session neither hibernated
 * (to queue for a resume) nor ended. Clients reach the proxy through a TcpRelay here, and the
 * relay's blackhole (nothing forwarded either way, no close passed on) plays the dead network.
 * With `limits.readTimeoutSeconds` and `sm.maxAckDelaySeconds` at 1 s, the proxy probes a silent
 * client after 1–1.25 s and drops it 1 s later. Outcomes are asserted, not timings.
 */
import type { SessionEnd } from '../../src/session/events.ts';
import * as fs from 'node:fs';
import t from 'tap';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startProsodyAndProxy, clientFor, waitFor, bodiesOf } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { sessionOf, sleep } from '../harness/chat.ts';
import type { Session } from '../../src/session/session.ts';

const { prosody, tp } = await startProsodyAndProxy(t, { logLevel: 'debug' }, { limits: { readTimeoutSeconds: 1 }, sm: { maxAckDelaySeconds: 1 } });
const prosodyLog = () => fs.readFileSync(prosody.logFile, 'utf8');

/** A relay in front of the proxy's STARTTLS port: the client's network. */
async function network(t: { teardown(fn: () => unknown): void }): Promise<TcpRelay> {
  const relay = await TcpRelay.start(tp.port);
  t.teardown(() => relay.close());
  return relay;
}

const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'desk' });
await bob.start();
t.teardown(() => bob.stop());
const tell = (to: string, body: string) => bob.send(xml('message', { to, type: 'chat' }, xml('body', {}, body)));

t.test('an idle client that answers the probes stays attached', async (t) => {
  const relay = await network(t);
  const alice = clientFor({ ...tp, port: relay.port }, 'alice', 'alice-pw', { resource: 'idle' });
  let probes = 0;
  alice.on('nonza', (el: Element) => {
    if (el.name === 'r') probes++;
  });
  let drops = 0;
  alice.on('disconnect', () => drops++);
  await alice.start();
  await waitFor(() => sessionOf(tp, 'alice@proxy.test/idle').sm.enabled, 'SM enabled');
  const session = sessionOf(tp, 'alice@proxy.test/idle');
  const before = probes;
  await waitFor(() => probes - before >= 3, 'three probes of an idle client', 20_000);
  t.notOk(session.hibernating, 'still attached: each <a/> counted as input');
  t.equal(drops, 0, 'never dropped');
  t.equal(sessionOf(tp, 'alice@proxy.test/idle'), session, 'the same session');
  await tell('alice@proxy.test/idle', 'still there');
  const got = bodiesOf(alice);
  await waitFor(() => got.includes('still there'), 'and it still gets messages');
  await alice.stop();
});

t.test('a client whose network died: the session hibernates, and a resume gets everything once', async (t) => {
  const relay = await network(t);
  const alice = clientFor({ ...tp, port: relay.port }, 'alice', 'alice-pw', { resource: 'phone' });
  const got = bodiesOf(alice);
  await alice.start();
  await alice.send(xml('presence'));
  await waitFor(() => sessionOf(tp, 'alice@proxy.test/phone').sm.enabled, 'SM enabled');
  const session = sessionOf(tp, 'alice@proxy.test/phone');
  const smId = alice.streamManagement.id;
  t.ok(smId, 'resumable');
  await tell('alice@proxy.test/phone', 'before');
  await waitFor(() => got.includes('before'), 'a message before the network dies');

  // The network dies: nothing goes through either way, and nobody is told.
  alice.reconnect.stop();
  const hibernating = new Promise<void>((resolve) => session.once('hibernating', () => resolve()));
  relay.blackhole();
  for (let i = 1; i <= 3; i++) await tell('alice@proxy.test/phone', `during ${i}`);
  await Promise.race([hibernating, sleep(20_000).then(() => Promise.reject(new Error('no hibernation within 20 s')))]);
  t.ok(session.hibernating, 'the proxy noticed: the session hibernates');
  t.equal(relay.closedByTarget, 1, 'the client socket at the proxy is gone');
  t.ok(tp.proxy.sessions.has(session), 'the session lives on');
  for (let i = 1; i <= 3; i++) await tell('alice@proxy.test/phone', `hibernated ${i}`);
  await waitFor(() => session.sm.queue.length >= 6, 'the proxy queues for the hibernated client');

  // The network comes back; the client notices its old connection is dead and reconnects.
  relay.thaw();
  const disconnected = new Promise((resolve) => alice.once('disconnect', resolve));
  alice.socket.socket.destroy();
  await disconnected;
  const resumed = new Promise((resolve) => alice.streamManagement.once('resumed', resolve));
  await alice.reconnect.reconnect();
  await resumed;
  t.equal(alice.streamManagement.id, smId, 'same resumption id');
  t.equal(sessionOf(tp, 'alice@proxy.test/phone'), session, 'the same session resumed');
  const expected = ['before', 'during 1', 'during 2', 'during 3', 'hibernated 1', 'hibernated 2', 'hibernated 3'];
  await waitFor(() => got.length >= expected.length, 'every message arrives');
  await sleep(500); // a second copy, if any, would show up by now
  t.same(got, expected, 'every message exactly once, in order');
  await alice.stop();
  await waitFor(() => !tp.proxy.sessions.has(session), 'the session ends with a clean close');
});

t.test('a client without SM whose network died: its session ends', async (t) => {
  const relay = await network(t);
  const { client, jid } = await RawClient.login({ port: relay.port, user: 'alice', password: 'alice-pw', resource: 'nosm' });
  t.teardown(() => client.destroy());
  client.send(`<presence/>`);
  const session: Session = sessionOf(tp, jid);
  t.notOk(session.sm.enabled, 'no XEP-0198 on this stream');

  // Alive: it answers the proxy's XEP-0199 ping, and the answer stays at the proxy.
  const ping = await client.next((el) => el.name === 'iq' && el.attrs.type === 'get' && el.getChild('ping', 'urn:xmpp:ping') !== undefined, 10_000);
  t.equal(ping.attrs.from, 'proxy.test', 'the ping comes from the domain');
  t.ok(String(ping.attrs.id).length >= 12, 'with an unguessable id');
  client.send(`<iq type='result' id='${ping.attrs.id}' to='proxy.test'/>`);
  await sleep(2500); // past the probe timeout
  t.notOk(session.hibernating, 'an answered ping keeps it attached');
  t.ok(tp.proxy.sessions.has(session));
  t.notOk(prosodyLog().includes(String(ping.attrs.id)), 'the answer never reached the server');

  const ended = new Promise<string>((resolve) => session.once('ended', (end: SessionEnd) => resolve(end.detail)));
  relay.blackhole();
  const reason = await Promise.race([ended, sleep(20_000).then(() => Promise.reject(new Error('session did not end within 20 s')))]);
  t.pass(`the session ended (${reason}) instead of hibernating`);
  t.notOk(tp.proxy.sessions.has(session), 'nothing left at the proxy');
  t.equal(relay.closedByTarget, 1, 'the client socket at the proxy is gone');
});
