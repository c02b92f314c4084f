// Group chats with real client libraries (issue 12.6): slixmpp's xep_0045 and @xmpp/client, both
// through the proxy, in a room of Prosody's own MUC component. The upstream links drop: the
// proxy rejoins both on the new server sessions; neither client sees a 333 notice or a repeat,
// and what each says after the reconnect reaches the other exactly once.
import t from 'tap';
import type { Element } from 'ltx';
import { xml } from '@xmpp/client';
import { prosodyBehindRelay } from '../harness/chat.ts';
import { clientFor, waitFor } from '../harness/proxy.ts';
import { Slixmpp, slixmppVersion } from '../harness/slixmpp.ts';

const SERVICE = 'conference.proxy.test';
const ROOM = `lounge@${SERVICE}`;
const MUC_USER = 'http://jabber.org/protocol/muc#user';

const { relay, tp } = await prosodyBehindRelay(t, { config: [`Component "${SERVICE}" "muc"`, '  muc_room_locking = false'].join('\n') });

t.test(`slixmpp ${slixmppVersion} (xep_0045) and @xmpp/client stay in the room across an upstream reconnect`, async (t) => {
  const alice = new Slixmpp('alice@proxy.test/slix', 'alice-pw', tp.port);
  t.teardown(() => {
    if (alice.child.exitCode === null && alice.child.signalCode === null) alice.child.kill('SIGKILL');
  });
  await alice.waitEvent('session_start');
  await alice.waitEvent('sm_enabled');

  const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'js' });
  const bobGroupchat: string[] = [];
  const bobStatuses: string[][] = [];
  bob.on('stanza', (s: Element) => {
    if (s.is('message') && s.attrs.type === 'groupchat' && s.getChildText('body') !== null) bobGroupchat.push(s.getChildText('body')!);
    const x = s.is('presence') ? s.getChild('x', MUC_USER) : undefined;
    if (x && String(s.attrs.from) === `${ROOM}/bob`) bobStatuses.push(x.getChildren('status').map((c) => String(c.attrs.code)));
  });
  t.teardown(() => bob.stop().catch(() => {}));
  await bob.start();
  await bob.send(xml('presence'));
  await bob.send(xml('presence', { to: `${ROOM}/bob` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
  await waitFor(() => bobStatuses.some((s) => s.includes('110')), 'bob in the room');

  alice.command(`join ${ROOM} alice`);
  await waitFor(() => alice.of('muc_presence').some((e) => e.from === `${ROOM}/alice` && (e.statuses as string[]).includes('110')), 'slixmpp in the room');
  alice.command(`say ${ROOM} hello from slixmpp`);
  await waitFor(() => bobGroupchat.includes('hello from slixmpp'), 'bob gets it');

  const rejoins: string[] = [];
  tp.proxy.manager.events.on('muc-rejoin', (_s, outcome) => rejoins.push(outcome));
  relay.cutAll();
  await waitFor(() => rejoins.length === 2, 'both sessions rejoined', 30_000);
  t.same(rejoins, ['joined', 'joined'], 'the proxy rejoined both clients');

  await bob.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'after the reconnect')));
  await waitFor(() => alice.of('groupchat').some((e) => e.body === 'after the reconnect'), 'slixmpp gets the message sent after the reconnect', 30_000);
  alice.command(`say ${ROOM} slixmpp still here`);
  await waitFor(() => bobGroupchat.includes('slixmpp still here'), '@xmpp/client gets the reply', 30_000);
  // A last round trip through the room, so that any repeat would have arrived.
  await bob.send(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'last')));
  await waitFor(() => alice.of('groupchat').some((e) => e.body === 'last'), 'the last message', 30_000);

  const aliceBodies = alice.of('groupchat').filter((e) => String(e.from) === `${ROOM}/bob`).map((e) => e.body);
  t.same(aliceBodies, ['after the reconnect', 'last'], "slixmpp got bob's messages once each");
  t.same(bobGroupchat.filter((b) => b === 'hello from slixmpp' || b === 'slixmpp still here'), ['hello from slixmpp', 'slixmpp still here'], '@xmpp/client got them once each');
  t.notOk(alice.of('muc_presence').some((e) => (e.statuses as string[]).includes('333')), 'slixmpp saw no not-joined notice');
  t.notOk(bobStatuses.some((s) => s.includes('333')), '@xmpp/client saw no not-joined notice');
  alice.command('quit');
  await alice.exited;
});
