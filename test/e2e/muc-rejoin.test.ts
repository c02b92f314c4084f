// Group chats across an upstream reconnect (issue 12.2, design §4.6), on real Prosody with its own
// MUC component: the new server session rejoins the client's rooms with its last presence,
// history since its last message, so a message sent after the reconnect arrives once and nothing
// is repeated; a room that refuses the rejoin (the client was banned meanwhile) gets the client
// the not-joined notice (110 + 333) instead of a room it silently is not in.
import t from 'tap';
import type { Element } from 'ltx';
import { prosodyBehindRelay, sessionOf } from '../harness/chat.ts';
import { RawClient } from '../harness/raw-client.ts';
import { waitFor } from '../harness/proxy.ts';

const SM = 'urn:xmpp:sm:3';
const MUC = 'http://jabber.org/protocol/muc';
const MUC_USER = 'http://jabber.org/protocol/muc#user';
const SERVICE = 'conference.proxy.test';

const { relay, tp, prosody } = await prosodyBehindRelay(t, {
  config: [`Component "${SERVICE}" "muc"`, '  muc_room_locking = false', '  restrict_room_creation = false'].join('\n'),
});

/** A client through the proxy, XEP-0198 on, available. */
async function online(user: string, resource: string): Promise<RawClient> {
  const { client } = await RawClient.login({ port: tp.port, user, password: `${user}-pw`, resource });
  client.send(`<enable xmlns='${SM}' resume='true'/>`);
  await client.next((el) => el.name === 'enabled');
  client.send('<presence/>');
  return client;
}

/** Joins `room` as `nick` and waits for the self-presence (status 110). */
async function join(client: RawClient, room: string, nick: string): Promise<void> {
  client.send(`<presence to='${room}/${nick}'><x xmlns='${MUC}'><history maxstanzas='0'/></x></presence>`);
  await client.next((el) => isSelfPresence(el, room));
}

function isSelfPresence(el: Element, room: string): boolean {
  return el.name === 'presence' && String(el.attrs.from).startsWith(`${room}/`) &&
    (el.getChild('x', MUC_USER)?.getChildren('status').some((s) => s.attrs.code === '110') ?? false);
}

/** Groupchat bodies `client` got from `room` since `from` (an index into its received list). */
function groupchat(client: RawClient, room: string, from = 0): string[] {
  return client.received.slice(from)
    .filter((el) => el.name === 'message' && el.attrs.type === 'groupchat' && String(el.attrs.from).startsWith(`${room}/`))
    .map((el) => el.getChildText('body'))
    .filter((b): b is string => b !== null);
}

/** The session's next new upstream session (a reconnect that bound, not a server-side resume). */
function relinked(fullJid: string): Promise<void> {
  return new Promise((resolve) => sessionOf(tp, fullJid).on('upstream-up', (info: { resumed: boolean }) => !info.resumed && resolve()));
}

t.test('an upstream reconnect rejoins the room: the next message arrives once, nothing repeated', async (t) => {
  const room = `lounge@${SERVICE}`;
  const alice = await online('alice', 'phone');
  // bob talks to the server directly: the room (and its history) lives on through alice's reconnect.
  const { client: bob } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'pc' });
  bob.send('<presence/>');
  await join(bob, room, 'bob');
  await join(alice, room, 'alice');
  const rejoined = new Promise<string>((resolve) => tp.proxy.manager.events.on('muc-rejoin', (s, outcome) => s.fullJid === 'alice@proxy.test/phone' && resolve(outcome)));

  bob.send(`<message to='${room}' type='groupchat' id='m1'><body>before</body></message>`);
  await waitFor(() => groupchat(alice, room).includes('before'), 'alice gets the first message');

  const up = relinked('alice@proxy.test/phone');
  relay.cutAll(); // every upstream link drops: the server ends the old sessions, the room sees them leave
  await up;
  t.equal(await rejoined, 'joined', 'the proxy rejoined the room on the new server session');

  // The room saw alice leave (her old server session ended) and come back.
  await waitFor(() => bob.received.filter((el) => el.name === 'presence' && el.attrs.from === `${room}/alice` && el.attrs.type === undefined).length >= 2, 'alice back in the room');
  bob.send(`<message to='${room}' type='groupchat' id='m2'><body>after</body></message>`);
  await waitFor(() => groupchat(alice, room).includes('after'), 'alice gets the message sent after the reconnect');
  // A round trip through the room: everything it sent alice before has arrived.
  bob.send(`<message to='${room}' type='groupchat' id='m3'><body>last</body></message>`);
  await waitFor(() => groupchat(alice, room).includes('last'), 'the last message');
  // The rejoin asked history since a little before 'before' (clock slack): its copy was dropped.
  t.same(groupchat(alice, room), ['before', 'after', 'last'], 'each message once, in order: no history repeated');
  t.notOk(alice.received.some((el) => el.getChild('x', MUC_USER)?.getChildren('status').some((s) => s.attrs.code === '333')), 'no not-joined notice');
  const tracked = sessionOf(tp, 'alice@proxy.test/phone');
  t.ok(tracked, 'the session lives on');
  alice.send('</stream:stream>');
  bob.send('</stream:stream>');
});

t.test('a rejoin the room refuses (banned meanwhile) gets the client the 110 + 333 notice', async (t) => {
  const room = `club@${SERVICE}`;
  const owner = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'owner' }).catch(() => undefined);
  // The owner talks to Prosody directly (its port requires STARTTLS: RawClient does it), so the cut below spares it.
  t.ok(owner, 'the owner is connected to the server directly');
  const bob = owner!.client;
  await join(bob, room, 'owner');
  const alice = await online('alice', 'tablet');
  await join(alice, room, 'alice');

  const notice = new Promise<void>((resolve) => tp.proxy.manager.events.on('muc-notice', (s) => s.fullJid === 'alice@proxy.test/tablet' && resolve()));
  relay.freeze(); // the proxy's links stall, new ones too
  relay.cutAll(); // and drop: the server ends alice's session, the room sees her leave
  await waitFor(() => bob.received.some((el) => el.name === 'presence' && el.attrs.from === `${room}/alice` && el.attrs.type === 'unavailable'), 'the room sees alice leave');
  bob.send(`<iq type='set' id='ban1' to='${room}'><query xmlns='${MUC}#admin'><item affiliation='outcast' jid='alice@proxy.test'><reason>test</reason></item></query></iq>`);
  t.equal((await bob.next((el) => el.name === 'iq' && el.attrs.id === 'ban1')).attrs.type, 'result', 'alice is banned');
  relay.thaw();
  await notice;
  const got = await alice.next((el) => el.name === 'presence' && el.attrs.from === `${room}/alice` && el.attrs.type === 'unavailable');
  const statuses = got.getChild('x', MUC_USER)?.getChildren('status').map((s) => s.attrs.code);
  t.same(statuses, ['110', '333'], 'unavailable self-presence with status 110 and 333');
  t.equal(got.getChild('x', MUC_USER)?.getChild('item')?.attrs.role, 'none');
  t.notOk(alice.received.some((el) => el.name === 'presence' && el.attrs.type === 'error' && String(el.attrs.from).startsWith(room)), 'the error to a rejoin she did not send is not relayed');
  alice.send('</stream:stream>');
  bob.send('</stream:stream>');
});

t.test('a kick takes the room out of tracking: no rejoin after a reconnect', async (t) => {
  const room = `den@${SERVICE}`;
  const { client: owner } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'den' });
  owner.send('<presence/>');
  await join(owner, room, 'owner');
  const alice = await online('alice', 'desk');
  await join(alice, room, 'alice');
  const session = sessionOf(tp, 'alice@proxy.test/desk');
  t.same(tp.proxy.muc.rooms(session).map((r) => r.room), [room], 'tracked');
  owner.send(`<iq type='set' id='kick1' to='${room}'><query xmlns='${MUC}#admin'><item nick='alice' role='none'/></query></iq>`);
  await alice.next((el) => el.name === 'presence' && el.attrs.from === `${room}/alice` && el.attrs.type === 'unavailable');
  t.same(tp.proxy.muc.rooms(session), [], 'the kick (307) removed it');
  let rejoins = 0;
  tp.proxy.manager.events.on('muc-rejoin', (s) => s === session && rejoins++);
  const up = relinked('alice@proxy.test/desk');
  relay.cutAll();
  await up;
  // A round trip on the new server session: a rejoin would have been answered before it.
  alice.send(`<iq type='get' id='rt1'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await alice.next((el) => el.name === 'iq' && el.attrs.id === 'rt1');
  t.equal(rejoins, 0, 'no rejoin of a room the client was kicked from');
  alice.send('</stream:stream>');
  owner.send('</stream:stream>');
});

t.test('the upstream server restarts (its rooms lost with it): the rooms are rejoined, messages once', async (t) => {
  const room = `hall@${SERVICE}`;
  const alice = await online('alice', 'laptop');
  const bob = await online('bob', 'laptop');
  await join(alice, room, 'alice');
  await join(bob, room, 'bob');
  bob.send(`<message to='${room}' type='groupchat'><body>one</body></message>`);
  await waitFor(() => groupchat(alice, room).includes('one'), 'the first message');
  const outcomes: string[] = [];
  tp.proxy.manager.events.on('muc-rejoin', (s, outcome) => s.fullJid.endsWith('/laptop') && outcomes.push(outcome));
  await prosody.restart();
  await waitFor(() => outcomes.length === 2, 'both sessions rejoined', 30_000);
  t.same(outcomes, ['joined', 'joined'], 'the room was created again by the rejoins');
  bob.send(`<message to='${room}' type='groupchat'><body>two</body></message>`);
  await waitFor(() => groupchat(alice, room).includes('two'), 'the message after the restart', 30_000);
  t.same(groupchat(alice, room), ['one', 'two'], 'each message once');
  t.equal(notices333(alice), 0, 'no not-joined notice');
  alice.send('</stream:stream>');
  bob.send('</stream:stream>');
});

function notices333(client: RawClient): number {
  return client.received.filter((el) => el.getChild('x', MUC_USER)?.getChildren('status').some((s) => s.attrs.code === '333')).length;
}

t.test('the tracked rooms survive hibernation and resumption: rejoined after a later reconnect', async (t) => {
  const room = `attic@${SERVICE}`;
  const { client: owner } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'attic' });
  owner.send('<presence/>');
  await join(owner, room, 'owner');
  const { client: first } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'roam' });
  first.send(`<enable xmlns='${SM}' resume='true'/>`);
  const enabled = await first.next((el) => el.name === 'enabled');
  first.send('<presence/>');
  await join(first, room, 'alice');
  const session = sessionOf(tp, 'alice@proxy.test/roam');
  first.destroy(); // the phone's network vanishes
  await waitFor(() => session.hibernating, 'hibernating');
  const second = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  second.send(`<resume xmlns='${SM}' previd='${enabled.attrs.id}' h='0'/>`);
  t.equal((await second.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');
  t.same(tp.proxy.muc.rooms(session).map((r) => r.room), [room], 'still tracked after the resume');

  const outcome = new Promise<string>((resolve) => tp.proxy.manager.events.on('muc-rejoin', (s, o) => s === session && resolve(o)));
  relay.cutAll();
  t.equal(await outcome, 'joined', 'rejoined after the reconnect');
  second.send('</stream:stream>');
  owner.send('</stream:stream>');
});
