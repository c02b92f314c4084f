/**
 * A resumed server session's `h` (XEP-0198 §5) says which of the proxy's stanzas the server
 * had; custody may have confirmed some of those already, by a ping barrier (the server's
 * `<enabled/>` was not in yet when the barrier went out). The held stanzas confirmed on resume
 * must be exactly those the server counted: confirming "the oldest n" instead confirmed a stanza
 * the server never got, so it was acked to the client and lost (seen in CI as one resume short
 * in drop-or-reject.test.ts). Deterministic: the relay holds Prosody's `<enabled/>` back until
 * the first stanza's barrier (a ping) is out, then resets the link on the next stanza.
 */
import t from 'tap';
import { waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { prosodyBehindRelay, sessionOf, sleep } from '../harness/chat.ts';

const chat = (id: string) => `<message to='bob@proxy.test/r' type='chat' id='${id}'><body>${id}</body></message>`;

t.test('a stanza confirmed by a ping before the server enabled SM is not counted again when its session is resumed: the next one is sent again, arrives once', async (t) => {
  const { relay, tp } = await prosodyBehindRelay(t, { tls: 'none', smacks: true });
  relay.record = true;

  const { client: bob } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'r' });
  t.teardown(() => bob.destroy());
  bob.send('<presence/>');
  // Answered in order after bob's own <enabled/>: the hold below can only catch alice's.
  bob.send(`<iq type='get' id='bob-ready' to='proxy.test'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await bob.next((el) => el.name === 'iq' && el.attrs.id === 'bob-ready');

  let release!: () => void;
  relay.holdFromTarget(/<enabled /, new Promise<void>((resolve) => (release = resolve)));
  const { client: alice } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'a' });
  t.teardown(() => alice.destroy());
  const link = relay.sent.length - 1;
  alice.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  await alice.next((el) => el.name === 'enabled');
  const session = sessionOf(tp, 'alice@proxy.test/a');
  let resumed = 0;
  session.on('upstream-up', (info: { resumed: boolean }) => info.resumed && resumed++);

  alice.send(chat('first'));
  await waitFor(() => /id='first'[\s\S]*urn:xmpp:ping/.test(relay.sent[link]!), "a ping barrier after 'first'");
  release();
  alice.send(`<r xmlns='urn:xmpp:sm:3'/>`);
  await alice.next((el) => el.name === 'a' && el.attrs.h === '1');
  t.pass("'first' confirmed (by the ping) and acked");

  relay.killOn(/id='victim'/);
  alice.send(chat('victim'));
  await waitFor(() => relay.killed === 1, 'the link reset on the victim', 20_000);
  const got = await bob.next((el) => el.name === 'message' && el.attrs.id === 'victim', 20_000);
  t.equal(got.getChildText('body'), 'victim', 'bob got the stanza the reset took');
  t.equal(resumed, 1, "the server's session was resumed");
  alice.send(`<r xmlns='urn:xmpp:sm:3'/>`);
  await alice.next((el) => el.name === 'a' && el.attrs.h === '2');
  await sleep(300);
  for (const id of ['first', 'victim']) {
    t.equal(bob.received.filter((el) => el.name === 'message' && el.attrs.id === id).length, 1, `'${id}' arrived once`);
  }
});
