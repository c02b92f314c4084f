// Group chats in relay mode (issues 14 §2 and 12): after an upstream loss the relayed session
// has no login until its client comes back; the client's new relayed login becomes the link, and
// the rooms are rejoined on it before anything else, as after a transparent reconnect: the
// occupant is back, what the room said meanwhile arrives with the rejoin's history, each message
// once, no not-joined notice.
import t from 'tap';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, clientFor, waitFor, ACCOUNTS } from '../harness/proxy.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { RawClient } from '../harness/raw-client.ts';
import { FAST_UPSTREAM, sessionOf, sleep } from '../harness/chat.ts';

const MUC = 'http://jabber.org/protocol/muc';
const MUC_USER = 'http://jabber.org/protocol/muc#user';
const SERVICE = 'conference.proxy.test';

t.test('relay mode: an upstream loss, the client logs in again and resumes, its room is rejoined; messages once', async (t) => {
  const prosody = await startProsody({
    tls: 'required',
    accounts: ACCOUNTS,
    config: [`Component "${SERVICE}" "muc"`, '  muc_room_locking = false', '  restrict_room_creation = false'].join('\n'),
  });
  t.teardown(() => prosody.stop());
  const relay = await TcpRelay.start(prosody.c2sPort);
  t.teardown(() => relay.close());
  // The upstream timeout covers a relayed login's client turns: generous, timing is not under test.
  const tp = await startTestProxy(prosody, { upstream: { ...FAST_UPSTREAM, port: relay.port, connectTimeoutSeconds: 20 }, auth: { mode: 'scram-relay' } });
  t.teardown(() => tp.close());

  const room = `den@${SERVICE}`;
  // bob is in the room through the server directly: the room lives on through alice's loss.
  const { client: bob } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'pc' });
  t.teardown(() => bob.destroy());
  bob.send('<presence/>');
  bob.send(`<presence to='${room}/bob'><x xmlns='${MUC}'><history maxstanzas='0'/></x></presence>`);
  await bob.next((el) => isSelfPresence(el, room));

  const alice = clientFor(tp, 'alice', 'alice-pw', { resource: 'phone' });
  const got: Element[] = [];
  alice.on('stanza', (el: Element) => got.push(el));
  await alice.start();
  await waitFor(() => sessionOf(tp, 'alice@proxy.test/phone').sm.enabled, 'SM enabled');
  const session = sessionOf(tp, 'alice@proxy.test/phone');
  t.ok(session.relayed, 'a relayed session');
  await alice.send(xml('presence', { to: `${room}/alice` }, xml('x', { xmlns: MUC }, xml('history', { maxstanzas: '0' }))));
  await waitFor(() => got.some((el) => isSelfPresence(el, room)), 'alice joined');
  const groupchat = () => got.filter((el) => el.name === 'message' && el.attrs.type === 'groupchat').map((el) => el.getChildText('body')).filter((b) => b !== null); // not the subject
  bob.send(`<message to='${room}' type='groupchat'><body>before</body></message>`);
  await waitFor(() => groupchat().includes('before'), 'alice gets the first message');

  const rejoined = new Promise<string>((resolve) => tp.proxy.manager.events.on('muc-rejoin', (s, outcome) => s === session && resolve(outcome)));
  const resumed = new Promise((resolve) => session.once('resumed', resolve));
  relay.cutAll(); // the server ends alice's upstream session: the room sees her leave
  await bob.next((el) => el.name === 'presence' && el.attrs.from === `${room}/alice` && el.attrs.type === 'unavailable');
  bob.send(`<message to='${room}' type='groupchat'><body>during</body></message>`);
  await resumed; // @xmpp/client reconnects by itself, logs in (relayed) and resumes
  t.equal(await rejoined, 'joined', "the room was rejoined on the client's new login");
  await waitFor(() => bob.received.filter((el) => el.name === 'presence' && el.attrs.from === `${room}/alice` && el.attrs.type === undefined).length >= 2, 'the room sees alice back');
  bob.send(`<message to='${room}' type='groupchat'><body>after</body></message>`);
  bob.send(`<message to='${room}' type='groupchat'><body>last</body></message>`);
  await waitFor(() => groupchat().includes('last'), 'alice gets the messages after the loss', 30_000);
  await sleep(300);
  t.same(groupchat(), ['before', 'during', 'after', 'last'], "each once, in order: what the room said meanwhile comes with the rejoin's history, nothing repeated");
  t.notOk(got.some((el) => el.getChild('x', MUC_USER)?.getChildren('status').some((s) => s.attrs.code === '333')), 'no not-joined notice');
  t.equal(sessionOf(tp, 'alice@proxy.test/phone'), session, 'the same session');
  await alice.stop();
});

function isSelfPresence(el: Element, room: string): boolean {
  return el.name === 'presence' && String(el.attrs.from).startsWith(`${room}/`) &&
    (el.getChild('x', MUC_USER)?.getChildren('status').some((s) => s.attrs.code === '110') ?? false);
}
