/**
 * Issue 10 A: what an established client sends is checked before it is relayed. Before, every
 * top-level element went upstream and Prosody closed the upstream stream for what it does not
 * accept, which cost the proxy a re-login (39 in 23 s from one stanza before the session-side
 * fix of 28fd962) and ended the session with Prosody's condition. Now the proxy closes the
 * offender's client stream itself with the RFC 6120 condition: Prosody never sees the element,
 * the upstream sees no new login, and the other clients chat on. CSI still reaches Prosody.
 *
 * Proof that the input never reached Prosody: its debug log (every element it receives from a
 * c2s stream is logged as `Received[c2s]: <top tag>`, and an unhandled one as "Unhandled").
 */
import * as fs from 'node:fs';
import t, { type Test } from 'tap';
import { xml } from '@xmpp/client';
import { startProsody } from '../harness/prosody.ts';
import { ACCOUNTS, startTestProxy, waitFor } from '../harness/proxy.ts';
import { LoginWatchRelay } from '../harness/login-watch-relay.ts';
import { RawClient } from '../harness/raw-client.ts';
import { FAST_UPSTREAM, chatPair, sleep } from '../harness/chat.ts';

// A plain-text upstream, so the relay sees each login's <success/>.
const prosody = await startProsody({ tls: 'none', accounts: ACCOUNTS, logLevel: 'debug' });
t.teardown(() => prosody.stop());
const relay = await LoginWatchRelay.start(prosody.c2sPort);
t.teardown(() => relay.close());
const tp = await startTestProxy(prosody, { upstream: { ...FAST_UPSTREAM, port: relay.port, tls: 'none' } });
t.teardown(() => tp.close());

const prosodyLog = () => fs.readFileSync(prosody.logFile, 'utf8');
const unhandled = () => prosodyLog().split('\n').filter((l) => /Unhandled/.test(l));

// Two real clients that must chat on whatever the offenders do.
const pair = await chatPair(tp);
t.teardown(async () => {
  await pair.alice.stop();
  await pair.bob.stop();
});
let round = 0;
async function othersStillChat(t: Test): Promise<void> {
  round++;
  await pair.say(pair.alice, 'bob@proxy.test/b', `to bob ${round}`);
  await pair.say(pair.bob, 'alice@proxy.test/a', `to alice ${round}`);
  await waitFor(() => pair.bobGot.includes(`to bob ${round}`) && pair.aliceGot.includes(`to alice ${round}`), 'the other clients chat on');
  t.equal(pair.drops.n, 0, 'and were never disconnected');
}

let offenders = 0;
/** A fresh, resumable alice session on its own resource: the client that misbehaves. */
async function offender(): Promise<RawClient> {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: `bad${++offenders}` });
  client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  await client.next((el) => el.name === 'enabled');
  client.send(`<presence/>`);
  return client;
}

const CASES: Array<{ what: string; input: string; condition: string }> = [
  { what: 'a message in another namespace', input: `<message xmlns='urn:x' to='bob@proxy.test/b' type='chat'><body>x</body></message>`, condition: 'invalid-namespace' },
  { what: 'presence in jabber:server', input: `<presence xmlns='jabber:server'/>`, condition: 'invalid-namespace' },
  { what: 'an unknown nonza', input: `<hello xmlns='urn:example:unknown'/>`, condition: 'unsupported-stanza-type' },
  { what: 'a nonza in an advertised namespace that is no nonza protocol (bind)', input: `<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>`, condition: 'unsupported-stanza-type' },
  { what: 'a jabber:client element that is no stanza', input: `<hello/>`, condition: 'unsupported-stanza-type' },
  { what: 'a prefixed top-level name', input: `<x:message xmlns:x='jabber:client' to='bob@proxy.test/b'><x:body>x</x:body></x:message>`, condition: 'unsupported-stanza-type' },
  { what: 'an SM nonza of a version the proxy does not offer', input: `<r xmlns='urn:xmpp:sm:2'/>`, condition: 'unsupported-stanza-type' },
  { what: 'an iq without id', input: `<iq type='get' to='proxy.test'><ping xmlns='urn:xmpp:ping'/></iq>`, condition: 'invalid-xml' },
  { what: 'an iq of an unknown type', input: `<iq type='fetch' id='q1' to='proxy.test'><ping xmlns='urn:xmpp:ping'/></iq>`, condition: 'invalid-xml' },
  { what: 'a message of an unknown type', input: `<message type='shout' to='bob@proxy.test/b'><body>x</body></message>`, condition: 'invalid-xml' },
  { what: 'presence of an unknown type', input: `<presence type='available'/>`, condition: 'invalid-xml' },
];

for (const c of CASES) {
  t.test(`${c.what}: ${c.condition} on that stream only, nothing upstream`, async (t) => {
    const bad = await offender();
    await sleep(200); // its presence reached Prosody; its own login is counted
    const logins = relay.logins.length;
    const unhandledBefore = unhandled().length;
    bad.send(c.input);
    t.equal(await bad.streamError(), c.condition, `the offender gets ${c.condition}`);
    await bad.closed;
    // Several reconnect delays (200 ms here): a killed upstream link would have logged in again.
    await sleep(1500);
    t.equal(relay.logins.length, logins, 'the upstream saw no new login');
    t.same(unhandled().slice(unhandledBefore), [], 'Prosody never saw the element');
    await othersStillChat(t);
  });
}

t.test("a client's own stream error is logged, not relayed", async (t) => {
  const bad = await offender();
  await sleep(200);
  const logins = relay.logins.length;
  const received = (prosodyLog().match(/stream:error|Session closed by remote/g) ?? []).length;
  bad.send(`<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`);
  await bad.closed;
  await sleep(1500);
  t.equal((prosodyLog().match(/stream:error|Session closed by remote/g) ?? []).length, received, 'Prosody got no stream error');
  t.equal(relay.logins.length, logins, 'no new login');
  await othersStillChat(t);
});

t.test('CSI nonzas reach Prosody (it advertises urn:xmpp:csi:0)', async (t) => {
  const since = prosodyLog().length;
  const logged = (re: RegExp) => re.test(prosodyLog().slice(since));
  await pair.alice.send(xml('inactive', { xmlns: 'urn:xmpp:csi:0' }));
  await waitFor(() => logged(/Received\[c2s\]: <inactive [^>]*xmlns='urn:xmpp:csi:0'/), 'Prosody receives <inactive/>');
  await pair.alice.send(xml('active', { xmlns: 'urn:xmpp:csi:0' }));
  await waitFor(() => logged(/Received\[c2s\]: <active [^>]*xmlns='urn:xmpp:csi:0'/), 'Prosody receives <active/>');
  t.same(unhandled(), [], 'Prosody handled everything it ever got from the proxy');
  await othersStillChat(t);
});

t.test('a well-behaved stream with every kind of valid stanza stays up', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'good' });
  client.send(`<presence xmlns='jabber:client'/>`);
  client.send(`<iq type='get' id='v1' to='proxy.test'><query xmlns='jabber:iq:version'/></iq>`);
  t.equal((await client.next((el) => el.name === 'iq' && el.attrs.id === 'v1')).attrs.type, 'result');
  client.send(`<message type='normal' to='bob@proxy.test/b'><body>normal</body></message>`);
  client.send(`<message to='bob@proxy.test/b'><body>untyped</body></message>`);
  client.send(`<presence type='unavailable'/>`);
  await waitFor(() => pair.bobGot.includes('normal') && pair.bobGot.includes('untyped'), 'bob gets both');
  t.notOk(client.received.some((el) => el.name === 'stream:error'), 'no stream error');
  client.send('</stream:stream>');
  await client.closed;
});
