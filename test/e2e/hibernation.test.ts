import type { SessionEnd } from '../../src/session/events.ts';
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import type { Element } from 'ltx';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, waitFor, ACCOUNTS } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import type { Session } from '../../src/session/session.ts';
import type { TestProxy } from '../harness/proxy.ts';

const accounts = ACCOUNTS;

function sessionOf(tp: TestProxy, fullJid: string): Session | undefined {
  return [...tp.proxy.sessions].find((s) => s.fullJid === fullJid);
}

/** Logs alice in with SM (resumable), returns the client, its session and resumption id. */
async function aliceWithSm(tp: TestProxy, resource: string) {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource });
  client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const id = (await client.next((el) => el.name === 'enabled')).attrs.id as string;
  return { client, id, session: sessionOf(tp, `alice@proxy.test/${resource}`)! };
}

async function resumeAttempt(tp: TestProxy, id: string): Promise<Element> {
  const c = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  c.send(`<resume xmlns='urn:xmpp:sm:3' previd='${id}' h='0'/>`);
  const answer = await c.next((el) => el.name === 'failed' || el.name === 'resumed');
  c.destroy();
  return answer;
}

t.test('hibernation timeout: chat messages held for the next login, iq bounced, late resume gets h', async (t) => {
  const prosody = await startProsody({ tls: 'required', accounts });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody, { sm: { hibernationSeconds: 1 } });
  t.teardown(() => tp.close());
  const bob = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'b' });

  const alice = await aliceWithSm(tp, 'phone');
  alice.client.send(`<message to='bob@proxy.test/b' type='chat'><body>before</body></message>`);
  await bob.client.next((el) => el.name === 'message');
  alice.client.destroy();
  await waitFor(() => alice.session.hibernating, 'hibernating');

  for (let i = 1; i <= 3; i++) bob.client.send(`<message to='alice@proxy.test/phone' type='chat' id='c${i}'><body>queued ${i}</body></message>`);
  bob.client.send(`<iq to='alice@proxy.test/phone' type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>`);
  bob.client.send(`<presence to='alice@proxy.test/phone'/>`);
  await waitFor(() => alice.session.sm.queue.length === 5, 'queued while hibernated');

  const ended = new Promise((resolve) => alice.session.once('ended', resolve));
  await ended;
  const bounce = await bob.client.next((el) => el.name === 'iq' && el.attrs.id === 'v1');
  t.equal(bounce.attrs.type, 'error');
  t.equal(bounce.attrs.from, 'alice@proxy.test/phone', 'the error comes from the vanished resource');
  t.ok(bounce.getChild('error')?.getChild('recipient-unavailable'), 'cancel/recipient-unavailable');
  t.equal(bounce.getChild('error')?.attrs.type, 'cancel');
  t.notOk(bob.client.received.some((el) => el.name === 'message' && el.attrs.type === 'error'), 'held chat messages are not bounced');

  const late = await resumeAttempt(tp, alice.id);
  t.equal(late.name, 'failed');
  t.equal(late.getChildElements()[0]?.name, 'item-not-found');
  t.equal(late.attrs.h, '1', 'the old session handled 1 stanza from alice');

  // Next login: the held messages follow the initial presence, with delay stamps.
  const next = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'laptop' });
  next.client.send(`<presence/>`);
  const got: Element[] = [];
  for (let i = 0; i < 3; i++) got.push(await next.client.next((el) => el.name === 'message' && el.getChildText('body') !== null));
  t.same(got.map((m) => m.getChildText('body')), ['queued 1', 'queued 2', 'queued 3']);
  t.ok(got.every((m) => m.getChild('delay', 'urn:xmpp:delay')?.attrs.stamp), 'delay stamps');
  for (const c of [next.client, bob.client]) c.send('</stream:stream>');
});

t.test('archived messages are left to MAM; with another session online, chat messages bounce', async (t) => {
  const prosody = await startProsody({ tls: 'required', mam: true, accounts });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody, { sm: { hibernationSeconds: 1 } });
  t.teardown(() => tp.close());
  const bob = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'b' });

  const alice = await aliceWithSm(tp, 'phone');
  alice.client.destroy();
  await waitFor(() => alice.session.hibernating, 'hibernating');
  bob.client.send(`<message to='alice@proxy.test/phone' type='chat' id='a1'><body>archived</body></message>`);
  await waitFor(() => alice.session.sm.queue.length === 1, 'queued');
  const queued = alice.session.sm.queue.unacked()[0]!.xml;
  t.match(queued, /stanza-id[^>]*by=["']alice@proxy\.test/, 'prosody archived it for alice');
  await new Promise((resolve) => alice.session.once('ended', resolve));
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(bob.client.received.some((el) => el.attrs.type === 'error'), 'no bounce for an archived message');
  const next = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'again' });
  next.client.send(`<presence/>`);
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(next.client.received.some((el) => el.getChildText('body') === 'archived'), 'not held either: MAM has it');
  next.client.send('</stream:stream>');

  // Now without MAM's stanza-id: a different Prosody, and alice also online elsewhere.
  const plain = await startProsody({ tls: 'required', accounts });
  t.teardown(() => plain.stop());
  const tp2 = await startTestProxy(plain, { sm: { hibernationSeconds: 1 } });
  t.teardown(() => tp2.close());
  const bob2 = await RawClient.login({ port: tp2.port, user: 'bob', password: 'bob-pw', resource: 'b' });
  const desk = await RawClient.login({ port: tp2.port, user: 'alice', password: 'alice-pw', resource: 'desk' });
  const phone = await aliceWithSm(tp2, 'phone');
  phone.client.destroy();
  await waitFor(() => phone.session.hibernating, 'hibernating');
  bob2.client.send(`<message to='alice@proxy.test/phone' type='chat' id='x1'><body>to the phone</body></message>`);
  await waitFor(() => phone.session.sm.queue.length === 1, 'queued');
  await new Promise((resolve) => phone.session.once('ended', resolve));
  const err = await bob2.client.next((el) => el.name === 'message' && el.attrs.type === 'error');
  t.equal(err.attrs.id, 'x1');
  t.ok(err.getChild('error')?.getChild('recipient-unavailable'), 'bounced: not the last session');
  t.equal(err.getChildText('body'), 'to the phone', 'the sender can tell which message failed');
  for (const c of [bob2.client, desk.client]) c.send('</stream:stream>');
});

t.test('queue overflow ends the session: resume gets resource-constraint', async (t) => {
  const prosody = await startProsody({ tls: 'required', accounts });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody, { sm: { maxQueueSize: 5 } });
  t.teardown(() => tp.close());
  const bob = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'b' });
  const alice = await aliceWithSm(tp, 'phone');
  alice.client.destroy();
  await waitFor(() => alice.session.hibernating, 'hibernating');
  const ended = new Promise<SessionEnd>((resolve) => alice.session.once('ended', resolve));
  for (let i = 1; i <= 7; i++) bob.client.send(`<message to='alice@proxy.test/phone' type='chat'><body>${i}</body></message>`);
  t.match(await ended, { cause: 'queue-overflow', hibernating: true });
  const answer = await resumeAttempt(tp, alice.id);
  t.equal(answer.name, 'failed');
  t.equal(answer.getChildElements()[0]?.name, 'resource-constraint');
  bob.client.send('</stream:stream>');
});

t.test('a hibernated session survives the server pinging it (idle-disconnect server)', async (t) => {
  const modules = fileURLToPath(new URL('../harness/prosody-modules', import.meta.url));
  const prosody = await startProsody({
    tls: 'required',
    accounts,
    modules: ['idle_pinger'],
    config: `plugin_paths = { "${modules}" }\nidle_pinger_interval = 1\nidle_pinger_timeout = 1`,
  });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody);
  t.teardown(() => tp.close());
  const alice = await aliceWithSm(tp, 'phone');
  alice.client.destroy();
  await waitFor(() => alice.session.hibernating, 'hibernating');
  // Several ping rounds while nobody is there to answer but the proxy.
  await waitFor(() => (readFileSync(prosody.logFile, 'utf8').match(/idle ping answered by alice@proxy\.test\/phone/g) ?? []).length >= 3, 'three pings answered', 15_000);
  t.notMatch(readFileSync(prosody.logFile, 'utf8'), /unanswered/, 'no ping went unanswered');
  t.ok(alice.session.hibernating, 'still hibernating, not ended');
  t.equal(alice.session.sm.queue.length, 0, "the server's pings are not queued for the client");

  const bob = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'b' });
  bob.client.send(`<message to='alice@proxy.test/phone' type='chat'><body>still routed</body></message>`);
  await waitFor(() => alice.session.sm.queue.length === 1, 'the server still routes to the hibernated resource');
  bob.client.send('</stream:stream>');
});

t.test('a second resume of the same id takes over: the older stream gets conflict', async (t) => {
  const prosody = await startProsody({ tls: 'required', accounts });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody);
  t.teardown(() => tp.close());
  const alice = await aliceWithSm(tp, 'phone');
  // The first stream is still open (the proxy has not noticed any drop).
  const c = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  c.send(`<resume xmlns='urn:xmpp:sm:3' previd='${alice.id}' h='0'/>`);
  t.equal((await c.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');
  t.equal(await alice.client.streamError(), 'conflict', 'old stream closed with conflict');
  await alice.client.closed;
  t.notOk(alice.session.hibernating, 'the session stays attached to the new stream');
  const bob = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'b' });
  bob.client.send(`<message to='alice@proxy.test/phone' type='chat'><body>to the new stream</body></message>`);
  t.equal((await c.next((el) => el.name === 'message')).getChildText('body'), 'to the new stream');
  for (const x of [c, bob.client]) x.send('</stream:stream>');
});
