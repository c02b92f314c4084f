import t from 'tap';
import { Pacer } from '../../src/muc/pacer.ts';
import { FakeTimers } from './fake-timers.ts';

function pacer(perSecond: number, burst = 1) {
  const clock = new FakeTimers();
  const released: Array<[number, string]> = [];
  const p = new Pacer<string>(perSecond, burst, clock, (item) => void released.push([clock.now(), item]));
  return { clock, released, p };
}

t.test('items come out at their due time, in due order, when tokens allow', async (t) => {
  const { clock, released, p } = pacer(Infinity);
  p.add('late', 300);
  p.add('early', 100);
  p.add('early too', 100);
  t.equal(p.size, 3);
  await clock.advance(99);
  t.same(released, []);
  await clock.advance(1000);
  t.same(released, [[100, 'early'], [100, 'early too'], [300, 'late']]);
  t.equal(p.rateLimited, 0);
  t.equal(clock.pending, 0, 'no timer once empty');
});

t.test('a fractional rate stays exact: 3 a second, 1000 items, never more than 3 in any second', async (t) => {
  const { clock, released, p } = pacer(3);
  for (let i = 0; i < 1000; i++) p.add(`i${i}`, 0);
  await clock.advance(400_000);
  t.equal(released.length, 1000);
  const at = released.map(([x]) => x);
  t.ok(at.every((x, i) => i < 3 || x - at[i - 3]! >= 1000), 'at most 3 in any second');
  t.ok(at[999]! <= 999 * (1000 / 3) + 1, `no drift: the last at ${at[999]} ms`);
  t.equal(p.rateLimited, 999);
});

t.test('a burst goes out at once after a quiet spell, then the steady rate', async (t) => {
  const { clock, released, p } = pacer(2, 4);
  for (let i = 0; i < 6; i++) p.add(`a${i}`, 0);
  await clock.advance(10_000);
  t.same(released.map(([x]) => x), [0, 0, 0, 0, 500, 1000]);
  released.length = 0;
  for (let i = 0; i < 5; i++) p.add(`b${i}`, 20_000);
  await clock.advance(20_000);
  t.same(released.map(([x]) => x - 20_000), [0, 0, 0, 0, 500], 'the bucket refilled meanwhile');
});

t.test('a removed item is never released; removing the last clears the timer; clear drops all', async (t) => {
  const { clock, released, p } = pacer(Infinity);
  const a = p.add('a', 100);
  p.add('b', 200);
  p.remove(a);
  p.remove(a);
  await clock.advance(1000);
  t.same(released, [[200, 'b']]);
  const c = p.add('c', 5000);
  p.remove(c);
  t.equal(clock.pending, 0);
  p.add('d', 100);
  p.add('e', 200);
  p.clear();
  t.equal(p.size, 0);
  t.equal(clock.pending, 0);
  await clock.advance(1000);
  t.equal(released.length, 1);
});

t.test('release may add and remove: an earlier item added from inside goes first', async (t) => {
  const clock = new FakeTimers();
  const released: string[] = [];
  const p: Pacer<string> = new Pacer<string>(Infinity, 1, clock, (item) => {
    released.push(item);
    if (item === 'a') p.add('from a', clock.now() + 10);
  });
  p.add('a', 100);
  p.add('z', 500);
  await clock.advance(1000);
  t.same(released, ['a', 'from a', 'z']);
});

t.test('rate and burst out of range are refused', async (t) => {
  const clock = new FakeTimers();
  for (const [rate, burst] of [[0, 1], [-1, 1], [Number.NaN, 1], [1, 0], [1, 1.5], [1, Infinity]] as const) {
    t.throws(() => new Pacer(rate, burst, clock, () => {}), RangeError, `${rate}/s burst ${burst}`);
  }
});
