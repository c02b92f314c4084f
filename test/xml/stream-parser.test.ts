import t from 'tap';
import type { TopLevel } from '../../src/xml/top-level.ts';
import { StreamParser } from '../../src/xml/stream-parser.ts';
import type { StreamError } from '../../src/xml/stream-error.ts';

const HEADER = `<?xml version='1.0'?><stream:stream to='a.test' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;

function run(chunks: string[], limits = { maxStanzaBytes: 1024, maxDepth: 4 }) {
  const p = new StreamParser(limits);
  const out = { header: undefined as Record<string, string> | undefined, elements: [] as TopLevel[], error: undefined as StreamError | undefined, ended: false };
  p.on('start', (a) => (out.header = a));
  p.on('element', (el) => out.elements.push(el));
  p.on('error', (e) => (out.error = e));
  p.on('end', () => (out.ended = true));
  for (const c of chunks) p.write(c);
  return out;
}

t.test('frames header, stanzas split across chunks, whitespace keepalives, close', async (t) => {
  const r = run([HEADER.slice(0, 30), HEADER.slice(30), `<message to='b'><bo`, `dy>h&amp;i é</body></message> \n `, `<r xmlns='urn:xmpp:sm:3'/></stream:stream>`]);
  t.equal(r.header?.to, 'a.test');
  t.equal(r.elements.length, 2);
  t.equal(r.elements[0]!.element().getChildText('body'), 'h&i é');
  t.equal(r.elements[0]!.raw, `<message to='b'><body>h&amp;i é</body></message>`, 'the exact text received, keepalive whitespace cut');
  t.equal(r.elements[0]!.name, 'message');
  t.same(r.elements[0]!.attrs, { to: 'b' });
  t.equal(r.elements[1]!.attrs.xmlns, 'urn:xmpp:sm:3');
  t.equal(r.elements[1]!.raw, `<r xmlns='urn:xmpp:sm:3'/>`);
  t.ok(r.ended);
  t.equal(r.error, undefined);
});

const cases: Array<[string, string, string]> = [
  ['mismatched tags', `<message><body></message>`, 'not-well-formed'],
  ['bare ampersand', `<message><body>a & b</body></message>`, 'not-well-formed'],
  ['undefined entity', `<message><body>&foo;</body></message>`, 'not-well-formed'],
  ['text between stanzas', `hello<message/>`, 'not-well-formed'],
  ['comment', `<!-- x -->`, 'restricted-xml'],
  ['processing instruction', `<?foo bar?>`, 'restricted-xml'],
  ['too deep', `<message><a><b><c><d></d></c></b></a></message>`, 'policy-violation'],
  ['too large', `<message><body>${'x'.repeat(2000)}</body></message>`, 'policy-violation'],
];
for (const [name, input, condition] of cases) {
  t.test(`${name} → ${condition}`, async (t) => {
    const r = run([HEADER, input]);
    t.equal(r.error?.condition, condition);
    t.equal(r.elements.length, 0, 'nothing emitted');
  });
}

t.test('a DTD before the stream is restricted-xml', async (t) => {
  const r = run([`<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a "b">]>`, HEADER]);
  t.equal(r.error?.condition, 'restricted-xml');
});

t.test('a large stanza sent in many small chunks is still caught', async (t) => {
  const r = run([HEADER, `<message><body>`, ...Array.from({ length: 40 }, () => 'y'.repeat(100))]);
  t.equal(r.error?.condition, 'policy-violation');
});

t.test('many stanzas in one stream do not add up to the size limit', async (t) => {
  const r = run([HEADER, ...Array.from({ length: 100 }, (_, i) => `<message id='${i}'><body>${'z'.repeat(500)}</body></message>`)]);
  t.equal(r.error, undefined);
  t.equal(r.elements.length, 100);
});

t.test('the root must be stream:stream', async (t) => {
  const r = run([`<foo>`]);
  t.equal(r.error?.condition, 'invalid-namespace');
});

t.test('raw text is cut by UTF-16 positions: astral characters and CDATA survive intact', async (t) => {
  const stanza = `<message><body>😀 emoji ✓ <![CDATA[<not a tag>]]></body><x xmlns='y'>ü</x></message>`;
  const r = run([HEADER, stanza.slice(0, 20), stanza.slice(20), `<message/>`]);
  t.equal(r.error, undefined);
  t.equal(r.elements[0]!.raw, stanza);
  t.equal(r.elements[1]!.raw, '<message/>');
  t.match(r.elements[0]!.element().getChildText('body'), /😀 emoji/);
});

t.test('text before a stanza is caught on its raw slice', async (t) => {
  const r = run([HEADER, ` \n hello <message/>`]);
  t.equal(r.error?.condition, 'not-well-formed');
});

t.test('a top-level element closed by the wrong name is not emitted: not-well-formed instead', async (t) => {
  const r = run([HEADER, `<message to='a@b'><body>hi</body></iq>`]);
  t.equal(r.error?.condition, 'not-well-formed');
  t.equal(r.elements.length, 0, 'nothing emitted');
  const spaced = run([HEADER, `<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq ><presence/></message  >`]);
  t.equal(spaced.elements.length, 2, 'a close tag with whitespace before > still matches');
  t.equal(spaced.elements[0]!.raw, `<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq >`);
  t.notOk(spaced.ended, 'a wrong close tag at the stream level is not taken for </stream:stream>');
  t.equal(spaced.error?.condition, 'not-well-formed');
  const closed = run([HEADER, `<presence/></stream:stream >`]);
  t.ok(closed.ended);
  t.equal(closed.error, undefined);
});

t.test('a second <stream:stream> inside the stream is unsupported-stanza-type at once', async (t) => {
  const r = run([HEADER, `<presence/>`, HEADER.replace(`<?xml version='1.0'?>`, ''), `<message><body>x</body></message></stream:stream>`]);
  t.equal(r.error?.condition, 'unsupported-stanza-type');
  t.equal(r.elements.length, 1, 'only what came before it');
  t.notOk(r.ended);
  const deep = run([HEADER, `<message><stream:stream/></message>`], { maxStanzaBytes: 1024, maxDepth: 4 });
  t.equal(deep.error, undefined, 'deeper down it is only content');
  t.equal(deep.elements.length, 1);
});

t.test('maxStanzaBytes counts UTF-8 bytes, not UTF-16 characters', async (t) => {
  const limits = { maxStanzaBytes: 262_144, maxDepth: 4 };
  // 120 000 CJK characters: 120 000 UTF-16 units, 360 000 bytes of UTF-8.
  const big = `<message to='a@b'><body>${'漢'.repeat(120_000)}</body></message>`;
  const whole = run([HEADER, big], limits);
  t.equal(whole.error?.condition, 'policy-violation', 'a complete element in one chunk');
  t.equal(whole.elements.length, 0);
  const parts: string[] = [];
  for (let i = 0; i < big.length; i += 16_384) parts.push(big.slice(i, i + 16_384));
  const fed: string[] = [];
  const p = new StreamParser(limits);
  let error: StreamError | undefined;
  p.on('error', (e: StreamError) => (error = e));
  p.write(HEADER);
  for (const part of parts) {
    if (error) break;
    p.write(part);
    fed.push(part);
  }
  t.equal(error?.condition, 'policy-violation', 'an unfinished element');
  t.ok(fed.length < parts.length, `refused after ${fed.length} of ${parts.length} chunks, before the element was complete`);
  t.ok(fed.join('').length * 3 <= limits.maxStanzaBytes + 3 * 16_384, 'about as soon as it went over');

  const atLimit = `<message><body>${'é'.repeat((1024 - 32) / 2)}</body></message>`; // 2 bytes each
  t.equal(Buffer.byteLength(atLimit), 1024);
  t.equal(run([HEADER, atLimit]).elements.length, 1, 'exactly at the limit passes');
  const over = `<message><body>${'é'.repeat((1024 - 32) / 2)}x</body></message>`;
  t.equal(run([HEADER, over]).error?.condition, 'policy-violation', 'one byte over fails');
  const astral = `<message><body>${'😀'.repeat(250)}</body></message>`; // 4 bytes, 2 UTF-16 units each
  t.equal(Buffer.byteLength(astral), 1032);
  t.equal(run([HEADER, ...astral.match(/[\s\S]{1,7}/gu)!]).error?.condition, 'policy-violation', 'astral characters, fed in pieces');
  const fits = `<message><body>${'😀'.repeat(240)}</body></message>`;
  t.equal(Buffer.byteLength(fits), 992);
  const byUnit = run([HEADER, ...fits.split('')]);
  t.equal(byUnit.error, undefined, 'a surrogate pair split across writes counts 4 bytes, not 3 + 3');
  t.equal(byUnit.elements[0]?.raw, fits);
});

t.test('namespace well-formedness (XML Namespaces, RFC 6120 §11.2): unbound prefixes are not-well-formed', async (t) => {
  const bad: Array<[string, string]> = [
    ['unbound element prefix', `<message><foo:bar/></message>`],
    ['unbound attribute prefix', `<message><x xmlns='urn:x' foo:x='1'/></message>`],
    ['unbound prefix on the stanza itself', `<foo:message/>`],
    ['prefix out of scope after its element closed', `<message><a xmlns:foo='urn:foo'/><foo:b/></message>`],
    ['prefix declared on an earlier stanza', `<message xmlns:foo='urn:foo'/><message><foo:b/></message>`],
    ['empty prefix', `<message><:b/></message>`],
    ['two colons', `<message xmlns:a='urn:a'><a:b:c/></message>`],
    ['empty local name', `<message xmlns:a='urn:a'><a:/></message>`],
    ['element with the xmlns prefix', `<message><xmlns:b/></message>`],
    ['undeclaring a prefix (XML 1.0)', `<message xmlns:a=''><a:b/></message>`],
    ['rebinding xml', `<message xmlns:xml='urn:other'/>`],
    ['declaring xmlns', `<message xmlns:xmlns='http://www.w3.org/2000/xmlns/'/>`],
    ['binding another prefix to the xmlns namespace', `<message xmlns:a='http://www.w3.org/2000/xmlns/'/>`],
    ['the same expanded attribute name twice', `<message xmlns:a='urn:u' xmlns:b='urn:u'><x a:y='1' b:y='2'/></message>`],
  ];
  for (const [name, input] of bad) {
    const r = run([HEADER, `<presence/>`, input, `<iq/>`]);
    t.equal(r.error?.condition, 'not-well-formed', name);
    const before = name === 'prefix declared on an earlier stanza' ? [`<presence/>`, `<message xmlns:foo='urn:foo'/>`] : [`<presence/>`];
    t.same(r.elements.map((el) => el.raw), before, `${name}: nothing emitted from it or after it`);
  }
  const good = [
    `<message xmlns:foo='urn:foo'><foo:bar foo:x='1'/></message>`,
    `<message><a xmlns:foo='urn:foo'><foo:b><foo:c/></foo:b></a></message>`,
    `<message><body xml:lang='de'>x</body></message>`,
    `<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>`,
    `<message xmlns:a='urn:a'><x a:y='1' y='2'/><a:x xmlns:a='urn:shadow'/></message>`,
    `<message xmlns:xml='http://www.w3.org/XML/1998/namespace'/>`,
    `<foo:message xmlns:foo='jabber:client'/>`,
  ];
  for (const input of good) {
    const r = run([HEADER, input]);
    t.equal(r.error, undefined, input);
    t.equal(r.elements[0]?.raw, input);
  }
  const header = `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' xmlns:ext='urn:ext' xml:lang='en'>`;
  const r = run([header, `<message><ext:x ext:y='1'/></message>`]);
  t.equal(r.error, undefined, 'prefixes declared on the stream header are in scope for every stanza');
  t.equal(r.elements.length, 1);
  t.equal(run([`<stream:stream xmlns='jabber:client' foo:x='1' xmlns:stream='http://etherx.jabber.org/streams'>`]).error?.condition, 'not-well-formed', 'an unbound prefix on the header');
  t.equal(run([`<stream:stream xmlns='jabber:client'>`]).error?.condition, 'invalid-namespace', 'a header without the stream namespace');
  t.equal(run([`<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>`]).error?.condition, 'invalid-namespace', 'a header in the wrong namespace');
  const other = run([HEADER, `<s:stream xmlns:s='http://etherx.jabber.org/streams'><message/>`]);
  t.equal(other.error?.condition, 'unsupported-stanza-type', 'a stream open tag as a top-level child, whatever its prefix');
});
