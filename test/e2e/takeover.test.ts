/**
 * A client that binds the resource of its own hibernated session (profanity/libstrophe does
 * after a failed resume; slixmpp with a fixed resource does on every fresh start) retires that
 * session as the server would and gets what it held, with delay stamps, with no re-login loop.
 * And an upstream `conflict` (another connection took the resource at the server) is never
 * answered by logging in again.
 */
import type { SessionEnd } from '../../src/session/events.ts';
import t from 'tap';
import { clientFor, waitFor, bodiesOf, type TestProxy } from '../harness/proxy.ts';
import { prosodyBehindRelay, sessionOf, sleep } from '../harness/chat.ts';
import type { TcpRelay } from '../harness/tcp-relay.ts';
import { RawClient } from '../harness/raw-client.ts';
import { Slixmpp } from '../harness/slixmpp.ts';
import { xml } from '@xmpp/client';

const rejections: unknown[] = [];
process.on('unhandledRejection', (reason) => rejections.push(reason));

async function setup(t: { teardown(fn: () => unknown): void }): Promise<{ tp: TestProxy; relay: TcpRelay; prosodyPort: number }> {
  const { prosody, relay, tp } = await prosodyBehindRelay(t);
  return { tp, relay, prosodyPort: prosody.c2sPort };
}

const chat = (to: string, body: string) => `<message to='${to}' type='chat'><body>${body}</body></message>`;

t.test('raw client: a fresh bind of the hibernated resource takes over its queue, once, with delay stamps', async (t) => {
  const { tp, relay } = await setup(t);
  const { client: bob } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'desk' });
  const { client: alice } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'phone' });
  alice.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const id = (await alice.next((el) => el.name === 'enabled')).attrs.id as string;
  alice.send('<presence/>');
  const old = sessionOf(tp, 'alice@proxy.test/phone');
  for (let i = 1; i <= 3; i++) bob.send(chat('alice@proxy.test/phone', `queued ${i}`));
  await waitFor(() => old.sm.queue.unacked().filter((s) => s.xml.includes('queued')).length === 3, 'three unacked messages');
  alice.destroy(); // never acked them
  await waitFor(() => old.hibernating, 'hibernating');
  const endedWith = new Promise<SessionEnd>((resolve) => old.once('ended', resolve));

  const linksBefore = relay.accepted;
  const fresh = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'phone' });
  t.equal(fresh.jid, 'alice@proxy.test/phone', 'the same resource is bound again');
  t.match(await endedWith, { cause: 'replaced', detail: /retired/ }, 'the old session is retired');
  fresh.client.send('<presence/>');
  const got: string[] = [];
  for (let i = 1; i <= 3; i++) {
    const m = await fresh.client.next((el) => el.name === 'message' && (el.getChildText('body') ?? '').startsWith('queued'));
    t.ok(m.getChild('delay', 'urn:xmpp:delay'), `queued ${i} carries a delay stamp`);
    got.push(m.getChildText('body')!);
  }
  t.same(got, ['queued 1', 'queued 2', 'queued 3'], 'the old queue, in order');
  bob.send(chat('alice@proxy.test/phone', 'live'));
  await fresh.client.next((el) => el.getChildText('body') === 'live');
  await sleep(3000); // a re-login loop would show within this
  const bodies = fresh.client.received.filter((el) => el.name === 'message').map((el) => el.getChildText('body'));
  t.same(bodies.filter((b) => b?.startsWith('queued') || b === 'live'), ['queued 1', 'queued 2', 'queued 3', 'live'], 'each exactly once');
  t.equal(relay.accepted - linksBefore, 1, 'one upstream login for the new bind, none to take the resource back');
  t.equal([...tp.proxy.sessions].filter((s) => s.bareJid === 'alice@proxy.test').length, 1, 'one session for alice');

  const late = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  late.send(`<resume xmlns='urn:xmpp:sm:3' previd='${id}' h='0'/>`);
  const failed = await late.next((el) => el.name === 'failed' || el.name === 'resumed');
  t.equal(failed.name, 'failed', 'the retired session can no longer be resumed');
  for (const c of [fresh.client, bob, late]) c.send('</stream:stream>');
});

t.test('slixmpp binding a fixed resource again after a drop gets the messages of its hibernated session', async (t) => {
  const { tp, relay } = await setup(t);
  const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'desk' });
  await bob.start();
  t.teardown(() => bob.stop().catch(() => {}));
  const first = new Slixmpp('alice@proxy.test/fixed', 'alice-pw', tp.port);
  t.teardown(() => first.child.kill('SIGKILL'));
  await first.waitEvent('sm_enabled');
  const old = sessionOf(tp, 'alice@proxy.test/fixed');
  first.command('drop');
  await waitFor(() => old.hibernating, 'hibernating');
  for (let i = 1; i <= 3; i++) await bob.send(xml('message', { to: 'alice@proxy.test/fixed', type: 'chat', id: `q${i}` }, xml('body', {}, `while away ${i}`)));
  await waitFor(() => old.sm.queue.unacked().filter((s) => s.xml.includes('while away')).length === 3, 'queued at the proxy');

  const linksBefore = relay.accepted;
  const second = new Slixmpp('alice@proxy.test/fixed', 'alice-pw', tp.port);
  t.teardown(() => second.child.kill('SIGKILL'));
  const start = await second.waitEvent('session_start');
  t.equal(start.jid, 'alice@proxy.test/fixed', 'bound the same resource');
  await second.waitEvent('message', 3);
  await sleep(3000);
  const messages = second.of('message');
  t.same(messages.map((m) => m.body), ['while away 1', 'while away 2', 'while away 3'], 'each once, in order');
  t.ok(messages.every((m) => m.delay === true), 'with delay stamps');
  t.equal(second.of('error').length, 0, `no error at slixmpp (${JSON.stringify(second.of('error'))})`);
  t.equal(relay.accepted - linksBefore, 1, 'no re-login loop');
  second.command('quit');
  await second.exited;
});

t.test('an upstream conflict (another connection took the resource at the server) is not answered by a re-login', async (t) => {
  const { tp, relay, prosodyPort } = await setup(t);
  const alice = clientFor(tp, 'alice', 'alice-pw', { resource: 'phone' });
  alice.reconnect.stop();
  const errors: string[] = [];
  alice.on('error', (err: Error & { condition?: string }) => errors.push(err.condition ?? err.message));
  const aliceGot = bodiesOf(alice);
  await alice.start();
  const session = sessionOf(tp, 'alice@proxy.test/phone');
  const ended = new Promise<SessionEnd>((resolve) => session.once('ended', resolve));
  const linksBefore = relay.accepted;
  // Straight to the server, bypassing the proxy, on the same resource: the server kicks the proxy's link.
  const direct = await RawClient.login({ port: prosodyPort, user: 'alice', password: 'alice-pw', resource: 'phone' });
  t.match(await ended, { cause: 'upstream-conflict', detail: /another connection/ }, 'the session ends');
  await waitFor(() => errors.includes('conflict'), 'the client is told conflict, as the server would');
  await sleep(3000);
  t.equal(relay.accepted, linksBefore, 'no re-login to take the resource back');
  t.same(aliceGot, []);
  direct.client.send('</stream:stream>');
});

t.test('no unhandled promise rejection in any of the above', async (t) => {
  t.same(rejections, []);
});
