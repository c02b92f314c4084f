/**
 * XEP-0357 push (issue 13) and the proxy's lifecycle: registrations are durable (§1): enabled
 * through one proxy process, they push from the next one on the same data dir without a new
 * `<enable/>`, and a disable is durable too; messages held for the account's next login when its
 * last session ends are pushed (§2); with push.enabled false the proxy leaves push to the server.
 * Real Prosody, the app server a real account logged in directly to it (AppServer).
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, ACCOUNTS, type TestProxy } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { sessionOf, sleep } from '../harness/chat.ts';
import { AppServer, APP_ACCOUNT, NS_PUSH, SECRET, chat, disableIq, enableIq, iqAnswer, phone } from '../harness/app-server.ts';
import type { SessionEnd } from '../../src/session/events.ts';

const QUIET_MS = 2500;

const USERS = ['carol', 'ivan'];
const prosody = await startProsody({
  tls: 'required',
  accounts: [...ACCOUNTS, APP_ACCOUNT, ...USERS.map((user) => ({ user, password: `${user}-pw` }))],
});
t.teardown(() => prosody.stop());
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'push-restart-'));
t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
const app = await AppServer.start(prosody);
t.teardown(() => app.stop());
const { client: bob } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'pc' });
t.teardown(() => bob.destroy());

/** A proxy on the shared data dir; `close()` once, or at the end of the file at the latest. */
async function proxy(): Promise<TestProxy> {
  const tp = await startTestProxy(prosody, { sm: { hibernationSeconds: 120 }, push: { batchSeconds: 1 }, storage: { dataDir } });
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= tp.close());
  t.teardown(close);
  return { ...tp, close };
}

/** alice's phone on `tp` WITHOUT a push enable, SM with resumption, then dropped: hibernating. */
async function hibernatedPhone(tp: TestProxy): Promise<string> {
  const { client, jid } = await phone(tp.port, 'alice', 'phone', [], 'alice-pw');
  const session = sessionOf(tp, jid);
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  client.destroy();
  await hibernating;
  return jid;
}

t.test('a registration made through one proxy process pushes from the next one', async (t) => {
  const first = await proxy();
  const { client } = await RawClient.login({ port: first.port, user: 'alice', password: 'alice-pw', resource: 'setup' });
  t.equal((await iqAnswer(client, enableIq('e1', app.jid, 'n-restart'), 'e1')).attrs.type, 'result', 'enabled through proxy #1');
  client.send('</stream:stream>');
  await client.closed;
  await first.close();

  const second = await proxy();
  const jid = await hibernatedPhone(second);
  bob.send(chat(jid, 'after the restart'));
  const [push] = await app.waitForPushes(1, 15_000, 'n-restart');
  await sleep(QUIET_MS);
  t.equal(app.pushesFor('n-restart').length, 1, 'one push');
  t.equal(push!.from, jid);
  t.equal(push!.body, 'New Message!');
  t.equal(push!.publishOptions?.secret, SECRET, 'the stored publish-options');

  // A disable is stored as well: proxy #3 no longer pushes.
  const { client: desk } = await RawClient.login({ port: second.port, user: 'alice', password: 'alice-pw', resource: 'desk' });
  t.equal((await iqAnswer(desk, disableIq('d1', app.jid, 'n-restart'), 'd1')).attrs.type, 'result', 'disabled through proxy #2');
  desk.send('</stream:stream>');
  await desk.closed;
  await second.close();

  const third = await proxy();
  const jid3 = await hibernatedPhone(third);
  bob.send(chat(jid3, 'after the disable'));
  await sleep(QUIET_MS + 1000);
  t.equal(app.pushesFor('n-restart').length, 1, 'no push after the disable and a restart');
  t.ok(sessionOf(third, jid3).sm.queue.length >= 1, 'the message did reach the hibernated session');
});

t.test('push.enabled false: enable and disco#info go to the server as any other iq', async (t) => {
  const off = await startTestProxy(prosody, { push: { enabled: false } });
  t.teardown(() => off.close());
  t.equal(off.proxy.push, undefined, 'no push feature');
  const { client } = await RawClient.login({ port: off.port, user: 'carol', password: 'carol-pw', resource: 'off' });
  t.teardown(() => client.destroy());
  const answer = await iqAnswer(client, enableIq('e1', app.jid, 'n-off'), 'e1');
  t.equal(answer.attrs.type, 'error', "Prosody's answer: it has no push support");
  const info = await iqAnswer(client, `<iq type='get' id='i1' to='carol@proxy.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, 'i1');
  t.notOk(info.getChild('query')?.getChildren('feature').some((f) => f.attrs.var === NS_PUSH), 'not advertised');
  client.send('</stream:stream>');
});

t.test("messages held after the account's last session ended are pushed once", async (t) => {
  // Its own data dir: the held message must not meet the restart test's proxies.
  const tp3 = await startTestProxy(prosody, { sm: { maxAckDelaySeconds: 60 }, push: { batchSeconds: 1 } });
  t.teardown(() => tp3.close());
  // XEP-0198 without resumption: a lost connection ends the session with its unacked stanzas.
  const { client, jid } = await RawClient.login({ port: tp3.port, user: 'ivan', password: 'ivan-pw', resource: 'phone' });
  t.equal((await iqAnswer(client, enableIq('e1', app.jid, 'n-held'), 'e1')).attrs.type, 'result');
  client.send(`<enable xmlns='urn:xmpp:sm:3'/>`);
  await client.next((el) => el.name === 'enabled');
  const session = sessionOf(tp3, jid);
  bob.send(chat(jid, 'held for later', 'h1'));
  await client.next((el) => el.name === 'message');
  const ended = new Promise<SessionEnd>((resolve) => session.once('ended', resolve));
  client.destroy(); // before acking, and long before max_ack_delay
  const end = await ended;
  t.equal(end.settled?.hold, 1, 'the message is held for the next login');
  t.same(app.pushesFor('n-held'), [], 'nothing was pushed while the client was connected');
  const [push] = await app.waitForPushes(1, 15_000, 'n-held');
  t.equal(push!.body, 'New Message!');
  await sleep(QUIET_MS);
  t.equal(app.pushesFor('n-held').length, 1, 'pushed once');

  const next = await RawClient.login({ port: tp3.port, user: 'ivan', password: 'ivan-pw', resource: 'again' });
  next.client.send('<presence/>');
  const held = await next.client.next((el) => el.name === 'message' && el.getChildText('body') !== null);
  t.equal(held.getChildText('body'), 'held for later', 'the held message is delivered at the next login');
  next.client.send('</stream:stream>');
});
