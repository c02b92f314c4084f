/**
 * One client stream owns a session at a time (design §4.3): racing resumes, pipelined
 * `<resume/>`s, a resume pipelined with a bind, a resuming client that vanishes while the proxy
 * waits for custody, and a replaced stream that keeps writing. Also: accounts compare in their
 * RFC 7622 form (`Alice` resumes `alice`'s session). Raw clients drive each race exactly.
 */
import type { SessionEnd } from '../../src/session/events.ts';
import t from 'tap';
import type { Element } from 'ltx';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, startProsodyAndProxy, waitFor, ACCOUNTS, type TestProxy } from '../harness/proxy.ts';
import { FAST_UPSTREAM, sessionOf, sleep } from '../harness/chat.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { RawClient } from '../harness/raw-client.ts';

const rejections: unknown[] = [];
process.on('unhandledRejection', (reason) => rejections.push(reason));

const RESUME = (id: string, h = 0) => `<resume xmlns='urn:xmpp:sm:3' previd='${id}' h='${h}'/>`;
const chat = (to: string, body: string) => `<message to='${to}' type='chat'><body>${body}</body></message>`;
const bodies = (c: RawClient) => c.received.filter((e) => e.name === 'message').map((e) => e.getChildText('body'));

/** alice logged in on `resource` with resumption enabled and presence sent; returns her SM id. */
async function aliceWithResumption(tp: TestProxy, resource: string, user = 'alice'): Promise<{ client: RawClient; id: string }> {
  const { client } = await RawClient.login({ port: tp.port, user, password: 'alice-pw', resource });
  client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const id = (await client.next((el) => el.name === 'enabled')).attrs.id as string;
  client.send('<presence/>');
  return { client, id };
}

/** bob on his own resource, listening. */
async function bobListening(tp: TestProxy): Promise<RawClient> {
  const { client } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'desk' });
  client.send('<presence/>');
  return client;
}

const { tp } = await startProsodyAndProxy(t);

t.test('two resumes at once: one client owns the session, the other gets conflict and relays nothing', async (t) => {
  const bob = await bobListening(tp);
  const alice = await aliceWithResumption(tp, 'race');
  const session = sessionOf(tp, 'alice@proxy.test/race');
  alice.client.destroy();
  await waitFor(() => session.hibernating, 'hibernating');

  const [c1, c2] = await Promise.all([1, 2].map(() => RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' })));
  c1!.send(RESUME(alice.id));
  c2!.send(RESUME(alice.id));
  const outcome = (c: RawClient) => c.next((el) => el.name === 'resumed' || el.name === 'failed' || el.name === 'stream:error');
  const answers = await Promise.all([outcome(c1!), outcome(c2!)]);
  t.ok(answers.some((a) => a.name === 'resumed'), `a resume succeeded (${answers.map((a) => a.name)})`);
  // The later resume takes over: whoever was attached first is then replaced with conflict.
  await sleep(300);
  const failedStreams = [c1!, c2!].filter((c) => c.received.some((el) => el.name === 'stream:error'));
  t.equal(failedStreams.length, 1, 'exactly one of the two streams was closed');
  const loser = failedStreams[0]!;
  const owner = loser === c1 ? c2! : c1!;
  t.equal(await loser.streamError(), 'conflict', 'the other got conflict');
  t.notOk(owner.received.some((el) => el.name === 'stream:error'), 'the owner stream lives on');

  loser.send(chat('bob@proxy.test/desk', 'from the replaced stream'));
  owner.send(chat('bob@proxy.test/desk', 'from the owner'));
  await bob.next((el) => el.getChildText('body') === 'from the owner');
  bob.send(chat('alice@proxy.test/race', 'to the owner'));
  await owner.next((el) => el.getChildText('body') === 'to the owner');
  await sleep(300);
  t.same(bodies(bob).filter((b) => b !== null && b.startsWith('from the')), ['from the owner'], 'only the owner relays, once');
  t.equal([...tp.proxy.sessions].filter((s) => s.bareJid === 'alice@proxy.test').length, 1, 'one session');
  owner.send('</stream:stream>');
  bob.send('</stream:stream>');
});

t.test('two <resume/> in one write: resumed once, the second refused, later stanzas relayed once', async (t) => {
  const bob = await bobListening(tp);
  const alice = await aliceWithResumption(tp, 'double');
  const session = sessionOf(tp, 'alice@proxy.test/double');
  alice.client.destroy();
  await waitFor(() => session.hibernating, 'hibernating');

  const c = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  c.send(RESUME(alice.id) + RESUME(alice.id));
  t.equal((await c.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');
  const second = await c.next((el) => el.name === 'failed' || el.name === 'resumed');
  t.equal(second.name, 'failed', 'the second <resume/> on a resumed stream is refused');
  t.ok(second.getChild('unexpected-request'), 'with unexpected-request');
  c.send(chat('bob@proxy.test/desk', 'once'));
  await bob.next((el) => el.getChildText('body') === 'once');
  await sleep(300);
  t.equal(bodies(bob).filter((b) => b === 'once').length, 1, 'relayed exactly once');
  c.send('</stream:stream>');
  bob.send('</stream:stream>');
});

t.test('a <resume/> and a bind in one write: the stream resumes, no second session is made', async (t) => {
  const alice = await aliceWithResumption(tp, 'pipelined');
  const session = sessionOf(tp, 'alice@proxy.test/pipelined');
  alice.client.destroy();
  await waitFor(() => session.hibernating, 'hibernating');
  const before = tp.proxy.sessions.size;

  const c = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  c.send(RESUME(alice.id) + `<iq type='set' id='bind2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>second</resource></bind></iq>`);
  t.equal((await c.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');
  const answer = await c.next((el) => el.name === 'iq' && el.attrs.id === 'bind2');
  t.equal(answer.attrs.type, 'error', 'the bind on a resumed stream is refused (by the server)');
  await sleep(200);
  t.equal(tp.proxy.sessions.size, before, 'no new session');
  t.notOk([...tp.proxy.sessions].some((s) => s.fullJid.endsWith('/second')), 'nothing bound "second"');
  t.equal(sessionOf(tp, 'alice@proxy.test/pipelined').hibernating, false, 'the resumed session is attached');
  c.send('</stream:stream>');
});

t.test('a login as "Alice" resumes as "ALICE": accounts compare in their RFC 7622 form', async (t) => {
  const alice = await aliceWithResumption(tp, 'cased', 'Alice');
  const session = sessionOf(tp, 'alice@proxy.test/cased');
  t.equal(session.bareJid, 'alice@proxy.test', 'the session belongs to the account alice');
  alice.client.destroy();
  await waitFor(() => session.hibernating, 'hibernating');
  const c = await RawClient.authenticated({ port: tp.port, user: 'ALICE', password: 'alice-pw' });
  c.send(RESUME(alice.id, 0));
  t.equal((await c.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed', 'resumed');
  c.send('</stream:stream>');
});

t.test('a replaced stream that keeps writing feeds nothing into the session', async (t) => {
  const bob = await bobListening(tp);
  const alice = await aliceWithResumption(tp, 'replaced');
  const c = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  // Resume while the first stream is still attached: it is taken over.
  c.send(RESUME(alice.id));
  t.equal((await c.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');
  t.equal(await alice.client.streamError(), 'conflict', 'the old stream is replaced');
  alice.client.send(chat('bob@proxy.test/desk', 'ghost') + `<r xmlns='urn:xmpp:sm:3'/>`);
  c.send(chat('bob@proxy.test/desk', 'live'));
  await bob.next((el) => el.getChildText('body') === 'live');
  await sleep(300);
  t.notOk(bodies(bob).includes('ghost'), 'what the replaced stream wrote after its error was not relayed');
  c.send('</stream:stream>');
  bob.send('</stream:stream>');
});

t.test('a stream that failed feeds nothing more: what it pipelined behind the offending element is dropped', async (t) => {
  const bob = await bobListening(tp);
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'failing' });
  client.send(`<enable xmlns='urn:xmpp:sm:3'/>`);
  await client.next((el) => el.name === 'enabled');
  // An ack of stanzas never sent ends the stream (XEP-0198 §4); the message behind it, in the
  // same write, must not be relayed, nor the <r/> answered.
  client.send(`<a xmlns='urn:xmpp:sm:3' h='999'/>` + chat('bob@proxy.test/desk', 'after the error') + `<r xmlns='urn:xmpp:sm:3'/>`);
  t.equal(await client.streamError(), 'undefined-condition');
  bob.send(chat('bob@proxy.test/desk', 'marker'));
  await bob.next((el) => el.getChildText('body') === 'marker');
  await sleep(300);
  t.notOk(bodies(bob).includes('after the error'), 'not relayed');
  t.notOk(client.received.some((el) => el.name === 'a'), 'no <a/> after the stream error');
  bob.send('</stream:stream>');
});

t.test('a resuming client that vanishes during the custody wait leaves a hibernated session that still times out', async (t) => {
  const prosody = await startProsody({ tls: 'required', accounts: ACCOUNTS });
  t.teardown(() => prosody.stop());
  const relay = await TcpRelay.start(prosody.c2sPort);
  t.teardown(() => relay.close());
  const tp2 = await startTestProxy(prosody, { upstream: { ...FAST_UPSTREAM, port: relay.port }, sm: { hibernationSeconds: 4 } });
  t.teardown(() => tp2.close());
  const alice = await aliceWithResumption(tp2, 'phone');
  const session = sessionOf(tp2, 'alice@proxy.test/phone');
  const ended = new Promise<string>((resolve) => session.once('ended', (end: SessionEnd) => resolve(end.detail)));
  await waitFor(() => !session.hibernating && session.upstreamLinked, 'attached and linked');
  await sleep(300); // the presence is confirmed
  relay.freeze(); // the server hears nothing more: the next stanza stays unconfirmed
  alice.client.send(chat('bob@proxy.test/x', 'unconfirmed'));
  await sleep(100);
  alice.client.destroy();
  await waitFor(() => session.hibernating, 'hibernating');

  const c = await RawClient.authenticated({ port: tp2.port, user: 'alice', password: 'alice-pw' });
  c.send(RESUME(alice.id));
  await sleep(300); // the proxy now waits for the server to confirm "unconfirmed"
  t.notOk(c.received.some((el) => el.name === 'resumed'), 'no answer while custody is unsettled');
  c.destroy();
  const reason = await Promise.race([ended, sleep(20_000).then(() => 'still alive after 20 s')]);
  t.equal(reason, 'hibernation timed out', 'the hibernation timer still ended the session');
  relay.thaw();
});

t.test('no unhandled promise rejection in any of the above', async (t) => {
  t.same(rejections, []);
});
