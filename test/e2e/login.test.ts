import t from 'tap';
import { execFileSync } from 'node:child_process';
import { xml } from '@xmpp/client';
import { startProsodyAndProxy, clientFor, waitFor, bodiesOf } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';

const { prosody, tp } = await startProsodyAndProxy(t);

/** Established TCP connections from the proxy to Prosody's c2s port (seen by the kernel). */
function upstreamConnections(): number {
  const out = execFileSync('ss', ['-Htn', 'state', 'established', `( dport = :${prosody.c2sPort} )`], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

t.test('two users log in (STARTTLS and direct TLS) and chat through the proxy', async (t) => {
  const alice = clientFor(tp, 'alice', 'alice-pw', { resource: 'laptop' });
  const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'phone', direct: true });
  const aliceGot = bodiesOf(alice);
  const bobGot = bodiesOf(bob);
  const aliceJid = await alice.start();
  const bobJid = await bob.start();
  t.equal(aliceJid.toString(), 'alice@proxy.test/laptop', 'bound full JID relayed from the upstream');
  t.equal(bobJid.toString(), 'bob@proxy.test/phone');
  t.ok(alice.socket.secure, 'STARTTLS client is on TLS');
  t.ok(bob.socket.secure, 'direct TLS client is on TLS');
  t.equal(tp.proxy.sessions.size, 2);

  await alice.send(xml('message', { to: 'bob@proxy.test/phone', type: 'chat' }, xml('body', {}, 'hi bob')));
  await waitFor(() => bobGot.length === 1, 'bob receives');
  await bob.send(xml('message', { to: 'alice@proxy.test/laptop', type: 'chat' }, xml('body', {}, 'hi alice')));
  await waitFor(() => aliceGot.length === 1, 'alice receives');
  t.same(bobGot, ['hi bob']);
  t.same(aliceGot, ['hi alice']);

  // An iq round trip through the upstream (roster get).
  const roster = await alice.iqCaller.get(xml('query', { xmlns: 'jabber:iq:roster' }));
  t.equal(roster.name, 'query');

  await alice.stop();
  await bob.stop();
  await waitFor(() => tp.proxy.sessions.size === 0, 'sessions end after a clean close');
  await waitFor(() => upstreamConnections() === 0, 'upstream links closed');
});

t.test('the upstream sees the proxy log in with SCRAM-SHA-1 over STARTTLS', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw' });
  const log = await import('node:fs').then((fs) => fs.readFileSync(prosody.logFile, 'utf8'));
  t.match(log, /Authenticated as alice@proxy\.test/, 'prosody authenticated alice');
  client.send('</stream:stream>');
  await client.closed;
});

t.test('wrong password gets not-authorized and leaves nothing behind', async (t) => {
  await waitFor(() => upstreamConnections() === 0, 'no upstream links before');
  const client = await RawClient.connect({ port: tp.port });
  await client.open();
  await client.starttls();
  const answer = await client.auth('alice', 'wrong');
  t.equal(answer.name, 'failure');
  t.equal(answer.getChildElements()[0]?.name, 'not-authorized', "the upstream's verdict");
  t.equal(tp.proxy.sessions.size, 0, 'no session');
  await waitFor(() => upstreamConnections() === 0, 'upstream link of the failed login closed');
  // The stream stays open for another try (RFC 6120 §6.4.5) and the right password works.
  const retry = await client.auth('alice', 'alice-pw');
  t.equal(retry.name, 'success');
  client.destroy();
  await waitFor(() => upstreamConnections() === 0, 'unbound login leaves no upstream link');

  const xmpp = clientFor(tp, 'bob', 'nope');
  const err = await xmpp.start().then(() => undefined, (e: { condition?: string }) => e);
  t.equal(err?.condition, 'not-authorized', '@xmpp/client sees not-authorized');
  await xmpp.stop().catch(() => {});
});

t.test('unknown account gets not-authorized', async (t) => {
  const client = await RawClient.connect({ port: tp.tlsPort, direct: true });
  await client.open();
  const answer = await client.auth('mallory', 'x');
  t.equal(answer.getChildElements()[0]?.name, 'not-authorized');
  client.destroy();
});
