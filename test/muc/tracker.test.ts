// Join tracking with mod_track_muc_joins semantics (issue 12.1): joins confirmed by the room's
// self-presence (110), renames (303, 210), leaves, kicks (307), bans (301), destruction and
// refused joins; what a rejoin sends (tracker.ts, feature.ts).
import t from 'tap';
import { parse, type Element } from 'ltx';
import { RoomTracker } from '../../src/muc/tracker.ts';
import { rejoinPresence } from '../../src/muc/feature.ts';
import { TopLevel } from '../../src/xml/top-level.ts';

const ROOM = 'room@muc.test';
const MUC = 'http://jabber.org/protocol/muc';
const USER = 'http://jabber.org/protocol/muc#user';

function top(xml: string): TopLevel {
  const el = parse(xml) as Element;
  return new TopLevel(el.name, el.attrs as Record<string, string>, xml);
}

const self = (nick: string, codes: string[], type = '', item = "<item affiliation='none' role='participant'/>") =>
  top(`<presence from='${ROOM}/${nick}' to='a@x.test/r'${type ? ` type='${type}'` : ''}><x xmlns='${USER}'>${item}${codes.map((c) => `<status code='${c}'/>`).join('')}</x></presence>`);

function joined(nick = 'alice'): RoomTracker {
  const tracker = new RoomTracker(10, () => 1000);
  tracker.fromClient(top(`<presence to='${ROOM}/${nick}'><show>away</show><x xmlns='${MUC}'><password>pw</password></x></presence>`));
  tracker.fromUpstream(self(nick, ['110']));
  return tracker;
}

t.test('a join counts once the room sends the self-presence (110)', async (t) => {
  const tracker = new RoomTracker(10);
  tracker.fromClient(top(`<presence to='${ROOM}/alice'><x xmlns='${MUC}'/></presence>`));
  t.equal(tracker.get(ROOM)?.joined, false, 'joining');
  t.equal(tracker.fromUpstream(self('bob', [])), undefined, "another occupant's presence changes nothing");
  t.match(tracker.fromUpstream(self('alice', ['110', '201'])), { kind: 'joined', rejoin: false });
  t.equal(tracker.get(ROOM)?.joined, true);
});

t.test('presence to a contact is not a join; a room presence without the MUC <x/> updates a tracked room', async (t) => {
  const tracker = new RoomTracker(10);
  tracker.fromClient(top(`<presence to='bob@x.test/phone'/>`));
  t.equal(tracker.size, 0);
  const joinedOne = joined();
  joinedOne.fromClient(top(`<presence to='${ROOM}/alice'><show>dnd</show></presence>`));
  const room = joinedOne.get(ROOM)!;
  t.equal(room.presence.getChildText('show'), 'dnd', 'the last presence is kept for the rejoin');
  t.equal(room.password, 'pw', 'the password of the join is kept');
});

t.test('210: the room chose the nick; 303: a rename', async (t) => {
  const tracker = new RoomTracker(10);
  tracker.fromClient(top(`<presence to='${ROOM}/alice'><x xmlns='${MUC}'/></presence>`));
  tracker.fromUpstream(self('alice2', ['110', '210']));
  t.equal(tracker.get(ROOM)?.nick, 'alice2');
  t.match(tracker.fromUpstream(self('alice2', ['110', '303'], 'unavailable', "<item nick='ally' affiliation='none' role='participant'/>")), { kind: 'nick' });
  t.equal(tracker.get(ROOM)?.nick, 'ally');
  t.equal(tracker.size, 1, 'still tracked');
});

for (const [what, codes, extra] of [
  ['a leave', ['110'], ''],
  ['a kick', ['110', '307'], ''],
  ['a ban', ['110', '301'], ''],
  ['removal from a members-only room', ['110', '321'], ''],
  ['room destruction', ['110'], `<destroy jid='other@muc.test'/>`],
] as const) {
  t.test(`${what} removes the room`, async (t) => {
    const tracker = joined();
    const item = `<item affiliation='none' role='none'/>${extra}`;
    t.match(tracker.fromUpstream(self('alice', [...codes], 'unavailable', item)), { kind: 'removed', rejoin: false, statuses: codes });
    t.equal(tracker.size, 0);
  });
}

t.test("the client's own unavailable presence to the room removes it", async (t) => {
  const tracker = joined();
  tracker.fromClient(top(`<presence to='${ROOM}/alice' type='unavailable'/>`));
  t.equal(tracker.size, 0);
});

t.test('a refused join is removed; a refused nick change is not', async (t) => {
  const tracker = new RoomTracker(10);
  tracker.fromClient(top(`<presence to='${ROOM}/alice'><x xmlns='${MUC}'/></presence>`));
  const refused = tracker.fromUpstream(top(`<presence from='${ROOM}/alice' type='error'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>`));
  t.match(refused, { kind: 'removed', condition: 'forbidden' });
  t.equal(tracker.size, 0);
  const inRoom = joined();
  const conflict = inRoom.fromUpstream(top(`<presence from='${ROOM}/alice' type='error'><error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>`));
  t.equal(conflict, undefined, 'a nick change refused with conflict leaves the client in the room');
  t.equal(inRoom.size, 1);
});

t.test('a rejoin: the next self-presence or error is the answer to it', async (t) => {
  const tracker = joined();
  tracker.get(ROOM)!.rejoining = true;
  t.match(tracker.fromUpstream(self('alice', ['110'])), { kind: 'joined', rejoin: true });
  t.equal(tracker.get(ROOM)?.rejoining, false);
  tracker.get(ROOM)!.rejoining = true;
  const refused = tracker.fromUpstream(top(`<presence from='${ROOM}/alice' type='error'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>`));
  t.match(refused, { kind: 'removed', rejoin: true, condition: 'forbidden' });
});

t.test('groupchat messages set the point the rejoin asks history from', async (t) => {
  let now = 1000;
  const tracker = new RoomTracker(10, () => now);
  tracker.fromClient(top(`<presence to='${ROOM}/alice'><show>away</show><x xmlns='${MUC}'><password>pw</password></x></presence>`));
  tracker.fromUpstream(self('alice', ['110']));
  now = 60_000;
  tracker.fromUpstream(top(`<message from='${ROOM}/bob' type='groupchat'><body>hi</body></message>`));
  const presence = rejoinPresence(tracker.get(ROOM)!);
  t.equal(presence.attrs.to, `${ROOM}/alice`);
  t.equal(presence.getChildText('show'), 'away', "the client's own presence");
  const x = presence.getChild('x', MUC)!;
  t.equal(x.getChildText('password'), 'pw');
  t.equal(x.getChild('history')?.attrs.since, new Date(55_000).toISOString(), 'since its last message, 5 s of slack');
});

t.test('at most maxRooms rooms are tracked', async (t) => {
  const tracker = new RoomTracker(2);
  for (const n of [1, 2, 3]) tracker.fromClient(top(`<presence to='r${n}@muc.test/a'><x xmlns='${MUC}'/></presence>`));
  t.equal(tracker.size, 2);
  t.equal(tracker.untracked, 1);
});

t.test("a history copy (delayed) of a message the client got is a duplicate, once; new history is not", async (t) => {
  const tracker = joined();
  const live = (body: string) => top(`<message from='${ROOM}/bob' type='groupchat'><body>${body}</body></message>`);
  const history = (body: string) => top(`<message from='${ROOM}/bob' type='groupchat'><body>${body}</body><delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>`);
  t.equal(tracker.fromUpstream(live('ok')), undefined);
  t.match(tracker.fromUpstream(history('ok')), { kind: 'duplicate' }, 'the copy of what it got (no id needed)');
  t.equal(tracker.fromUpstream(history('ok')), undefined, 'a second equal history message is a message of its own');
  t.equal(tracker.fromUpstream(history('missed')), undefined, 'what it missed is delivered');
});
