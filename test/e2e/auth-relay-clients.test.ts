// SCRAM relay (issue 14 §5) with real clients on real Prosody:
// - slixmpp picks SCRAM-SHA-1 with the gs2 header `y,,` (it has channel binding, the proxy offers
//   no -PLUS), the exchange is relayed, slixmpp checks the server signature itself; it chats with
//   an @xmpp/client peer, drops, resumes, and what was sent to it meanwhile arrives once;
// - an upstream restart in relay mode with slixmpp and @xmpp/client together: each sees its
//   connection closed once, logs in again (relayed) and resumes; messages a client logged in
//   directly to Prosody sent while they were away arrive once;
// - `auth.mode: auto`: a PLAIN client and a SCRAM client through the same upstream restart: the
//   PLAIN one sees nothing (transparent reconnect), the SCRAM one resumes once; nothing lost or
//   duplicated.
// Clients reconnect when the test says so (slixmpp's `reconnect` command, @xmpp/client's
// reconnect.reconnect()), so "while away" is a fact of the test, not a race.
import t, { type Test } from 'tap';
import { client as xmppClient, xml } from '@xmpp/client';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, clientFor, bodiesOf, waitFor, ACCOUNTS, type TestProxy } from '../harness/proxy.ts';
import { FAST_UPSTREAM, count, sessionOf, sleep } from '../harness/chat.ts';
import { RawClient } from '../harness/raw-client.ts';
import { Slixmpp, slixmppVersion } from '../harness/slixmpp.ts';
import { RawScram } from '../harness/scram-client.ts';
import type { Session } from '../../src/session/session.ts';
import { DEFAULTS } from '../../src/config/config.ts';

const CAROL = { user: 'carol', password: 'carol-pw' };
const prosody = await startProsody({ tls: 'required', accounts: [...ACCOUNTS, CAROL] });
t.teardown(() => prosody.stop());
// A relayed login's upstream negotiation includes the client's turns (its proof): under load
// (2 cores, two test files at once) it took over FAST_UPSTREAM's 3 s; timing is not under test.
const UPSTREAM = { ...FAST_UPSTREAM, connectTimeoutSeconds: 10 };
const relayProxy = await startTestProxy(prosody, { upstream: UPSTREAM, auth: { mode: 'scram-relay' } });
t.teardown(() => relayProxy.close());
// The default mode (auto), as a proxy without an auth section runs it.
const autoProxy = await startTestProxy(prosody, { upstream: UPSTREAM, auth: { mode: DEFAULTS.auth.mode } });
t.teardown(() => autoProxy.close());

const logins: Array<[proxy: string, result: string, mode: string]> = [];
for (const [name, tp] of [['relay', relayProxy], ['auto', autoProxy]] as const) {
  tp.proxy.manager.events.on('client-login', (result, mode) => logins.push([name, result, mode]));
}

/** slixmpp for `jid` through `tp`, logging its XML on stderr (SLIXMPP_DEBUG); killed at the end of `t` if still running. */
function slixmppFor(t: Test, tp: TestProxy, jid: string, password: string): Slixmpp {
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

/** The SASL exchanges slixmpp logged: each `<auth/>` (mechanism, decoded initial response) and each `<success/>` (decoded data). */
function saslOf(slix: Slixmpp): { auths: Array<{ mechanism: string; initial: string }>; successes: string[] } {
  const decode = (text: string): string => Buffer.from(text, 'base64').toString('utf8');
  const auths = [...slix.stderr.matchAll(/SEND: <auth [^>]*mechanism="([^"]+)"[^>]*>([^<]*)<\/auth>/g)].map((m) => ({ mechanism: m[1]!, initial: decode(m[2]!) }));
  const successes = [...slix.stderr.matchAll(/RECV: <success [^>]*>([^<]*)<\/success>/g)].map((m) => decode(m[1]!));
  return { auths, successes };
}

/** Quits slixmpp cleanly (its session ends). */
async function quit(slix: Slixmpp): Promise<void> {
  slix.command('quit');
  await Promise.race([slix.exited, sleep(10_000)]);
}

/** Events of a proxy session, counted. */
function watch(session: Session): Record<string, number> {
  const seen: Record<string, number> = {};
  for (const ev of ['hibernating', 'resumed', 'relay-reconnect', 'upstream-down', 'upstream-up', 'ended', 'resume-failed']) {
    seen[ev] = 0;
    session.on(ev, () => seen[ev]!++);
  }
  return seen;
}

/** carol, logged in to Prosody directly (not through the proxy), sends `bodies` to `to`. */
async function carolSends(t: Test, to: string, bodies: string[]): Promise<void> {
  const { client } = await RawClient.login({ port: prosody.c2sPort, user: 'carol', password: 'carol-pw', resource: `direct-${Math.random().toString(36).slice(2, 8)}` });
  t.teardown(() => client.destroy());
  for (const body of bodies) client.send(`<message to='${to}' type='chat' id='${body}'><body>${body}</body></message>`);
  // Prosody handles a stream's stanzas in order: the answer to this ping means all were routed.
  client.send(`<iq type='get' id='carol-ping' to='proxy.test'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await client.next((el) => el.name === 'iq' && el.attrs.id === 'carol-ping');
  client.send('</stream:stream>');
}

t.test(`slixmpp ${slixmppVersion} logs in through the relay (SCRAM-SHA-1, y,,), chats with @xmpp/client, drops and resumes (issue 14 §5)`, async (t) => {
  const alice = slixmppFor(t, relayProxy, 'alice@proxy.test/slix', 'alice-pw');
  const bob = clientFor(relayProxy, 'bob', 'bob-pw', { resource: 'b' });
  const bobGot = bodiesOf(bob);
  t.teardown(() => bob.stop().catch(() => {}));
  await bob.start();

  const start = await alice.waitEvent('session_start');
  t.equal(start.jid, 'alice@proxy.test/slix');
  const enabled = await alice.waitEvent('sm_enabled');
  t.equal(enabled.resume, true, 'resumption granted');
  const { auths, successes } = saslOf(alice);
  t.equal(auths.length, 1, 'one SASL attempt');
  t.equal(auths[0]?.mechanism, 'SCRAM-SHA-1', 'slixmpp chose SCRAM-SHA-1, the strongest offered');
  t.match(auths[0]?.initial ?? '', /^y,,n=alice,r=[\x21-\x2b\x2d-\x7e]+$/, 'with the gs2 header y,, (channel binding supported, none offered): relayed as is');
  t.match(successes[0] ?? '', /^v=[A-Za-z0-9+/]+=*$/, "<success/> carries the upstream's server signature");
  // slixmpp checks v= (SASLMutualAuthFailed → disconnect, no session_start): it got this far.
  t.same(alice.of('error'), [], 'slixmpp verified the server signature (a wrong one would have made it disconnect)');
  const session = sessionOf(relayProxy, 'alice@proxy.test/slix');
  t.ok(session.relayed, 'a relayed session: the proxy holds no credential');
  const seen = watch(session);

  const bobJid = 'bob@proxy.test/b';
  alice.command(`send ${bobJid} hello from slixmpp`);
  await waitFor(() => bobGot.includes('hello from slixmpp'), 'bob gets the message');
  await bob.send(xml('message', { to: 'alice@proxy.test/slix', type: 'chat' }, xml('body', {}, 'hello from xmpp.js')));
  await alice.waitEvent('message');
  t.equal(alice.of('message')[0]?.body, 'hello from xmpp.js', 'slixmpp gets the reply');
  await waitFor(() => session.sm.queue.length === 0, 'slixmpp acked what it got');

  // ---- the connection vanishes; bob writes meanwhile ----
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  alice.command('drop');
  await hibernating;
  await bob.send(xml('message', { to: 'alice@proxy.test/slix', type: 'chat', id: 'away-1' }, xml('body', {}, 'while you were away')));
  await waitFor(() => session.sm.queue.length === 1, 'the proxy queues it');

  // ---- resume: slixmpp logs in again (relayed: the login only proves the password, the upstream link is up) ----
  const successesBefore = logins.filter(([p, r, m]) => p === 'relay' && r === 'success' && m === 'scram-relay').length;
  alice.command('reconnect');
  await alice.waitEvent('session_resumed');
  await alice.waitEvent('message', 2);
  t.equal(logins.filter(([p, r, m]) => p === 'relay' && r === 'success' && m === 'scram-relay').length, successesBefore + 1, 'one more relayed login');
  t.same(saslOf(alice).auths.map((a) => a.mechanism), ['SCRAM-SHA-1', 'SCRAM-SHA-1'], 'again SCRAM-SHA-1');
  t.equal(saslOf(alice).successes.length, 2, 'again a server signature, which slixmpp verified');
  t.equal(seen.resumed, 1, 'the proxy session resumed once');
  t.equal(seen['upstream-down'], 0, 'its upstream link stayed up');
  t.equal(sessionOf(relayProxy, 'alice@proxy.test/slix'), session, 'the same session');
  t.equal(session.relayed, true, 'still relayed');
  t.equal(alice.of('session_start').length, 1, 'no new session_start: resumed');

  alice.command(`send ${bobJid} back again`);
  await waitFor(() => bobGot.includes('back again'), 'bob gets the message sent after the resume');
  await sleep(500); // a duplicate would show up here
  t.same(alice.of('message').map((m) => m.body), ['hello from xmpp.js', 'while you were away'], 'slixmpp got each message once');
  t.equal(count(bobGot, 'hello from slixmpp') + count(bobGot, 'back again'), 2, 'bob got each once');
  t.same(alice.of('error'), [], 'slixmpp reported no error');
  await quit(alice);
  await bob.stop();
});

t.test('upstream restart in relay mode: slixmpp and @xmpp/client each see one close, log in again, resume; what was sent meanwhile arrives once (issue 14 §2, §5)', async (t) => {
  const alice = slixmppFor(t, relayProxy, 'alice@proxy.test/slix2', 'alice-pw');
  const bob = clientFor(relayProxy, 'bob', 'bob-pw', { resource: 'b2' });
  const bobGot = bodiesOf(bob);
  let bobDrops = 0;
  bob.on('disconnect', () => bobDrops++);
  t.teardown(() => bob.stop().catch(() => {}));
  await bob.start();
  await bob.send(xml('presence'));
  await alice.waitEvent('sm_enabled');
  await waitFor(() => sessionOf(relayProxy, 'bob@proxy.test/b2').sm.enabled, "bob's SM enabled");
  const aliceSession = sessionOf(relayProxy, 'alice@proxy.test/slix2');
  const bobSession = sessionOf(relayProxy, 'bob@proxy.test/b2');
  t.ok(aliceSession.relayed && bobSession.relayed, 'both sessions relayed');
  const aliceSeen = watch(aliceSession);
  const bobSeen = watch(bobSession);

  alice.command('send bob@proxy.test/b2 before');
  await waitFor(() => bobGot.includes('before'), 'bob gets the first message');

  // ---- Prosody restarts; the clients come back only when the test says so ----
  bob.reconnect.stop();
  await prosody.restart();
  await alice.waitEvent('disconnected');
  await waitFor(() => bobDrops === 1, "bob's connection closed");
  await waitFor(() => aliceSession.hibernating && bobSession.hibernating, 'both sessions hibernate');
  t.equal(aliceSeen['relay-reconnect'], 1, "alice's session closed her connection for a relayed re-login");
  t.equal(bobSeen['relay-reconnect'], 1, "bob's too");
  t.notOk(aliceSession.upstreamLinked || bobSession.upstreamLinked, 'no upstream link without the clients (no credential to log in with)');

  // ---- while they are away, carol (directly on Prosody) writes to both ----
  await carolSends(t, 'alice@proxy.test/slix2', ['c-to-alice-1', 'c-to-alice-2', 'c-to-alice-3']);
  await carolSends(t, 'bob@proxy.test/b2', ['c-to-bob-1', 'c-to-bob-2', 'c-to-bob-3']);

  // ---- they come back: relayed login, resume ----
  const resumed = Promise.all([aliceSession, bobSession].map((s) => new Promise((resolve) => s.once('resumed', resolve))));
  alice.command('reconnect');
  await bob.reconnect.reconnect();
  await resumed;
  await alice.waitEvent('session_resumed');
  t.ok(aliceSession.upstreamLinked && bobSession.upstreamLinked, "each client's new login is its session's upstream link");
  t.equal(sessionOf(relayProxy, 'alice@proxy.test/slix2'), aliceSession, 'alice: the same session');
  t.equal(sessionOf(relayProxy, 'bob@proxy.test/b2'), bobSession, 'bob: the same session');

  await alice.waitEvent('message', 3);
  await waitFor(() => ['c-to-bob-1', 'c-to-bob-2', 'c-to-bob-3'].every((b) => bobGot.includes(b)), "carol's messages reach bob", 15_000);
  // Both ways through the resumed sessions.
  alice.command('send bob@proxy.test/b2 after');
  await bob.send(xml('message', { to: 'alice@proxy.test/slix2', type: 'chat' }, xml('body', {}, 'bob after')));
  await waitFor(() => bobGot.includes('after'), 'bob gets alice’s message after the resume');
  await alice.waitEvent('message', 4);
  await sleep(1000); // duplicates would show up here

  t.same(alice.of('message').map((m) => m.body), ['c-to-alice-1', 'c-to-alice-2', 'c-to-alice-3', 'bob after'], 'alice got each message once, in order');
  for (const body of ['before', 'c-to-bob-1', 'c-to-bob-2', 'c-to-bob-3', 'after']) t.equal(count(bobGot, body), 1, `bob got ${body} once`);
  t.equal(alice.of('disconnected').length, 1, 'slixmpp saw its connection closed once');
  t.equal(bobDrops, 1, '@xmpp/client saw its connection closed once');
  t.equal(aliceSeen.resumed, 1, "alice's session resumed once");
  t.equal(bobSeen.resumed, 1, "bob's session resumed once");
  t.equal(alice.of('session_start').length, 1, 'slixmpp: no new session, a resume');
  t.same(alice.of('error'), [], 'slixmpp reported no error');
  t.equal(aliceSeen.ended + bobSeen.ended, 0, 'neither session ended');
  await quit(alice);
  await bob.stop();
});

t.test("the upstream is lost while a relayed session hibernates: the client's resume brings the new login, and what was sent meanwhile arrives once (issue 14 §2)", async (t) => {
  const alice = slixmppFor(t, relayProxy, 'alice@proxy.test/slix3', 'alice-pw');
  await alice.waitEvent('sm_enabled');
  const session = sessionOf(relayProxy, 'alice@proxy.test/slix3');
  const seen = watch(session);
  await waitFor(() => session.sm.queue.length === 0, 'slixmpp acked what it got');
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  alice.command('drop');
  await hibernating;

  await prosody.restart();
  await waitFor(() => seen['relay-reconnect'] === 1, 'the session learns its link is gone and waits for the client');
  t.notOk(session.upstreamLinked, 'no upstream link: nobody can log in for the client');
  t.ok(session.hibernating, 'still hibernating');
  await carolSends(t, 'alice@proxy.test/slix3', ['c-1', 'c-2']);

  alice.command('reconnect');
  await alice.waitEvent('session_resumed');
  await alice.waitEvent('message', 2);
  await sleep(1000); // duplicates would show up here
  t.same(alice.of('message').map((m) => m.body), ['c-1', 'c-2'], 'each once, in order');
  t.ok(session.upstreamLinked, "the client's relayed login became the session's link");
  t.equal(seen.resumed, 1, 'resumed once');
  t.equal(seen.ended, 0, 'the session did not end');
  t.equal(alice.of('session_start').length, 1, 'slixmpp: no new session');
  t.same(alice.of('error'), [], 'slixmpp reported no error');
  await quit(alice);
});

t.test('auth.mode auto: PLAIN and SCRAM offered; through one upstream restart the PLAIN client sees nothing, the SCRAM client resumes once (issue 14 §3, §5)', async (t) => {
  t.equal(DEFAULTS.auth.mode, 'auto', 'auto is the default mode: a client that pinned SCRAM is not locked out');
  // alice logs in with PLAIN (@xmpp/client told to), bob with SCRAM-SHA-1 (@xmpp/client's choice).
  let offered: string[] = [];
  const alice = xmppClient({
    service: `xmpp://127.0.0.1:${autoProxy.port}`,
    domain: 'proxy.test',
    resource: 'plain',
    credentials: (authenticate: (creds: object, mechanism: string) => Promise<void>, mechanisms: string[]) => {
      offered = mechanisms;
      return authenticate({ username: 'alice', password: 'alice-pw' }, 'PLAIN');
    },
  });
  alice.on('error', () => {});
  const bob = clientFor(autoProxy, 'bob', 'bob-pw', { resource: 'scram' });
  const aliceGot = bodiesOf(alice);
  const bobGot = bodiesOf(bob);
  let aliceDrops = 0;
  let bobDrops = 0;
  alice.on('disconnect', () => aliceDrops++);
  bob.on('disconnect', () => bobDrops++);
  t.teardown(() => alice.stop().catch(() => {}));
  t.teardown(() => bob.stop().catch(() => {}));

  const loginsBefore = logins.length;
  await alice.start();
  await bob.start();
  await alice.send(xml('presence'));
  await bob.send(xml('presence'));
  t.same([...offered].sort(), ['PLAIN', 'SCRAM-SHA-1'], '@xmpp/client saw SCRAM-SHA-1 and PLAIN offered');
  const raw = await RawClient.tls({ port: autoProxy.port });
  t.teardown(() => raw.destroy());
  const features = raw.received.filter((el) => el.name === 'stream:features').at(-1)!;
  const exact = features.getChild('mechanisms')!.getChildren('mechanism').map((m) => m.getText());
  t.same([...exact].sort(), ['PLAIN', 'SCRAM-SHA-1'], "auto offers exactly the upstream's SCRAM (SCRAM-SHA-1) and PLAIN");
  raw.destroy();
  t.same(logins.slice(loginsBefore), [['auto', 'success', 'plain'], ['auto', 'success', 'scram-relay']], 'alice logged in with PLAIN, bob with SCRAM relayed');
  await waitFor(() => sessionOf(autoProxy, 'alice@proxy.test/plain').sm.enabled && sessionOf(autoProxy, 'bob@proxy.test/scram').sm.enabled, 'SM enabled');
  const aliceSession = sessionOf(autoProxy, 'alice@proxy.test/plain');
  const bobSession = sessionOf(autoProxy, 'bob@proxy.test/scram');
  t.equal(aliceSession.relayed, false, 'the PLAIN session holds a credential');
  t.equal(bobSession.relayed, true, 'the SCRAM session is relayed');
  const aliceSeen = watch(aliceSession);
  const bobSeen = watch(bobSession);
  const say = (from: typeof alice, to: string, body: string) => from.send(xml('message', { to, type: 'chat' }, xml('body', {}, body)));
  await say(alice, 'bob@proxy.test/scram', 'a-before');
  await say(bob, 'alice@proxy.test/plain', 'b-before');
  await waitFor(() => bobGot.includes('a-before') && aliceGot.includes('b-before'), 'the first messages arrive');

  // ---- the upstream restarts ----
  bob.reconnect.stop();
  const restarted = prosody.restart();
  await waitFor(() => bobDrops === 1, "the SCRAM client's connection is closed");
  // alice keeps writing: held by the proxy (custody) until its new upstream login.
  for (let i = 1; i <= 3; i++) await say(alice, 'bob@proxy.test/scram', `a-during-${i}`);
  await restarted;
  await waitFor(() => aliceSeen['upstream-up'] === 1, "the proxy logged alice in again by itself (PLAIN: it holds her credential)", 15_000);
  // bob is still away: what alice and carol send him waits upstream (offline) or at the proxy.
  for (let i = 1; i <= 3; i++) await say(alice, 'bob@proxy.test/scram', `a-after-${i}`);
  await carolSends(t, 'bob@proxy.test/scram', ['c-to-bob-1', 'c-to-bob-2']);
  await carolSends(t, 'alice@proxy.test/plain', ['c-to-alice-1', 'c-to-alice-2']);
  await waitFor(() => aliceGot.includes('c-to-alice-2'), 'alice, still connected, gets carol’s messages');

  const resumed = new Promise((resolve) => bobSession.once('resumed', resolve));
  await bob.reconnect.reconnect();
  await resumed;
  const toBob = ['a-before', 'a-during-1', 'a-during-2', 'a-during-3', 'a-after-1', 'a-after-2', 'a-after-3', 'c-to-bob-1', 'c-to-bob-2'];
  await waitFor(() => toBob.every((b) => bobGot.includes(b)), 'bob gets everything sent while he was away', 15_000);
  await say(bob, 'alice@proxy.test/plain', 'b-after');
  await waitFor(() => aliceGot.includes('b-after'), 'alice gets bob’s message after his resume');
  await sleep(1000); // duplicates would show up here

  for (const body of toBob) t.equal(count(bobGot, body), 1, `bob got ${body} once`);
  for (const body of ['b-before', 'c-to-alice-1', 'c-to-alice-2', 'b-after']) t.equal(count(aliceGot, body), 1, `alice got ${body} once`);
  t.equal(aliceDrops, 0, 'the PLAIN client kept its connection');
  t.equal(aliceSeen.hibernating + aliceSeen.resumed + aliceSeen['relay-reconnect'], 0, 'its session neither hibernated nor resumed');
  t.equal(aliceSeen['upstream-down'], 1, 'its upstream link was replaced once, transparently');
  t.equal(bobDrops, 1, 'the SCRAM client saw its connection closed once');
  t.equal(bobSeen['relay-reconnect'], 1, 'closed for a relayed re-login');
  t.equal(bobSeen.resumed, 1, 'and resumed once');
  t.equal(aliceSeen.ended + bobSeen.ended, 0, 'neither session ended');
  await alice.stop();
  await bob.stop();
});

t.test('auth.mode auto: a relayed session resumed after a PLAIN login keeps that credential, so the next upstream loss is transparent', async (t) => {
  const STANZAS = new Set(['message', 'presence', 'iq']);
  /** Stanzas received after `<enabled/>` or `<resumed/>` (the client's XEP-0198 h). */
  const handled = (c: RawClient): number => {
    const from = c.received.findIndex((el) => el.name === 'enabled' || el.name === 'resumed');
    return c.received.slice(from + 1).filter((el) => STANZAS.has(el.name)).length;
  };
  // 1. SCRAM (relayed), bind, SM with resumption.
  const first = await RawClient.tls({ port: autoProxy.port });
  t.teardown(() => first.destroy());
  const { answer } = await new RawScram(first, 'carol', 'carol-pw').run();
  t.equal(answer.name, 'success', 'relayed SCRAM login');
  await first.open();
  await first.bind('mix');
  first.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const enabled = await first.next((el) => el.name === 'enabled');
  const session = sessionOf(autoProxy, 'carol@proxy.test/mix');
  t.ok(session.relayed, 'a relayed session');
  const seen = watch(session);

  // 2. The upstream restarts: the client's connection is closed (relayed: no credential).
  await prosody.restart();
  await first.closed;
  await waitFor(() => session.hibernating, 'hibernating');
  t.equal(seen['relay-reconnect'], 1, 'closed for a new login');

  // 3. It comes back with PLAIN and resumes.
  const second = await RawClient.authenticated({ port: autoProxy.port, user: 'carol', password: 'carol-pw' });
  t.teardown(() => second.destroy());
  second.send(`<resume xmlns='urn:xmpp:sm:3' previd='${enabled.attrs.id}' h='${handled(first)}'/>`);
  const resumed = await second.next((el) => el.name === 'resumed' || el.name === 'failed');
  t.equal(resumed.name, 'resumed', 'resumed after a PLAIN login');
  t.equal(session.relayed, false, 'the session now holds the credential of that PLAIN login');

  // 4. The next restart is transparent: the proxy logs in again by itself.
  const up = new Promise((resolve) => session.once('upstream-up', resolve)).then(() => 'the proxy logged in again');
  await prosody.restart();
  const outcome = await Promise.race([up, second.closed.then(() => 'the client was closed')]);
  t.equal(outcome, 'the proxy logged in again', 'the proxy logged in again with the credential, the client was not closed');
  await bobSends(t, 'carol@proxy.test/mix', 'after the second restart');
  const message = await second.next((el) => el.name === 'message' && el.getChildText('body') === 'after the second restart', 15_000);
  t.ok(message, 'messages keep flowing on the same connection');
  t.notOk(second.received.some((el) => el.name === 'stream:error'), 'no stream error');
  t.equal(seen['relay-reconnect'], 1, 'no second forced reconnect');
  t.equal(seen.resumed, 1, 'no second resume');
  t.equal(second.socket.destroyed, false, 'the connection stayed up');
  second.send('</stream:stream>');
  await waitFor(() => seen.ended === 1, 'the session ends with the clean close');
});

/** bob, logged in to Prosody directly (not through the proxy), sends one message to `to`. */
async function bobSends(t: Test, to: string, body: string): Promise<void> {
  const { client } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'direct' });
  t.teardown(() => client.destroy());
  client.send(`<message to='${to}' type='chat'><body>${body}</body></message>`);
  client.send(`<iq type='get' id='bob-ping' to='proxy.test'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await client.next((el) => el.name === 'iq' && el.attrs.id === 'bob-ping');
  client.send('</stream:stream>');
}
