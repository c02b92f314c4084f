/**
 * The SQLite store itself (design §4.8): opening, the schema and its migration, the three
 * journals, transactions, and the errors that name the path. Real files in temp directories.
 */
import t, { type Test } from 'tap';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import Database from 'better-sqlite3';
import { openStore, SCHEMA_VERSION, STORE_FILE } from '../../src/storage/sqlite-store.ts';
import { StoreError } from '../../src/storage/store.ts';
import { HeldMessages } from '../../src/session/held-messages.ts';

function tempDir(t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'store-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('creates the data directory (0700) and the file (0600), schema at the current version', async (t) => {
  const dataDir = path.join(tempDir(t), 'a', 'b');
  const store = openStore(dataDir);
  t.equal(store.path, path.join(dataDir, STORE_FILE));
  t.equal(statSync(dataDir).mode & 0o777, 0o700);
  t.equal(statSync(store.path).mode & 0o777, 0o600);
  store.close();
  store.close(); // idempotent
  const db = new Database(store.path, { readonly: true });
  t.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all();
  t.same(tables, ['held_messages', 'old_sessions', 'push_registrations']);
  db.close();
});

t.test('migrates an empty SQLite database (user_version 0) and reopens without migrating again', async (t) => {
  const dataDir = tempDir(t);
  const file = path.join(dataDir, STORE_FILE);
  const raw = new Database(file);
  raw.exec('CREATE TABLE unrelated (x)'); // a database someone created: version 0, kept as it is
  raw.close();
  const store = openStore(dataDir);
  const key = store.heldMessages.put('a@x', '<message/>', 1);
  store.close();
  const again = openStore(dataDir);
  t.same([...again.heldMessages.loadAll()], [{ key, bareJid: 'a@x', xml: '<message/>', receivedAt: 1 }], 'data kept: no second migration');
  again.close();
});

t.test('a store from a newer release is refused', async (t) => {
  const dataDir = tempDir(t);
  openStore(dataDir).close();
  const raw = new Database(path.join(dataDir, STORE_FILE));
  raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
  raw.close();
  t.throws(() => openStore(dataDir), {
    name: 'StoreError',
    message: `storage: cannot open ${path.join(dataDir, STORE_FILE)}: schema version ${SCHEMA_VERSION + 1} is newer than this release's (${SCHEMA_VERSION})`,
  });
});

t.test('a file of garbage fails fast, naming the path and the cause', async (t) => {
  const dataDir = tempDir(t);
  const file = path.join(dataDir, STORE_FILE);
  writeFileSync(file, Buffer.alloc(8192, 0x5a));
  const err = tryOpen(dataDir);
  t.equal(err.path, file);
  t.equal(err.message, `storage: cannot open ${file}: file is not a database`);
});

t.test('a damaged database fails fast, naming the path', async (t) => {
  const dataDir = tempDir(t);
  const store = openStore(dataDir);
  store.transaction(() => {
    for (let i = 0; i < 200; i++) store.heldMessages.put(`u${i}@x`, `<message>${'x'.repeat(200)}</message>`, i);
  });
  store.close();
  // Overwrite the middle of the file (table and index pages; the header on page 1 stays valid).
  const fd = openSync(store.path, 'r+');
  const size = statSync(store.path).size;
  writeSync(fd, Buffer.alloc(size - 8192, 0xff), 0, size - 8192, 4096);
  closeSync(fd);
  const err = tryOpen(dataDir);
  t.equal(err.path, store.path);
  t.match(err.message, new RegExp(`^storage: cannot open ${store.path}: `));
});

t.test('a data directory that cannot be created (under a regular file: fails as root too)', async (t) => {
  const base = tempDir(t);
  writeFileSync(path.join(base, 'file'), 'x');
  const dataDir = path.join(base, 'file', 'data');
  const err = tryOpen(dataDir);
  t.equal(err.path, dataDir);
  t.match(err.message, new RegExp(`^storage: cannot create the data directory ${dataDir}: ENOTDIR`));
});

/**
 * The error message of opening the store in `dataDir`. Root ignores file modes (CAP_DAC_OVERRIDE),
 * so as root the open runs in a child without that capability (and CAP_DAC_READ_SEARCH): modes
 * then hold for it as for the owner of the files.
 */
function openMessage(dataDir: string): string {
  if (process.getuid?.() !== 0) return tryOpen(dataDir).message;
  const caps = '--bounding-set=-dac_override,-dac_read_search';
  const fixture = fileURLToPath(new URL('./fixtures/open-store.ts', import.meta.url));
  return execFileSync('setpriv', [caps, process.execPath, '--import', 'tsx', fixture, dataDir], { encoding: 'utf8' });
}

t.test('a file or directory without write permission', async (t) => {
  const dataDir = tempDir(t);
  openStore(dataDir).close();
  const file = path.join(dataDir, STORE_FILE);
  chmodSync(file, 0o400);
  t.match(openMessage(dataDir), `storage: cannot open ${file}: EACCES`);
  chmodSync(file, 0o600);
  chmodSync(dataDir, 0o500);
  t.match(openMessage(dataDir), `storage: cannot write to the data directory ${dataDir}: EACCES`);
  chmodSync(dataDir, 0o700);
  t.equal(openMessage(dataDir), 'opened', 'and opens once the modes allow it');
});

t.test('a directory where the file should be', async (t) => {
  const dataDir = tempDir(t);
  mkdirSync(path.join(dataDir, STORE_FILE));
  const err = tryOpen(dataDir);
  t.equal(err.message, `storage: cannot open ${path.join(dataDir, STORE_FILE)}: is a directory`);
});

t.test('a second proxy on the same data directory fails: the first holds the lock', async (t) => {
  const dataDir = tempDir(t);
  const first = openStore(dataDir);
  const err = tryOpen(dataDir, 100);
  t.match(err.message, 'database is locked (another xmpp-sm-proxy on this data directory?)');
  first.close();
  openStore(dataDir).close();
});

t.test('held messages: keys in the order of holding, deleted by key', async (t) => {
  const store = openStore(tempDir(t));
  const k1 = store.heldMessages.put('a@x', '<m1/>', 10)!;
  const k2 = store.heldMessages.put('b@x', '<m2/>', 20)!;
  const k3 = store.heldMessages.put('a@x', '<m3/>', 30)!;
  t.ok(k1 < k2 && k2 < k3);
  store.heldMessages.delete([k2, 9999]);
  t.same([...store.heldMessages.loadAll()].map((r) => r.xml), ['<m1/>', '<m3/>']);
  store.heldMessages.delete([k1, k3]);
  t.equal(store.heldMessages.put('a@x', '<m4/>', 40)! > k3, true, 'keys are never reused');
  store.close();
});

t.test('old sessions: replaced by id hash, loaded in the order they ended', async (t) => {
  const store = openStore(tempDir(t));
  store.oldSessions.put({ idHash: 'h1', bareJid: 'a@x', h: 1, condition: 'item-not-found', endedAt: 300 });
  store.oldSessions.put({ idHash: 'h2', bareJid: 'b@x', h: 2, condition: 'item-not-found', endedAt: 100 });
  store.oldSessions.put({ idHash: 'h1', bareJid: 'a@x', h: 4294967295, condition: 'resource-constraint', endedAt: 200 });
  t.same(store.oldSessions.loadAll(), [
    { idHash: 'h2', bareJid: 'b@x', h: 2, condition: 'item-not-found', endedAt: 100 },
    { idHash: 'h1', bareJid: 'a@x', h: 4294967295, condition: 'resource-constraint', endedAt: 200 },
  ]);
  store.oldSessions.delete(['h2', 'nope']);
  t.same(store.oldSessions.loadAll().map((r) => r.idHash), ['h1']);
  store.close();
});

t.test('push registrations: upsert in place, list per account, remove', async (t) => {
  const store = openStore(tempDir(t));
  const reg = (jid: string, node: string, createdAt: number, failures = 0, form?: string) => ({ jid, node, createdAt, failures, ...(form ? { form } : {}) });
  store.pushRegistrations.put('a@x', reg('push.example', 'n1', 1, 0, '<x/>'));
  store.pushRegistrations.put('a@x', reg('push.example', 'n2', 2));
  store.pushRegistrations.put('b@x', reg('push.example', 'n1', 3));
  store.pushRegistrations.put('a@x', reg('push.example', 'n1', 1, 7, '<x/>'));
  t.same(store.pushRegistrations.list('a@x'), [reg('push.example', 'n1', 1, 7, '<x/>'), reg('push.example', 'n2', 2)]);
  t.same(store.pushRegistrations.list('c@x'), []);
  store.pushRegistrations.remove('a@x', 'push.example', 'n1');
  t.same(
    store.pushRegistrations.loadAll().map((e) => `${e.bareJid} ${e.registration.node}`),
    ['a@x n2', 'b@x n1'],
  );
  store.close();
});

t.test('transactions: nested calls join; a throw still commits what was written, then propagates', async (t) => {
  const dataDir = tempDir(t);
  const store = openStore(dataDir);
  t.throws(() =>
    store.transaction(() => {
      store.heldMessages.put('a@x', '<m1/>', 1);
      store.transaction(() => store.heldMessages.put('a@x', '<m2/>', 2));
      throw new Error('bug');
    }),
  );
  store.close();
  const again = openStore(dataDir);
  t.equal([...again.heldMessages.loadAll()].length, 2);
  again.close();
});

t.test('after close, writes are ignored and reads throw', async (t) => {
  const store = openStore(tempDir(t));
  store.close();
  t.equal(store.heldMessages.put('a@x', '<m/>', 1), undefined);
  t.doesNotThrow(() => store.oldSessions.delete(['x']));
  t.throws(() => store.oldSessions.loadAll(), { name: 'StoreError', message: /the store is closed/ });
  t.equal(store.writeErrors, 0);
});

t.test('a write that fails is reported (rate-limited), counted, and the working set goes on', async (t) => {
  const dataDir = tempDir(t);
  openStore(dataDir).close();
  // A trigger stands in for a full disk: deterministic, and it works as root.
  const raw = new Database(path.join(dataDir, STORE_FILE));
  raw.exec(`CREATE TRIGGER fail BEFORE INSERT ON held_messages WHEN NEW.bare_jid = 'full@x' BEGIN SELECT RAISE(ABORT, 'disk full'); END`);
  raw.close();
  const lines: Array<{ obj: object; msg: string }> = [];
  const store = openStore(dataDir, { log: { error: (obj, msg) => lines.push({ obj, msg }) } });
  const held = new HeldMessages(10, { store });
  t.ok(held.hold('full@x', { xml: '<message><body>secret text</body></message>', receivedAt: Date.now() }));
  t.ok(held.hold('full@x', { xml: '<message><body>more</body></message>', receivedAt: Date.now() }));
  t.ok(held.hold('ok@x', { xml: '<message/>', receivedAt: Date.now() }));
  t.equal(store.writeErrors, 2);
  t.equal(lines.length, 1, 'one line per minute at most');
  t.match(lines[0]!.msg, 'storage: cannot hold a message: kept in memory only, lost at a restart');
  t.notMatch(JSON.stringify(lines[0]), 'secret text', 'no message content in the log');
  t.equal(held.count('full@x'), 2, 'still held in memory');
  t.equal(held.take('full@x').length, 2);
  store.close();
  const again = openStore(dataDir);
  t.same([...again.heldMessages.loadAll()].map((r) => r.bareJid), ['ok@x']);
  again.close();
});

function tryOpen(dataDir: string, lockTimeoutMs?: number): StoreError {
  try {
    openStore(dataDir, { lockTimeoutMs }).close();
  } catch (err) {
    if (err instanceof StoreError) return err;
    throw err;
  }
  throw new Error('opened');
}
