import t from 'tap';
import { parse, type Element } from 'ltx';
import { TopLevel } from '../../src/xml/top-level.ts';
import { StreamError } from '../../src/xml/stream-error.ts';
import { checkClientElement, relayedNonzas, CLIENT_STREAM_ERROR } from '../../src/c2s/stanza-check.ts';

/** A TopLevel as the stream parser makes it: name and the element's own attributes. */
function el(xml: string): TopLevel {
  const tree = parse(xml) as Element;
  return new TopLevel(tree.name, tree.attrs as Record<string, string>, xml);
}

// Prosody 0.12's post-auth features (no SM upstream), CSI among them.
const prosodyFeatures = parse(
  `<stream:features xmlns:stream='http://etherx.jabber.org/streams'>` +
    `<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><required/></bind>` +
    `<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>` +
    `<ver xmlns='urn:xmpp:features:rosterver'/>` +
    `<csi xmlns='urn:xmpp:csi:0'/>` +
    `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/>` +
    `</stream:features>`,
) as Element;
const withCsi = relayedNonzas(prosodyFeatures);
const withoutCsi = relayedNonzas(parse(`<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>`) as Element);

function condition(xml: string, nonzas = withCsi): string | undefined {
  const verdict = checkClientElement(el(xml), nonzas);
  if (verdict === CLIENT_STREAM_ERROR) return 'client-stream-error';
  return verdict instanceof StreamError ? verdict.condition : undefined;
}

t.test('relayed nonza namespaces: what the proxy relays and the upstream advertised', async (t) => {
  t.same([...withCsi], ['urn:xmpp:csi:0'], 'CSI only: bind, session, ver and caps are announcements, not nonza protocols');
  t.same([...withoutCsi], [], 'nothing when the server offers no CSI');
  t.same([...relayedNonzas(undefined)], [], 'no features, no nonzas');
});

t.test('stanzas in jabber:client pass', async (t) => {
  for (const xml of [
    `<message to='bob@proxy.test' type='chat'><body>hi</body></message>`,
    `<message xmlns='jabber:client' to='bob@proxy.test'><body>hi</body></message>`,
    `<message type='normal'/>`, `<message type='groupchat'/>`, `<message type='headline'/>`, `<message type='error'/>`,
    `<presence/>`, `<presence type='unavailable'/>`, `<presence type='subscribe' to='bob@proxy.test'/>`,
    `<presence type='subscribed'/>`, `<presence type='unsubscribe'/>`, `<presence type='unsubscribed'/>`,
    `<presence type='probe'/>`, `<presence type='error'/>`,
    `<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>`,
    `<iq type='set' id='2'><query xmlns='jabber:iq:roster'/></iq>`,
    `<iq type='result' id=''/>`,
    `<iq type='error' id='4'/>`,
  ]) t.equal(condition(xml), undefined, xml);
});

t.test('a stanza in another namespace: invalid-namespace (RFC 6120 §4.9.3.10)', async (t) => {
  t.equal(condition(`<message xmlns='urn:x'><body>hi</body></message>`), 'invalid-namespace');
  t.equal(condition(`<presence xmlns='jabber:server'/>`), 'invalid-namespace');
  t.equal(condition(`<iq xmlns='' type='get' id='1'/>`), 'invalid-namespace', 'the empty namespace too');
});

t.test('iq without id or with a wrong type, message/presence with a wrong type: invalid-xml', async (t) => {
  t.equal(condition(`<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>`), 'invalid-xml', 'no id (RFC 6120 §8.2.3)');
  t.equal(condition(`<iq id='1'><ping xmlns='urn:xmpp:ping'/></iq>`), 'invalid-xml', 'no type');
  t.equal(condition(`<iq type='fetch' id='1'/>`), 'invalid-xml', 'unknown type');
  t.equal(condition(`<message type='bogus'/>`), 'invalid-xml');
  t.equal(condition(`<message type=''/>`), 'invalid-xml', 'an empty type is no type');
  t.equal(condition(`<presence type='available'/>`), 'invalid-xml', 'available is the absence of a type (RFC 6121 §4.7.1)');
  const err = checkClientElement(el(`<iq type='get'/>`), withCsi) as StreamError;
  t.match(err.text, /id/, 'the text says what is missing');
});

t.test('XEP-0198 nonzas go to the session', async (t) => {
  for (const xml of [`<r xmlns='urn:xmpp:sm:3'/>`, `<a xmlns='urn:xmpp:sm:3' h='1'/>`, `<enable xmlns='urn:xmpp:sm:3' resume='true'/>`]) {
    t.equal(condition(xml, withoutCsi), undefined, xml);
  }
  t.equal(condition(`<r xmlns='urn:xmpp:sm:2'/>`), 'unsupported-stanza-type', 'sm:2 is not offered by the proxy');
});

t.test('CSI passes only when the upstream advertised it', async (t) => {
  t.equal(condition(`<inactive xmlns='urn:xmpp:csi:0'/>`), undefined);
  t.equal(condition(`<active xmlns='urn:xmpp:csi:0'/>`), undefined);
  t.equal(condition(`<inactive xmlns='urn:xmpp:csi:0'/>`, withoutCsi), 'unsupported-stanza-type');
});

t.test('anything else: unsupported-stanza-type (RFC 6120 §4.9.3.21)', async (t) => {
  for (const xml of [
    `<foo xmlns='urn:unknown'/>`,
    `<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>`,
    `<ver xmlns='urn:xmpp:features:rosterver'/>`,
    `<foo/>`,
    `<foo xmlns='jabber:client'/>`,
    `<x:active xmlns:x='urn:xmpp:csi:0'/>`,
    `<x:active xmlns='urn:xmpp:csi:0' xmlns:x='urn:other'/>`,
    `<x:message xmlns:x='jabber:client'/>`,
    `<stream:features/>`,
  ]) t.equal(condition(xml), 'unsupported-stanza-type', xml);
  const long = `<foo xmlns='urn:${'x'.repeat(10_000)}'/>`;
  t.ok((checkClientElement(el(long), withCsi) as StreamError).text!.length < 200, "the client's namespace is clipped in the text");
});

t.test("the client's own stream error is only logged", async (t) => {
  t.equal(condition(`<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`), 'client-stream-error');
});
