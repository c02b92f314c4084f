import t from 'tap';
import { addH, diffH, parseH } from '../../src/sm/counter.ts';
import { OutboundQueue } from '../../src/sm/outbound-queue.ts';

const MAX = 2 ** 32 - 1;

t.test('h arithmetic wraps at 2^32 (XEP-0198 §4)', async (t) => {
  t.equal(addH(MAX, 1), 0);
  t.equal(addH(MAX - 1, 3), 1);
  t.equal(diffH(2, MAX), 3, 'distance across the wrap');
  t.equal(diffH(5, 5), 0);
  t.equal(diffH(4, 5), MAX, 'behind is a huge distance, never negative');
});

t.test('parseH accepts only 32-bit unsigned integers', async (t) => {
  t.equal(parseH('0'), 0);
  t.equal(parseH(String(MAX)), MAX);
  t.equal(parseH(String(MAX + 1)), undefined);
  t.equal(parseH('-1'), undefined);
  t.equal(parseH('1e3'), undefined);
  t.equal(parseH(''), undefined);
  t.equal(parseH(undefined), undefined);
});

t.test('the unacked queue acks across the wrap', async (t) => {
  const q = new OutboundQueue(MAX - 2);
  for (let i = 0; i < 6; i++) q.push({ xml: `<message id='${i}'/>`, receivedAt: i });
  t.equal(q.sent, 3, 'sent wrapped past 2^32');
  t.equal(q.ack(0), 3, 'h=0 after the wrap covers three stanzas');
  t.same(q.unacked().map((s) => s.receivedAt), [3, 4, 5]);
  t.equal(q.ack(4), -1, 'more than sent is refused');
  t.equal(q.length, 3, 'and changes nothing');
  t.equal(q.ack(0), 0, 'a repeated h acks nothing');
  t.equal(q.ack(3), 3);
  t.equal(q.length, 0);
  t.equal(q.acked, 3);
});

t.test('an old h (behind the last ack) is refused, not treated as a wrap', async (t) => {
  const q = new OutboundQueue(10);
  q.push({ xml: '<iq/>', receivedAt: 0 });
  t.equal(q.ack(9), -1);
  t.equal(q.length, 1);
});

t.test('drain empties the queue and advances acked', async (t) => {
  const q = new OutboundQueue(MAX);
  q.push({ xml: 'a', receivedAt: 1 });
  q.push({ xml: 'b', receivedAt: 2 });
  t.same(q.drain().map((s) => s.xml), ['a', 'b']);
  t.equal(q.length, 0);
  t.equal(q.acked, 1);
});

t.test('a long queue acked in steps stays correct after compaction', async (t) => {
  const q = new OutboundQueue();
  for (let i = 0; i < 5000; i++) q.push({ xml: String(i), receivedAt: i });
  for (let h = 100; h <= 4000; h += 100) t.equal(q.ack(h), 100);
  t.equal(q.length, 1000);
  t.equal(q.unacked()[0]!.xml, '4000');
});
