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
