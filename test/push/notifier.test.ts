/**
 * PushNotifier's rules (design §4.7) against a stand-in session: batching, never the same stanza
 * twice, which answers count against a registration, the hibernation extension, the push for held
 * messages. The real thing on Prosody is test/e2e/push*.test.ts.
 */
import t from 'tap';
import { parse, type Element } from 'ltx';
import pino from 'pino';
import { PushNotifier, type PushOptions } from '../../src/push/notifier.ts';
import { PushRegistrations } from '../../src/push/registrations.ts';
import { TopLevel } from '../../src/xml/top-level.ts';
import type { Session } from '../../src/session/session.ts';
import type { QueuedStanza } from '../../src/sm/outbound-queue.ts';

const log = pino({ level: 'silent' });
/** One macrotask turn after a 0 ms batch timer. */
const turn = () => new Promise((r) => setTimeout(r, 5));

const OPTIONS: PushOptions = {
  maxDevices: 5,
  maxErrors: 3,
  maxHibernationSeconds: 1000,
  withBody: false,
  withSender: false,
  importantBody: 'New Message!',
  batchSeconds: 0,
  replyTimeoutSeconds: 3600,
};

class FakeSession {
  bareJid = 'alice@x';
  fullJid = 'alice@x/phone';
  upstreamLinked = true;
  hibernating = true;
  queue: QueuedStanza[] = [];
  sent: Element[] = [];
  timeouts: number[] = [];
  log = log;
  sm = { unacked: () => [...this.queue] };
  sendToUpstream(xml: string): boolean {
    if (!this.upstreamLinked) return false;
    this.sent.push(parse(xml) as Element);
    return true;
  }
  setHibernationTimeout(seconds: number): boolean {
    this.timeouts.push(seconds);
    return true;
  }
  deliver(xml: string): void {
    this.queue.push({ xml, receivedAt: Date.now() });
  }
}

function setup(options: Partial<PushOptions> = {}) {
  const registrations = new PushRegistrations({ maxFailures: 3 });
  registrations.enable('alice@x', 'push@app/x', 'node1', `<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>s</value></field></x>`);
  const outcomes: string[] = [];
  const extended: unknown[] = [];
  const notifier = new PushNotifier({
    registrations,
    options: { ...OPTIONS, ...options },
    hibernationSeconds: 60,
    emit: (name: string, ...args: unknown[]) => (name === 'push-outcome' ? outcomes.push(args[0] as string) : extended.push(args[0])),
    log,
  } as never);
  const session = new FakeSession();
  t.teardown(() => notifier.close());
  return { registrations, notifier, session, s: session as unknown as Session, outcomes, extended };
}

const field = (push: Element, name: string) =>
  push.getChild('pubsub')?.getChild('publish')?.getChild('item')?.getChild('notification')?.getChild('x')
    ?.getChildren('field').find((f) => f.attrs.var === name)?.getChildText('value');
const chat = (body: string, id = body) => `<message type='chat' from='bob@x/b' to='alice@x/phone' id='${id}'><body>${body}</body></message>`;
const reply = (push: Element, type: 'result' | 'error', errorType = 'cancel') =>
  new TopLevel('iq', { type, id: push.attrs.id, from: 'push@app/x' }, type === 'result'
    ? `<iq type='result' id='${push.attrs.id}' from='push@app/x'/>`
    : `<iq type='error' id='${push.attrs.id}' from='push@app/x'><error type='${errorType}'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`);

t.test('one push per batch, important when one stanza was; presence and chat states alone give none', async (t) => {
  const { notifier, session, s } = setup();
  notifier.watch(s, 'hibernated');
  session.deliver(`<presence from='bob@x/b'/>`);
  session.deliver(`<message type='chat' from='bob@x/b'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>`);
  notifier.queued(s);
  await turn();
  t.equal(session.sent.length, 0, 'nothing worth a push');
  for (let i = 0; i < 5; i++) session.deliver(chat(`m${i}`));
  notifier.queued(s);
  notifier.queued(s);
  await turn();
  t.equal(session.sent.length, 1, 'five messages, one batch: one push');
  const push = session.sent[0]!;
  t.equal(push.attrs.to, 'push@app/x');
  t.equal(push.getChild('pubsub')?.getChild('publish')?.attrs.node, 'node1');
  t.equal(field(push, 'message-count'), '5');
  t.equal(field(push, 'last-message-body'), 'New Message!', 'the placeholder, not the body');
  t.equal(field(push, 'last-message-sender'), undefined, 'no sender by default');
  t.match(push.getChild('pubsub')?.getChild('publish-options')?.toString() ?? '', /secret/, 'publish-options passed through');
  notifier.queued(s);
  await turn();
  t.equal(session.sent.length, 1, 'a new batch without new stanzas pushes nothing: never twice');
  session.deliver(`<message from='bob@x/b'><received xmlns='urn:xmpp:receipts' id='m1'/></message>`);
  notifier.queued(s);
  await turn();
  t.equal(session.sent.length, 2);
  t.equal(field(session.sent[1]!, 'last-message-body'), undefined, 'unimportant: no body field');
  t.equal(field(session.sent[1]!, 'message-count'), '6', 'counted since the client went away');
});

t.test('withBody and withSender', async (t) => {
  const { notifier, session, s } = setup({ withBody: true, withSender: true });
  notifier.watch(s, 'hibernated');
  session.deliver(chat('hello there'));
  notifier.queued(s);
  await turn();
  t.equal(field(session.sent[0]!, 'last-message-body'), 'hello there');
  t.equal(field(session.sent[0]!, 'last-message-sender'), 'bob@x');
});

t.test('answers: a result resets, wait errors do not count, other errors remove after maxErrors', async (t) => {
  const { notifier, session, s, registrations, outcomes } = setup();
  notifier.watch(s, 'hibernated');
  const push = async (n: number) => {
    session.deliver(chat(`e${n}`));
    notifier.queued(s);
    await turn();
    return session.sent.at(-1)!;
  };
  t.ok(notifier.reply(reply(await push(1), 'error')), 'the answer is consumed');
  t.ok(notifier.reply(reply(await push(2), 'error')));
  t.equal(registrations.list('alice@x')[0]!.failures, 2);
  t.ok(notifier.reply(reply(await push(3), 'result')));
  t.equal(registrations.list('alice@x')[0]!.failures, 0, 'a success resets');
  notifier.reply(reply(await push(4), 'error', 'wait'));
  t.equal(registrations.list('alice@x')[0]!.failures, 0, 'wait does not count');
  for (let i = 5; i < 8; i++) notifier.reply(reply(await push(i), 'error'));
  t.notOk(registrations.has('alice@x'), 'removed after 3 in a row');
  const before = session.sent.length;
  await push(9);
  t.equal(session.sent.length, before, 'no more pushes');
  t.same(outcomes, ['error', 'error', 'sent', 'error', 'error', 'error', 'error']);
  t.notOk(notifier.reply(new TopLevel('iq', { type: 'result', id: 'other' }, `<iq type='result' id='other'/>`)), "another iq's answer passes");
});

t.test('an app server that never answers counts; answers lost with the link do not', async (t) => {
  const { notifier, session, s, registrations, outcomes } = setup({ replyTimeoutSeconds: 1 });
  notifier.watch(s, 'hibernated');
  session.deliver(chat('a'));
  notifier.queued(s);
  await turn();
  t.equal(notifier.pending, 1);
  notifier.linkDown(s);
  t.same(outcomes, ['unconfirmed']);
  t.equal(registrations.list('alice@x')[0]!.failures, 0, 'a lost link is not the app server failing');
  session.deliver(chat('b'));
  notifier.queued(s);
  await turn();
  await new Promise((r) => setTimeout(r, 1100));
  t.same(outcomes, ['unconfirmed', 'timeout']);
  t.equal(registrations.list('alice@x')[0]!.failures, 1, 'no answer counts');
});

t.test('while the link is down nothing is lost: the batch goes when it is back', async (t) => {
  const { notifier, session, s } = setup();
  notifier.watch(s, 'hibernated');
  session.upstreamLinked = false;
  session.deliver(chat('a'));
  notifier.queued(s);
  await turn();
  t.equal(session.sent.length, 0);
  session.upstreamLinked = true;
  notifier.linkUp(s);
  await turn();
  t.equal(session.sent.length, 1, 'pushed after the link came back');
});

t.test('hibernation: extended until the first important push, then the normal time', async (t) => {
  const { notifier, session, s, extended } = setup();
  notifier.watch(s, 'hibernated');
  t.same(session.timeouts, [1000], 'extended to maxHibernationSeconds');
  t.equal(extended.length, 1);
  session.deliver(`<message from='bob@x/b'><received xmlns='urn:xmpp:receipts' id='m1'/></message>`);
  notifier.queued(s);
  await turn();
  t.same(session.timeouts, [1000], 'an unimportant push does not end the extension');
  session.deliver(chat('x'));
  notifier.queued(s);
  await turn();
  t.same(session.timeouts, [1000, 60], 'the first important push: the normal time from now');
  session.deliver(chat('y'));
  notifier.queued(s);
  await turn();
  t.same(session.timeouts, [1000, 60], 'only once');
});

t.test('unresponsive: watched until the client answers', async (t) => {
  const { notifier, session, s } = setup();
  session.hibernating = false;
  notifier.watch(s, 'unresponsive');
  t.same(session.timeouts, [], 'no hibernation to extend');
  session.deliver(chat('a'));
  notifier.queued(s);
  await turn();
  t.equal(session.sent.length, 1);
  notifier.responsive(s);
  session.deliver(chat('b'));
  notifier.queued(s);
  await turn();
  t.equal(session.sent.length, 1, 'answered: no more pushes');
});

t.test('held messages at the end: pushed once, to every registration, not at a shutdown', async (t) => {
  const { notifier, session, s, registrations } = setup();
  registrations.enable('alice@x', 'push@other', 'n2');
  notifier.watch(s, 'hibernated');
  session.deliver(chat('pushed'));
  notifier.queued(s);
  await turn();
  t.equal(session.sent.length, 2, 'one push per registration');
  const held = [...session.queue];
  session.deliver(chat('late'));
  notifier.ending(s, held, 'hibernation-timeout');
  t.equal(session.sent.length, 2, 'what was pushed is not pushed again');
  notifier.ending(s, [...session.queue], 'client-lost');
  t.equal(session.sent.length, 4, 'the new one: pushed to both');
  const other = setup();
  other.session.deliver(chat('z'));
  other.notifier.ending(other.s, [...other.session.queue], 'shutdown');
  t.equal(other.session.sent.length, 0, 'not at a shutdown');
});

t.test('no registration: nothing watched', async (t) => {
  const { notifier, session, s, registrations } = setup();
  registrations.disable('alice@x', 'push@app/x');
  notifier.watch(s, 'hibernated');
  t.equal(notifier.watched, 0);
  t.same(session.timeouts, []);
});
