// SCRAM relay (issue 14 §5) with ejabberd 23.01 as the upstream: it offers SCRAM-SHA-512, -256
// and -1, each also as -PLUS, plus PLAIN, DIGEST-MD5 and X-OAUTH2; the proxy relays whatever
// SCRAM it offers, without -PLUS and nothing else. slixmpp picks SCRAM-SHA-512 (gs2 `y,,`,
// which ejabberd accepts), chats with an @xmpp/client peer (SCRAM-SHA-1 `n,,`), drops and
// resumes; an upstream loss (a TCP relay in front of ejabberd cuts every link) closes both
// clients' connections, they log in again (relayed) and resume, and what a client logged in to
// ejabberd directly sent them meanwhile arrives once.
import t, { type Test } from 'tap';
import { xml } from '@xmpp/client';
import { startEjabberd } from '../harness/ejabberd.ts';
import { startTestProxy, clientFor, bodiesOf, waitFor, ACCOUNTS } from '../harness/proxy.ts';
import { FAST_UPSTREAM, count, sessionOf, sleep } from '../harness/chat.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { RawClient } from '../harness/raw-client.ts';
import { RawScram } from '../harness/scram-client.ts';
import { Slixmpp, slixmppVersion } from '../harness/slixmpp.ts';
import type { Session } from '../../src/session/session.ts';

const CAROL = { user: 'carol', password: 'carol-pw' };
const server = await startEjabberd({ tls: 'required', accounts: [...ACCOUNTS, CAROL] });
t.teardown(() => server.stop());
const relay = await TcpRelay.start(server.c2sPort);
t.teardown(() => relay.close());
// connectTimeoutSeconds: a relayed login's upstream negotiation includes the client's turns;
// under load it can take more than FAST_UPSTREAM's 3 s, and timing is not under test here.
const tp = await startTestProxy(server, { upstream: { ...FAST_UPSTREAM, connectTimeoutSeconds: 10, port: relay.port }, auth: { mode: 'scram-relay' } });
t.teardown(() => tp.close());
const domain = server.domain;

const logins: Array<[result: string, mode: string]> = [];
tp.proxy.manager.events.on('client-login', (result, mode) => logins.push([result, mode]));

// The proxy learns ejabberd's offer from its probe at start.
await waitFor(() => relay.accepted >= 1 && relay.connections === 0, "the proxy's mechanism probe is done", 15_000);

/** slixmpp logging its XML on stderr (SLIXMPP_DEBUG); killed at the end of `t` if still running. */
function slixmppFor(t: Test, jid: string, password: string): Slixmpp {
  const saved = process.env.SLIXMPP_DEBUG;
  process.env.SLIXMPP_DEBUG = '1';
  const slix = new Slixmpp(jid, password, tp.port);
  if (saved === undefined) delete process.env.SLIXMPP_DEBUG;
  else process.env.SLIXMPP_DEBUG = saved;
  t.teardown(() => {
    if (slix.child.exitCode === null && slix.child.signalCode === null) slix.child.kill('SIGKILL');
  });
  return slix;
}

/** Each `<auth/>` slixmpp sent: mechanism and decoded initial response. */
function authsOf(slix: Slixmpp): Array<{ mechanism: string; initial: string }> {
  return [...slix.stderr.matchAll(/SEND: <auth [^>]*mechanism="([^"]+)"[^>]*>([^<]*)<\/auth>/g)].map((m) => ({
    mechanism: m[1]!,
    initial: Buffer.from(m[2]!, 'base64').toString('utf8'),
  }));
}

function watch(session: Session): Record<string, number> {
  const seen: Record<string, number> = {};
  for (const ev of ['hibernating', 'resumed', 'relay-reconnect', 'upstream-down', 'ended']) {
    seen[ev] = 0;
    session.on(ev, () => seen[ev]!++);
  }
  return seen;
}

t.test('the proxy offers the SCRAM mechanisms ejabberd offers, without -PLUS, PLAIN, DIGEST-MD5 or X-OAUTH2', async (t) => {
  const c = await RawClient.tls({ port: tp.port, domain });
  t.teardown(() => c.destroy());
  const features = c.received.filter((el) => el.name === 'stream:features').at(-1)!;
  const offered = features.getChild('mechanisms')!.getChildren('mechanism').map((m) => m.getText());
  t.same([...offered].sort(), ['SCRAM-SHA-1', 'SCRAM-SHA-256', 'SCRAM-SHA-512'], 'exactly SCRAM-SHA-512, -256 and -1');
});

t.test('a raw SCRAM-SHA-256 login through the relay: the server signature verifies', async (t) => {
  const c = await RawClient.tls({ port: tp.port, domain });
  t.teardown(() => c.destroy());
  const { answer, verified } = await new RawScram(c, 'carol', 'carol-pw', 'SCRAM-SHA-256').run();
  t.equal(answer.name, 'success', 'ejabberd accepted the relayed SCRAM-SHA-256 exchange');
  t.ok(verified, "ejabberd's server signature reached the client unchanged");
  const wrong = await RawClient.tls({ port: tp.port, domain });
  t.teardown(() => wrong.destroy());
  const refused = await new RawScram(wrong, 'carol', 'wrong-pw', 'SCRAM-SHA-256').run();
  t.equal(refused.answer.name, 'failure');
  t.equal(refused.answer.getChildElements().find((el) => el.name !== 'text')?.name, 'not-authorized', "a wrong password gets ejabberd's not-authorized");
});

t.test(`slixmpp ${slixmppVersion} logs in with SCRAM-SHA-512 relayed, chats, drops and resumes; an upstream loss makes it resume with nothing lost`, async (t) => {
  const aliceJid = `alice@${domain}/slix`;
  const bobJid = `bob@${domain}/b`;
  const alice = slixmppFor(t, aliceJid, 'alice-pw');
  const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'b' });
  const bobGot = bodiesOf(bob);
  let bobDrops = 0;
  bob.on('disconnect', () => bobDrops++);
  t.teardown(() => bob.stop().catch(() => {}));
  await bob.start();
  await bob.send(xml('presence'));

  await alice.waitEvent('session_start');
  t.equal((await alice.waitEvent('sm_enabled')).resume, true, 'resumption granted');
  const [auth] = authsOf(alice);
  t.equal(auth?.mechanism, 'SCRAM-SHA-512', 'slixmpp chose SCRAM-SHA-512, the strongest offered');
  t.match(auth?.initial ?? '', /^y,,n=alice,r=/, 'with gs2 y,, (relayed as is; ejabberd accepts it)');
  t.match(alice.stderr, /RECV: <success [^>]*>[A-Za-z0-9+/=]+<\/success>/, '<success/> with the server signature, which slixmpp verified (else no session_start)');
  t.equal(authsOf(alice).length, 1, 'one attempt: no fallback to a weaker mechanism');
  t.same(alice.of('error'), [], 'no error');
  await waitFor(() => sessionOf(tp, `bob@${domain}/b`).sm.enabled, "bob's SM enabled");
  const aliceSession = sessionOf(tp, aliceJid);
  const bobSession = sessionOf(tp, `bob@${domain}/b`);
  t.ok(aliceSession.relayed && bobSession.relayed, 'both sessions relayed');
  const aliceSeen = watch(aliceSession);
  const bobSeen = watch(bobSession);

  alice.command(`send ${bobJid} hello`);
  await waitFor(() => bobGot.includes('hello'), 'bob gets slixmpp’s message');
  await bob.send(xml('message', { to: aliceJid, type: 'chat' }, xml('body', {}, 'hi')));
  await alice.waitEvent('message');
  await waitFor(() => aliceSession.sm.queue.length === 0, 'slixmpp acked it');

  // ---- drop and resume (the upstream link stays up) ----
  const hibernating = new Promise((resolve) => aliceSession.once('hibernating', resolve));
  alice.command('drop');
  await hibernating;
  await bob.send(xml('message', { to: aliceJid, type: 'chat', id: 'away' }, xml('body', {}, 'while away')));
  await waitFor(() => aliceSession.sm.queue.length === 1, 'the proxy queues it');
  alice.command('reconnect');
  await alice.waitEvent('session_resumed');
  await alice.waitEvent('message', 2);
  t.same(authsOf(alice).map((a) => a.mechanism), ['SCRAM-SHA-512', 'SCRAM-SHA-512'], 'logged in again with SCRAM-SHA-512');
  t.equal(aliceSeen.resumed, 1, 'resumed');
  t.equal(aliceSeen['upstream-down'], 0, 'the upstream link stayed up');
  await waitFor(() => relay.connections === 2, 'the login of the resume closed');
  t.equal(relay.connections, 2, "the resume's relayed login only proved the password and was closed: one link per session");

  // ---- the upstream is lost: every link through the relay is cut ----
  bob.reconnect.stop();
  relay.cutAll();
  await alice.waitEvent('disconnected', 2);
  await waitFor(() => bobDrops === 1, "bob's connection closed");
  await waitFor(() => aliceSession.hibernating && bobSession.hibernating, 'both sessions hibernate');
  t.equal(aliceSeen['relay-reconnect'], 1, "alice's connection closed for a relayed re-login");
  t.equal(bobSeen['relay-reconnect'], 1, "bob's too");

  // carol, directly on ejabberd, writes to both while they are away.
  const { client: carol } = await RawClient.login({ port: server.c2sPort, domain, user: 'carol', password: 'carol-pw', resource: 'direct' });
  t.teardown(() => carol.destroy());
  for (const [to, body] of [[aliceJid, 'c-to-alice-1'], [aliceJid, 'c-to-alice-2'], [`bob@${domain}/b`, 'c-to-bob-1'], [`bob@${domain}/b`, 'c-to-bob-2']]) {
    carol.send(`<message to='${to}' type='chat' id='${body}'><body>${body}</body></message>`);
  }
  carol.send(`<iq type='get' id='carol-ping' to='${domain}'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await carol.next((el) => el.name === 'iq' && el.attrs.id === 'carol-ping');

  const resumed = Promise.all([aliceSession, bobSession].map((s) => new Promise((resolve) => s.once('resumed', resolve))));
  alice.command('reconnect');
  await bob.reconnect.reconnect();
  await resumed;
  await alice.waitEvent('session_resumed', 2);
  await alice.waitEvent('message', 4);
  await waitFor(() => bobGot.includes('c-to-bob-1') && bobGot.includes('c-to-bob-2'), "carol's messages reach bob", 15_000);
  alice.command(`send ${bobJid} after`);
  await waitFor(() => bobGot.includes('after'), 'bob gets a message after the resume');
  await sleep(1000); // duplicates would show up here

  t.same(alice.of('message').map((m) => m.body), ['hi', 'while away', 'c-to-alice-1', 'c-to-alice-2'], 'slixmpp got each message once, in order');
  for (const body of ['hello', 'c-to-bob-1', 'c-to-bob-2', 'after']) t.equal(count(bobGot, body), 1, `bob got ${body} once`);
  t.equal(aliceSeen.resumed, 2, "alice's session resumed twice (drop, upstream loss)");
  t.equal(bobSeen.resumed, 1, "bob's session resumed once");
  t.equal(bobDrops, 1, '@xmpp/client saw one close');
  t.equal(alice.of('session_start').length, 1, 'slixmpp never started a new session');
  t.same(authsOf(alice).map((a) => a.mechanism), ['SCRAM-SHA-512', 'SCRAM-SHA-512', 'SCRAM-SHA-512'], 'every login SCRAM-SHA-512');
  t.same(alice.of('error'), [], 'slixmpp reported no error');
  t.equal(aliceSeen.ended + bobSeen.ended, 0, 'neither session ended');
  t.equal(logins.filter(([r, m]) => r === 'success' && m !== 'scram-relay').length, 0, 'every successful login was relayed');
  alice.command('quit');
  await Promise.race([alice.exited, sleep(10_000)]);
  await bob.stop();
});
