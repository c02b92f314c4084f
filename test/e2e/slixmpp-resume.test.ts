/**
 * slixmpp (Debian python3-slixmpp 1.8.3) resumes through the proxy: a real third-party XEP-0198
 * implementation loses its TCP connection, messages arrive for it while the proxy hibernates its
 * session, and after `<resume/>` it gets every one of them exactly once, in order.
 *
 * alice is slixmpp, driven by test/e2e/slixmpp_client.py over stdin/stdout (JSON lines);
 * bob is @xmpp/client.
 */
import type { SessionEnd } from '../../src/session/events.ts';
import t from 'tap';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startProsodyAndProxy, clientFor, waitFor } from '../harness/proxy.ts';
import { Slixmpp, slixmppVersion } from '../harness/slixmpp.ts';
import type { Session } from '../../src/session/session.ts';

const MESSAGES = 50;

const { tp } = await startProsodyAndProxy(t);

function aliceSessions(): Session[] {
  return [...tp.proxy.sessions].filter((s) => s.bareJid === 'alice@proxy.test');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test(`slixmpp ${slixmppVersion} resumes through the proxy and gets every message once, in order`, async (t) => {
  const alice = new Slixmpp('alice@proxy.test/slix', 'alice-pw', tp.port);
  t.teardown(() => {
    // Only if a failure left it running: end our own child by its pid.
    if (alice.child.exitCode === null && alice.child.signalCode === null) alice.child.kill('SIGKILL');
  });
  const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'phone' });
  const bobGot: string[] = [];
  bob.on('stanza', (s: Element) => {
    const body = s.is('message') ? s.getChildText('body') : null;
    if (body !== null) bobGot.push(body);
  });
  t.teardown(() => bob.stop().catch(() => {}));
  const bobJid = (await bob.start()).toString();

  // ---- login, SM enabled with resumption ----
  const start = await alice.waitEvent('session_start');
  const enabled = await alice.waitEvent('sm_enabled');
  t.equal(enabled.resume, true, 'the proxy granted resumption');
  t.type(enabled.id, 'string', 'slixmpp got a resumption id');
  t.ok((enabled.id as string).length > 0, 'resumption id is not empty');
  await waitFor(() => aliceSessions().length === 1 && aliceSessions()[0]!.sm.enabled, 'proxy session for alice with SM on');
  const session = aliceSessions()[0]!;
  t.equal(session.fullJid, start.jid, 'proxy session and slixmpp agree on the full JID');
  const aliceJid = session.fullJid;
  const seen = { hibernating: 0, resumed: 0, ended: [] as string[] };
  session.on('hibernating', () => seen.hibernating++);
  session.on('resumed', () => seen.resumed++);
  session.on('ended', (end: SessionEnd) => seen.ended.push(end.cause));

  // slixmpp answers the proxy's <r/>: everything sent so far (self-presence) gets acked.
  await waitFor(() => session.sm.queue.length === 0, 'slixmpp acks what the proxy sent before the drop');

  // Five messages from alice before the drop, so that the proxy's inbound count matters for the
  // resume. slixmpp sent its initial presence before <enable/>: it counts on neither side.
  // slixmpp asks for an ack every 5th stanza (xep_0198 window), but 1.8.3 writes that <r/> from its
  // out_sync filter, i.e. *before* the 5th stanza: the wire reads pre-1..pre-4, <r/>, pre-5.
  const pre = ['pre-1', 'pre-2', 'pre-3', 'pre-4', 'pre-5'];
  for (const body of pre) alice.command(`send ${bobJid} ${body}`);
  await waitFor(() => bobGot.length >= pre.length, 'bob receives alice’s messages before the drop');
  t.same(bobGot, pre, 'bob got the five messages in order');
  // Custody rule (design §4.2): an <a/> counts only what the server confirmed, so the answer to
  // that <r/> may be lower than 4; the proxy then tells slixmpp the rest with unrequested <a/>.
  const ack = await alice.waitEvent('ack');
  t.ok((ack.h as number) <= 4, "the proxy's answer to <r/> never counts more than preceded it on the wire");
  await waitFor(() => session.sm.inbound === pre.length, 'the server confirmed all 5 stanzas from alice');
  await waitFor(() => alice.of('ack').some((a) => a.h === 5), "an unrequested <a h='5'/> told slixmpp");
  t.equal(session.sm.inbound, pre.length, 'the proxy counted 5 stanzas from alice');

  // ---- the connection vanishes ----
  alice.command('drop');
  await alice.waitEvent('disconnected');
  await waitFor(() => session.hibernating, 'proxy session hibernating');
  t.equal(seen.hibernating, 1, "the session emitted 'hibernating' once");
  t.same(alice.of('error'), [], 'slixmpp kept its SM session on the drop (no session_end, no error)');

  // ---- messages while alice is away ----
  for (let i = 1; i <= MESSAGES; i++) {
    await bob.send(xml('message', { to: aliceJid, type: 'chat', id: `m${i}` }, xml('body', {}, String(i))));
  }
  await waitFor(() => session.sm.queue.length >= MESSAGES, `proxy queue holds ${MESSAGES} stanzas for alice`);
  await sleep(300);
  t.equal(session.sm.queue.length, MESSAGES, 'exactly the 50 messages are queued, nothing else');
  t.equal(alice.of('message').length, 0, 'nothing reached alice while she was gone');
  t.ok(alice.child.exitCode === null, 'slixmpp is still running');
  t.equal(alice.of('session_start').length, 1, 'slixmpp did not reconnect on its own');
  t.ok(session.hibernating, 'still hibernating before the reconnect command');

  // ---- resume ----
  alice.command('reconnect');
  // slixmpp clears its unacked queue when it sends <resume/> and logs "Inconsistent sequence
  // numbers" when <resumed h='5'/> acks pre-5, which it still held: harmless here (the proxy had
  // it), but it means slixmpp 1.8.3 never re-sends stanzas after a resume.
  const resumed = await alice.waitEvent('resumed');
  t.same(resumed, { event: 'resumed', h: pre.length, previd: enabled.id }, "<resumed previd='…' h='5'/> for the SM id slixmpp got");
  await alice.waitEvent('session_resumed');
  await alice.waitEvent('message', MESSAGES);
  await sleep(1000); // duplicates would show up here
  const messages = alice.of('message');
  t.same(
    messages.map((m) => m.body),
    Array.from({ length: MESSAGES }, (_, i) => String(i + 1)),
    'alice got 1..50, each once, in order',
  );
  t.ok(messages.every((m) => m.from === bobJid), 'all from bob');
  t.ok(messages.every((m) => m.delay === true), 'stanzas re-sent after the resume carry a delay stamp');
  t.equal(alice.of('session_start').length, 1, 'no second session_start: resumed, not a new login');
  t.equal(alice.of('sm_enabled').length, 1, 'no second <enable/>');
  t.same(alice.of('error'), [], 'slixmpp reported no error (no <failed/>, no session_end)');
  t.equal(seen.resumed, 1, "the proxy session emitted 'resumed' once");
  t.notOk(session.hibernating, 'the session has a client again');
  t.same(aliceSessions(), [session], 'the very same proxy session object, and only one, serves alice');
  // The proxy asked for an ack after the re-send; slixmpp's h covers all 50.
  await waitFor(() => session.sm.queue.length === 0, 'slixmpp acks the re-sent messages');
  t.equal(session.sm.queue.acked, 1 + MESSAGES, "slixmpp's h: its self-presence + the 50, nothing sent twice");

  // ---- the resumed stream carries traffic both ways ----
  alice.command(`send ${bobJid} reply from slixmpp`);
  await waitFor(() => bobGot.includes('reply from slixmpp'), 'bob receives alice’s reply');
  t.same(bobGot, [...pre, 'reply from slixmpp'], 'bob got the reply once, after the earlier five');
  await waitFor(() => session.sm.inbound === pre.length + 1, 'the proxy counts the reply on the resumed stream');
  await bob.send(xml('message', { to: aliceJid, type: 'chat' }, xml('body', {}, 'after resume')));
  await alice.waitEvent('message', MESSAGES + 1);
  t.equal(alice.of('message')[MESSAGES]!.body, 'after resume', 'live delivery after the resume');
  t.equal(alice.of('message')[MESSAGES]!.delay, false, 'a live message has no delay stamp');

  // ---- clean exit ----
  alice.command('quit');
  const exit = await Promise.race([alice.exited, sleep(15_000).then(() => 'timeout' as const)]);
  t.same(exit, { code: 0, signal: null }, 'slixmpp exits 0', { stderr: alice.stderr.slice(-2000) });
  await waitFor(() => seen.ended.length > 0, 'proxy session for alice ends');
  t.same(seen.ended, ['client-closed'], 'ended once, by the clean close');
  t.same(aliceSessions(), [], 'no session left for alice');
  t.equal(seen.resumed, 1, 'still resumed only once');
  t.same(bobGot, [...pre, 'reply from slixmpp'], 'bob never got anything twice');
  // SLIXMPP_DEBUG=1 makes the script log every SEND/RECV on stderr; show it.
  if (process.env.SLIXMPP_DEBUG) t.comment(alice.stderr);
});
