/**
 * mod_smacks' max_ack_delay (issue 10 §1): a client that leaves the proxy's `<r/>` unanswered
 * for `sm.maxAckDelaySeconds` makes its session emit `ack-delayed` (what push hooks into), and
 * one that answers does not.
 */
import t from 'tap';
import { startProsodyAndProxy, waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { sessionOf, sleep } from '../harness/chat.ts';

const { tp } = await startProsodyAndProxy(t, {}, { sm: { maxAckDelaySeconds: 1 } });
const bob = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'r' });
t.teardown(() => bob.client.destroy());

async function smClient(resource: string) {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource });
  client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  await client.next((el) => el.name === 'enabled');
  const session = sessionOf(tp, `alice@proxy.test/${resource}`);
  const delayed: Array<{ unacked: number }> = [];
  session.on('ack-delayed', (e: { unacked: number }) => delayed.push(e));
  return { client, session, delayed };
}

t.test('an unanswered <r/> fires ack-delayed with the unacked count', async (t) => {
  const { client, delayed } = await smClient('silent');
  bob.client.send(`<message to='alice@proxy.test/silent' type='chat'><body>are you there?</body></message>`);
  await client.next((el) => el.name === 'r');
  await waitFor(() => delayed.length > 0, 'ack-delayed');
  t.same(delayed[0], { unacked: 1 }, 'one stanza waits for the ack');
  client.destroy();
});

t.test('an answered <r/> does not', async (t) => {
  const { client, delayed } = await smClient('prompt');
  bob.client.send(`<message to='alice@proxy.test/prompt' type='chat'><body>hi</body></message>`);
  await client.next((el) => el.name === 'r');
  client.send(`<a xmlns='urn:xmpp:sm:3' h='1'/>`);
  await sleep(2500); // more than maxAckDelaySeconds: the event would have fired by now
  t.equal(delayed.length, 0, 'no ack-delayed');
  client.destroy();
});
