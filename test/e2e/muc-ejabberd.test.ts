// Group chats across an upstream reconnect on ejabberd (issue 12): the proxy's rejoin works with
// ejabberd's mod_muc as with Prosody's, a message after the reconnect arrives once, no notice.
import t from 'tap';
import type { Element } from 'ltx';
import { startEjabberd } from '../harness/ejabberd.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { ACCOUNTS, startTestProxy, waitFor } from '../harness/proxy.ts';
import { FAST_UPSTREAM } from '../harness/chat.ts';
import { RawClient } from '../harness/raw-client.ts';

const MUC = 'http://jabber.org/protocol/muc';
const MUC_USER = 'http://jabber.org/protocol/muc#user';

const server = await startEjabberd({ tls: 'required', accounts: ACCOUNTS, modules: ['muc'] });
t.teardown(() => server.stop());
const relay = await TcpRelay.start(server.c2sPort);
t.teardown(() => relay.close());
const tp = await startTestProxy(server, { upstream: { ...FAST_UPSTREAM, port: relay.port } });
t.teardown(() => tp.close());
const ROOM = `lounge@conference.${server.domain}`;

const statuses = (el: Element) => el.getChild('x', MUC_USER)?.getChildren('status').map((s) => String(s.attrs.code)) ?? [];
const groupchat = (c: RawClient) =>
  c.received.filter((el) => el.name === 'message' && el.attrs.type === 'groupchat' && el.attrs.from === `${ROOM}/bob`).map((el) => el.getChildText('body'));

async function join(c: RawClient, nick: string): Promise<void> {
  c.send(`<presence to='${ROOM}/${nick}'><x xmlns='${MUC}'><history maxstanzas='0'/></x></presence>`);
  await waitFor(() => c.received.some((el) => el.name === 'presence' && el.attrs.from === `${ROOM}/${nick}` && statuses(el).includes('110')), `${nick} in the room`);
}

t.test('ejabberd: an upstream reconnect rejoins the room; the next message once, no notice', async (t) => {
  const { client: alice } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'phone', domain: server.domain });
  alice.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  await alice.next((el) => el.name === 'enabled');
  alice.send('<presence/>');
  const { client: bob } = await RawClient.login({ port: server.c2sPort, user: 'bob', password: 'bob-pw', resource: 'pc', domain: server.domain });
  bob.send('<presence/>');
  await join(bob, 'bob');
  await join(alice, 'alice');
  bob.send(`<message to='${ROOM}' type='groupchat'><body>before</body></message>`);
  await waitFor(() => groupchat(alice).includes('before'), 'the first message');

  const outcome = new Promise<string>((resolve) => tp.proxy.manager.events.on('muc-rejoin', (_s, o) => resolve(o)));
  relay.cutAll();
  t.equal(await outcome, 'joined', 'rejoined on the new ejabberd session');
  bob.send(`<message to='${ROOM}' type='groupchat'><body>after</body></message>`);
  await waitFor(() => groupchat(alice).includes('after'), 'the message after the reconnect', 30_000);
  bob.send(`<message to='${ROOM}' type='groupchat'><body>last</body></message>`);
  await waitFor(() => groupchat(alice).includes('last'), 'the last message', 30_000);
  t.same(groupchat(alice), ['before', 'after', 'last'], 'each message once');
  t.notOk(alice.received.some((el) => statuses(el).includes('333')), 'no not-joined notice');
  alice.destroy();
  bob.destroy();
});
