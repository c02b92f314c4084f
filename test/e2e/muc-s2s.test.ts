// Group chats over s2s (issue 12, design §4.6) on two real Prosody servers: the local one behind
// the proxy, a remote one with a MUC component and a persistent room.
// (a) The remote server is killed and restarted: the proxy's idle self-pings find the room no
//     longer has the client; the client gets the 110 + 333 notice and can rejoin.
// (b) The local server (the upstream) is killed and restarted: the proxy rejoins the room on the
//     new server session; no notice, and a message sent after the restart arrives exactly once.
import t from 'tap';
import { RawClient } from '../harness/raw-client.ts';
import { startTestProxy, waitFor } from '../harness/proxy.ts';
import { LOBBY, startFederation } from '../harness/s2s.ts';
import { joinRoom, mucStatuses, sayInRoom } from '../harness/muc.ts';

const SM = 'urn:xmpp:sm:3';

async function online(port: number, user: string, resource: string): Promise<RawClient> {
  const { client } = await RawClient.login({ port, user, password: `${user}-pw`, resource });
  client.send(`<enable xmlns='${SM}' resume='true'/>`);
  await client.next((el) => el.name === 'enabled');
  client.send('<presence/>');
  return client;
}

/** Groupchat bodies `client` got from `room`. */
const groupchat = (client: RawClient, room: string): string[] =>
  client.received
    .filter((el) => el.name === 'message' && el.attrs.type === 'groupchat' && String(el.attrs.from).startsWith(`${room}/`))
    .map((el) => el.getChildText('body'))
    .filter((b): b is string => b !== null);

const notices = (client: RawClient, room: string) =>
  client.received.filter((el) => el.name === 'presence' && el.attrs.type === 'unavailable' && String(el.attrs.from).startsWith(`${room}/`) && mucStatuses(el).includes('333'));

t.test('(a) the remote server crashes and restarts: 110 + 333, then the client can rejoin', async (t) => {
  const fed = await startFederation(t);
  // Short times so the test is quick: an idle room is pinged after 2 s, 1 s after the trigger.
  const tp = await startTestProxy(fed.local, { muc: { idlePingSeconds: 2, pingDelaySeconds: 1, pingTimeoutSeconds: 5 } });
  t.teardown(() => tp.close());
  const alice = await online(tp.port, 'alice', 'phone');
  t.same(mucStatuses(await joinRoom(alice, `${LOBBY}/alice`)), ['110'], 'alice joined the remote room through the proxy');

  await fed.remote.crash();
  await fed.remote.restart();
  await waitFor(() => notices(alice, LOBBY).length > 0, 'the not-joined notice', 60_000);
  const [notice] = notices(alice, LOBBY);
  t.same(mucStatuses(notice!), ['110', '333'], 'unavailable self-presence with 110 and 333');
  t.equal(notice!.attrs.from, `${LOBBY}/alice`);

  const rejoin = await joinRoom(alice, `${LOBBY}/alice`);
  t.ok(mucStatuses(rejoin).includes('110'), 'the client rejoins');
  alice.send('</stream:stream>');
});

t.test('(b) the upstream crashes and restarts: the proxy rejoins, no notice, the next message once', async (t) => {
  const fed = await startFederation(t);
  const tp = await startTestProxy(fed.local, { upstream: { keepaliveSeconds: 1, pingTimeoutSeconds: 2, reconnectDelayMs: 200, reconnectMaxDelaySeconds: 1, connectTimeoutSeconds: 3 } });
  t.teardown(() => tp.close());
  const alice = await online(tp.port, 'alice', 'phone');
  await joinRoom(alice, `${LOBBY}/alice`);
  const { client: rita } = await RawClient.login({ port: fed.remote.c2sPort, domain: 'remote.test', user: 'rita', password: 'rita-pw', resource: 'r' });
  t.teardown(() => rita.destroy());
  rita.send('<presence/>');
  await joinRoom(rita, `${LOBBY}/rita`);
  sayInRoom(rita, LOBBY, 'before');
  await waitFor(() => groupchat(alice, LOBBY).includes('before'), 'the message before the crash');

  const rejoined = new Promise<string>((resolve) => tp.proxy.manager.events.on('muc-rejoin', (_s, outcome) => resolve(outcome)));
  await fed.local.crash();
  await fed.local.restart();
  t.equal(await rejoined, 'joined', 'the proxy rejoined the room on the new server session');
  sayInRoom(rita, LOBBY, 'after');
  await waitFor(() => groupchat(alice, LOBBY).includes('after'), 'the message after the restart', 30_000);
  sayInRoom(rita, LOBBY, 'last');
  await waitFor(() => groupchat(alice, LOBBY).includes('last'), 'the last message', 30_000);
  t.same(groupchat(alice, LOBBY), ['before', 'after', 'last'], 'each message once');
  t.same(notices(alice, LOBBY), [], 'no not-joined notice');
  alice.send('</stream:stream>');
});

t.test("(a') an s2s error from the room's domain triggers the self-ping: the notice once the room answers", async (t) => {
  const fed = await startFederation(t);
  // No idle pings: only the error the client's own message gets can trigger one.
  const tp = await startTestProxy(fed.local, { muc: { idlePingSeconds: 0, pingDelaySeconds: 1, pingTimeoutSeconds: 5 } });
  t.teardown(() => tp.close());
  const alice = await online(tp.port, 'alice', 'phone');
  await joinRoom(alice, `${LOBBY}/alice`);
  const verdicts: string[] = [];
  tp.proxy.manager.events.on('muc-self-ping', (_s, verdict) => verdicts.push(verdict));

  await fed.remote.crash();
  sayInRoom(alice, LOBBY, 'anyone there?');
  const bounce = await alice.next((el) => el.name === 'message' && el.attrs.type === 'error');
  t.ok(bounce.getChild('error')?.getChild('remote-server-not-found'), 'the server bounces it: remote-server-not-found (relayed to the client)');
  await fed.remote.restart();
  await waitFor(() => notices(alice, LOBBY).length > 0, 'the not-joined notice', 60_000);
  t.same(verdicts, ['not-joined'], 'one self-ping round, retried while the room was unreachable, ended not-joined');
  t.same(mucStatuses(notices(alice, LOBBY)[0]!), ['110', '333']);
  alice.send('</stream:stream>');
});
