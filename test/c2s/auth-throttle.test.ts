import t from 'tap';
import pino from 'pino';
import { AuthThrottle, MAX_THROTTLE_ENTRIES } from '../../src/c2s/auth-throttle.ts';

/** A throttle on a hand-driven clock, logging into `lines`. */
function throttle(opts: { maxFailures?: number; periodMs?: number; maxEntries?: number } = {}) {
  const clock = { now: 1_000_000 };
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const th = new AuthThrottle({ maxFailures: 3, periodMs: 30_000, log, now: () => clock.now, ...opts });
  return { th, clock, lines };
}

t.test('maxFailures failures within the period throttle the address and the account for the period', async (t) => {
  const { th, clock, lines } = throttle();
  th.failed('192.0.2.1', 'alice@proxy.test');
  clock.now += 1000;
  th.failed('192.0.2.1', 'alice@proxy.test');
  t.equal(th.check('192.0.2.1', 'alice@proxy.test'), undefined, 'two failures: not yet');
  clock.now += 1000;
  th.failed('192.0.2.1', 'alice@proxy.test');
  t.equal(th.check('192.0.2.1', 'bob@proxy.test'), 'address', 'the address, whatever the account');
  t.equal(th.check('198.51.100.7', 'alice@proxy.test'), 'account', 'the account, from anywhere');
  t.equal(th.check('198.51.100.7', 'bob@proxy.test'), undefined, 'others are not affected');

  const warns = lines.filter((l) => l.level === 40);
  t.equal(warns.length, 2, 'one warn line per key becoming throttled');
  t.match(warns, [{ address: '192.0.2.1' }, { account: 'alice@proxy.test' }]);
  th.failed('192.0.2.1', 'alice@proxy.test');
  t.equal(lines.filter((l) => l.level === 40).length, 2, 'no more lines while throttled');

  clock.now += 29_999 - 1000;
  t.equal(th.check('192.0.2.1', 'bob@proxy.test'), 'address', 'still throttled just before the period ends');
  clock.now += 1001;
  t.equal(th.check('192.0.2.1', 'alice@proxy.test'), undefined, 'free again a period after the failure that reached the limit');
  t.same(th.size, { addresses: 0, accounts: 0 }, 'expired entries are deleted when met');
});

t.test('failures further apart than the period do not add up', async (t) => {
  const { th, clock } = throttle();
  for (let i = 0; i < 10; i++) {
    th.failed('192.0.2.1', 'alice@proxy.test');
    th.failed('192.0.2.1', 'alice@proxy.test');
    t.equal(th.check('192.0.2.1', 'alice@proxy.test'), undefined);
    clock.now += 30_000;
  }
});

t.test('a period of 0 turns the throttle off', async (t) => {
  const { th } = throttle({ periodMs: 0 });
  for (let i = 0; i < 10; i++) th.failed('192.0.2.1', 'alice@proxy.test');
  t.equal(th.check('192.0.2.1', 'alice@proxy.test'), undefined);
  t.same(th.size, { addresses: 0, accounts: 0 });
});

t.test('each map is bounded: the key that failed longest ago is evicted', async (t) => {
  t.equal(MAX_THROTTLE_ENTRIES, 10_000, 'the documented default');
  const { th, clock } = throttle({ maxFailures: 2, maxEntries: 3 });
  th.failed('10.0.0.1', 'a@x');
  th.failed('10.0.0.1', 'a@x'); // throttled
  clock.now += 1;
  th.failed('10.0.0.2', 'b@x');
  th.failed('10.0.0.3', 'c@x');
  t.equal(th.check('10.0.0.1', 'z@x'), 'address');
  th.failed('10.0.0.2', 'b@x'); // moves to the end
  th.failed('10.0.0.4', 'd@x'); // evicts the oldest: 10.0.0.1
  t.same(th.size, { addresses: 3, accounts: 3 });
  t.equal(th.check('10.0.0.1', 'z@x'), undefined, 'evicted');
  t.equal(th.check('10.0.0.2', 'z@x'), 'address', 'a recently failed key is kept');
  for (let i = 0; i < 1000; i++) th.failed(`10.1.${i >> 8}.${i & 255}`, `u${i}@x`);
  t.same(th.size, { addresses: 3, accounts: 3 }, 'never more than maxEntries');
});
