/**
 * A network that keeps dropping the upstream link just as one stanza is in flight is not a
 * server rejecting that stanza (issue 10 §2a's heuristic, seen misfiring under load in
 * faults.test.ts's ten drops in a row): a link lost during its setup, with nothing in flight,
 * breaks the row of strikes. Deterministic: the relay resets a link when it sees the proxy send
 * the stanza (plain-text upstream), or its SASL `<auth>` (a setup that fails).
 */
import t from 'tap';
import { waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { prosodyBehindRelay, sessionOf, sleep } from '../harness/chat.ts';

t.test('drops that meet the same stanza twice, with a failed setup between them: the stanza is delivered, the session lives', async (t) => {
  const { relay, tp } = await prosodyBehindRelay(t, { tls: 'none' });

  const { client: bob } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'r' });
  t.teardown(() => bob.destroy());
  bob.send('<presence/>');
  const { client: alice } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'a' });
  t.teardown(() => alice.destroy());
  alice.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  await alice.next((el) => el.name === 'enabled');
  const session = sessionOf(tp, 'alice@proxy.test/a');
  const ended: string[] = [];
  session.on('ended', (info: { cause: string }) => ended.push(info.cause));

  // One fault per link, in this order.
  const faults = [/id='victim'/, /id='victim'/, /<auth /, /id='victim'/];
  relay.killInTurn(faults);
  alice.send(`<message to='bob@proxy.test/r' type='chat' id='victim'><body>victim</body></message>`);
  await waitFor(() => relay.killed === faults.length, 'every fault fired', 20_000);
  const got = await bob.next((el) => el.name === 'message' && el.attrs.id === 'victim', 20_000);
  t.equal(got.getChildText('body'), 'victim', 'bob got the stanza after four lost links');
  t.same(ended, [], 'the session did not end');
  t.ok(tp.proxy.sessions.has(session), "alice's session lives");
  // Custody: the ack may trail bob's copy (an unrequested <a/> follows the server's confirmation).
  alice.send(`<r xmlns='urn:xmpp:sm:3'/>`);
  const ack = await alice.next((el) => el.name === 'a' && el.attrs.h !== '0');
  t.equal(ack.attrs.h, '1', 'and is acked once the server has it');
  t.notOk(alice.received.some((el) => el.name === 'stream:error'), 'alice saw no stream error');
  await waitFor(() => session.upstreamLinked, 'linked again');
  t.equal(bob.received.filter((el) => el.name === 'message' && el.attrs.id === 'victim').length, 1, 'once');
});

t.test("with the server's own XEP-0198: three drops in a row meet the same stanza, each followed by a resumed server session: the stanza is delivered, the session lives", async (t) => {
  const { relay, tp } = await prosodyBehindRelay(t, { tls: 'none', smacks: true });

  const { client: bob } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'r' });
  t.teardown(() => bob.destroy());
  bob.send('<presence/>');
  const { client: alice } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'a' });
  t.teardown(() => alice.destroy());
  alice.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  await alice.next((el) => el.name === 'enabled');
  const session = sessionOf(tp, 'alice@proxy.test/a');
  const ended: string[] = [];
  session.on('ended', (info: { cause: string }) => ended.push(info.cause));
  let resumed = 0;
  session.on('upstream-up', (info: { resumed: boolean }) => info.resumed && resumed++);
  // The server answers in order: once this ping's result is back, its <enabled/> (sent before it
  // on the same link) is too, so the first drop has a server session to resume.
  alice.send(`<iq type='get' id='sm-ready' to='proxy.test'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await alice.next((el) => el.name === 'iq' && el.attrs.id === 'sm-ready');

  const kills = 3;
  relay.killInTurn(Array.from({ length: kills }, () => /id='victim'/));
  alice.send(`<message to='bob@proxy.test/r' type='chat' id='victim'><body>victim</body></message>`);
  await waitFor(() => relay.killed === kills, 'every drop happened', 20_000);
  const got = await bob.next((el) => el.name === 'message' && el.attrs.id === 'victim', 20_000);
  t.equal(got.getChildText('body'), 'victim', 'bob got the stanza after three lost links');
  t.ok(resumed >= kills, `the server's session was resumed after each drop (${resumed})`);
  t.same(ended, [], 'the session did not end');
  t.notOk(alice.received.some((el) => el.name === 'stream:error'), 'alice saw no stream error');
  await sleep(500);
  t.equal(bob.received.filter((el) => el.name === 'message' && el.attrs.id === 'victim').length, 1, 'once');
});
