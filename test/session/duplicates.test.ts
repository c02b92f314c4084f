import t from 'tap';
import { DuplicateWindow, duplicateKey } from '../../src/session/duplicates.ts';
import { TopLevel } from '../../src/xml/top-level.ts';

function el(raw: string): TopLevel {
  const name = /^<([^\s/>]+)/.exec(raw)![1]!;
  const attrs: Record<string, string> = {};
  const tag = raw.slice(0, raw.indexOf('>'));
  for (const m of tag.matchAll(/\s([\w:-]+)=(?:'([^']*)'|"([^"]*)")/g)) attrs[m[1]!] = m[2] ?? m[3]!;
  return new TopLevel(name, attrs, raw);
}

const msg = (from: string, id: string | undefined, body: string, extra = '') =>
  el(`<message from='${from}' to='bob@x/b' type='chat'${id === undefined ? '' : ` id='${id}'`}><body>${body}</body>${extra}</message>`);

t.test('the second copy of a message (same sender, id and body) is seen, other messages are not', async (t) => {
  const w = new DuplicateWindow(8);
  t.equal(w.seen(msg('alice@x/a', 'm1', 'hi')), false, 'first copy passes');
  t.equal(w.seen(msg('alice@x/a', 'm1', 'hi', "<delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/>")), true, 'the copy re-delivered from offline storage (with a delay stamp) is a duplicate');
  t.equal(w.seen(msg('alice@x/other', 'm1', 'hi')), false, 'another resource of the sender');
  t.equal(w.seen(msg('alice@x/a', 'm2', 'hi')), false, 'another id');
  t.equal(w.seen(msg('alice@x/a', 'm1', 'hello')), false, 'a client that reuses an id for a different message loses nothing');
  t.equal(w.seen(msg('alice@x/a', undefined, 'hi')), false, 'no id: never dropped');
  t.equal(w.seen(msg('alice@x/a', undefined, 'hi')), false, 'no id, twice: still never dropped');
});

t.test('origin-id stands in for a missing id; errors and archive results are never duplicates', async (t) => {
  const w = new DuplicateWindow(8);
  const origin = "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/>";
  t.equal(w.seen(msg('alice@x/a', undefined, 'hi', origin)), false);
  t.equal(w.seen(msg('alice@x/a', undefined, 'hi', origin)), true, 'keyed by origin-id');
  const error = el(`<message from='alice@x/a' type='error' id='e1'><body>x</body></message>`);
  t.equal(duplicateKey(error), undefined);
  const mam = el(`<message to='bob@x/b'><result xmlns='urn:xmpp:mam:2' queryid='q' id='1'><forwarded xmlns='urn:xmpp:forward:0'><message from='alice@x/a' id='m1'><body>hi</body></message></forwarded></result></message>`);
  t.equal(duplicateKey(mam), undefined, 'results of the client\'s own archive query');
  const marked = (stamp: string) =>
    el(`<message from='alice@x/a' to='bob@x/b' type='chat' id='m9'><archived by='bob@x' id='${stamp}' xmlns='urn:xmpp:mam:tmp'/><stanza-id by='bob@x' id='${stamp}' xmlns='urn:xmpp:sid:0'/><body>hi</body></message>`);
  t.equal(w.seen(marked('1')), false);
  t.equal(w.seen(marked('2')), true, "ejabberd's archived mark does not make a message an archive result; another archive id, same message");
});

t.test('carbons are keyed by the message they carry', async (t) => {
  const carbon = (dir: string) =>
    el(`<message from='bob@x' to='bob@x/b' type='chat'><${dir} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' from='alice@x/a' to='bob@x/c' id='m1' type='chat'><body>hi</body></message></forwarded></${dir}></message>`);
  const w = new DuplicateWindow(8);
  t.equal(w.seen(carbon('received')), false);
  t.equal(w.seen(carbon('received')), true, 'the same received carbon twice');
  t.equal(w.seen(carbon('sent')), false, 'a sent carbon of the same message is another thing');
  t.equal(w.seen(msg('alice@x/a', 'm1', 'hi')), false, 'and so is the message itself');
});

t.test('the window is bounded: the oldest key goes first', async (t) => {
  const w = new DuplicateWindow(3);
  for (const id of ['1', '2', '3', '4']) w.seen(msg('a@x/r', id, 'b'));
  t.equal(w.seen(msg('a@x/r', '1', 'b')), false, 'evicted');
  t.equal(w.seen(msg('a@x/r', '4', 'b')), true, 'still remembered');
  const off = new DuplicateWindow(0);
  off.seen(msg('a@x/r', '1', 'b'));
  t.equal(off.seen(msg('a@x/r', '1', 'b')), false, 'size 0 turns it off');
});
