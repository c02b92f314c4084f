// The proxy's event surface and stanza hooks (issue 11.5) against real Prosody: session events
// with causes from the fixed set, and hooks that observe, consume, answer and inject stanzas,
// a consumed client stanza counting in XEP-0198 `h` in its order.
import t from 'tap';
import { startProsodyAndProxy, waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { END_CAUSES, type SessionEnd } from '../../src/session/events.ts';
import type { Session } from '../../src/session/session.ts';

const SM = 'urn:xmpp:sm:3';
const { tp } = await startProsodyAndProxy(t);
const { manager } = tp.proxy;

type Seen = [string, ...unknown[]];
const seen: Seen[] = [];
const names = ['client-login', 'session-started', 'sm-enabled', 'session-hibernating', 'session-resumed', 'resume-failed', 'session-ended', 'ack-requested', 'ack-received'] as const;
for (const name of names) {
  manager.events.on(name, (...args: unknown[]) => {
    const [first, ...rest] = args;
    seen.push([name, ...(typeof first === 'object' && first !== null && 'fullJid' in first ? [(first as Session).fullJid, ...rest] : args)]);
  });
}
const of = (name: string) => seen.filter((e) => e[0] === name);

t.test('session lifecycle events carry the session and a cause from the fixed set', async (t) => {
  const { client: first } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'ev' });
  first.send(`<enable xmlns='${SM}' resume='true'/>`);
  const enabled = await first.next((el) => el.name === 'enabled');
  t.same(of('client-login').at(-1), ['client-login', 'success', 'plain'], 'a login is an event, with its mode');
  t.same(of('session-started').at(-1), ['session-started', 'alice@proxy.test/ev']);
  t.same(of('sm-enabled').at(-1), ['sm-enabled', 'alice@proxy.test/ev', true]);

  first.destroy();
  await waitFor(() => of('session-hibernating').length === 1, 'hibernating');

  const stranger = await RawClient.authenticated({ port: tp.port, user: 'bob', password: 'bob-pw' });
  stranger.send(`<resume xmlns='${SM}' previd='${enabled.attrs.id}' h='0'/>`);
  t.equal((await stranger.next((el) => el.name === 'failed')).name, 'failed', "another account cannot resume alice's session");
  t.same(of('resume-failed').at(-1), ['resume-failed', 'unknown-id'], 'a foreign id fails as an unknown one');
  stranger.destroy();

  const second = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  second.send(`<resume xmlns='${SM}' previd='${enabled.attrs.id}' h='0'/>`);
  t.equal((await second.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');
  const resumed = of('session-resumed').at(-1)!;
  t.equal(resumed[1], 'alice@proxy.test/ev');
  t.match(resumed[2], { hibernatedMs: Number, resent: Number });

  second.send('</stream:stream>');
  await waitFor(() => of('session-ended').length === 1, 'the end');
  const [, jid, end] = of('session-ended')[0]! as [string, string, SessionEnd];
  t.equal(jid, 'alice@proxy.test/ev');
  t.equal(end.cause, 'client-closed');
  t.ok((END_CAUSES as readonly string[]).includes(end.cause));
  t.equal(end.hibernating, false, 'it was attached when it ended');
  second.destroy();

  const bad = await RawClient.tls({ port: tp.port });
  t.equal((await bad.auth('alice', 'wrong')).name, 'failure');
  await waitFor(() => of('client-login').some((e) => e[1] === 'not-authorized'), 'the refused login');
  bad.destroy();
});

t.test('stanza hooks observe, consume and answer, inject; consumed stanzas count in h', async (t) => {
  const observedIn: string[] = [];
  const observedOut: string[] = [];
  const hooks = manager.hooks;
  const observeIn = (el: { name: string }) => void observedIn.push(el.name);
  const answerPing = (el: { name: string; attrs: Record<string, string | undefined>; raw: string }, session: Session) => {
    if (el.name !== 'iq' || !el.raw.includes('urn:test:hook')) return false;
    session.sendToClient(`<iq type='result' id='${el.attrs.id}' from='proxy.test' to='${session.fullJid}'/>`);
    return true;
  };
  const broken = () => {
    throw new Error('a feature bug');
  };
  const observeOut = (el: { name: string; raw: string }) => void observedOut.push(el.raw.includes('<body>') ? 'message-with-body' : el.name);
  hooks.fromClient.push(observeIn, broken, answerPing);
  hooks.fromUpstream.push(observeOut);
  t.teardown(() => {
    hooks.fromClient.length = 0;
    hooks.fromUpstream.length = 0;
  });

  const { client: alice } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'hooks' });
  const { client: bob } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'hooks' });
  alice.send(`<enable xmlns='${SM}'/>`);
  await alice.next((el) => el.name === 'enabled');
  alice.send(`<presence/>`);
  alice.send(`<iq type='get' id='h1'><q xmlns='urn:test:hook'/></iq>`);
  const answer = await alice.next((el) => el.name === 'iq' && el.attrs.id === 'h1');
  t.equal(answer.attrs.type, 'result', 'a consuming hook answered the iq itself');
  alice.send(`<r xmlns='${SM}'/>`);
  // The answer covers what the server confirmed so far; an unrequested <a/> follows with the rest.
  const ack = await alice.next((el) => el.name === 'a' && el.attrs.h === '2');
  t.equal(ack.attrs.h, '2', 'the consumed iq counts in h after the presence before it');

  bob.send(`<message to='alice@proxy.test/hooks' type='chat'><body>through a throwing hook</body></message>`);
  const got = await alice.next((el) => el.name === 'message');
  t.equal(got.getChildText('body'), 'through a throwing hook', 'a throwing hook does not cost the stanza');
  t.ok(observedIn.includes('presence') && observedIn.includes('iq'), 'the client stanzas were observed');
  t.ok(observedOut.includes('message-with-body'), 'the upstream stanza was observed');

  const session = [...manager.sessions].find((s) => s.fullJid === 'alice@proxy.test/hooks')!;
  t.equal(session.sendToUpstream(`<message to='bob@proxy.test/hooks' type='chat'><body>injected</body></message>`), true);
  const injected = await bob.next((el) => el.name === 'message');
  t.equal(injected.getChildText('body'), 'injected', 'a stanza injected upstream arrives');
  alice.send(`<a xmlns='${SM}' h='0'/>`);
  await waitFor(() => of('ack-received').length > 0, 'the ack event');
  t.ok(of('ack-received').some((e) => e[1] === 'alice@proxy.test/hooks'), 'acks are events');
  alice.send('</stream:stream>');
  bob.send('</stream:stream>');
  alice.destroy();
  bob.destroy();
});
