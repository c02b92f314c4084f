import t from 'tap';
import { parse, type Element } from 'ltx';
import { StreamManagement } from '../../src/sm/stream-management.ts';
import { StreamError } from '../../src/xml/stream-error.ts';

const opts = { maxUnackedStanzas: 0, maxQueueSize: 5, maxAckDelaySeconds: 30 };
const el = (xml: string): Element => parse(xml) as Element;
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function setup(acked = 0) {
  const sm = new StreamManagement(opts, acked);
  const written: string[] = [];
  sm.attach((xml) => written.push(xml));
  return { sm, written };
}

t.test('one <r/> per burst, and again when an ack leaves stanzas unacked (mod_smacks 2017)', async (t) => {
  const { sm, written } = setup();
  sm.enable();
  for (let i = 0; i < 3; i++) sm.send(`<message id='${i}'/>`, 0);
  await tick();
  t.equal(written.filter((x) => x.startsWith('<r ')).length, 1, 'coalesced');
  sm.send(`<message id='3'/>`, 0);
  await tick();
  t.equal(written.filter((x) => x.startsWith('<r ')).length, 1, 'no second <r/> while one is outstanding');
  sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='3'/>`));
  await tick();
  t.equal(written.filter((x) => x.startsWith('<r ')).length, 2, 'the ack left one unacked: ask again');
  sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='4'/>`));
  await tick();
  t.equal(written.filter((x) => x.startsWith('<r ')).length, 2, 'all acked: no more requests');
  t.equal(sm.queue.length, 0);
});

t.test('<r/> is answered with the inbound count, wrapping at 2^32', async (t) => {
  const { sm, written } = setup();
  sm.enable();
  sm.inbound = 2 ** 32 - 1;
  sm.received = 2 ** 32 - 1;
  sm.countInbound();
  sm.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`));
  t.equal(written.at(-1), `<a xmlns='urn:xmpp:sm:3' h='${2 ** 32 - 1}'/>`, 'received, not yet confirmed: not counted');
  sm.confirm(1);
  t.equal(written.at(-1), `<a xmlns='urn:xmpp:sm:3' h='0'/>`, 'confirmation wraps h and is reported unrequested');
  t.equal(sm.received, 0);
});

t.test('stanzas are not counted or queued before enable', async (t) => {
  const { sm, written } = setup();
  sm.countInbound();
  sm.send('<presence/>', 0);
  t.equal(sm.inbound, 0);
  t.equal(sm.queue.length, 0);
  t.same(written, ['<presence/>'], 'still delivered');
});

t.test('an ack above what was sent is handled-count-too-high', async (t) => {
  const { sm } = setup(2 ** 32 - 2);
  sm.enable();
  sm.send('<message/>', 0);
  sm.send('<message/>', 0);
  sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='0'/>`));
  t.equal(sm.queue.length, 0, 'acks across the wrap');
  const err = t.throws(() => sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='1'/>`))) as StreamError;
  t.equal(err.condition, 'undefined-condition');
  t.match(err.toXML(), /<handled-count-too-high xmlns='urn:xmpp:sm:3' h='1' send-count='0'\/>/);
});

t.test('a client that counted stanzas written before <enabled/> is tolerated once (design §4.2)', async (t) => {
  const { sm } = setup();
  sm.send('<presence/>', 0); // written before enable: a client like xmpp.js 0.14 may count it
  sm.enable();
  sm.send('<message/>', 0);
  sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='2'/>`));
  t.equal(sm.queue.length, 0, 'offset of 1 accepted');
  sm.send('<message/>', 0);
  sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='3'/>`));
  t.equal(sm.queue.length, 0, 'and subtracted from later acks');
  t.throws(() => sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='5'/>`)), 'but no more than that');
});

t.test('<a/> without a valid h is bad-format', async (t) => {
  const { sm } = setup();
  sm.enable();
  const err = t.throws(() => sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='x'/>`))) as StreamError;
  t.equal(err.condition, 'bad-format');
});

t.test('queue overflow makes the session unresumable, once', async (t) => {
  const { sm } = setup();
  sm.enable();
  let overflows = 0;
  sm.on('overflow', () => overflows++);
  for (let i = 0; i < 8; i++) sm.send('<message/>', 0);
  t.equal(overflows, 1);
  t.ok(sm.overflowed);
});

t.test('a queue over maxQueueBytes overflows too, once, however few stanzas', async (t) => {
  const sm = new StreamManagement({ ...opts, maxQueueBytes: 1000 });
  sm.attach(() => {});
  sm.enable();
  let overflows = 0;
  sm.on('overflow', () => overflows++);
  const big = `<message><body>${'a'.repeat(468)}</body></message>`; // 500 characters
  sm.send(big, 0);
  sm.send(big, 0);
  t.equal(sm.queue.bytes, 1000);
  t.notOk(sm.overflowed, 'at the limit, not past it');
  sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='1'/>`));
  t.equal(sm.queue.bytes, 500, 'acked stanzas no longer count');
  sm.send(big, 0);
  t.notOk(sm.overflowed);
  sm.send('<message/>', 0);
  t.equal(overflows, 1, 'two stanzas short of maxQueueSize, but past the bytes');
  t.ok(sm.overflowed);
  sm.send(big, 0);
  t.equal(overflows, 1, 'once');
  sm.close();
});

t.test('without maxQueueBytes only the count limits the queue', async (t) => {
  const { sm } = setup();
  sm.enable();
  for (let i = 0; i < 5; i++) sm.send(`<message><body>${'a'.repeat(100_000)}</body></message>`, 0);
  t.notOk(sm.overflowed);
});

t.test('while detached (hibernating) stanzas queue without writes or requests', async (t) => {
  const { sm, written } = setup();
  sm.enable();
  sm.attach(undefined);
  sm.send('<message/>', 0);
  await tick();
  t.equal(sm.queue.length, 1);
  t.same(written, []);
  t.ok(sm.ackOnResume(0));
  t.notOk(sm.ackOnResume(2), 'resume h beyond what was sent');
  t.ok(sm.ackOnResume(1));
  t.equal(sm.queue.length, 0);
});

t.test('ack-delayed fires when an <r/> goes unanswered', async (t) => {
  const sm = new StreamManagement({ ...opts, maxAckDelaySeconds: 0.05 });
  sm.attach(() => {});
  sm.enable();
  const fired = new Promise((resolve) => sm.once('ack-delayed', resolve));
  const keepAlive = setTimeout(() => {}, 5000); // the proxy's timers are unref'd; sockets keep it alive
  sm.send('<message/>', 0);
  await fired;
  clearTimeout(keepAlive);
  t.pass('ack-delayed emitted');
  sm.close();
});

t.test('<r/> and <a/> before enable are unsupported-stanza-type (as mod_smacks)', async (t) => {
  const { sm } = setup();
  const err = t.throws(() => sm.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`))) as StreamError;
  t.equal(err.condition, 'unsupported-stanza-type');
});

t.test('a client asking after every stanza is no flood', async (t) => {
  const { sm } = setup();
  sm.enable();
  for (let i = 0; i < 1000; i++) {
    sm.countInbound();
    sm.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`));
  }
  t.equal(sm.received, 1000);
});

t.test('a flood of <r/> is a policy-violation', async (t) => {
  const { sm, written } = setup();
  sm.enable();
  for (let i = 0; i < 100; i++) sm.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`));
  t.equal(written.length, 100, 'each answered');
  const err = t.throws(() => sm.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`))) as StreamError;
  t.equal(err.condition, 'policy-violation');
});

t.test('the flood limit and its window are options (sm.maxAckRequests, sm.ackRequestWindowSeconds)', async (t) => {
  const sm = new StreamManagement({ ...opts, maxAckRequests: 3, ackRequestWindowSeconds: 1 });
  sm.attach(() => {});
  sm.enable();
  for (let i = 0; i < 3; i++) sm.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`));
  const err = t.throws(() => sm.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`))) as StreamError;
  t.equal(err.condition, 'policy-violation', 'the 4th within the window');
  const later = new StreamManagement({ ...opts, maxAckRequests: 3, ackRequestWindowSeconds: 1 });
  later.attach(() => {});
  later.enable();
  for (let i = 0; i < 3; i++) later.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`));
  await new Promise((r) => setTimeout(r, 1100));
  t.doesNotThrow(() => later.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`)), 'a new window after ackRequestWindowSeconds');
});

t.test('no ack loop: an ack that leaves the queue unchanged does not trigger another <r/>', async (t) => {
  const { sm, written } = setup();
  sm.enable();
  sm.send('<message/>', 0);
  await tick();
  const requests = () => written.filter((x) => x.startsWith('<r ')).length;
  t.equal(requests(), 1);
  sm.handleNonza(el(`<a xmlns='urn:xmpp:sm:3' h='0'/>`)); // acks nothing
  await tick();
  t.equal(requests(), 1, 'same expected h as the last request: no new <r/>');
  sm.send('<message/>', 0);
  await tick();
  t.equal(requests(), 2, 'more was sent: ask again');
});

t.test('<r/> from the client piggybacks our own request when one is due', async (t) => {
  const { sm, written } = setup();
  sm.enable();
  sm.attach(undefined);
  sm.send('<message/>', 0); // queued while detached: no request
  sm.attach((xml) => written.push(xml));
  sm.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`));
  await tick();
  t.same(written, [`<a xmlns='urn:xmpp:sm:3' h='0'/>`, `<r xmlns='urn:xmpp:sm:3'/>`]);
});

t.test('custody: <a/> reports confirmed stanzas only; an unrequested <a/> follows only if owed', async (t) => {
  const { sm, written } = setup();
  sm.enable();
  sm.countInbound();
  sm.countInbound();
  sm.confirm(1);
  t.same(written, [], 'no <r/> was answered low: nothing owed, nothing sent');
  sm.handleNonza(el(`<r xmlns='urn:xmpp:sm:3'/>`));
  t.equal(written.at(-1), `<a xmlns='urn:xmpp:sm:3' h='1'/>`);
  sm.confirm(1);
  t.equal(written.at(-1), `<a xmlns='urn:xmpp:sm:3' h='2'/>`, 'the owed ack');
  sm.confirm(0);
  t.equal(written.length, 2);
  sm.countInbound();
  sm.forgetUnconfirmed();
  t.equal(sm.received, 2, 'after a resume the unconfirmed stanza is the client\'s again');
});
