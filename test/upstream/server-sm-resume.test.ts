/**
 * Resuming the server's own XEP-0198 session on a new link (§5): which of the client stanzas
 * held in custody the server's `<resumed h/>` covers, with the proxy's own stanzas (pings,
 * queries) interleaved in the count.
 */
import t from 'tap';
import { ServerSm } from '../../src/upstream/server-sm.ts';
import { TopLevel } from '../../src/xml/top-level.ts';

const SM = 'urn:xmpp:sm:3';
const nonza = (name: string, attrs: Record<string, string> = {}) => new TopLevel(name, { xmlns: SM, ...attrs }, `<${name}/>`);

function enabledSm(written: string[]): ServerSm {
  const sm = new ServerSm((xml) => written.push(xml));
  sm.take(nonza('enabled', { id: 'srv-1', resume: 'true' }));
  return sm;
}

t.test('asks for resumption and resumes with the h of what it received', async (t) => {
  const written: string[] = [];
  const sm = enabledSm(written);
  t.match(written[0], /<enable xmlns='urn:xmpp:sm:3' resume='true'\/>/);
  t.equal(sm.resumable, true);
  sm.take(new TopLevel('message', {}, '<message/>'));
  sm.take(new TopLevel('message', {}, '<message/>'));
  const again: string[] = [];
  const next = new ServerSm((xml) => again.push(xml), sm);
  t.equal(next.state, 'resuming');
  t.equal(again[0], `<resume xmlns='${SM}' previd='srv-1' h='2'/>`);
});

t.test('<resumed h/> confirms the held client stanzas the server handled, not the proxy\'s own', async (t) => {
  const sm = enabledSm([]);
  // A number is a client stanza in custody (its serial), undefined the proxy's own (ping, archive query).
  for (const serial of [10, undefined, 11, 12, undefined, 13]) sm.countOut(serial === undefined ? '<iq/>' : '<message/>', serial);
  t.same(sm.custodyHandled(0), []);
  t.same(sm.custodyHandled(2), [10], 'c o');
  t.same(sm.custodyHandled(4), [10, 11, 12], 'c o c c');
  t.same(sm.custodyHandled(6), [10, 11, 12, 13], 'all');
  t.equal(sm.custodyHandled(7), undefined, 'more than was written');
  const states: string[] = [];
  const next = new ServerSm(() => {}, sm);
  next.on('state', (s: string, d?: string) => states.push(`${s}:${d ?? ''}`));
  next.take(nonza('resumed', { h: '4', previd: 'srv-1' }));
  t.same(states, ['resumed:4']);
  t.equal(next.state, 'enabled', 'acks go on on the resumed stream');
});

t.test('an acknowledged prefix is forgotten; a late right ack too; an impossible h refuses the resume', async (t) => {
  const written: string[] = [];
  const sm = enabledSm(written);
  for (let i = 0; i < 3; i++) sm.countOut('<message/>', i);
  const confirmed = sm.confirmAll(1000);
  sm.take(nonza('a', { h: '3' }));
  t.equal(await confirmed, 'confirmed');
  sm.countOut('<message/>', 3);
  t.same(sm.custodyHandled(3), [], 'nothing after the ack was handled');
  t.same(sm.custodyHandled(4), [3]);
  const next = new ServerSm(() => {}, sm);
  const states: string[] = [];
  next.on('state', (s: string) => states.push(s));
  next.take(nonza('resumed', { h: '9' }));
  t.same(states, ['off'], 'an h beyond what was sent is not trusted');
});

t.test('a server that does not grant resumption leaves nothing to resume', async (t) => {
  const sm = new ServerSm(() => {});
  sm.take(nonza('enabled'));
  t.equal(sm.resumable, false);
});
