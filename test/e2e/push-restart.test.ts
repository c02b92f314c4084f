/**
 * XEP-0357 push registrations are durable (issue 13 §1): enabled through one proxy process, they
 * push from the next one on the same data dir, without a new `<enable/>`; a disable is durable too.
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
import { AppServer, APP_ACCOUNT, SECRET, chat, disableIq, enableIq, iqAnswer, phone } from '../harness/app-server.ts';

const QUIET_MS = 2500;

const prosody = await startProsody({ tls: 'required', accounts: [...ACCOUNTS, APP_ACCOUNT] });
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
