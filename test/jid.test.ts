import t from 'tap';
import { bareJidOf, prepJid, prepLocalpart, splitJid } from '../src/jid.ts';

t.test('RFC 7622 localpart: case mapped, width mapped, NFC', async (t) => {
  t.equal(prepLocalpart('Alice'), 'alice');
  t.equal(prepLocalpart('ＡＬＩＣＥ'), 'alice', 'fullwidth letters map to their ASCII decompositions');
  t.equal(prepLocalpart('Ame\u0301lie'), 'am\u00e9lie', 'combining sequence composed (NFC)');
  t.equal(prepLocalpart('ÄNNE'), 'änne');
});

t.test('bare and full JIDs compare in their prepared form; resources stay case-sensitive', async (t) => {
  t.equal(bareJidOf('Alice@Proxy.Test/Phone'), 'alice@proxy.test');
  t.equal(bareJidOf('Proxy.Test.'), 'proxy.test');
  t.same(splitJid('Alice@proxy.test/Phone'), { bare: 'alice@proxy.test', resource: 'Phone' });
  t.equal(prepJid('ALICE@PROXY.TEST/Phone'), 'alice@proxy.test/Phone');
  t.equal(prepJid('alice@proxy.test/a/b'), 'alice@proxy.test/a/b', 'a resource may contain a slash');
});
