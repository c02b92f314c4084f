import t from 'tap';
import { xml } from '@xmpp/client';
import { startProsodyAndProxy, clientFor, waitFor, bodiesOf } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import type { Session } from '../../src/session/session.ts';

const { tp } = await startProsodyAndProxy(t);

function sessionOf(fullJid: string): Session | undefined {
  return [...tp.proxy.sessions].find((s) => s.fullJid === fullJid);
}

t.test('@xmpp/client: lost socket, 50 messages while hibernated, resume gets each once in order', async (t) => {
  const alice = clientFor(tp, 'alice', 'alice-pw', { resource: 'phone' });
  const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'desk' });
  const aliceGot = bodiesOf(alice);
  const bobGot = bodiesOf(bob);
  await alice.start();
  await bob.start();
  await waitFor(() => sessionOf('alice@proxy.test/phone')?.sm.enabled === true, 'alice has SM enabled');
  const session = sessionOf('alice@proxy.test/phone')!;
  const smId = alice.streamManagement.id;
  t.ok(smId.length >= 22, 'resumption id has at least 128 bits');

  // The network goes away: no </stream:stream>, and no automatic reconnect yet.
  alice.reconnect.stop();
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  alice.socket.socket.destroy();
  await hibernating;
  t.ok(session.hibernating, 'session hibernates');

  for (let i = 1; i <= 50; i++) {
    await bob.send(xml('message', { to: 'alice@proxy.test/phone', type: 'chat', id: `m${i}` }, xml('body', {}, `msg ${i}`)));
  }
  await waitFor(() => session.sm.queue.length >= 50, 'the 50 messages are queued by the proxy');

  const resumed = new Promise((resolve) => alice.streamManagement.once('resumed', resolve));
  await alice.reconnect.reconnect();
  await resumed;
  t.equal(alice.streamManagement.id, smId, 'same SM session');
  t.equal(sessionOf('alice@proxy.test/phone'), session, 'the proxy resumed the same session object');

  await waitFor(() => aliceGot.length >= 50, 'alice receives the 50 messages');
  // Give duplicates, if any, time to show up.
  await new Promise((r) => setTimeout(r, 300));
  t.same(aliceGot, Array.from({ length: 50 }, (_, i) => `msg ${i + 1}`), 'all 50, once each, in order');

  await alice.send(xml('message', { to: 'bob@proxy.test/desk', type: 'chat' }, xml('body', {}, 'got them all')));
  await waitFor(() => bobGot.includes('got them all'), "bob receives alice's reply");
  await waitFor(() => session.sm.queue.length === 0, "alice's acks empty the proxy's queue");

  await alice.stop();
  await bob.stop();
  await waitFor(() => tp.proxy.sessions.size === 0, 'sessions end');
});

t.test("resuming with another account's id fails and leaves the victim's session intact", async (t) => {
  const victim = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'victim' });
  victim.client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const enabled = await victim.client.next((el) => el.name === 'enabled');
  const victimId = enabled.attrs.id as string;
  t.ok(victimId, 'victim has a resumption id');
  const session = sessionOf('alice@proxy.test/victim')!;

  // Bob (correct password for bob) tries alice's id.
  const attacker = await RawClient.tls({ port: tp.port });
  t.equal((await attacker.auth('bob', 'bob-pw')).name, 'success');
  await attacker.open();
  attacker.send(`<resume xmlns='urn:xmpp:sm:3' previd='${victimId}' h='0'/>`);
  const failed = await attacker.next((el) => el.name === 'failed' || el.name === 'resumed');
  t.equal(failed.name, 'failed');
  t.equal(failed.getChildElements()[0]?.name, 'item-not-found', 'looks exactly like an unknown id');
  t.notOk(failed.attrs.h, 'reveals no counter');
  // The attacker's own stream is still usable: it may bind instead (XEP-0198 §5).
  t.equal(await attacker.bind('x'), 'bob@proxy.test/x');

  // Wrong password with the right account's id: SASL fails before any resume is possible.
  const guesser = await RawClient.tls({ port: tp.port });
  t.equal((await guesser.auth('alice', 'not-her-password')).name, 'failure');
  guesser.send(`<resume xmlns='urn:xmpp:sm:3' previd='${victimId}' h='0'/>`);
  const refused = await guesser.next((el) => el.name === 'failed' || el.name === 'resumed');
  t.equal(refused.name, 'failed', 'resume before SASL success is refused');
  t.equal(refused.getChildElements()[0]?.name, 'item-not-found', 'as Prosody answers it');
  t.notOk(refused.attrs.h, 'nothing revealed');

  // The victim is untouched: still attached, still receiving and acking.
  t.notOk(session.hibernating);
  attacker.send(`<message to='alice@proxy.test/victim' type='chat'><body>still there?</body></message>`);
  const msg = await victim.client.next((el) => el.name === 'message');
  t.equal(msg.getChildText('body'), 'still there?');
  t.equal(sessionOf('alice@proxy.test/victim'), session);

  // Unknown ids fail the same way.
  const other = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  other.send(`<resume xmlns='urn:xmpp:sm:3' previd='no-such-session' h='0'/>`);
  const unknown = await other.next((el) => el.name === 'failed');
  t.equal(unknown.getChildElements()[0]?.name, 'item-not-found');

  for (const c of [victim.client, attacker, other]) c.send('</stream:stream>');
  await waitFor(() => tp.proxy.sessions.size === 0, 'sessions end');
});

t.test('raw client: resume re-sends exactly the unacked stanzas with delay stamps', async (t) => {
  const a = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'raw' });
  a.client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const id = (await a.client.next((el) => el.name === 'enabled')).attrs.id as string;
  const b = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'raw' });
  for (let i = 1; i <= 5; i++) b.client.send(`<message to='alice@proxy.test/raw' type='chat'><body>${i}</body></message>`);
  for (let i = 1; i <= 5; i++) await a.client.next((el) => el.name === 'message');
  // Alice handled 3 of the 5, then her network died.
  a.client.send(`<a xmlns='urn:xmpp:sm:3' h='3'/>`);
  const session = sessionOf('alice@proxy.test/raw')!;
  await waitFor(() => session.sm.queue.length === 2, 'ack of 3 applied');
  a.client.destroy();
  await waitFor(() => session.hibernating, 'hibernating');
  b.client.send(`<message to='alice@proxy.test/raw' type='chat'><body>6</body></message>`);
  await waitFor(() => session.sm.queue.length === 3, 'message 6 queued while hibernated');

  const again = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  again.send(`<resume xmlns='urn:xmpp:sm:3' previd='${id}' h='4'/>`);
  const resumed = await again.next((el) => el.name === 'resumed');
  t.equal(resumed.attrs.previd, id);
  t.equal(resumed.attrs.h, '0', 'alice sent no stanza after enable');
  const m5 = await again.next((el) => el.name === 'message');
  const m6 = await again.next((el) => el.name === 'message');
  t.same([m5.getChildText('body'), m6.getChildText('body')], ['5', '6'], 'only what h=4 did not cover');
  t.ok(m5.getChild('delay', 'urn:xmpp:delay')?.attrs.stamp, 're-sent stanza carries a delay stamp');
  t.equal(m5.getChild('delay')?.attrs.from, 'proxy.test');
  const r = await again.next((el) => el.name === 'r');
  t.ok(r, 'proxy asks for an ack after the re-send');
  again.send(`<a xmlns='urn:xmpp:sm:3' h='6'/>`);
  await waitFor(() => session.sm.queue.length === 0, 'queue empty');
  again.send('</stream:stream>');
  b.client.send('</stream:stream>');
  await waitFor(() => tp.proxy.sessions.size === 0, 'sessions end');
});
