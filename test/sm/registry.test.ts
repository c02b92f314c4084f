import t from 'tap';
import { SessionRegistry } from '../../src/sm/registry.ts';

t.test('ids are unguessable and bound to the account', async (t) => {
  const reg = new SessionRegistry<{ bareJid: string }>(2);
  const alice = { bareJid: 'alice@x' };
  const id = reg.add(alice);
  t.ok(Buffer.from(id, 'base64url').length * 8 >= 128, 'at least 128 random bits');
  t.not(reg.add({ bareJid: 'alice@x' }), id, 'fresh ids');
  t.equal(reg.get(id, 'alice@x'), alice);
  t.equal(reg.get(id, 'bob@x'), undefined, "another account cannot see alice's session");
});

t.test('ended sessions keep their h, a bounded number per account', async (t) => {
  const reg = new SessionRegistry<{ bareJid: string }>(2);
  const ids = [0, 1, 2].map((h) => {
    const s = { bareJid: 'alice@x' };
    const id = reg.add(s);
    reg.remove(id, s, h * 10);
    return id;
  });
  t.equal(reg.old(ids[0]!, 'alice@x'), undefined, 'oldest forgotten');
  t.equal(reg.old(ids[1]!, 'alice@x')?.h, 10);
  t.equal(reg.old(ids[2]!, 'alice@x')?.h, 20);
  t.equal(reg.old(ids[2]!, 'alice@x')?.condition, 'item-not-found');
  t.equal(reg.old(ids[2]!, 'bob@x'), undefined, 'not revealed to another account');
  t.equal(reg.size, 0);
});

t.test('an overflowed session is remembered with resource-constraint', async (t) => {
  const reg = new SessionRegistry<{ bareJid: string }>(10);
  const s = { bareJid: 'alice@x' };
  const id = reg.add(s);
  reg.remove(id, s, 7, 'resource-constraint');
  t.same(reg.old(id, 'alice@x'), { id, h: 7, condition: 'resource-constraint' });
});

/** Ends a session of `bareJid` with final `h` and returns its id. */
function ended(reg: SessionRegistry<{ bareJid: string }>, bareJid: string, h: number): string {
  const s = { bareJid };
  const id = reg.add(s);
  reg.remove(id, s, h);
  return id;
}

t.test('ended sessions are forgotten after the TTL (default 24 h)', async (t) => {
  const clock = { now: 1_000_000_000 };
  const reg = new SessionRegistry<{ bareJid: string }>(10, { now: () => clock.now });
  const first = ended(reg, 'alice@x', 1);
  clock.now += 12 * 3600_000;
  const second = ended(reg, 'alice@x', 2);
  clock.now += 12 * 3600_000 - 1;
  t.equal(reg.old(first, 'alice@x')?.h, 1, 'just under a day');
  clock.now += 1;
  t.equal(reg.old(first, 'alice@x'), undefined, 'a day after it ended');
  t.equal(reg.old(second, 'alice@x')?.h, 2, 'the later one is still remembered');
  clock.now += 12 * 3600_000;
  t.equal(reg.old(second, 'alice@x'), undefined);
  t.equal(reg.oldAccounts, 0, 'the account is forgotten');
});

t.test('an account never seen again is forgotten by the next end of any session', async (t) => {
  const clock = { now: 0 };
  const reg = new SessionRegistry<{ bareJid: string }>(10, { oldSessionTtlMs: 60_000, now: () => clock.now });
  for (let i = 0; i < 100; i++) ended(reg, `user${i}@x`, i);
  t.equal(reg.oldAccounts, 100);
  clock.now += 30_000;
  ended(reg, 'late@x', 1);
  t.equal(reg.oldAccounts, 101);
  clock.now += 30_000;
  ended(reg, 'bob@x', 1);
  t.equal(reg.oldAccounts, 2, 'the 100 expired; late@x and bob@x are left');
});

t.test('proxy-wide, the account whose last session ended longest ago goes first', async (t) => {
  const clock = { now: 0 };
  const reg = new SessionRegistry<{ bareJid: string }>(10, { maxOldAccounts: 3, now: () => clock.now });
  const a = ended(reg, 'a@x', 1);
  const b = ended(reg, 'b@x', 2);
  const c = ended(reg, 'c@x', 3);
  const a2 = ended(reg, 'a@x', 4); // a@x is now the latest
  const d = ended(reg, 'd@x', 5);
  t.equal(reg.oldAccounts, 3);
  t.equal(reg.old(b, 'b@x'), undefined, 'b@x ended longest ago');
  t.equal(reg.old(c, 'c@x')?.h, 3);
  t.equal(reg.old(a, 'a@x')?.h, 1, "a@x's list is kept whole");
  t.equal(reg.old(a2, 'a@x')?.h, 4);
  t.equal(reg.old(d, 'd@x')?.h, 5);
});

t.test('the default proxy-wide limit is 10 000 accounts', async (t) => {
  const reg = new SessionRegistry<{ bareJid: string }>(1);
  const first = ended(reg, 'u0@x', 0);
  for (let i = 1; i < 10_000; i++) ended(reg, `u${i}@x`, i);
  t.equal(reg.oldAccounts, 10_000);
  t.equal(reg.old(first, 'u0@x')?.h, 0);
  ended(reg, 'one-more@x', 1);
  t.equal(reg.oldAccounts, 10_000);
  t.equal(reg.old(first, 'u0@x'), undefined);
});
