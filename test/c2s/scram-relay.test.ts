import t from 'tap';
import { checkClientFirst, relayableMechanisms } from '../../src/c2s/scram-relay.ts';
import { ScramClient } from '../../src/upstream/scram.ts';

const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');
const check = (message: string | Buffer, domain = 'proxy.test') => checkClientFirst(b64(message), domain);
const condition = (message: string | Buffer): string | undefined => {
  const verdict = check(message);
  return 'condition' in verdict ? verdict.condition : undefined;
};
/** Nonces as the clients make them: @xmpp/client 32 hex digits, slixmpp the digits of random.random(). */
const XMPPJS_NONCE = '3f1c0d9a7be24c55a1e6f0b8d2c47e91';
const SLIXMPP_NONCE = '8444218515250481';

t.test('relayableMechanisms: the upstream SCRAM names without -PLUS, in its order', async (t) => {
  const ejabberd = ['DIGEST-MD5', 'PLAIN', 'SCRAM-SHA-512-PLUS', 'SCRAM-SHA-512', 'SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256', 'SCRAM-SHA-1-PLUS', 'SCRAM-SHA-1', 'X-OAUTH2'];
  t.same(relayableMechanisms(ejabberd), ['SCRAM-SHA-512', 'SCRAM-SHA-256', 'SCRAM-SHA-1'], 'ejabberd 23.01');
  t.same(relayableMechanisms(['SCRAM-SHA-1', 'PLAIN']), ['SCRAM-SHA-1'], 'Prosody 0.12');
  t.same(relayableMechanisms(['SCRAM-SHA-224', 'SCRAM-SHA-384']), ['SCRAM-SHA-224', 'SCRAM-SHA-384'], 'the rest of the family');
  t.same(relayableMechanisms(['SCRAM-SHA-256', 'SCRAM-SHA-1', 'SCRAM-SHA-256']), ['SCRAM-SHA-256', 'SCRAM-SHA-1'], 'no duplicates');
  t.same(relayableMechanisms(['scram-sha-1', 'SCRAM-SHA-2', 'SCRAM-SHA-1 ', 'SCRAM-SHA3-512', 'PLAIN', 'EXTERNAL']), [], 'exact names only');
  t.same(relayableMechanisms([]), []);
});

t.test('real client-first-messages are accepted', async (t) => {
  t.same(check(`n,,n=alice,r=${XMPPJS_NONCE}`), { username: 'alice', gs2: 'n' }, '@xmpp/client');
  t.same(check(`y,,n=alice,r=${SLIXMPP_NONCE}`), { username: 'alice', gs2: 'y' }, 'slixmpp on TLS (channel binding, no -PLUS seen)');
  t.same(check(new ScramClient('SCRAM-SHA-256', 'alice', 'pw').clientFirst()), { username: 'alice', gs2: 'n' }, "the proxy's own client");
  t.same(checkClientFirst(`  ${b64(`n,,n=alice,r=${XMPPJS_NONCE}`)}\n`, 'proxy.test'), { username: 'alice', gs2: 'n' }, 'whitespace around the base64');
  t.same(check(`n,,n=alice,r=${XMPPJS_NONCE},x=1,Y=a=b`), { username: 'alice', gs2: 'n' }, 'extensions after the nonce');
});

t.test('the username is the prepared account (RFC 5802 §5.1 saslname, RFC 7622 localpart)', async (t) => {
  t.same(check('n,,n=Alice,r=abc'), { username: 'alice', gs2: 'n' }, 'case-mapped');
  t.same(check('n,,n=Al=2Cice,r=abc'), { username: 'al,ice', gs2: 'n' }, '=2C is a comma');
  t.same(check('n,,n=a=3Db,r=abc'), { username: 'a=b', gs2: 'n' }, '=3D is an equals sign');
  t.same(check('n,,n=a=3D2C,r=abc'), { username: 'a=2c', gs2: 'n' }, 'unescaped once only');
  t.same(check(new ScramClient('SCRAM-SHA-1', 'al,i=ce', 'pw').clientFirst()), { username: 'al,i=ce', gs2: 'n' }, 'as the SCRAM client escapes');
  t.same(check('n,,n=ÉLODIE,r=abc'), { username: 'élodie', gs2: 'n' }, 'non-ASCII');
  t.same(check('n,,n=alice@proxy.test,r=abc'), { username: 'alice', gs2: 'n' }, 'a bare JID of this domain');
  t.same(check('n,,n=Alice@PROXY.test.,r=abc'), { username: 'alice', gs2: 'n' }, '... with the domain prepared');
  for (const [what, message] of [
    ['another domain', 'n,,n=alice@other.test,r=abc'],
    ['an empty localpart', 'n,,n=@proxy.test,r=abc'],
    ['two @', 'n,,n=a@b@proxy.test,r=abc'],
  ] as const) {
    t.same(check(message), { condition: 'malformed-request', text: 'The SCRAM username is not an account of this domain.' }, what);
  }
  for (const [what, message] of [
    ['no n=', 'n,,r=abc'],
    ['empty n=', 'n,,n=,r=abc'],
    ['a bare =', 'n,,n=al=ice,r=abc'],
    ['an unknown escape', 'n,,n=al=2Dice,r=abc'],
    ['a lowercase escape', 'n,,n=al=2cice,r=abc'],
    ['a cut escape', 'n,,n=alice=2,r=abc'],
    ['n= after r=', 'n,,r=abc,n=alice'],
  ] as const) {
    t.same(check(message), { condition: 'malformed-request', text: 'Not a valid SCRAM client-first-message.' }, what);
  }
});

t.test('gs2-cbind-flag: n or y; p= (channel binding) is a clean malformed-request', async (t) => {
  t.same(check(`p=tls-unique,,n=alice,r=${SLIXMPP_NONCE}`), {
    condition: 'malformed-request',
    text: 'Channel binding cannot cross this proxy: TLS ends at the proxy. Use SCRAM without -PLUS.',
  }, 'slixmpp on a -PLUS mechanism');
  t.equal(condition('p=tls-exporter,a=alice@proxy.test,n=alice,r=abc'), 'malformed-request', 'tls-exporter, with an authzid');
  for (const flag of ['', 'N', 'Y', 'x', 'p', 'n=', ' n']) {
    t.same(check(`${flag},,n=alice,r=abc`), { condition: 'malformed-request', text: 'Not a valid SCRAM client-first-message.' }, `flag ${JSON.stringify(flag)}`);
  }
  t.equal(condition('n'), 'malformed-request', 'the flag alone');
  t.equal(condition('n,'), 'malformed-request', 'no second comma');
});

t.test('authzid: only the authenticating account itself (RFC 6120 §6.5.6)', async (t) => {
  t.same(check(`n,a=alice@proxy.test,n=alice,r=${XMPPJS_NONCE}`), { username: 'alice', gs2: 'n' }, '@xmpp/client with an authzid');
  t.same(check(`y,a=alice@proxy.test,n=alice,r=${SLIXMPP_NONCE}`), { username: 'alice', gs2: 'y' }, 'slixmpp with an authzid');
  t.same(check('n,a=ALICE@Proxy.Test/phone,n=Alice,r=abc'), { username: 'alice', gs2: 'n' }, 'a full JID of the account, prepared');
  t.same(check('n,a=alice@proxy.test,n=alice@proxy.test,r=abc'), { username: 'alice', gs2: 'n' }, 'bare JID in both');
  t.same(check('n,a=al=2Cice@proxy.test,n=al=2Cice,r=abc'), { username: 'al,ice', gs2: 'n' }, 'escaped in both');
  const refused = { condition: 'invalid-authzid', text: 'The authorization identity may only name the authenticating account.' };
  for (const [what, authzid] of [
    ['another account', 'bob@proxy.test'],
    ['the same localpart on another domain', 'alice@other.test'],
    ['a bare name', 'alice'],
    ['the domain', 'proxy.test'],
    ['no localpart', '@proxy.test'],
    ['an empty JID with a resource', '/alice'],
  ] as const) {
    t.same(check(`n,a=${authzid},n=alice,r=abc`), refused, what);
  }
  for (const [what, field] of [
    ['empty a=', 'a='],
    ['a bad escape', 'a=alice=40proxy.test'],
    ['not a=', 'z=alice@proxy.test'],
    ['no attribute', 'alice@proxy.test'],
  ] as const) {
    t.equal(condition(`n,${field},n=alice,r=abc`), 'malformed-request', what);
  }
  t.equal(condition('n,a=bob@proxy.test,n=alice'), 'malformed-request', 'a malformed message is malformed first');
});

t.test('the nonce: required, RFC 5802 printable', async (t) => {
  t.same(check('n,,n=alice,r=!"#+-~'), { username: 'alice', gs2: 'n' }, 'the printable range');
  for (const [what, message] of [
    ['no r=', 'n,,n=alice'],
    ['no r= but an extension', 'n,,n=alice,x=abc'],
    ['empty r=', 'n,,n=alice,r='],
    ['a space', 'n,,n=alice,r=ab c'],
    ['a control character', 'n,,n=alice,r=ab\x7f'],
    ['non-ASCII', 'n,,n=alice,r=abé'],
  ] as const) {
    t.equal(condition(message), 'malformed-request', what);
  }
});

t.test('extensions: m= refused, others only as letter=value', async (t) => {
  t.same(check('n,,m=foo,n=alice,r=abc'), { condition: 'malformed-request', text: 'Mandatory SCRAM extensions are not supported.' }, 'm= (RFC 5802 §5.1)');
  for (const [what, message] of [
    ['no =', 'n,,n=alice,r=abc,junk'],
    ['a trailing comma', 'n,,n=alice,r=abc,'],
    ['a two-letter name', 'n,,n=alice,r=abc,xy=1'],
    ['an empty value', 'n,,n=alice,r=abc,x='],
    ['a digit name', 'n,,n=alice,r=abc,1=x'],
  ] as const) {
    t.equal(condition(message), 'malformed-request', what);
  }
});

t.test('encoding and size: malformed-request (RFC 6120 §6.5.8)', async (t) => {
  const good = `n,,n=alice,r=${XMPPJS_NONCE}`;
  for (const [what, payload] of [
    ['no initial response', ''],
    ['an empty response', '='],
    ['only whitespace', ' \n'],
    ['not the base64 alphabet', `${b64(good).slice(0, -4)}*AAA`],
    ['base64url', b64('n,,n=alice,r=>>>?').replace(/\+/g, '-').replace(/\//g, '_')],
    ['missing padding', b64('n,,n=alice,r=abc').replace(/=+$/, '')],
    ['whitespace inside', `${b64(good).slice(0, 8)} ${b64(good).slice(8)}`],
    ['a line break inside', `${b64(good).slice(0, 8)}\n${b64(good).slice(8)}`],
    ['not UTF-8', b64(Buffer.concat([Buffer.from('n,,n=al'), Buffer.from([0xc3, 0x28]), Buffer.from('ice,r=abc')]))],
    ['a NUL', b64('n,,n=al\0ice,r=abc')],
    ['a NUL in an extension', b64('n,,n=alice,r=abc,x=\0')],
    ['a byte order mark', b64('\ufeffn,,n=alice,r=abc')],
    ['over 4096 bytes', b64(`${good},x=${'a'.repeat(4096)}`)],
    ['a huge text', 'QUFB'.repeat(100_000)],
  ] as const) {
    t.same(checkClientFirst(payload, 'proxy.test'), { condition: 'malformed-request', text: 'Not a valid SCRAM client-first-message.' }, what);
  }
  const atLimit = `n,,n=alice,r=abc,x=${'a'.repeat(4096 - 'n,,n=alice,r=abc,x='.length)}`;
  t.equal(Buffer.byteLength(atLimit), 4096);
  t.same(check(atLimit), { username: 'alice', gs2: 'n' }, '4096 bytes is allowed');
  t.equal(condition(`${atLimit}a`), 'malformed-request', 'one more is not');
});

t.test('a refusal text never echoes the input', async (t) => {
  for (const message of ['p=secret-cb,,n=alice,r=abc', 'n,a=secret@proxy.test,n=alice,r=abc', 'n,,n=secret@other.test,r=abc', 'n,,m=secret,n=alice,r=abc']) {
    const verdict = check(message);
    t.ok('text' in verdict && !verdict.text.includes('secret'), message);
  }
});
