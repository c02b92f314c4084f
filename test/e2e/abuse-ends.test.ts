/**
 * A client the proxy closes with its own stream error does not hibernate (issue 10 §2): as with
 * Prosody, only a client that vanished keeps its session for a resume. Before, a client closed
 * for a flood or for bad input kept a resumable session (and its server login) for 600 s.
 */
import type { SessionEnd } from '../../src/session/events.ts';
import t, { type Test } from 'tap';
import { startProsodyAndProxy, waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { sessionOf } from '../harness/chat.ts';

const { tp } = await startProsodyAndProxy(t);

async function resumable(resource: string) {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource });
  client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const enabled = await client.next((el) => el.name === 'enabled');
  const session = sessionOf(tp, `alice@proxy.test/${resource}`);
  let ended = '';
  session.once('ended', (end: SessionEnd) => (ended = end.detail));
  return { client, session, id: String(enabled.attrs.id), ended: () => ended };
}

async function cannotResume(t: Test, id: string): Promise<void> {
  const again = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  again.send(`<resume xmlns='urn:xmpp:sm:3' previd='${id}' h='0'/>`);
  const answer = await again.next((el) => el.name === 'resumed' || el.name === 'failed');
  t.equal(answer.name, 'failed', 'the session cannot be resumed');
  again.destroy();
}

t.test('bad input (a stanza outside jabber:client): invalid-namespace, the session ends', async (t) => {
  const { client, session, id, ended } = await resumable('bad');
  client.send(`<message xmlns='urn:x' to='bob@proxy.test'><body>hi</body></message>`);
  t.equal(await client.streamError(), 'invalid-namespace');
  await waitFor(() => ended() !== '', 'the session to end');
  t.notOk(session.hibernating, 'not hibernating');
  t.match(ended(), /invalid-namespace/);
  await cannotResume(t, id);
});

t.test('an ack-request flood: policy-violation, the session ends', async (t) => {
  const { client, id, ended } = await resumable('flood');
  client.send(`<r xmlns='urn:xmpp:sm:3'/>`.repeat(150));
  t.equal(await client.streamError(), 'policy-violation');
  await waitFor(() => ended() !== '', 'the session to end');
  t.match(ended(), /policy-violation/);
  await cannotResume(t, id);
});

t.test('a vanished client still hibernates and resumes', async (t) => {
  const { client, session, id } = await resumable('gone');
  client.destroy();
  await waitFor(() => session.hibernating, 'hibernating');
  const again = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  again.send(`<resume xmlns='urn:xmpp:sm:3' previd='${id}' h='0'/>`);
  t.equal((await again.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');
  again.destroy();
});
