import t, { type Test } from 'tap';
import { startProsodyAndProxy, waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';

const { tp } = await startProsodyAndProxy(t, {}, { limits: { maxStanzaBytes: 16 * 1024, maxDepth: 8 } });

// A bystander session that every misbehaving client must leave undisturbed.
const bystander = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'bystander' });
const bob = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'sender' });
let probe = 0;
async function bystanderStillWorks(t: Test): Promise<void> {
  const body = `probe ${++probe}`;
  bob.client.send(`<message to='alice@proxy.test/bystander' type='chat'><body>${body}</body></message>`);
  const msg = await bystander.client.next((el) => el.name === 'message');
  t.equal(msg.getChildText('body'), body, 'other sessions are undisturbed');
}

/** A client at the post-TLS, pre-auth stage. */
async function tlsClient(): Promise<RawClient> {
  const c = await RawClient.tls({ port: tp.port });
  return c;
}

t.test('SASL before TLS: policy-violation', async (t) => {
  const c = await RawClient.connect({ port: tp.port });
  const features = await c.open();
  t.ok(features.getChild('starttls')?.getChild('required'), 'STARTTLS is required');
  t.notOk(features.getChild('mechanisms'), 'no SASL offered before TLS');
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from('\0alice\0alice-pw').toString('base64')}</auth>`);
  t.equal(await c.streamError(), 'policy-violation');
  await c.closed;
  await bystanderStillWorks(t);
});

t.test('malformed XML: not-well-formed', async (t) => {
  const c = await tlsClient();
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'><oops></auth>`);
  t.equal(await c.streamError(), 'not-well-formed');
  await c.closed;
  await bystanderStillWorks(t);
});

t.test('malformed XML after binding: not-well-formed, session ends', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'broken' });
  client.send(`<message to='bob@proxy.test'><body>a & b</body></message>`);
  t.equal(await client.streamError(), 'not-well-formed');
  await client.closed;
  await waitFor(() => ![...tp.proxy.sessions].some((s) => s.fullJid === 'alice@proxy.test/broken'), 'broken session ends');
  await bystanderStillWorks(t);
});

t.test('stanza before authentication: not-authorized', async (t) => {
  const c = await tlsClient();
  c.send(`<message to='bob@proxy.test'><body>hi</body></message>`);
  t.equal(await c.streamError(), 'not-authorized');
  await bystanderStillWorks(t);
});

t.test('stanza before binding: not-authorized', async (t) => {
  const c = await tlsClient();
  t.equal((await c.auth('alice', 'alice-pw')).name, 'success');
  const features = await c.open();
  t.ok(features.getChild('bind', 'urn:ietf:params:xml:ns:xmpp-bind'), 'bind offered');
  t.ok(features.getChild('sm', 'urn:xmpp:sm:3'), "the proxy's SM is offered");
  c.send(`<message to='bob@proxy.test/sender'><body>too early</body></message>`);
  t.equal(await c.streamError(), 'not-authorized');
  await bystanderStillWorks(t);
  t.notOk(bob.client.received.some((el) => el.getChildText('body') === 'too early'), 'the early stanza was not relayed');
});

t.test('enable before bind and resume after bind get <failed/>', async (t) => {
  const c = await tlsClient();
  await c.auth('alice', 'alice-pw');
  await c.open();
  c.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const early = await c.next((el) => el.name === 'failed');
  t.equal(early.getChildElements()[0]?.name, 'unexpected-request');
  await c.bind('late');
  c.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  await c.next((el) => el.name === 'enabled');
  c.send(`<enable xmlns='urn:xmpp:sm:3'/>`);
  t.equal((await c.next((el) => el.name === 'failed')).getChildElements()[0]?.name, 'unexpected-request', 'enable twice');
  c.send(`<resume xmlns='urn:xmpp:sm:3' previd='x' h='0'/>`);
  t.equal((await c.next((el) => el.name === 'failed')).getChildElements()[0]?.name, 'unexpected-request', 'resume after bind');
  c.send('</stream:stream>');
  await bystanderStillWorks(t);
});

t.test('a stream to a domain the proxy does not serve: host-unknown', async (t) => {
  const c = await RawClient.connect({ port: tp.port, domain: 'elsewhere.test' });
  c.send(`<?xml version='1.0'?><stream:stream to='elsewhere.test' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`);
  t.equal(await c.streamError(), 'host-unknown');
  await bystanderStillWorks(t);
});

t.test('DTD and entity declarations: restricted-xml', async (t) => {
  const c = await RawClient.connect({ port: tp.port });
  c.send(`<?xml version='1.0'?><!DOCTYPE foo [<!ENTITY x "boom">]><stream:stream to='proxy.test' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`);
  t.equal(await c.streamError(), 'restricted-xml');
  const d = await tlsClient();
  d.send(`<!-- a comment -->`);
  t.equal(await d.streamError(), 'restricted-xml', 'comments too');
  await bystanderStillWorks(t);
});

t.test('a stanza over the size limit: policy-violation', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'big' });
  client.send(`<message to='bob@proxy.test/sender'><body>${'x'.repeat(64 * 1024)}</body></message>`);
  t.equal(await client.streamError(), 'policy-violation');
  t.notOk(bob.client.received.some((el) => (el.getChildText('body') ?? '').startsWith('xxxx')), 'nothing of it was relayed');
  await bystanderStillWorks(t);
});

t.test('elements nested deeper than the limit: policy-violation', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'deep' });
  client.send(`<message to='bob@proxy.test/sender'>${'<x>'.repeat(20)}${'</x>'.repeat(20)}</message>`);
  t.equal(await client.streamError(), 'policy-violation');
  await bystanderStillWorks(t);
});

t.test('an ack for stanzas never sent: undefined-condition with handled-count-too-high', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'liar' });
  client.send(`<enable xmlns='urn:xmpp:sm:3'/>`);
  await client.next((el) => el.name === 'enabled');
  client.send(`<a xmlns='urn:xmpp:sm:3' h='5'/>`);
  const err = await client.next((el) => el.name === 'stream:error');
  t.ok(err.getChild('undefined-condition'), 'undefined-condition');
  t.ok(err.getChild('handled-count-too-high', 'urn:xmpp:sm:3'), 'with the SM condition');
  await bystanderStillWorks(t);
});

t.test('a flood of <r/>: policy-violation', async (t) => {
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'flood' });
  client.send(`<enable xmlns='urn:xmpp:sm:3'/>`);
  await client.next((el) => el.name === 'enabled');
  client.send(`<r xmlns='urn:xmpp:sm:3'/>`.repeat(500));
  t.equal(await client.streamError(), 'policy-violation');
  t.ok(client.received.filter((el) => el.name === 'a').length <= 100, 'at most 100 answered');
  await bystanderStillWorks(t);
});

t.test('enable and resume before SASL get <failed/> (as Prosody answers them)', async (t) => {
  const c = await tlsClient();
  c.send(`<enable xmlns='urn:xmpp:sm:3'/>`);
  t.equal((await c.next((el) => el.name === 'failed')).getChildElements()[0]?.name, 'service-unavailable');
  c.send(`<resume xmlns='urn:xmpp:sm:3' previd='abc' h='0'/>`);
  t.equal((await c.next((el) => el.name === 'failed')).getChildElements()[0]?.name, 'item-not-found');
  t.equal((await c.auth('bob', 'bob-pw')).name, 'success', 'the stream stays usable');
  c.destroy();
});
