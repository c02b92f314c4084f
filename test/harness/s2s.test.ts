// Proves the federation harness (s2s.ts) with real clients, and records how Prosody 0.12.3 behaves
// around a remote MUC whose server fails: the MUC-reliability feature (design §4.6) is built on
// these observations. Outcomes are asserted; timings are only reported (t.comment) since they
// depend on the machine. What was seen on the 2-core test machine:
//
// Remote server crashed (SIGKILL):
// - The local server notices at once (the kernel closes the s2s sockets: "unexpected eof"), but
//   tells nobody: alice gets no presence from the room, nothing at all until she sends.
// - Anything alice then sends to the remote's domains bounces from the local server within a few
//   ms (a new s2s connection is refused): type cancel, `remote-server-not-found`, by='proxy.test',
//   text "Server-to-server connection failed: connection refused". Never `remote-server-timeout`.
//   The bounce comes from the address alice wrote to (an iq to room/nick from room/nick, a
//   groupchat message from the bare room).
// - After the restart (~0.2 s), the first stanza opens a new s2s link (TLS + dialback both ways,
//   ~0.15-0.2 s). The persistent lobby is back (without its history: that lived in memory), but
//   alice is no longer an occupant: her self-ping gets cancel `not-acceptable` by the room
//   ("You are not currently connected to this chat"). She can rejoin (110, no 201).
// - A non-persistent room is gone: the self-ping gets cancel `item-not-found` by the MUC service
//   (by='conference.remote.test', no text). Caution: XEP-0410 reads item-not-found as "still
//   joined, nick changed"; Prosody's "room/nick exists, but not you" is item-not-found by the
//   room JID with text "Recipient not in room", which is what that rule is for.
// - `muc_room_default_persistent = true` alone does not make a room created by a join survive a
//   SIGKILL (it is written to storage only on a config change or a graceful stop), so the harness
//   creates the lobby through the owner's config form.
//
// Remote server restarted gracefully (SIGTERM, ~1.2 s for the whole restart): Prosody saves every
// live room, temporary ones too, with occupants and history. Occupants of the local server stay
// joined (self-ping: result, history kept); only the remote's own c2s users leave (unavailable,
// status text "Disconnected: Received SIGTERM"; sent during the shutdown, it can be lost when the
// s2s link closes first, as CI under load saw once). A temporary room saved that way stays in storage:
// after a later crash it is restored (without occupants) instead of being gone.
//
// Remote server hung (SIGSTOP):
// - No s2s link yet: the local server connects (the kernel accepts), the remote never opens its
//   stream, and after `s2s_timeout` (default 90 s; 2 s here) everything queued bounces with cancel
//   `remote-server-not-found`, text "Server-to-server connection failed: connection-timeout".
//   (Prosody says `remote-server-timeout`, type wait, only when the remote had opened its stream.)
// - Link already up: stanzas go into the socket and nothing comes back, no error at all, until
//   the remote runs again; then they are answered normally.
import t, { type Test } from 'tap';
import type { Element } from 'ltx';
import { RawClient } from './raw-client.ts';
import { startTestProxy, waitFor } from './proxy.ts';
import { LOBBY, startFederation, type FederatedServer } from './s2s.ts';
import { bareJid, discoFeatures, groupchatFrom, joinRoom, mucStatuses, sayInRoom, selfPing, stanzaError } from './muc.ts';

const LOCAL_ROOM = 'room@conference.proxy.test';
const EPHEMERAL = 'ephemeral@conference.remote.test';

/** Log `user` (password `<user>-pw`) in to a server's c2s port directly, bound to `resource`. */
async function login(t: Test, server: Pick<FederatedServer, 'c2sPort' | 'domain'>, user: string, resource: string, port = server.c2sPort): Promise<RawClient> {
  const { client } = await RawClient.login({ port, domain: server.domain, user, password: `${user}-pw`, resource });
  t.teardown(() => client.destroy());
  return client;
}

/** Wait until `client` has received an element matching `pred` (looking at everything it got). */
async function received(client: RawClient, pred: (el: Element) => boolean, what: string): Promise<Element> {
  await waitFor(() => client.received.some(pred), what);
  return client.received.find(pred)!;
}

/** Join and check that the room took us in (status 110); returns the statuses of the self-presence. */
async function joined(t: Test, client: RawClient, occupantJid: string): Promise<string[]> {
  const self = await joinRoom(client, occupantJid);
  const error = self.attrs.type === 'error' ? stanzaError(self) : undefined;
  t.notOk(error, `${occupantJid}: joined` + (error ? ` (refused: ${JSON.stringify(error)})` : ''));
  const statuses = mucStatuses(self);
  t.ok(statuses.includes('110'), `${occupantJid}: self-presence with status 110`);
  return statuses;
}

/** A groupchat message from `from` reaches `to` through the room (each side checks the other). */
async function exchange(t: Test, room: string, from: { client: RawClient; nick: string }, to: RawClient, body: string): Promise<void> {
  sayInRoom(from.client, room, body);
  const msg = await groupchatFrom(to, room, body);
  t.equal(msg.attrs.from, `${room}/${from.nick}`, `"${body}" reached the other occupant from ${from.nick}`);
}

t.test('alice (local) and rita (remote) in the remote lobby over s2s; self-ping; remote crash and restart', async (t) => {
  let started = Date.now();
  const fed = await startFederation(t);
  t.comment(`federation up (two servers, accounts, persistent lobby) in ${Date.now() - started} ms`);
  const [alice, rita] = await Promise.all([login(t, fed.local, 'alice', 'a'), login(t, fed.remote, 'rita', 'r')]);

  // (a) join over s2s, groupchat both ways.
  const aliceJoin = await joined(t, alice, `${LOBBY}/alice`);
  t.notOk(aliceJoin.includes('201'), 'the lobby already existed (created at setup)');
  await joined(t, rita, `${LOBBY}/rita`);
  await received(alice, (el) => el.name === 'presence' && el.attrs.from === `${LOBBY}/rita`, "rita's join broadcast to alice");
  await exchange(t, LOBBY, { client: rita, nick: 'rita' }, alice, 'hello from rita');
  await exchange(t, LOBBY, { client: alice, nick: 'alice' }, rita, 'hello from alice');

  // (b) XEP-0410: the room answers a self-ping from an occupant's full JID.
  t.ok((await discoFeatures(alice, LOBBY)).includes('http://jabber.org/protocol/muc#self-ping-optimization'), 'the room advertises self-ping optimization');
  t.same(await selfPing(alice, `${LOBBY}/alice`), { type: 'result' }, 'self-ping while joined: result');

  // A non-persistent room alice is in, to see what a crash does to it.
  t.ok((await joined(t, alice, `${EPHEMERAL}/alice`)).includes('201'), 'ephemeral room created by the join');

  // (c) SIGKILL the remote: what does alice see while it is down?
  await fed.remote.crash();
  await rita.closed;
  started = Date.now();
  const whileDown = await selfPing(alice, `${LOBBY}/alice`);
  const detectMs = Date.now() - started;
  t.match(
    whileDown,
    { type: 'error', from: `${LOBBY}/alice`, error: { type: 'cancel', condition: 'remote-server-not-found', by: 'proxy.test', text: /connection refused/ } },
    'self-ping while the remote is down: remote-server-not-found from the local server',
  );
  t.comment(`remote down: self-ping answered ${JSON.stringify(whileDown)} after ${detectMs} ms`);
  sayInRoom(alice, LOBBY, 'while down');
  const bounced = await received(alice, (el) => el.name === 'message' && el.attrs.type === 'error' && bareJid(el.attrs.from) === LOBBY, 'bounced groupchat');
  t.equal(bounced.attrs.from, LOBBY, 'the groupchat message bounces from the bare room');
  t.match(stanzaError(bounced), { type: 'cancel', condition: 'remote-server-not-found', by: 'proxy.test' }, 'groupchat while down: remote-server-not-found');
  t.notOk(
    alice.received.some((el) => el.name === 'presence' && el.attrs.type === 'unavailable' && bareJid(el.attrs.from) === LOBBY),
    'nothing told alice she left the room',
  );

  started = Date.now();
  await fed.remote.restart();
  t.comment(`remote restarted after SIGKILL in ${Date.now() - started} ms`);
  started = Date.now();
  const afterRestart = await selfPing(alice, `${LOBBY}/alice`);
  t.comment(`after the restart: self-ping answered ${JSON.stringify(afterRestart)} after ${Date.now() - started} ms (new s2s link)`);
  t.match(
    afterRestart,
    { type: 'error', error: { type: 'cancel', condition: 'not-acceptable', by: LOBBY, text: 'You are not currently connected to this chat' } },
    'self-ping after the crash: not-acceptable from the room (alice is no longer an occupant)',
  );
  t.ok((await discoFeatures(alice, LOBBY)).includes('muc_persistent'), 'the persistent lobby survived the crash');
  const ephemeral = await selfPing(alice, `${EPHEMERAL}/alice`);
  t.comment(`non-persistent room after the crash: self-ping answered ${JSON.stringify(ephemeral)}`);
  t.match(ephemeral, { type: 'error', error: { type: 'cancel', condition: 'item-not-found', by: 'conference.remote.test' } }, 'the non-persistent room is gone: item-not-found from the service');

  const rejoin = await joined(t, alice, `${LOBBY}/alice`);
  t.notOk(rejoin.includes('201'), 'rejoined the restored room (not a new one)');
  t.same(await selfPing(alice, `${LOBBY}/alice`), { type: 'result' }, 'self-ping after the rejoin: result');
  const rita2 = await login(t, fed.remote, 'rita', 'r2');
  await joined(t, rita2, `${LOBBY}/rita`);
  await exchange(t, LOBBY, { client: rita2, nick: 'rita' }, alice, 'rita is back');
  await exchange(t, LOBBY, { client: alice, nick: 'alice' }, rita2, 'alice is back');
});

t.test('alice through the proxy in the remote lobby', async (t) => {
  const fed = await startFederation(t);
  const tp = await startTestProxy(fed.local);
  t.teardown(() => tp.close());
  const [alice, rita] = await Promise.all([login(t, fed.local, 'alice', 'p', tp.port), login(t, fed.remote, 'rita', 'r')]);
  await joined(t, alice, `${LOBBY}/alice`);
  await joined(t, rita, `${LOBBY}/rita`);
  await exchange(t, LOBBY, { client: rita, nick: 'rita' }, alice, 'to alice via the proxy');
  await exchange(t, LOBBY, { client: alice, nick: 'alice' }, rita, 'from alice via the proxy');
  t.same(await selfPing(alice, `${LOBBY}/alice`), { type: 'result' }, 'self-ping through the proxy: result');
});

t.test('a graceful restart of the remote keeps local occupants and history', async (t) => {
  const fed = await startFederation(t);
  const [alice, rita, carol] = await Promise.all([login(t, fed.local, 'alice', 'a'), login(t, fed.remote, 'rita', 'r'), login(t, fed.local, 'carol', 'c')]);
  await joined(t, alice, `${LOBBY}/alice`);
  await joined(t, rita, `${LOBBY}/rita`);
  await exchange(t, LOBBY, { client: alice, nick: 'alice' }, rita, 'before the restart');

  const started = Date.now();
  await fed.remote.restart();
  t.comment(`graceful restart of the remote took ${Date.now() - started} ms`);
  t.same(await selfPing(alice, `${LOBBY}/alice`), { type: 'result' }, 'alice is still an occupant after the graceful restart');
  // Prosody sends rita's unavailable while it shuts down, and its s2s link to us may close first:
  // CI under load once saw it lost. So it is reported, not required.
  const ritaLeft = alice.received.find((el) => el.name === 'presence' && el.attrs.type === 'unavailable' && el.attrs.from === `${LOBBY}/rita`);
  t.comment(ritaLeft ? `alice saw rita leave: ${ritaLeft.getChildText('status')}` : "rita's unavailable was lost in the remote's shutdown");
  t.notOk(
    alice.received.some((el) => el.name === 'presence' && el.attrs.type === 'unavailable' && el.attrs.from === `${LOBBY}/alice`),
    'alice got no unavailable for herself',
  );
  await joined(t, carol, `${LOBBY}/carol`);
  const history = await received(carol, (el) => el.name === 'message' && el.getChildText('body') === 'before the restart', 'history');
  t.ok(history.getChild('delay', 'urn:xmpp:delay'), 'the history from before the restart is kept (delayed)');
  await exchange(t, LOBBY, { client: carol, nick: 'carol' }, alice, 'after the restart');
});

t.test('a room on the local MUC service: alice and bob locally, rita over s2s', async (t) => {
  const fed = await startFederation(t, { remoteRooms: [] });
  const [alice, bob, rita] = await Promise.all([login(t, fed.local, 'alice', 'a'), login(t, fed.local, 'bob', 'b'), login(t, fed.remote, 'rita', 'r')]);
  t.ok((await joined(t, alice, `${LOCAL_ROOM}/alice`)).includes('201'), 'created by the join, unlocked at once');
  await joined(t, bob, `${LOCAL_ROOM}/bob`);
  await exchange(t, LOCAL_ROOM, { client: alice, nick: 'alice' }, bob, 'hi bob');
  await exchange(t, LOCAL_ROOM, { client: bob, nick: 'bob' }, alice, 'hi alice');
  t.same(await selfPing(bob, `${LOCAL_ROOM}/bob`), { type: 'result' }, 'self-ping in the local room: result');
  // The other direction of s2s: remote.test -> conference.proxy.test.
  await joined(t, rita, `${LOCAL_ROOM}/rita`);
  await exchange(t, LOCAL_ROOM, { client: rita, nick: 'rita' }, alice, 'rita visiting');
  await exchange(t, LOCAL_ROOM, { client: alice, nick: 'alice' }, rita, 'welcome rita');
});

t.test('a hung remote (SIGSTOP): connect timeout without a link, silence with one', async (t) => {
  // A short s2s_timeout on the local server, so an unanswered connection attempt ends quickly.
  const S2S_TIMEOUT_S = 2;
  const fed = await startFederation(t, { local: { config: `s2s_timeout = ${S2S_TIMEOUT_S}` } });
  const alice = await login(t, fed.local, 'alice', 'a');
  // If a step throws while the remote is stopped, the teardown's stop() continues it (SIGTERM +
  // SIGCONT), so it still exits.

  // No s2s link exists yet (the lobby was set up by a local user of the remote).
  fed.remote.kill('SIGSTOP');
  let started = Date.now();
  const refused = await joinRoom(alice, `${LOBBY}/alice`, { timeoutMs: (S2S_TIMEOUT_S + 10) * 1000 });
  t.comment(`join while hung, no link: ${JSON.stringify(stanzaError(refused))} after ${Date.now() - started} ms`);
  t.equal(refused.attrs.type, 'error', 'the join bounces');
  t.match(stanzaError(refused), { type: 'cancel', condition: 'remote-server-not-found', by: 'proxy.test', text: /connection-timeout/ }, 'remote-server-not-found (connection-timeout)');
  fed.remote.kill('SIGCONT');

  await joined(t, alice, `${LOBBY}/alice`);
  fed.remote.kill('SIGSTOP');
  started = Date.now();
  const ping = selfPing(alice, `${LOBBY}/alice`, 60_000);
  let answered = false;
  void ping.then(() => (answered = true), () => (answered = true));
  // The remote hangs for longer than s2s_timeout: had the ping needed a new connection, its bounce
  // would be back by now (the case above). Here the scenario, not a race, needs the pause.
  await new Promise((r) => setTimeout(r, (S2S_TIMEOUT_S + 1) * 1000));
  t.notOk(answered, `no answer, not even an error, while the remote hangs with the link up (${Date.now() - started} ms)`);
  fed.remote.kill('SIGCONT');
  t.same(await ping, { type: 'result' }, 'answered normally once the remote runs again');
});
