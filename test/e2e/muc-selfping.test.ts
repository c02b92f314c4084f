// With rejoins off (muc.rejoin: false), an upstream reconnect makes the proxy self-ping the
// client's rooms instead (issue 12.2/12.3). Either the room still routes the occupant to this
// JID (joined), or the client is told it is out (the room's own unavailable 110, or the proxy's
// 110 + 333 after a not-joined self-ping): never silently out.
import t from 'tap';
import { prosodyBehindRelay } from '../harness/chat.ts';
import { RawClient } from '../harness/raw-client.ts';
import { waitFor } from '../harness/proxy.ts';
import { joinRoom, mucStatuses } from '../harness/muc.ts';

const SERVICE = 'conference.proxy.test';
const ROOM = `quiet@${SERVICE}`;

const { relay, tp, prosody } = await prosodyBehindRelay(
  t,
  { config: [`Component "${SERVICE}" "muc"`, '  muc_room_locking = false'].join('\n') },
  { muc: { rejoin: false, pingDelaySeconds: 1, idlePingSeconds: 0 } },
);

t.test('rejoins off: after an upstream reconnect the client is never silently out of a room', async (t) => {
  // The room lives on with bob in it, connected to the server directly.
  const { client: bob } = await RawClient.login({ port: prosody.c2sPort, user: 'bob', password: 'bob-pw', resource: 'pc' });
  bob.send('<presence/>');
  await joinRoom(bob, `${ROOM}/bob`);
  const { client: alice } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'phone' });
  alice.send('<presence/>');
  await joinRoom(alice, `${ROOM}/alice`);
  let rejoins = 0;
  tp.proxy.manager.events.on('muc-rejoin', () => rejoins++);
  const verdict = new Promise<string>((resolve) => tp.proxy.manager.events.on('muc-self-ping', (_s, v) => resolve(v)));
  const session = [...tp.proxy.sessions].find((s) => s.fullJid === 'alice@proxy.test/phone')!;

  relay.cutAll(); // the server ends alice's old session
  const v = await verdict;
  t.ok(['joined', 'not-joined'].includes(v), `the reconnect was followed by a self-ping round (${v})`);
  // The room names occupants by their real full JID, which the new server session shares: until
  // it has processed the old session's leave it still routes alice's messages here (joined);
  // once it has, it says so to this JID, or the self-ping found her out (110 + 333).
  const told = () => alice.received.some((el) => el.name === 'presence' && el.attrs.from === `${ROOM}/alice` && el.attrs.type === 'unavailable' && mucStatuses(el).includes('110'));
  bob.send(`<message to='${ROOM}' type='groupchat'><body>still there?</body></message>`);
  const reached = () => alice.received.some((el) => el.name === 'message' && el.getChildText('body') === 'still there?');
  await waitFor(() => told() || reached(), 'alice is told she is out, or is still in the room', 30_000);
  if (told()) t.same(tp.proxy.muc.rooms(session), [], 'told she is out: no longer tracked');
  else t.same(tp.proxy.muc.rooms(session).map((r) => r.room), [ROOM], 'still in the room: still tracked');
  if (v === 'not-joined') t.ok(told(), 'a not-joined verdict came with the notice');
  t.equal(rejoins, 0, 'no rejoin was tried');
  alice.destroy();
  bob.destroy();
});
