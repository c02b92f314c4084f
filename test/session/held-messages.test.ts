/**
 * Held messages (design §4.3) are bounded per account, in time and proxy-wide (issue 10).
 * The clock is a fake one: `receivedAt` and `now()` are plain numbers.
 */
import t from 'tap';
import { HeldMessages } from '../../src/session/held-messages.ts';

const DAY = 86400_000;

/** A message of exactly `n` characters (n ≥ 40) with a recognizable body. */
const msg = (body: string, receivedAt: number, n = 40) => {
  const xml = `<message><body>${body}</body></message>`;
  return { xml: xml + ' '.repeat(Math.max(0, n - xml.length)), receivedAt };
};
const bodies = (list: Array<{ xml: string }>) => list.map((s) => /<body>([^<]*)</.exec(s.xml)![1]);

function clock(start = 1_000 * DAY) {
  const c = { now: start, fn: () => c.now };
  return c;
}

t.test('per account: the oldest go first, counted; taking empties the account', async (t) => {
  const c = clock();
  const held = new HeldMessages(2, { now: c.fn });
  t.ok(held.hold('a@x', msg('1', c.now)));
  t.ok(held.hold('a@x', msg('2', c.now)));
  t.notOk(held.hold('a@x', msg('3', c.now)), 'had to drop one');
  t.equal(held.dropped, 1);
  t.equal(held.count('a@x'), 2);
  t.same(bodies(held.take('a@x')), ['2', '3']);
  t.equal(held.count('a@x'), 0);
  t.equal(held.accounts, 0);
  t.equal(held.size, 0);
  t.equal(held.bytes, 0);
});

t.test('nothing is kept with maxPerAccount 0', async (t) => {
  const held = new HeldMessages(0);
  t.notOk(held.hold('a@x', msg('1', Date.now())));
  t.equal(held.dropped, 1);
  t.equal(held.size, 0);
});

t.test('messages older than the TTL are not delivered', async (t) => {
  const c = clock();
  const held = new HeldMessages(100, { ttlMs: 7 * DAY, now: c.fn });
  held.hold('a@x', msg('old', c.now - 6 * DAY));
  held.hold('a@x', msg('new', c.now));
  t.notOk(held.hold('a@x', msg('too old already', c.now - 8 * DAY)), 'expired on arrival: not kept');
  t.equal(held.droppedExpired, 1);
  c.now += 2 * DAY; // 'old' is 8 days old now, 'new' 2
  t.equal(held.count('a@x'), 1, 'count drops the expired');
  t.equal(held.droppedExpired, 2);
  held.hold('a@x', msg('older', c.now - 6.5 * DAY));
  c.now += DAY - 1000; // 'older' is now 7.5 days old
  t.same(bodies(held.take('a@x')), ['new'], 'take drops the expired');
  t.equal(held.droppedExpired, 3);
  t.equal(held.dropped, 3);
  t.equal(held.bytes, 0);
  t.equal(held.accounts, 0);
});

t.test('an account never logged into again loses its expired messages (lazy sweep, no timer)', async (t) => {
  const c = clock();
  const held = new HeldMessages(100, { ttlMs: 7 * DAY, now: c.fn });
  for (let i = 0; i < 10; i++) held.hold(`gone${i}@x`, msg(`m${i}`, c.now));
  t.equal(held.accounts, 10);
  c.now += 8 * DAY;
  // Any later use (here another account's message) sweeps everything, at most once an hour.
  held.hold('b@x', msg('fresh', c.now));
  t.equal(held.accounts, 1, 'empty accounts are forgotten');
  t.equal(held.size, 1);
  t.equal(held.droppedExpired, 10);
  t.equal(held.bytes, 40);
  t.equal(held.sweep(), 0, 'nothing left to expire');
});

t.test('the sweep runs at most once an hour', async (t) => {
  const c = clock();
  const held = new HeldMessages(100, { ttlMs: 7 * DAY, now: c.fn });
  held.hold('a@x', msg('1', c.now - 7 * DAY + 30 * 60_000)); // expires in 30 min
  c.now += 40 * 60_000;
  held.hold('b@x', msg('2', c.now));
  t.equal(held.accounts, 2, 'expired, but the last sweep was 40 min ago');
  c.now += 20 * 60_000;
  held.count('b@x');
  t.equal(held.accounts, 1, 'an hour after the last sweep, the next call sweeps');
  t.equal(held.droppedExpired, 1);
});

t.test('proxy-wide: past maxBytes the oldest held go first, whatever their account', async (t) => {
  const c = clock();
  const held = new HeldMessages(100, { maxBytes: 200, now: c.fn });
  t.ok(held.hold('a@x', msg('a1', c.now)));
  t.ok(held.hold('b@x', msg('b1', c.now)));
  t.ok(held.hold('a@x', msg('a2', c.now)));
  t.ok(held.hold('c@x', msg('c1', c.now)));
  t.ok(held.hold('b@x', msg('b2', c.now)));
  t.equal(held.bytes, 200);
  t.notOk(held.hold('c@x', msg('c2', c.now)), 'over the proxy-wide size');
  t.equal(held.droppedOverBytes, 1);
  t.same(bodies(held.take('a@x')), ['a2'], "a1 was the oldest held: gone");
  // Held now: b1 c1 b2 c2 (160).
  t.notOk(held.hold('d@x', msg('d1', c.now, 100)), 'a larger one pushes out two');
  t.equal(held.droppedOverBytes, 3);
  t.same(bodies(held.take('b@x')), ['b2'], 'b1 and c1 were the oldest left');
  t.same(bodies(held.take('c@x')), ['c2']);
  t.same(bodies(held.take('d@x')), ['d1']);
  t.equal(held.dropped, 3);
  t.equal(held.bytes, 0);
  t.equal(held.accounts, 0);
});

t.test('a message larger than the whole limit is not kept', async (t) => {
  const c = clock();
  const held = new HeldMessages(100, { maxBytes: 100, now: c.fn });
  held.hold('a@x', msg('small', c.now));
  t.notOk(held.hold('a@x', msg('huge', c.now, 101)));
  t.equal(held.size, 0, 'the older one went first, then this one');
  t.equal(held.accounts, 0);
  t.equal(held.droppedOverBytes, 2);
});

t.test('taken and expired entries do not confuse the proxy-wide order (lazy deletion, compaction)', async (t) => {
  const c = clock();
  const held = new HeldMessages(10, { maxBytes: 40 * 50, now: c.fn });
  // Many accounts come and go: their entries die in the proxy-wide order and are compacted away.
  for (let i = 0; i < 5000; i++) {
    held.hold(`u${i}@x`, msg(`m${i}`, c.now));
    if (i % 2 === 0) held.take(`u${i}@x`);
  }
  t.equal(held.size, 50, 'limited to 50 by size');
  t.equal(held.bytes, 2000);
  t.equal(held.count('u4999@x'), 1);
  t.equal(held.count('u4901@x'), 1, 'the 50 newest odd ones are held');
  t.equal(held.count('u4899@x'), 0);
  held.hold('z@x', msg('z', c.now));
  t.equal(held.count('u4901@x'), 0, 'and the next to go is the oldest of them');
  t.equal(held.count('u4903@x'), 1);
  t.equal(held.accounts, 50);
});

t.test('defaults come from the configuration: 7 days, 64 MiB', async (t) => {
  const c = clock();
  const held = new HeldMessages(1000, { now: c.fn });
  held.hold('a@x', msg('1', c.now - 7 * DAY + 1000));
  held.hold('a@x', msg('2', c.now, 32 * 1024 * 1024));
  t.equal(held.count('a@x'), 2);
  c.now += 2000;
  t.equal(held.count('a@x'), 1, 'past 7 days');
  held.hold('b@x', msg('3', c.now, 32 * 1024 * 1024 + 1));
  t.equal(held.count('a@x'), 0, 'past 64 MiB');
  t.equal(held.count('b@x'), 1);
});
