/**
 * XEP-0357 push through the proxy (issue 13), end to end on real Prosody: the phones are clients
 * of the proxy, the app server is a real account logged in directly to Prosody (AppServer), and
 * the senders talk to Prosody directly, so only the proxy can have produced a push.
 *
 * Absence is checked by waiting: "no push" means none within 2.5 × push.batchSeconds after the
 * stanza reached the proxy's queue (a batch that would have gone out has by then).
 */
import t from 'tap';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, clientFor, waitFor, bodiesOf, ACCOUNTS } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { sessionOf, sleep } from '../harness/chat.ts';
import {
  AppServer, APP_ACCOUNT, NS_PUSH, NS_PUBSUB, SECRET, chat, chatState, disableIq, enableIq, errorCondition, iqAnswer, phone, resume,
} from '../harness/app-server.ts';
import type { Session } from '../../src/session/session.ts';
import type { SessionEnd } from '../../src/session/events.ts';

const USERS = ['carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'judy', 'ken', 'leo'];
const BATCH_MS = 1000;
/** Long enough for any batch that would go out to have gone out. */
const QUIET_MS = 2.5 * BATCH_MS;

const prosody = await startProsody({
  tls: 'required',
  accounts: [...ACCOUNTS, APP_ACCOUNT, ...USERS.map((user) => ({ user, password: `${user}-pw` }))],
});
t.teardown(() => prosody.stop());
const tp = await startTestProxy(prosody, { sm: { hibernationSeconds: 120 }, push: { batchSeconds: BATCH_MS / 1000 } });
t.teardown(() => tp.close());
const app = await AppServer.start(prosody);
t.teardown(() => app.stop());
// bob writes to the phones directly through Prosody.
const { client: bob } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'pc' });
t.teardown(() => bob.destroy());

/** The proxy's push registrations of `bareJid` (jid, node), oldest first. */
function registrationsOf(bareJid: string): Array<{ jid: string; node: string }> {
  return tp.proxy.push!.registrations.list(bareJid).map(({ jid, node }) => ({ jid, node }));
}

/** Drops the phone's TCP connection (no `</stream:stream>`) and waits for its session to hibernate. */
async function drop(client: RawClient, fullJid: string): Promise<Session> {
  const session = sessionOf(tp, fullJid);
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  client.destroy();
  await hibernating;
  return session;
}

t.test('harness: the app server gets a publish sent directly through Prosody and answers per its mode', async (t) => {
  const publish = (id: string) =>
    `<iq type='set' id='${id}' to='${app.jid}'><pubsub xmlns='${NS_PUBSUB}'><publish node='h1'><item>` +
    `<notification xmlns='${NS_PUSH}'><x xmlns='jabber:x:data' type='submit'>` +
    `<field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>1</value></field>` +
    `</x></notification></item></publish></pubsub></iq>`;
  t.equal((await iqAnswer(bob, publish('h-1'), 'h-1')).attrs.type, 'result');
  app.mode = 'error';
  app.error = { type: 'cancel', condition: 'item-not-found' };
  const err = await iqAnswer(bob, publish('h-2'), 'h-2');
  t.equal(err.attrs.type, 'error');
  t.equal(errorCondition(err), 'item-not-found');
  app.mode = 'result';
  t.equal(app.pushesFor('h1').length, 2);
  const [first] = app.pushesFor('h1');
  t.match(first, { from: 'bob@proxy.test/pc', node: 'h1', messageCount: '1', answered: 'result' });
  t.equal(first!.body, undefined);
  t.equal(first!.publishOptions, undefined);
  t.equal(app.pushesFor('h1')[1]!.answered, 'error');
});

t.test('enable and disable are answered by the proxy; a missing jid is bad-request', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'carol', password: 'carol-pw', resource: 'r' });
  t.teardown(() => client.destroy());

  const enabled = await iqAnswer(client, enableIq('e1', app.jid, 'n-iq'), 'e1');
  t.equal(enabled.attrs.type, 'result', 'enable: result');
  t.same(enabled.getChildElements(), [], 'an empty result');
  t.same(registrationsOf('carol@proxy.test'), [{ jid: app.jid, node: 'n-iq' }], 'registered');

  // Prosody itself (no mod_cloud_notify) refuses the same request: a result can only be the proxy's.
  const direct = await iqAnswer(bob, enableIq('e0', app.jid, 'n-direct'), 'e0');
  t.equal(direct.attrs.type, 'error', 'Prosody alone does not answer enable with a result');

  const noJid = await iqAnswer(client, enableIq('e2', undefined, 'n-iq'), 'e2');
  t.equal(noJid.attrs.type, 'error', 'enable without jid: error');
  t.equal(noJid.getChild('error')?.attrs.type, 'modify');
  t.equal(errorCondition(noJid), 'bad-request');

  const disabled = await iqAnswer(client, disableIq('d1', app.jid, 'n-iq'), 'd1');
  t.equal(disabled.attrs.type, 'result', 'disable with node: result');
  t.same(registrationsOf('carol@proxy.test'), [], 'nothing left');
  const disabledAll = await iqAnswer(client, disableIq('d2', app.jid), 'd2');
  t.equal(disabledAll.attrs.type, 'result', 'disable without node: result');
  client.send('</stream:stream>');
});

t.test("disco#info to the account's bare JID advertises urn:xmpp:push:0", async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'carol', password: 'carol-pw', resource: 'disco' });
  t.teardown(() => client.destroy());
  const info = await iqAnswer(client, `<iq type='get' id='i1' to='carol@proxy.test'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`, 'i1');
  t.equal(info.attrs.type, 'result');
  const features = info.getChild('query')?.getChildren('feature').map((f) => f.attrs.var) ?? [];
  t.ok(features.includes(NS_PUSH), `features: ${features.join(' ')}`);
  t.equal(features.filter((f) => f === NS_PUSH).length, 1, 'listed once');
  client.send('</stream:stream>');
});

t.test('hibernated phone: chat state and presence give no push, a body one push without body text or sender; resume gets all', async (t) => {
  const { client, jid, smId } = await phone(tp.port, 'dave', 'phone', [{ jid: app.jid, node: 'n-main' }]);
  const session = await drop(client, jid);

  bob.send(chatState(jid));
  bob.send(`<presence to='${jid}'/>`);
  await waitFor(() => session.sm.queue.length === 2, 'chat state and presence queued');
  await sleep(QUIET_MS);
  t.same(app.pushesFor('n-main'), [], 'no push for a chat state or a presence');

  bob.send(chat(jid, 'the secret words', 'm1'));
  const [push] = await app.waitForPushes(1, 15_000, 'n-main');
  await sleep(QUIET_MS);
  t.equal(app.pushesFor('n-main').length, 1, 'exactly one push');
  t.equal(push!.from, jid, "sent over the phone's own upstream session");
  t.equal(push!.iq.attrs.type, 'set');
  t.equal(push!.summary.FORM_TYPE, 'urn:xmpp:push:summary');
  t.ok(Number(push!.messageCount) >= 1, `message-count ${push!.messageCount}`);
  t.equal(push!.body, 'New Message!', 'the placeholder, not the body');
  t.notOk('last-message-sender' in push!.summary, 'no sender by default');
  t.notMatch(push!.iq.toString(), /secret words/, 'the body text is nowhere in the push');
  t.notMatch(push!.iq.toString(), /bob@/, 'nor the sender');
  t.equal(push!.publishOptions?.secret, SECRET, 'the publish-options secret is passed on');
  t.equal(push!.publishOptions?.FORM_TYPE, 'http://jabber.org/protocol/pubsub#publish-options');
  t.equal(session.sm.queue.length, 3, "the app server's answer is not queued for the phone");

  const again = await resume(tp.port, 'dave', smId);
  const first = await again.next((el) => el.name === 'message');
  const second = await again.next((el) => el.name === 'message');
  t.ok(first.getChild('composing', 'http://jabber.org/protocol/chatstates'), 'the chat state first');
  t.equal(second.getChildText('body'), 'the secret words', 'then the message');
  t.ok(again.received.some((el) => el.name === 'presence'), 'and the presence');
  again.send(`<a xmlns='urn:xmpp:sm:3' h='3'/>`);
  await waitFor(() => session.sm.queue.length === 0, 'acked');
  t.notOk(again.received.some((el) => el.name === 'iq'), 'no push answer reached the phone');
  again.send('</stream:stream>');
  await again.closed;
});

t.test('what is worth a push: none for headlines, errors and sent carbons; a receipt unimportant; OMEMO and a received carbon important', async (t) => {
  const { client, jid } = await phone(tp.port, 'judy', 'phone', [{ jid: app.jid, node: 'n-kind' }]);
  // Carbons on for the phone (answered by Prosody), so the server copies judy's other resource's traffic to it.
  t.equal((await iqAnswer(client, `<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>`, 'c1')).attrs.type, 'result', 'carbons enabled');
  const session = await drop(client, jid);
  const { client: desk } = await RawClient.login({ port: prosody.c2sPort, user: 'judy', password: 'judy-pw', resource: 'desk' });
  t.teardown(() => desk.destroy());
  desk.send(`<iq type='set' id='c2'><enable xmlns='urn:xmpp:carbons:2'/></iq>`);
  await desk.next((el) => el.attrs.id === 'c2');

  bob.send(`<message to='${jid}' type='headline'><body>breaking news</body></message>`);
  bob.send(`<message to='${jid}' type='error'><body>bounced</body><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`);
  desk.send(chat('bob@proxy.test/pc', 'sent from the desk')); // a sent carbon for the phone
  // Queued: the carbons answer (the phone never acked it), then these three in any order.
  await waitFor(() => session.sm.queue.length === 4, 'headline, error and sent carbon queued');
  t.ok(session.sm.queue.unacked().some((q) => q.xml.includes("<sent xmlns='urn:xmpp:carbons:2'")), 'the sent carbon reached the phone');
  await sleep(QUIET_MS);
  t.same(app.pushesFor('n-kind'), [], 'none of them pushed');

  bob.send(`<message to='${jid}' type='chat'><received xmlns='urn:xmpp:receipts' id='m1'/></message>`);
  const [receipt] = await app.waitForPushes(1, 15_000, 'n-kind');
  t.notOk('last-message-body' in receipt!.summary, 'a receipt: a push without body');

  bob.send(`<message to='${jid}' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/><payload>AAAA</payload></encrypted></message>`);
  const omemo = (await app.waitForPushes(2, 15_000, 'n-kind'))[1]!;
  t.equal(omemo.body, 'New Message!', 'OMEMO without a body: important');

  bob.send(chat('judy@proxy.test/desk', 'to the desk')); // a received carbon for the phone
  const carbon = (await app.waitForPushes(3, 15_000, 'n-kind'))[2]!;
  t.equal(carbon.body, 'New Message!', 'a received carbon of a chat message: important');
  await sleep(QUIET_MS);
  t.equal(app.pushesFor('n-kind').length, 3, 'one push each, nothing more');
});

t.test('disable stops pushes: one node, then every node of an app server; another app server still gets its push', async (t) => {
  const app2 = await AppServer.start(prosody, { ...APP_ACCOUNT, resource: 'app2' });
  t.teardown(() => app2.stop());
  const { client, jid, smId } = await phone(tp.port, 'erin', 'phone', [
    { jid: app.jid, node: 'n-d1' },
    { jid: app.jid, node: 'n-d2' },
    { jid: app2.jid, node: 'n-d3' },
  ]);
  t.equal((await iqAnswer(client, disableIq('d1', app.jid, 'n-d1'), 'd1')).attrs.type, 'result');
  t.equal((await iqAnswer(client, disableIq('d2', app.jid), 'd2')).attrs.type, 'result');
  const session = await drop(client, jid);

  bob.send(chat(jid, 'anyone?'));
  const [push] = await app2.waitForPushes(1, 15_000, 'n-d3');
  t.equal(push!.from, jid, 'the registration left pushes');
  await sleep(QUIET_MS);
  t.same(app.pushes.filter((p) => p.from === jid), [], 'the disabled ones get nothing');
  t.equal(app2.pushes.length, 1);
  t.same(registrationsOf('erin@proxy.test'), [{ jid: app2.jid, node: 'n-d3' }], 'only the other app server is left');
  t.ok(session.hibernating);
  // The two disables were answered by the proxy after <enable/>: they count in the phone's h all the same.
  const again = await resume(tp.port, 'erin', smId);
  t.equal(again.received.find((el) => el.name === 'resumed')?.attrs.h, '2', 'h counts the consumed disables');
  again.send('</stream:stream>');
});

t.test('maxDevices: a sixth registration evicts the oldest', async (t) => {
  const nodes = [1, 2, 3, 4, 5, 6].map((i) => `n-m${i}`);
  const { client, jid } = await phone(tp.port, 'frank', 'phone', nodes.map((node) => ({ jid: app.jid, node })));
  await drop(client, jid);
  bob.send(chat(jid, 'to all devices'));
  await waitFor(() => app.pushes.filter((p) => p.from === jid).length >= 5, 'five pushes', 15_000);
  await sleep(QUIET_MS);
  const got = app.pushes.filter((p) => p.from === jid).map((p) => p.node).sort();
  t.same(got, nodes.slice(1), 'one push to each of the five newest, none to the first');
  t.same(registrationsOf('frank@proxy.test').map((r) => r.node), nodes.slice(1), 'the five newest are registered');
});

t.test('@xmpp/client: a burst of 50 messages while hibernated gives one push per batch; resume gets the 50 once, in order', async (t) => {
  const grace = clientFor(tp, 'grace', 'grace-pw', { resource: 'phone' });
  const got = bodiesOf(grace);
  t.teardown(() => grace.stop().catch(() => {}));
  await grace.start();
  const answer: Element = await grace.iqCaller.request(xml('iq', { type: 'set' }, xml('enable', { xmlns: NS_PUSH, jid: app.jid, node: 'n-burst' })));
  t.equal(answer.attrs.type, 'result', 'enable answered');
  // Both sides: the proxy enabled it, and the client got <enabled/> (else it binds anew instead of resuming).
  await waitFor(() => grace.streamManagement.enabled && sessionOf(tp, 'grace@proxy.test/phone').sm.enabled, 'SM enabled');
  const session = sessionOf(tp, 'grace@proxy.test/phone');
  grace.reconnect.stop();
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  grace.socket.socket.destroy();
  await hibernating;

  for (let i = 1; i <= 50; i++) bob.send(chat('grace@proxy.test/phone', `burst ${i}`, `b${i}`));
  await waitFor(() => session.sm.queue.length >= 50, 'the 50 messages are queued');
  await app.waitForPushes(1, 15_000, 'n-burst');
  await sleep(QUIET_MS);
  const pushes = app.pushesFor('n-burst');
  t.ok(pushes.length >= 1 && pushes.length <= 3, `one push per batch, not one per message: ${pushes.length}`);
  t.ok(pushes.every((p) => p.body === 'New Message!'));

  const resumed = new Promise((resolve) => grace.streamManagement.once('resumed', resolve));
  await grace.reconnect.reconnect();
  await resumed;
  await waitFor(() => got.length >= 50, 'the 50 messages arrive');
  await sleep(300);
  t.same(got, Array.from({ length: 50 }, (_, i) => `burst ${i + 1}`), 'all 50, once each, in order');
  t.equal(app.pushesFor('n-burst').length, pushes.length, 'the resume pushes nothing');
});

t.test('a phone that hibernated before its account enabled push (from another device) is pushed too', async (t) => {
  const { client, jid } = await phone(tp.port, 'leo', 'phone', []);
  const session = await drop(client, jid);
  const { client: desk } = await RawClient.login({ port: tp.port, user: 'leo', password: 'leo-pw', resource: 'desk' });
  t.teardown(() => desk.destroy());
  t.equal((await iqAnswer(desk, enableIq('e1', app.jid, 'n-late'), 'e1')).attrs.type, 'result', 'enabled from the desk');
  bob.send(chat(jid, 'for the sleeping phone'));
  await waitFor(() => session.sm.queue.length === 1, 'queued for the phone');
  const pushes = await app.waitForPushes(1, 6000, 'n-late').catch(() => app.pushesFor('n-late'));
  t.equal(pushes.length, 1, 'the hibernated session of an account with a registration is pushed');
  t.equal(pushes[0]?.from, jid, "over the phone's session");
});

// ---- a second proxy: short hibernation, pushes with body and sender ----

t.test('hibernation is extended until the first push, then the normal time runs (withBody, withSender)', async (t) => {
  const tp2 = await startTestProxy(prosody, {
    sm: { hibernationSeconds: 2 },
    push: { batchSeconds: 1, maxHibernationSeconds: 30, withBody: true, withSender: true },
  });
  t.teardown(() => tp2.close());
  const { client, jid, smId } = await phone(tp2.port, 'heidi', 'phone', [{ jid: app.jid, node: 'n-ext' }]);
  let session = sessionOf(tp2, jid);
  let hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  client.destroy();
  await hibernating;

  await sleep(4000); // twice sm.hibernationSeconds
  t.ok(tp2.proxy.sessions.has(session) && session.hibernating, 'still hibernating past sm.hibernationSeconds');
  t.same(app.pushesFor('n-ext'), [], 'no push yet');
  const again = await resume(tp2.port, 'heidi', smId);
  t.pass('resumable past sm.hibernationSeconds');
  session = sessionOf(tp2, jid);
  hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  again.destroy();
  await hibernating;

  let ended = false;
  const end = new Promise<SessionEnd>((resolve) => session.once('ended', (e: SessionEnd) => ((ended = true), resolve(e))));
  bob.send(chat(jid, 'wake up'));
  const [push] = await app.waitForPushes(1, 15_000, 'n-ext');
  t.notOk(ended, 'the session outlived sm.hibernationSeconds until the push');
  t.equal(push!.body, 'wake up', 'withBody: the real body');
  t.match(push!.sender, /^bob@proxy\.test/, 'withSender: the sender');
  t.match(await end, { cause: 'hibernation-timeout', hibernating: true }, 'then the normal hibernation ran out');
  t.equal(app.pushesFor('n-ext').length, 1, 'one push');
});

t.test('a disable from another device ends the extension: the normal hibernation time runs', async (t) => {
  const tp2 = await startTestProxy(prosody, { sm: { hibernationSeconds: 2 }, push: { batchSeconds: 1, maxHibernationSeconds: 30 } });
  t.teardown(() => tp2.close());
  const { client, jid } = await phone(tp2.port, 'ken', 'phone', [{ jid: app.jid, node: 'n-gone' }]);
  const session = sessionOf(tp2, jid);
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  client.destroy();
  await hibernating;
  await sleep(2 * BATCH_MS); // the batch that opened with the hibernation is over: nothing is pending
  const { client: desk } = await RawClient.login({ port: tp2.port, user: 'ken', password: 'ken-pw', resource: 'desk' });
  t.teardown(() => desk.destroy());
  t.equal((await iqAnswer(desk, disableIq('d1', app.jid), 'd1')).attrs.type, 'result', 'disabled from the desk');
  t.same(tp2.proxy.push!.registrations.list('ken@proxy.test'), [], 'no registration left');
  // Without registrations nothing extends the hibernation: sm.hibernationSeconds (2 s) rule, not
  // push.maxHibernationSeconds (30 s).
  const ended = await waitFor(() => !tp2.proxy.sessions.has(session), 'the phone session ends', 6000).then(() => true, () => false);
  t.ok(ended, 'the hibernated session ended well before push.maxHibernationSeconds');
  t.same(app.pushesFor('n-gone'), [], 'and nothing was pushed');
});
