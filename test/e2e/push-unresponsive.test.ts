/**
 * XEP-0357 push (issue 13) when the phone is connected but silent, and when the app server fails:
 * an attached client that leaves the proxy's `<r/>` unanswered for sm.maxAckDelaySeconds gets a
 * push; app-server errors other than `wait`, and no answer within push.replyTimeoutSeconds, count,
 * push.maxErrors of them in a row remove the registration, a success resets the count.
 * Real Prosody; the app servers are real accounts logged in directly to it (AppServer).
 */
import t, { type Test } from 'tap';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, waitFor, ACCOUNTS } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { sessionOf, sleep } from '../harness/chat.ts';
import { AppServer, APP_ACCOUNT, chat, phone, type AppServerMode } from '../harness/app-server.ts';
import type { Session } from '../../src/session/session.ts';

const USERS = ['carol', 'dave', 'erin', 'frank', 'grace', 'heidi'];
const BATCH_MS = 1000;
const QUIET_MS = 2.5 * BATCH_MS;
const MAX_ERRORS = 3;

const prosody = await startProsody({
  tls: 'required',
  accounts: [...ACCOUNTS, APP_ACCOUNT, ...USERS.map((user) => ({ user, password: `${user}-pw` }))],
});
t.teardown(() => prosody.stop());
const tp = await startTestProxy(prosody, {
  sm: { hibernationSeconds: 120, maxAckDelaySeconds: 1 },
  push: { batchSeconds: BATCH_MS / 1000, maxErrors: MAX_ERRORS, replyTimeoutSeconds: 1 },
});
t.teardown(() => tp.close());
const { client: bob } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'pc' });
t.teardown(() => bob.destroy());

/** The proxy's push registrations of `bareJid` (jid, node), oldest first. */
function registrationsOf(bareJid: string): Array<{ jid: string; node: string }> {
  return tp.proxy.push!.registrations.list(bareJid).map(({ jid, node }) => ({ jid, node }));
}

/** An app server of its own for one test (resource `resource` of the push account). */
async function appServer(t: Test, resource: string): Promise<AppServer> {
  const app = await AppServer.start(prosody, { ...APP_ACCOUNT, resource });
  t.teardown(() => app.stop());
  return app;
}

/** `user`'s phone registered with `app` (node `node`), then dropped: its session hibernates. */
async function hibernatedPhone(user: string, app: AppServer, node: string): Promise<{ jid: string; session: Session }> {
  const { client, jid } = await phone(tp.port, user, 'phone', [{ jid: app.jid, node }]);
  const session = sessionOf(tp, jid);
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  client.destroy();
  await hibernating;
  return { jid, session };
}

/**
 * For each mode in turn: the app server answers that way, bob sends one message, and the push
 * for it arrives (each message in a batch of its own). Returns how many pushes `node` got.
 */
async function pushEach(app: AppServer, jid: string, node: string, modes: AppServerMode[], error = app.error): Promise<number> {
  app.error = error;
  for (const [i, mode] of modes.entries()) {
    app.mode = mode;
    const before = app.pushesFor(node).length;
    bob.send(chat(jid, `message ${i + 1}`));
    await app.waitForPushes(before + 1, 15_000, node);
  }
  return app.pushesFor(node).length;
}

t.test('an attached client that leaves <r/> unanswered gets a push after max_ack_delay; one that acks does not', async (t) => {
  const app = await appServer(t, 'app-ack');
  const silent = await phone(tp.port, 'carol', 'silent', [{ jid: app.jid, node: 'n-silent' }]);
  const prompt = await phone(tp.port, 'dave', 'prompt', [{ jid: app.jid, node: 'n-prompt' }]);
  t.teardown(() => silent.client.destroy());
  t.teardown(() => prompt.client.destroy());

  bob.send(chat(prompt.jid, 'are you there?'));
  await prompt.client.next((el) => el.name === 'message');
  await prompt.client.next((el) => el.name === 'r');
  prompt.client.send(`<a xmlns='urn:xmpp:sm:3' h='1'/>`);

  const mark = silent.client.received.length; // after the answer to its own enable
  bob.send(chat(silent.jid, 'are you there?'));
  await silent.client.next((el) => el.name === 'message');
  await silent.client.next((el) => el.name === 'r');
  const [push] = await app.waitForPushes(1, 15_000, 'n-silent');
  t.equal(push!.from, silent.jid);
  t.equal(push!.body, 'New Message!', 'an important push');
  const session = sessionOf(tp, silent.jid);
  t.notOk(session.hibernating, 'pushed while still attached');

  await sleep(1000 + QUIET_MS); // max_ack_delay and a batch
  t.same(app.pushesFor('n-prompt'), [], 'the client that acked gets no push');
  t.equal(app.pushesFor('n-silent').length, 1, 'one push for the silent one');
  t.notOk(silent.client.received.slice(mark).some((el) => el.name === 'iq'), "the app server's answer does not reach the client");

  // Then its connection drops: the message already pushed is not pushed again, a new one is.
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  silent.client.destroy();
  await hibernating;
  await sleep(QUIET_MS);
  t.equal(app.pushesFor('n-silent').length, 1, 'hibernating: the same message is not pushed twice');
  bob.send(chat(silent.jid, 'now?'));
  await app.waitForPushes(2, 15_000, 'n-silent');
  await sleep(QUIET_MS);
  t.equal(app.pushesFor('n-silent').length, 2, 'a new message while hibernated: one more push');
});

t.test(`app-server errors (cancel) remove the registration after push.maxErrors (${MAX_ERRORS})`, async (t) => {
  const app = await appServer(t, 'app-err');
  const { jid } = await hibernatedPhone('erin', app, 'n-err');
  const got = await pushEach(app, jid, 'n-err', Array(MAX_ERRORS).fill('error'), { type: 'cancel', condition: 'item-not-found' });
  t.equal(got, MAX_ERRORS, `${MAX_ERRORS} pushes, each answered with an error`);
  await waitFor(() => registrationsOf('erin@proxy.test').length === 0, 'registration removed');

  app.mode = 'result';
  bob.send(chat(jid, 'after the limit'));
  await sleep(QUIET_MS);
  t.equal(app.pushesFor('n-err').length, MAX_ERRORS, 'no push after the limit');
  t.same(registrationsOf('erin@proxy.test'), [], 'no registration left');
});

t.test('wait errors do not count; a success resets the count', async (t) => {
  const app = await appServer(t, 'app-wait');
  const { jid } = await hibernatedPhone('frank', app, 'n-wait');
  // One more wait error than the limit, then a success: the registration is still there.
  const waits = await pushEach(app, jid, 'n-wait', [...Array(MAX_ERRORS + 1).fill('error'), 'result'], { type: 'wait', condition: 'resource-constraint' });
  t.equal(waits, MAX_ERRORS + 2, 'every message pushed: wait errors are not counted');
  t.equal(app.pushesFor('n-wait').filter((p) => p.answered === 'error').length, MAX_ERRORS + 1);

  // Failures, a success, failures: never the limit in a row.
  const reset = await pushEach(app, jid, 'n-wait', ['error', 'error', 'result', 'error', 'error', 'result'], { type: 'cancel', condition: 'item-not-found' });
  t.equal(reset, MAX_ERRORS + 2 + 6, 'the success reset the count: still pushed after more than the limit of failures in all');
  t.same(registrationsOf('frank@proxy.test'), [{ jid: app.jid, node: 'n-wait' }], 'still registered');
});

t.test('an app server that never answers counts as failing (push.replyTimeoutSeconds)', async (t) => {
  const app = await appServer(t, 'app-mute');
  const outcomes: string[] = [];
  const onOutcome = (outcome: string) => outcomes.push(outcome);
  tp.proxy.manager.events.on('push-outcome', onOutcome);
  t.teardown(() => void tp.proxy.manager.events.off('push-outcome', onOutcome));
  const { jid } = await hibernatedPhone('grace', app, 'n-mute');
  const got = await pushEach(app, jid, 'n-mute', Array(MAX_ERRORS).fill('silent'));
  t.equal(got, MAX_ERRORS);
  await waitFor(() => registrationsOf('grace@proxy.test').length === 0, 'registration removed after the timeouts', 15_000);
  t.equal(outcomes.filter((o) => o === 'timeout').length, MAX_ERRORS, 'each push timed out');

  app.mode = 'result';
  bob.send(chat(jid, 'after the timeouts'));
  await sleep(QUIET_MS);
  t.equal(app.pushesFor('n-mute').length, MAX_ERRORS, 'no push after the limit of unanswered ones');
});

t.test("an app server gone offline: the server's bounces count, the registration goes after push.maxErrors", async (t) => {
  const app = await appServer(t, 'app-gone');
  const { jid } = await hibernatedPhone('heidi', app, 'n-gone');
  const outcomes: string[] = [];
  const onOutcome = (outcome: string) => outcomes.push(outcome);
  tp.proxy.manager.events.on('push-outcome', onOutcome);
  t.teardown(() => void tp.proxy.manager.events.off('push-outcome', onOutcome));
  await app.stop();
  for (let i = 1; i <= MAX_ERRORS; i++) {
    bob.send(chat(jid, `unseen ${i}`));
    await waitFor(() => outcomes.length === i, `outcome of push ${i}`, 15_000);
  }
  t.same(outcomes, Array(MAX_ERRORS).fill('error'), "each push bounced by Prosody (the app server's full JID is offline)");
  t.same(registrationsOf('heidi@proxy.test'), [], 'registration removed');
  bob.send(chat(jid, 'after the limit'));
  await sleep(QUIET_MS);
  t.equal(outcomes.length, MAX_ERRORS, 'no more pushes');
});

t.test('metrics: pushes by outcome, registrations, hibernation extensions (issue 13 §6)', async (t) => {
  const text = await tp.proxy.metrics.registry.metrics();
  const value = (name: string, labels = '') => {
    const line = text.split('\n').find((l) => l.startsWith(`xmpp_sm_proxy_${name}${labels} `));
    return line === undefined ? undefined : Number(line.split(' ').pop());
  };
  t.ok(value('pushes_total', '{outcome="sent"}')! >= 1, 'accepted pushes counted');
  t.ok(value('pushes_total', '{outcome="error"}')! >= MAX_ERRORS, 'error answers counted');
  t.ok(value('pushes_total', '{outcome="timeout"}')! >= MAX_ERRORS, 'unanswered pushes counted');
  t.ok(value('push_hibernation_extensions_total')! >= 1, 'extended hibernations counted');
  t.equal(value('push_registrations'), tp.proxy.push!.registrations.size, 'registrations: the stored count');
  t.notMatch(text, /pushes_total\{[^}]*@/, 'no JID in a label');
});
