// A relayed session's resume when the client's new login cannot simply become the link
// (issue 14 §2, design §4.1.3), on real Prosody through a TCP relay (plain text upstream, so the
// relay can reset the one connection that carries a resource bind):
// - the new login drops while it is being set up as the session's link: the resume is left
//   unanswered and the connection closed (the session hibernates on), so the client logs in
//   again and resumes, instead of being attached to a session without an upstream; nothing lost;
// - a resume the session refuses before using the login (here: no `h`) leaves the client its
//   new login, so it binds a fresh session on the same stream.
import t, { type Test } from 'tap';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, waitFor, ACCOUNTS } from '../harness/proxy.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { RawClient } from '../harness/raw-client.ts';
import { RawScram } from '../harness/scram-client.ts';
import { FAST_UPSTREAM, sessionOf } from '../harness/chat.ts';
import type { Session } from '../../src/session/session.ts';

const SM = 'urn:xmpp:sm:3';
// TLS optional: the proxy's link stays plain text (for the relay's pattern), bob's is STARTTLS.
const prosody = await startProsody({ tls: 'optional', accounts: ACCOUNTS });
t.teardown(() => prosody.stop());
const relay = await TcpRelay.start(prosody.c2sPort);
t.teardown(() => relay.close());
const tp = await startTestProxy(prosody, {
  // connectTimeoutSeconds covers the client's turns of a relayed login: generous, timing is not under test.
  upstream: { ...FAST_UPSTREAM, port: relay.port, tls: 'none', connectTimeoutSeconds: 20 },
  auth: { mode: 'scram-relay' },
});
t.teardown(() => tp.close());
const { client: bob } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'direct' });
t.teardown(() => bob.destroy());
bob.send('<presence/>');

/** A relayed SCRAM login through the proxy, up to the stream after `<success/>`. */
async function relayedLogin(user: string, password: string): Promise<RawClient> {
  const c = await RawClient.tls({ port: tp.port });
  const { answer, verified } = await new RawScram(c, user, password).run();
  if (answer.name !== 'success' || !verified) throw new Error(`relayed login failed: ${answer.toString()}`);
  await c.open();
  return c;
}

async function resumable(t: Test, resource: string): Promise<{ c: RawClient; id: string; session: Session }> {
  const c = await relayedLogin('alice', 'alice-pw');
  await c.bind(resource);
  c.send(`<enable xmlns='${SM}' resume='true'/>`);
  const enabled = await c.next((el) => el.name === 'enabled');
  c.send('<presence/>');
  const session = sessionOf(tp, `alice@proxy.test/${resource}`);
  t.ok(session.relayed, 'a relayed session');
  return { c, id: String(enabled.attrs.id), session };
}

function bodiesTo(c: RawClient): string[] {
  return c.received.filter((el) => el.name === 'message').map((el) => el.getChildText('body')).filter((b): b is string => b !== null);
}

t.test("the client's new login drops while it becomes the link: its resume is left unanswered, it logs in again and resumes; nothing lost", async (t) => {
  const { c, id, session } = await resumable(t, 'phone');
  const seen = { resumed: 0, relayReconnect: 0, ended: 0 };
  session.on('resumed', () => seen.resumed++);
  session.on('relay-reconnect', () => seen.relayReconnect++);
  session.on('ended', () => seen.ended++);
  const closed = c.closed;
  relay.cutAll(); // the upstream link is lost: only the client can log in again
  await closed;
  await waitFor(() => session.hibernating && !session.upstreamLinked, 'hibernating without a link');
  bob.send(`<message to='alice@proxy.test/phone' type='chat'><body>one</body></message>`);

  // The next connection that binds a resource (the adopted login's) is reset before the server sees it.
  relay.killOn(/urn:ietf:params:xml:ns:xmpp-bind/);
  const second = await relayedLogin('alice', 'alice-pw');
  second.send(`<resume xmlns='${SM}' previd='${id}' h='0'/>`);
  await second.closed;
  t.equal(relay.killed, 1, 'the new login was lost while it became the link');
  t.notOk(second.received.some((el) => el.name === 'resumed' || el.name === 'failed' || el.name === 'stream:error'), 'the resume was left unanswered: the connection closed');
  t.equal(seen.relayReconnect, 2, 'the client was sent to log in again (once per lost link)');
  t.ok(session.hibernating, 'the session hibernates on, waiting for it');

  bob.send(`<message to='alice@proxy.test/phone' type='chat'><body>two</body></message>`);
  const third = await relayedLogin('alice', 'alice-pw');
  third.send(`<resume xmlns='${SM}' previd='${id}' h='0'/>`);
  t.equal((await third.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed', 'resumed again');
  await waitFor(() => session.upstreamLinked, "this login became the session's link");
  bob.send(`<message to='alice@proxy.test/phone' type='chat'><body>three</body></message>`);
  await waitFor(() => bodiesTo(third).includes('three'), 'the message sent once linked');
  t.same(bodiesTo(third).filter((b) => b === 'one' || b === 'two' || b === 'three'), ['one', 'two', 'three'], 'each once, in order');
  t.equal(seen.resumed, 1, 'one resume');
  t.equal(seen.ended, 0, 'the session never ended');
  third.destroy();
});

t.test('a resume refused (no h): the client binds a new session with the login it brought', async (t) => {
  const { c, id, session } = await resumable(t, 'tablet');
  const closed = c.closed;
  relay.cutAll(); // the link is lost: the client is sent to log in again
  await closed;
  await waitFor(() => session.hibernating && !session.upstreamLinked, 'hibernating without a link');
  const fresh = await relayedLogin('alice', 'alice-pw');
  fresh.send(`<resume xmlns='${SM}' previd='${id}'/>`);
  const answer = await fresh.next((el) => el.name === 'resumed' || el.name === 'failed');
  t.equal(answer.name, 'failed', 'the resume is refused');
  t.ok(answer.getChild('bad-request'), 'bad-request');
  const jid = await fresh.bind('tablet');
  t.equal(jid, 'alice@proxy.test/tablet', 'the client binds on the same stream: its relayed login was kept for it');
  fresh.send(`<presence/>`);
  bob.send(`<message to='alice@proxy.test/tablet' type='chat'><body>after</body></message>`);
  await waitFor(() => bodiesTo(fresh).includes('after'), 'the new session works');
  t.ok(sessionOf(tp, 'alice@proxy.test/tablet').upstreamLinked, 'linked');
  fresh.destroy();
});
