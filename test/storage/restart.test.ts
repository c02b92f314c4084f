/**
 * Write-through and restart (design §4.8): held messages and ended sessions' `h` are written to
 * the SQLite store as they change; a new working set on a reopened store (a restarted proxy)
 * has them back, with the TTL and the bounds applied at load and what they drop deleted.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openStore, type SqliteStore } from '../../src/storage/sqlite-store.ts';
import { MemoryStore } from '../../src/storage/memory-store.ts';
import { HeldMessages } from '../../src/session/held-messages.ts';
import { hashId, SessionRegistry } from '../../src/sm/registry.ts';

const DAY = 86400_000;
const msg = (body: string, receivedAt: number, n = 40) => {
  const xml = `<message><body>${body}</body></message>`;
  return { xml: xml + ' '.repeat(Math.max(0, n - xml.length)), receivedAt };
};
const bodies = (list: Array<{ xml: string }>) => list.map((s) => /<body>([^<]*)</.exec(s.xml)![1]);

/** A data directory and a way to "restart": close the open store, open a new one on the same file. */
function dataDir(t: Test) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'store-restart-'));
  let store: SqliteStore | undefined;
  t.teardown(() => {
    store?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    restart(): SqliteStore {
      store?.close();
      store = openStore(dir);
      return store;
    },
  };
}

t.test('held messages are back after a restart, in order; taken ones are not', async (t) => {
  const d = dataDir(t);
  const clock = { now: 1000 * DAY };
  const now = () => clock.now;
  let held = new HeldMessages(10, { store: d.restart(), now });
  held.hold('a@x', msg('a1', clock.now));
  held.hold('b@x', msg('b1', clock.now));
  held.hold('a@x', msg('a2', clock.now));
  held.hold('c@x', msg('c1', clock.now));
  t.same(bodies(held.take('b@x')), ['b1']);

  held = new HeldMessages(10, { store: d.restart(), now });
  t.equal(held.size, 3);
  t.equal(held.accounts, 2);
  t.equal(held.bytes, 120);
  t.equal(held.dropped, 0);
  t.same(bodies(held.take('a@x')), ['a1', 'a2']);
  t.same(bodies(held.take('b@x')), []);

  held = new HeldMessages(10, { store: d.restart(), now });
  t.same(bodies(held.take('c@x')), ['c1']);
  t.equal(held.size, 0);
  t.same([...d.restart().heldMessages.loadAll()], [], 'the store is empty');
});

t.test('at load, the expired are dropped and deleted from the store', async (t) => {
  const d = dataDir(t);
  const clock = { now: 1000 * DAY };
  const now = () => clock.now;
  let held = new HeldMessages(10, { ttlMs: 7 * DAY, store: d.restart(), now });
  held.hold('a@x', msg('6 days old', clock.now - 6 * DAY));
  held.hold('a@x', msg('new', clock.now));
  held.hold('b@x', msg('5 days old', clock.now - 5 * DAY));
  clock.now += 1.5 * DAY; // down for a day and a half
  held = new HeldMessages(10, { ttlMs: 7 * DAY, store: d.restart(), now });
  t.equal(held.droppedExpired, 1);
  t.equal(held.size, 2);
  t.same(
    [...d.restart().heldMessages.loadAll()].map((r) => r.bareJid),
    ['a@x', 'b@x'],
    'deleted from the store at load',
  );
});

t.test('at load, lowered bounds apply: per account and proxy-wide, the oldest go first', async (t) => {
  const d = dataDir(t);
  let held = new HeldMessages(10, { store: d.restart() });
  for (const body of ['a1', 'b1', 'a2', 'a3', 'b2', 'a4']) held.hold(`${body[0]}@x`, msg(body, Date.now()));
  held = new HeldMessages(3, { store: d.restart() });
  t.equal(held.dropped, 1, 'a1: a@x had 4');
  held = new HeldMessages(3, { maxBytes: 120, store: d.restart() });
  t.equal(held.droppedOverBytes, 2, 'b1 and a2, the oldest left, are over 120 bytes');
  held = new HeldMessages(3, { maxBytes: 120, store: d.restart() });
  t.equal(held.dropped, 0, 'what was dropped was deleted');
  t.same(bodies(held.take('a@x')), ['a3', 'a4']);
  t.same(bodies(held.take('b@x')), ['b2']);
  held = new HeldMessages(0, { store: d.restart() });
  t.equal(held.size, 0);
});

t.test('a session end holding 500 messages is one batch; all of them are back', async (t) => {
  const d = dataDir(t);
  let held = new HeldMessages(1000, { store: d.restart() });
  const now = Date.now();
  held.batch(() => {
    for (let i = 0; i < 500; i++) held.hold('a@x', msg(`m${i}`, now));
  });
  held = new HeldMessages(1000, { store: d.restart() });
  const back = bodies(held.take('a@x'));
  t.equal(back.length, 500);
  t.equal(back[0], 'm0');
  t.equal(back[499], 'm499');
});

/** Ends a session of `bareJid` with final `h` and returns its id. */
function ended(reg: SessionRegistry<{ bareJid: string }>, bareJid: string, h: number, condition?: string): string {
  const s = { bareJid };
  const id = reg.add(s);
  reg.remove(id, s, h, condition);
  return id;
}

t.test('ended sessions keep their h across a restart, bounded per account', async (t) => {
  const d = dataDir(t);
  let reg = new SessionRegistry<{ bareJid: string }>(2, { store: d.restart() });
  const [a0, a1, a2] = [0, 1, 2].map((h) => ended(reg, 'alice@x', h));
  const b = ended(reg, 'bob@x', 4294967295, 'resource-constraint');
  const live = reg.add({ bareJid: 'carol@x' });
  reg = new SessionRegistry<{ bareJid: string }>(2, { store: d.restart() });
  t.equal(reg.old(a0!, 'alice@x'), undefined, 'the oldest was forgotten before the restart');
  t.same(reg.old(a1!, 'alice@x'), { id: a1, h: 1, condition: 'item-not-found' });
  t.same(reg.old(a2!, 'alice@x'), { id: a2, h: 2, condition: 'item-not-found' });
  t.same(reg.old(b, 'bob@x'), { id: b, h: 4294967295, condition: 'resource-constraint' });
  t.equal(reg.old(b, 'alice@x'), undefined, 'still bound to the account');
  t.equal(reg.old(live, 'carol@x'), undefined, 'a live session is not stored');
  t.equal(reg.size, 0);
  t.equal(reg.oldAccounts, 2);

  reg = new SessionRegistry<{ bareJid: string }>(1, { store: d.restart() });
  t.equal(reg.old(a1!, 'alice@x'), undefined, 'a lowered per-account bound applies at load');
  t.equal(reg.old(a2!, 'alice@x')?.h, 2);
});

t.test('the store holds no resumption id, only its SHA-256', async (t) => {
  const d = dataDir(t);
  const store = d.restart();
  const reg = new SessionRegistry<{ bareJid: string }>(10, { store });
  const id = ended(reg, 'alice@x', 7);
  store.close(); // checkpoints the WAL into the file
  const file = readFileSync(store.path, 'latin1');
  t.notOk(file.includes(id), 'no id');
  t.ok(file.includes(hashId(id)), 'its hash');
  t.equal(hashId(id), hashId(id));
  t.not(hashId(id), hashId(`${id}x`));
});

t.test('at load, expired and over-the-limit accounts are forgotten and deleted', async (t) => {
  const d = dataDir(t);
  const clock = { now: 1_000_000_000 };
  const now = () => clock.now;
  const options = { oldSessionTtlMs: DAY, now };
  let reg = new SessionRegistry<{ bareJid: string }>(10, { ...options, store: d.restart() });
  const old = ended(reg, 'alice@x', 1);
  clock.now += 12 * 3600_000;
  const newer = ended(reg, 'alice@x', 2);
  const a = ended(reg, 'a@x', 3);
  const b = ended(reg, 'b@x', 4);
  const c = ended(reg, 'c@x', 5);
  clock.now += 12 * 3600_000; // the first has just expired
  reg = new SessionRegistry<{ bareJid: string }>(10, { ...options, maxOldAccounts: 3, store: d.restart() });
  t.equal(reg.oldAccounts, 3);
  t.equal(reg.old(old, 'alice@x'), undefined, 'expired');
  t.equal(reg.old(newer, 'alice@x'), undefined, 'alice@x ended longest ago: over the account limit');
  t.equal(reg.old(a, 'a@x')?.h, 3);
  t.equal(reg.old(c, 'c@x')?.h, 5);
  t.same(
    d.restart().oldSessions.loadAll().map((r) => r.h),
    [3, 4, 5],
    'deleted from the store at load',
  );
  clock.now += DAY;
  reg = new SessionRegistry<{ bareJid: string }>(10, { ...options, store: d.restart() });
  t.equal(reg.oldAccounts, 0);
  t.equal(reg.old(b, 'b@x'), undefined);
  t.same(d.restart().oldSessions.loadAll(), []);
});

t.test('the memory store: the same restart within one process; reads cost no writes', async (t) => {
  const store = new MemoryStore();
  let held = new HeldMessages(10, { store });
  held.hold('a@x', msg('a1', Date.now()));
  held.hold('a@x', msg('a2', Date.now()));
  const writes = store.writes;
  t.equal(held.count('a@x'), 2);
  t.equal(store.writes, writes, 'count wrote nothing');
  held = new HeldMessages(10, { store });
  t.same(bodies(held.take('a@x')), ['a1', 'a2']);
  t.equal(new HeldMessages(10, { store }).size, 0);
  let reg = new SessionRegistry<{ bareJid: string }>(10, { store });
  const id = ended(reg, 'alice@x', 9);
  reg = new SessionRegistry<{ bareJid: string }>(10, { store });
  t.equal(reg.old(id, 'alice@x')?.h, 9);
});
