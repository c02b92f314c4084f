import t from 'tap';
import { parsePlain } from '../../src/c2s/sasl-plain.ts';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

t.test('a PLAIN message for this domain gives the prepared account and the password', async (t) => {
  t.same(parsePlain(b64('\0Alice\0pw'), 'proxy.test'), { username: 'alice', password: 'pw' });
  t.same(parsePlain(b64('\0alice@Proxy.Test\0pw'), 'proxy.test'), { username: 'alice', password: 'pw' }, 'bare JID as authcid');
  t.same(parsePlain(b64('alice@proxy.test\0alice\0pw'), 'proxy.test'), { username: 'alice', password: 'pw' }, 'authzid naming the account itself');
  t.same(parsePlain(b64('ALICE@proxy.test/phone\0alice\0pw'), 'proxy.test'), { username: 'alice', password: 'pw' }, '... or one of its full JIDs');
});

t.test('an authzid naming another account: invalid-authzid (RFC 6120 §6.5.6)', async (t) => {
  t.same(parsePlain(b64('bob@proxy.test\0alice\0pw'), 'proxy.test'), { condition: 'invalid-authzid' });
  t.same(parsePlain(b64('alice@other.test\0alice\0pw'), 'proxy.test'), { condition: 'invalid-authzid' }, 'same localpart, another domain');
  t.same(parsePlain(b64('admin\0alice\0pw'), 'proxy.test'), { condition: 'invalid-authzid' }, 'a bare name');
});

t.test('anything else that does not parse: malformed-request (RFC 6120 §6.5.8)', async (t) => {
  for (const [what, payload] of [
    ['empty', ''],
    ['empty response', '='],
    ['two fields', b64('alice\0pw')],
    ['four fields', b64('\0alice\0pw\0x')],
    ['empty password', b64('\0alice\0')],
    ['empty user', b64('\0\0pw')],
    ['another domain in the authcid', b64('\0alice@other.test\0pw')],
  ] as const) {
    t.same(parsePlain(payload, 'proxy.test'), { condition: 'malformed-request' }, what);
  }
});
