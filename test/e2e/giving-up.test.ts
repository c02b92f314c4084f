/**
 * When the proxy stops reconnecting a session's upstream link (design §4.5): the server refuses
 * the cached credential (account deleted, password changed), or it stays unreachable for
 * `upstream.reconnectGiveUpSeconds`. And a proxy-wide outage: the sessions come back without all
 * logging in at once (`upstream.maxConcurrentLogins`).
 */
import type { SessionEnd } from '../../src/session/events.ts';
import t from 'tap';
import { execFile } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import type { Element } from 'ltx';
import { startProsody, type ProsodyInstance } from '../harness/prosody.ts';
import { startTestProxy, waitFor, ACCOUNTS, type TestProxy } from '../harness/proxy.ts';
import { FAST_UPSTREAM, chatPair, sessionOf } from '../harness/chat.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { RawClient } from '../harness/raw-client.ts';
import { LoginWatchRelay } from '../harness/login-watch-relay.ts';

type Test = { teardown(fn: () => unknown): void };
const NS_STREAMS = 'urn:ietf:params:xml:ns:xmpp-streams';
const CAROL = { user: 'carol', password: 'carol-pw' };

/** prosodyctl on the harness Prosody's config (it writes the same data dir the server reads). */
const prosodyctl = (prosody: ProsodyInstance, ...args: string[]) =>
  promisify(execFile)('prosodyctl', ['--config', prosody.configFile, ...args], { timeout: 30_000 });

/** Prosody (STARTTLS required) with `accounts`, a TcpRelay in front, the proxy behind the relay. */
async function behindRelay(t: Test, accounts = ACCOUNTS, giveUpSeconds = 300): Promise<{ prosody: ProsodyInstance; relay: TcpRelay; tp: TestProxy }> {
  const prosody = await startProsody({ tls: 'required', accounts });
  t.teardown(() => prosody.stop());
  const relay = await TcpRelay.start(prosody.c2sPort);
  t.teardown(() => relay.close());
  const tp = await startTestProxy(prosody, { upstream: { ...FAST_UPSTREAM, port: relay.port, reconnectGiveUpSeconds: giveUpSeconds } });
  t.teardown(() => tp.close());
  return { prosody, relay, tp };
}

/** `p`, or a rejection naming `what` after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Condition and text of a `<stream:error/>`. */
function streamError(el: Element): { condition: string | undefined; text: string | null } {
  return { condition: el.getChildElements().find((c) => c.name !== 'text')?.name, text: el.getChildText('text', NS_STREAMS) };
}

/** alice on a RawClient through the proxy, SM with resumption, available. */
async function aliceResumable(tp: TestProxy, resource: string) {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource });
  client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const id = (await client.next((el) => el.name === 'enabled')).attrs.id as string;
  client.send('<presence/>');
  return { client, id, session: sessionOf(tp, `alice@proxy.test/${resource}`) };
}

t.test('re-login refused (account deleted) on a live session: not-authorized for alice only', async (t) => {
  const { prosody, relay, tp } = await behindRelay(t, [...ACCOUNTS, CAROL]);
  const { alice, bob, bobGot, say } = await chatPair(tp);
  let bobDrops = 0;
  bob.on('disconnect', () => bobDrops++);
  const aliceSession = sessionOf(tp, 'alice@proxy.test/a');
  const bobSession = sessionOf(tp, 'bob@proxy.test/b');
  const aliceError = new Promise<{ condition: string; text: string }>((resolve) =>
    alice.on('error', (err: { name: string; condition: string; text: string }) => err.name === 'StreamError' && resolve(err)),
  );
  const ended = new Promise<string>((resolve) => aliceSession.once('ended', (end: SessionEnd) => resolve(end.detail)));

  await prosodyctl(prosody, 'deluser', 'alice@proxy.test');
  relay.cutAll();
  const err = await within(aliceError, 20_000, "alice's stream error");
  await alice.reconnect.stop();
  await alice.stop().catch(() => {});
  t.equal(err.condition, 'not-authorized', 'alice gets not-authorized');
  t.match(err.text, /credential/, `with a text that explains: "${err.text}"`);
  t.match(await within(ended, 5_000, 'the session to end'), /refused the login/, 'the session ended: login refused');
  t.notOk(tp.proxy.sessions.has(aliceSession), "alice's session is gone from the proxy");

  // bob (another account) lost his link in the same cut: it comes back and he chats on.
  await waitFor(() => bobSession.upstreamLinked, "bob's link re-established", 20_000);
  t.ok(tp.proxy.sessions.has(bobSession), "bob's session carried on");
  const carol = await RawClient.login({ port: prosody.c2sPort, user: 'carol', password: 'carol-pw', resource: 'direct' });
  t.teardown(() => carol.client.destroy());
  await say(bob, 'carol@proxy.test/direct', 'bob still here');
  t.equal((await carol.client.next((el) => el.name === 'message')).getChildText('body'), 'bob still here', 'bob → carol');
  carol.client.send(`<message to='bob@proxy.test/b' type='chat'><body>carol to bob</body></message>`);
  await waitFor(() => bobGot.includes('carol to bob'), 'carol → bob');
  t.equal(bobDrops, 0, 'bob never saw a disconnect');
  await bob.stop();
});

t.test('re-login refused while hibernated: unacked chat messages held for the login with the new password', async (t) => {
  // Refused should end the session at once; the short give-up only bounds the wait if it does not.
  const { prosody, relay, tp } = await behindRelay(t, ACCOUNTS, 5);
  const bob = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'direct' });
  t.teardown(() => bob.client.destroy());
  const phone = await aliceResumable(tp, 'phone');
  for (let i = 1; i <= 3; i++) bob.client.send(`<message to='alice@proxy.test/phone' type='chat' id='m${i}'><body>unacked ${i}</body></message>`);
  // alice receives them and never acks.
  for (let i = 1; i <= 3; i++) await phone.client.next((el) => el.name === 'message' && el.getChildText('body') === `unacked ${i}`);
  phone.client.destroy();
  await waitFor(() => phone.session.hibernating, 'hibernating');
  const queued = () => phone.session.sm.queue.unacked().filter((s) => s.xml.includes('unacked ')).length;
  t.equal(queued(), 3, 'the three messages wait unacked in the hibernated session');

  const ended = new Promise<string>((resolve) => phone.session.once('ended', (end: SessionEnd) => resolve(end.detail)));
  await prosody.register('alice', 'alice-new-pw'); // a new password (and salt): the cached SCRAM keys are worthless
  relay.cutAll();
  t.match(await within(ended, 20_000, 'the session to end'), /refused the login/, 'the session ended: login refused');
  t.notOk(tp.proxy.sessions.has(phone.session), 'gone from the proxy');

  const old = await RawClient.tls({ port: tp.port });
  t.equal((await old.auth('alice', 'alice-pw')).name, 'failure', 'the old password no longer logs in');
  old.destroy();

  const next = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-new-pw' });
  t.teardown(() => next.destroy());
  next.send(`<resume xmlns='urn:xmpp:sm:3' previd='${phone.id}' h='0'/>`);
  const answer = await next.next((el) => el.name === 'failed' || el.name === 'resumed');
  t.equal(answer.name, 'failed', 'a resume of the ended session fails');
  t.equal(answer.getChildElements()[0]?.name, 'item-not-found', 'item-not-found');
  t.equal(answer.attrs.h, '1', 'with the h of the old session (its one presence)');

  // Same stream: bind instead; the held messages follow the initial presence, stamped.
  await next.bind('laptop');
  next.send('<presence/>');
  const got: Element[] = [];
  for (let i = 0; i < 3; i++) got.push(await next.next((el) => el.name === 'message' && el.getChildText('body') !== null));
  t.same(got.map((m) => m.getChildText('body')), ['unacked 1', 'unacked 2', 'unacked 3'], 'held messages delivered in order');
  for (const m of got) {
    const delay = m.getChild('delay', 'urn:xmpp:delay');
    t.equal(delay?.attrs.from, 'proxy.test', `delay stamp on ${m.attrs.id}`);
    t.ok(delay && !Number.isNaN(Date.parse(delay.attrs.stamp as string)), 'with a valid stamp');
  }
  t.same(got.map((m) => m.attrs.from), Array(3).fill('bob@proxy.test/direct'), 'from bob');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(next.received.filter((el) => el.getChildText('body')?.startsWith('unacked ')).length, 3, 'each exactly once');
  t.notOk(bob.client.received.some((el) => el.attrs.type === 'error'), 'nothing bounced to bob');
  next.send('</stream:stream>');
});

t.test('upstream unreachable past reconnectGiveUpSeconds: remote-connection-failed, sessions end', async (t) => {
  const giveUpSeconds = 2;
  const prosody = await startProsody({ tls: 'required', accounts: ACCOUNTS });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody, { upstream: { ...FAST_UPSTREAM, reconnectGiveUpSeconds: giveUpSeconds } });
  t.teardown(() => tp.close());
  const { client: live } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'live' });
  t.teardown(() => live.destroy());
  const liveSession = sessionOf(tp, 'bob@proxy.test/live');
  const hibernated = await aliceResumable(tp, 'phone');
  hibernated.client.destroy();
  await waitFor(() => hibernated.session.hibernating, 'hibernating');
  const ended = [liveSession, hibernated.session].map((s) => new Promise<string>((resolve) => s.once('ended', (end: SessionEnd) => resolve(end.detail))));

  const stopping = Date.now();
  await prosody.stop();
  const error = streamError(await live.next((el) => el.name === 'stream:error', 30_000));
  const waited = Date.now() - stopping;
  t.equal(error.condition, 'remote-connection-failed', 'the live client gets remote-connection-failed');
  t.ok(error.text, `with a text that explains: "${error.text}"`);
  t.ok(waited >= giveUpSeconds * 1000, `not before reconnectGiveUpSeconds (${waited} ms)`);
  for (const reason of await within(Promise.all(ended), 10_000, 'both sessions to end')) t.match(reason, /unreachable/, `ended: ${reason}`);
  t.equal(tp.proxy.sessions.size, 0, 'no session left at the proxy');
  await within(live.closed, 5_000, 'the proxy to close the live stream');
});

t.test('a proxy-wide outage: 30 sessions come back, their logins spread out and capped', async (t) => {
  const maxLogins = 4;
  const latencyMs = 10; // one way: a login is a few round trips, so logins overlap without the cap
  const users = Array.from({ length: 30 }, (_, i) => ({ user: `user${i + 1}`, password: `pw${i + 1}` }));
  // A plain-text upstream, so the relay can see each login's <success/>.
  const prosody = await startProsody({ tls: 'none', accounts: users });
  t.teardown(() => prosody.stop());
  const relay = await LoginWatchRelay.start(prosody.c2sPort, latencyMs);
  t.teardown(() => relay.close());
  const upstream = { ...FAST_UPSTREAM, port: relay.port, tls: 'none' as const, maxConcurrentLogins: maxLogins };
  const tp = await startTestProxy(prosody, { upstream });
  t.teardown(() => tp.close());
  const clients = await Promise.all(users.map((u) => RawClient.login({ port: tp.port, ...u, resource: 'r' }).then((l) => l.client)));
  t.teardown(() => clients.forEach((c) => c.destroy()));
  const sessions = [...tp.proxy.sessions];
  t.equal(sessions.length, 30, '30 sessions through the proxy');
  await waitFor(() => relay.connections === 30, 'one upstream connection each');

  const before = relay.logins.length;
  const cutAt = performance.now();
  relay.cutAll();
  await waitFor(() => relay.logins.length - before >= 30 && sessions.every((s) => s.upstreamLinked), 'all 30 links back', 60_000);
  const again = relay.logins.slice(before);
  t.equal(again.length, 30, 'one new upstream login per session');
  t.ok(sessions.every((s) => tp.proxy.sessions.has(s)), 'the same 30 sessions carried on');

  const accepted = again.map((l) => l.acceptedAt - cutAt).sort((a, b) => a - b);
  const span = accepted.at(-1)! - accepted[0]!;
  const peak = LoginWatchRelay.maxInFlight(again);
  t.comment(`reconnects accepted from +${accepted[0]!.toFixed(0)} to +${accepted.at(-1)!.toFixed(0)} ms after the cut (span ${span.toFixed(0)} ms); at most ${peak} logins in flight at once`);
  t.ok(span >= FAST_UPSTREAM.reconnectDelayMs / 2, `reconnects spread over ${span.toFixed(0)} ms, more than the jitter floor`);
  t.ok(peak <= maxLogins, `never more than maxConcurrentLogins (${maxLogins}) logins in flight (saw ${peak})`);
  t.ok(peak >= 2, 'logins did overlap (the measurement sees concurrency)');

  // Every client is served again through its new link.
  for (const [i, c] of clients.entries()) c.send(`<iq type='get' id='ping${i}' to='proxy.test'><ping xmlns='urn:xmpp:ping'/></iq>`);
  const answers = await Promise.all(clients.map((c, i) => c.next((el) => el.name === 'iq' && el.attrs.id === `ping${i}`)));
  t.ok(answers.every((a) => a.attrs.type === 'result'), 'all 30 clients get answers from the server');
  for (const c of clients) c.send('</stream:stream>');
});

t.test('a changed password stops resuming once the cached credential is older than credentialCacheSeconds', async (t) => {
  const prosody = await startProsody({ tls: 'required', accounts: ACCOUNTS });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody, { upstream: { ...FAST_UPSTREAM, credentialCacheSeconds: 1 } });
  t.teardown(() => tp.close());
  const phone = await aliceResumable(tp, 'phone');
  phone.client.destroy();
  await waitFor(() => phone.session.hibernating, 'hibernating');
  await prosody.register('alice', 'alice-new-pw');
  await new Promise((r) => setTimeout(r, 1200)); // past credentialCacheSeconds

  const old = await RawClient.tls({ port: tp.port });
  t.equal((await old.auth('alice', 'alice-pw')).name, 'failure', 'the old password is checked at the server and refused');
  old.destroy();
  t.ok(tp.proxy.sessions.has(phone.session), 'the hibernated session is untouched');

  const owner = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-new-pw' });
  t.teardown(() => owner.destroy());
  owner.send(`<resume xmlns='urn:xmpp:sm:3' previd='${phone.id}' h='0'/>`);
  t.equal((await owner.next((el) => el.name === 'failed' || el.name === 'resumed')).name, 'resumed', 'the new password resumes it');
  // The session took the new credential: its next re-login works.
  let endedFor: string | undefined;
  phone.session.once('ended', (end: SessionEnd) => (endedFor = end.detail));
  await prosody.restart();
  await waitFor(() => phone.session.upstreamLinked || endedFor !== undefined, 'the link re-established with the new password', 20_000);
  t.equal(endedFor, undefined, 'no giving up');
  t.ok(tp.proxy.sessions.has(phone.session), 'the session carried on through the restart');
  owner.send('</stream:stream>');
});
