/** The unacked queue's byte count (issue 10) stays exact through acks, wraps, compaction and drain. */
import t from 'tap';
import { OutboundQueue } from '../../src/sm/outbound-queue.ts';

const item = (n: number) => ({ xml: 'x'.repeat(n), receivedAt: 0 });

t.test('bytes are those of the unacked stanzas', async (t) => {
  const q = new OutboundQueue(2 ** 32 - 2);
  t.equal(q.bytes, 0);
  q.push(item(10));
  q.push(item(20));
  q.push(item(30));
  t.equal(q.bytes, 60);
  t.equal(q.ack(2 ** 32 - 1), 1);
  t.equal(q.bytes, 50);
  t.equal(q.ack(1), 2, 'acks across the wrap');
  t.equal(q.bytes, 0);
  q.push(item(5));
  t.equal(q.ack(5), -1, 'an ack beyond what was sent changes nothing');
  t.equal(q.bytes, 5);
  t.equal(q.drain().length, 1);
  t.equal(q.bytes, 0, 'drained');
});

t.test('bytes stay exact across compaction', async (t) => {
  const q = new OutboundQueue();
  let expected = 0;
  for (let i = 1; i <= 5000; i++) {
    q.push(item(i % 97));
    expected += i % 97;
  }
  t.equal(q.bytes, expected);
  let acked = 0;
  for (const step of [700, 1300, 1, 999, 1500]) {
    for (let i = acked + 1; i <= acked + step; i++) expected -= i % 97;
    acked += step;
    t.equal(q.ack(acked), step);
    t.equal(q.bytes, expected, `after acking ${acked}`);
  }
  t.equal(q.length, 500);
  const rest = q.unacked();
  t.equal(rest.reduce((sum, s) => sum + s.xml.length, 0), q.bytes, 'matches what is left');
});
