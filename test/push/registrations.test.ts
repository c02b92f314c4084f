/**
 * Push registrations (XEP-0357, design §4.7 mod_cloud_notify rules) against the SQLite store:
 * each rule is checked in memory and again after a restart (a new PushRegistrations on the
 * reopened store).
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore, type SqliteStore } from '../../src/storage/sqlite-store.ts';
import { PUSH_LIMITS, PushRegistrations, type PushRegistrationsOptions } from '../../src/push/registrations.ts';

/** A clock and a way to "restart": reopen the store, build the registrations from it. */
function setup(t: Test, options: PushRegistrationsOptions = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'push-store-'));
  const clock = { now: 1_000_000 };
  let store: SqliteStore | undefined;
  t.teardown(() => {
    store?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const restart = (more: PushRegistrationsOptions = {}) => {
    store?.close();
    store = openStore(dir);
    return new PushRegistrations({ now: () => clock.now++, ...options, ...more, store });
  };
  return { clock, restart };
}

const nodes = (regs: Array<{ node: string }>) => regs.map((r) => r.node);

t.test('at most 5 per account, the oldest evicted; kept across a restart', async (t) => {
  const { restart } = setup(t);
  let push = restart();
  for (let i = 1; i <= 5; i++) t.same(push.enable('a@x', 'push.example', `n${i}`), []);
  const evicted = push.enable('a@x', 'push.example', 'n6', "<x xmlns='jabber:x:data' type='submit'/>");
  t.same(nodes(evicted), ['n1']);
  push.enable('b@x', 'other.example', 'n1');
  t.equal(push.size, 6);
  const before = push.list('a@x');
  push = restart();
  t.same(push.list('a@x'), before, 'the same registrations, in the same order, forms included');
  t.equal(push.list('a@x').at(-1)!.form, "<x xmlns='jabber:x:data' type='submit'/>");
  t.same(nodes(push.list('b@x')), ['n1']);
  t.equal(push.accounts, 2);
});

t.test('enabling the same jid and node again replaces it: new form, newest, failures reset', async (t) => {
  const { restart } = setup(t);
  let push = restart();
  push.enable('a@x', 'push.example', 'n1', '<x>old</x>');
  push.enable('a@x', 'push.example', 'n2');
  push.failed('a@x', 'push.example', 'n1');
  t.same(push.enable('a@x', 'push.example', 'n1', '<x>new</x>'), []);
  t.same(nodes(push.list('a@x')), ['n2', 'n1']);
  push = restart();
  t.same(nodes(push.list('a@x')), ['n2', 'n1']);
  t.match(push.list('a@x')[1], { form: '<x>new</x>', failures: 0 });
  push.enable('a@x', 'push.example', 'n1');
  push = restart();
  t.equal(push.list('a@x')[1]!.form, undefined, 'enabled again without a form');
});

t.test('disable: one node, or every node of the app server', async (t) => {
  const { restart } = setup(t);
  let push = restart();
  push.enable('a@x', 'p1.example', 'n1');
  push.enable('a@x', 'p1.example', 'n2');
  push.enable('a@x', 'p2.example', 'n1');
  t.same(nodes(push.disable('a@x', 'p1.example', 'n2')), ['n2']);
  t.same(push.disable('a@x', 'p1.example', 'nope'), []);
  push = restart();
  t.same(push.list('a@x').map((r) => `${r.jid} ${r.node}`), ['p1.example n1', 'p2.example n1']);
  push.enable('a@x', 'p1.example', 'n3');
  t.same(nodes(push.disable('a@x', 'p1.example')), ['n1', 'n3']);
  push.disable('a@x', 'p2.example');
  t.equal(push.accounts, 0);
  push = restart();
  t.equal(push.size, 0);
  push.enable('a@x', 'push.example', '');
  t.same(push.list('a@x').map((r) => r.node), [''], 'no node is allowed (XEP-0357 §5 says SHOULD)');
  t.ok(push.has('a@x'));
  t.notOk(push.has('b@x'));
});

t.test('failures are counted and stored; a success resets; the 16th in a row removes', async (t) => {
  const { restart } = setup(t);
  let push = restart();
  push.enable('a@x', 'push.example', 'n1');
  for (let i = 1; i <= 10; i++) t.same(push.failed('a@x', 'push.example', 'n1'), { failures: i, removed: false });
  push = restart();
  t.equal(push.list('a@x')[0]!.failures, 10);
  push.succeeded('a@x', 'push.example', 'n1');
  push = restart();
  t.equal(push.list('a@x')[0]!.failures, 0);
  for (let i = 1; i < 16; i++) push.failed('a@x', 'push.example', 'n1');
  t.same(push.failed('a@x', 'push.example', 'n1'), { failures: 16, removed: true });
  t.equal(push.failed('a@x', 'push.example', 'n1'), undefined, 'gone');
  push = restart();
  t.same(push.list('a@x'), []);
});

t.test('lowered limits apply at load', async (t) => {
  const { restart } = setup(t);
  let push = restart();
  for (let i = 1; i <= 5; i++) push.enable('a@x', 'push.example', `n${i}`);
  for (let i = 0; i < 3; i++) push.failed('a@x', 'push.example', 'n5');
  push = restart({ maxPerAccount: 3, maxFailures: 3 });
  t.same(nodes(push.list('a@x')), ['n2', 'n3', 'n4'], 'n5 failed 3 times; of the rest, n1 is over 3 per account');
  push = restart();
  t.same(nodes(push.list('a@x')), ['n2', 'n3', 'n4'], 'removed from the store');
});

t.test('what enable refuses (the caller answers bad-request)', async (t) => {
  const push = new PushRegistrations();
  t.throws(() => push.enable('a@x', '', 'n1'), RangeError);
  t.throws(() => push.enable('a@x', 'push.example', 'n1', 'x'.repeat(PUSH_LIMITS.form + 1)), RangeError);
  t.throws(() => push.enable('a@x', 'x'.repeat(PUSH_LIMITS.jid + 1), 'n1'), RangeError);
  t.equal(push.size, 0);
});
