import t from 'tap';
import { DueQueue } from '../../src/muc/due-queue.ts';
import { prng } from './fake-timers.ts';

t.test('items come out by due time, ties first in first out', async (t) => {
  const q = new DueQueue<string>();
  q.push('c', 30);
  q.push('a1', 10);
  q.push('b', 20);
  q.push('a2', 10);
  q.push('a3', 10);
  t.equal(q.size, 5);
  t.equal(q.peek()?.item, 'a1', 'peek leaves it in place');
  const out: string[] = [];
  for (let ticket = q.pop(); ticket; ticket = q.pop()) out.push(ticket.item);
  t.same(out, ['a1', 'a2', 'a3', 'b', 'c']);
  t.equal(q.size, 0);
  t.equal(q.peek(), undefined);
});

t.test('removed items are skipped; removing twice or after the pop counts once', async (t) => {
  const q = new DueQueue<string>();
  const a = q.push('a', 1);
  const b = q.push('b', 2);
  q.push('c', 3);
  q.remove(a);
  q.remove(a);
  t.equal(q.size, 2);
  t.equal(q.pop()?.item, 'b');
  q.remove(b); // already popped
  t.equal(q.size, 1);
  t.equal(q.pop()?.item, 'c');
  t.equal(q.size, 0);
});

t.test('against a sorted list, with many removals (compaction included)', async (t) => {
  const rand = prng(410);
  const q = new DueQueue<number>();
  const live = new Map<number, { dueAt: number; seq: number; ticket: ReturnType<typeof q.push> }>();
  let n = 0;
  for (let step = 0; step < 20_000; step++) {
    const r = rand();
    if (r < 0.5) {
      const dueAt = Math.floor(rand() * 1000);
      const id = n++;
      live.set(id, { dueAt, seq: id, ticket: q.push(id, dueAt) });
    } else if (r < 0.85 && live.size > 0) {
      const ids = [...live.keys()];
      const id = ids[Math.floor(rand() * ids.length)]!;
      q.remove(live.get(id)!.ticket);
      live.delete(id);
    } else {
      const expected = [...live.values()].sort((x, y) => x.dueAt - y.dueAt || x.seq - y.seq)[0];
      const got = q.pop();
      if (got?.item !== expected?.ticket.item) {
        t.fail(`step ${step}: popped ${got?.item}, expected ${expected?.ticket.item}`);
        return;
      }
      if (expected) live.delete(expected.ticket.item);
    }
    if (q.size !== live.size) {
      t.fail(`step ${step}: size ${q.size}, expected ${live.size}`);
      return;
    }
  }
  const rest: number[] = [];
  for (let ticket = q.pop(); ticket; ticket = q.pop()) rest.push(ticket.item);
  t.same(rest, [...live.values()].sort((x, y) => x.dueAt - y.dueAt || x.seq - y.seq).map((e) => e.ticket.item));
});

t.test('clear empties it', async (t) => {
  const q = new DueQueue<string>();
  const a = q.push('a', 1);
  q.push('b', 2);
  q.clear();
  t.equal(q.size, 0);
  t.equal(q.pop(), undefined);
  q.remove(a); // harmless
  t.equal(q.size, 0);
});

t.test('mass removal (the heap is rebuilt without the removed) keeps the order of the rest', async (t) => {
  const q = new DueQueue<number>();
  const tickets = [];
  for (let i = 0; i < 3000; i++) tickets.push(q.push(i, (i * 7919) % 3000));
  for (let i = 0; i < 3000; i++) if (i % 3 !== 0) q.remove(tickets[i]!);
  t.equal(q.size, 1000);
  const out: number[] = [];
  for (let ticket = q.pop(); ticket; ticket = q.pop()) out.push(ticket.item);
  const expected = tickets.filter((_, i) => i % 3 === 0).sort((a, b) => a.dueAt - b.dueAt || a.seq - b.seq).map((x) => x.item);
  t.same(out, expected);
});
