/**
 * The embedded store (design §4.8): one SQLite file, `<dataDir>/xmpp-sm-proxy.sqlite`, through
 * better-sqlite3 (synchronous: a write is on disk when the call returns).
 *
 * - WAL journal, `synchronous = FULL` by default: a commit returns only after the WAL is synced,
 *   so what the proxy stopped holding in memory-only state survives a power loss too, not only a
 *   crash. Writes are rare (a session end, a late message, a push enable), and a session end's
 *   messages go in one transaction (`transaction`): one sync each (see bench/storage.ts).
 * - `locking_mode = EXCLUSIVE`: the proxy holds the file's lock while it runs, so a second proxy
 *   on the same data directory fails at start instead of forking the state (and no -shm file).
 * - `secure_delete = FAST`: a delivered message's text is zeroed in its page, not left behind.
 * - Checked at open (`PRAGMA quick_check`); the schema has a version (`PRAGMA user_version`) and
 *   is migrated forward at open; a file from a newer release is refused.
 * Size on disk follows the working set's bounds (held bytes, old sessions, push registrations);
 * the WAL is truncated to 16 MiB after checkpoints. The directory is created 0700, the file 0600.
 */
import { accessSync, closeSync, constants, mkdirSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import {
  StoreError,
  type HeldRecord,
  type HeldStore,
  type OldSessionRecord,
  type OldSessionStore,
  type PushRegistration,
  type PushStore,
  type Store,
  type StoreKey,
  type StoreLog,
} from './store.ts';

/** The store's file name inside the data directory. */
export const STORE_FILE = 'xmpp-sm-proxy.sqlite';

/** Schema migrations: entry `v` takes `user_version` v to v+1. Append only; never edit a shipped one. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE held_messages (
     key INTEGER PRIMARY KEY AUTOINCREMENT,
     bare_jid TEXT NOT NULL,
     xml TEXT NOT NULL,
     received_at INTEGER NOT NULL
   );
   CREATE TABLE old_sessions (
     id_hash TEXT PRIMARY KEY,
     bare_jid TEXT NOT NULL,
     h INTEGER NOT NULL,
     condition TEXT NOT NULL,
     ended_at INTEGER NOT NULL
   );
   CREATE INDEX old_sessions_by_end ON old_sessions (ended_at);
   CREATE TABLE push_registrations (
     bare_jid TEXT NOT NULL,
     jid TEXT NOT NULL,
     node TEXT NOT NULL,
     form TEXT,
     created_at INTEGER NOT NULL,
     failures INTEGER NOT NULL DEFAULT 0,
     UNIQUE (bare_jid, jid, node)
   );`,
];

/** The schema version this build writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** A write failure is logged at most this often (ms); the ones in between are counted in the next line. */
const REPORT_INTERVAL_MS = 60_000;

export interface SqliteStoreOptions {
  /** Where write failures are reported (pino's Logger fits). Default: counted only. */
  log?: StoreLog;
  /** SQLite's `synchronous` (FULL: durable against power loss; NORMAL: against a crash only). Default FULL. */
  synchronous?: 'FULL' | 'NORMAL';
  /** How long to wait for the file's lock at open (ms) before failing. Default 5000. */
  lockTimeoutMs?: number;
}

/**
 * Opens (creating if missing) the store in `dataDir`: the directory (mode 0700) and the file
 * `xmpp-sm-proxy.sqlite` (mode 0600) in it; checks it, migrates its schema.
 * @throws StoreError naming the path, when the directory cannot be created, the file cannot be
 *   opened or locked, is not a database, fails the check, or has a newer schema.
 */
export function openStore(dataDir: string, options: SqliteStoreOptions = {}): SqliteStore {
  try {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new StoreError(dataDir, 'cannot create the data directory', err);
  }
  try {
    // SQLite would open a file it cannot write read-only and fail later with "disk I/O error".
    accessSync(dataDir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new StoreError(dataDir, 'cannot write to the data directory', err);
  }
  const file = join(dataDir, STORE_FILE);
  let db: Database.Database | undefined;
  try {
    const stat = statSync(file, { throwIfNoEntry: false });
    if (stat && !stat.isFile()) throw new Error(stat.isDirectory() ? 'is a directory' : 'not a regular file');
    // An empty file is an empty database; creating it here sets its mode (SQLite's WAL copies it).
    if (!stat) closeSync(openSync(file, 'wx', 0o600));
    else accessSync(file, constants.R_OK | constants.W_OK);
    db = new Database(file, { timeout: options.lockTimeoutMs ?? 5000 });
    db.pragma('locking_mode = EXCLUSIVE');
    if (db.pragma('journal_mode = WAL', { simple: true }) !== 'wal') throw new Error('cannot use a WAL journal here');
    db.pragma(`synchronous = ${options.synchronous ?? 'FULL'}`);
    db.pragma('secure_delete = FAST');
    db.pragma('journal_size_limit = 16777216');
    db.exec('BEGIN IMMEDIATE; COMMIT'); // takes the lock now: a second proxy fails here
    const check = db.pragma('quick_check', { simple: false }) as Array<{ quick_check: string }>;
    if (check.length !== 1 || check[0]!.quick_check !== 'ok') {
      throw new Error(`damaged: ${check.slice(0, 3).map((row) => row.quick_check).join('; ')}`);
    }
    migrate(db);
    return new SqliteStore(db, file, options.log);
  } catch (err) {
    db?.close();
    if (err instanceof StoreError) throw err;
    const locked = (err as { code?: string }).code === 'SQLITE_BUSY';
    throw new StoreError(file, 'cannot open', locked ? new Error('database is locked (another xmpp-sm-proxy on this data directory?)', { cause: err }) : err);
  }
}

function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new Error(`schema version ${version} is newer than this release's (${SCHEMA_VERSION})`);
  }
  for (let v = version; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
}

interface HeldRow {
  key: number;
  bare_jid: string;
  xml: string;
  received_at: number;
}
interface OldRow {
  id_hash: string;
  bare_jid: string;
  h: number;
  condition: string;
  ended_at: number;
}
interface PushRow {
  bare_jid: string;
  jid: string;
  node: string;
  form: string | null;
  created_at: number;
  failures: number;
}

const pushRegistration = (row: PushRow): PushRegistration => ({
  jid: row.jid,
  node: row.node,
  ...(row.form === null ? {} : { form: row.form }),
  createdAt: row.created_at,
  failures: row.failures,
});

/** The SQLite Store; get one from {@link openStore}. */
export class SqliteStore implements Store {
  readonly heldMessages: HeldStore;
  readonly oldSessions: OldSessionStore;
  readonly pushRegistrations: PushStore;
  /** The database file. */
  readonly path: string;
  readonly #db: Database.Database;
  readonly #log: StoreLog | undefined;
  #closed = false;
  #writeErrors = 0;
  #lastReport = -Infinity;
  #unreported = 0;

  /** Use {@link openStore}. */
  constructor(db: Database.Database, path: string, log?: StoreLog) {
    this.#db = db;
    this.path = path;
    this.#log = log;
    const s = {
      putHeld: db.prepare<[string, string, number]>('INSERT INTO held_messages (bare_jid, xml, received_at) VALUES (?, ?, ?)'),
      deleteHeld: db.prepare<[number]>('DELETE FROM held_messages WHERE key = ?'),
      allHeld: db.prepare<[], HeldRow>('SELECT key, bare_jid, xml, received_at FROM held_messages ORDER BY key'),
      putOld: db.prepare<[string, string, number, string, number]>(
        'INSERT OR REPLACE INTO old_sessions (id_hash, bare_jid, h, condition, ended_at) VALUES (?, ?, ?, ?, ?)',
      ),
      deleteOld: db.prepare<[string]>('DELETE FROM old_sessions WHERE id_hash = ?'),
      allOld: db.prepare<[], OldRow>('SELECT id_hash, bare_jid, h, condition, ended_at FROM old_sessions ORDER BY ended_at, rowid'),
      putPush: db.prepare<[string, string, string, string | null, number, number]>(
        `INSERT INTO push_registrations (bare_jid, jid, node, form, created_at, failures) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (bare_jid, jid, node) DO UPDATE SET form = excluded.form, created_at = excluded.created_at, failures = excluded.failures`,
      ),
      removePush: db.prepare<[string, string, string]>('DELETE FROM push_registrations WHERE bare_jid = ? AND jid = ? AND node = ?'),
      listPush: db.prepare<[string], PushRow>('SELECT * FROM push_registrations WHERE bare_jid = ? ORDER BY created_at, rowid'),
      allPush: db.prepare<[], PushRow>('SELECT * FROM push_registrations ORDER BY bare_jid, created_at, rowid'),
    };
    const self = this;
    this.heldMessages = {
      put: (bareJid, xml, receivedAt) => this.#write('hold a message', () => Number(s.putHeld.run(bareJid, xml, receivedAt).lastInsertRowid)),
      delete: (keys) => this.#writeAll('delete held messages', keys, (key) => s.deleteHeld.run(key)),
      *loadAll(): Generator<HeldRecord> {
        const rows = self.#read('read held messages', () => s.allHeld.iterate());
        try {
          for (;;) {
            // A damaged page shows while stepping through the rows, not before.
            const next = self.#read('read held messages', () => rows.next());
            if (next.done) return;
            const row = next.value;
            yield { key: row.key, bareJid: row.bare_jid, xml: row.xml, receivedAt: row.received_at };
          }
        } finally {
          rows.return?.(); // a consumer that stops early must not leave the connection busy
        }
      },
    };
    this.oldSessions = {
      put: (r) => void this.#write('remember an ended session', () => s.putOld.run(r.idHash, r.bareJid, r.h, r.condition, r.endedAt)),
      delete: (idHashes) => this.#writeAll('forget ended sessions', idHashes, (idHash) => s.deleteOld.run(idHash)),
      loadAll: () =>
        this.#read('read ended sessions', () => s.allOld.all()).map(
          (row): OldSessionRecord => ({ idHash: row.id_hash, bareJid: row.bare_jid, h: row.h, condition: row.condition, endedAt: row.ended_at }),
        ),
    };
    this.pushRegistrations = {
      list: (bareJid) => this.#read('read push registrations', () => s.listPush.all(bareJid)).map(pushRegistration),
      put: (bareJid, r) =>
        void this.#write('store a push registration', () => s.putPush.run(bareJid, r.jid, r.node, r.form ?? null, r.createdAt, r.failures)),
      remove: (bareJid, jid, node) => void this.#write('remove a push registration', () => s.removePush.run(bareJid, jid, node)),
      loadAll: () =>
        this.#read('read push registrations', () => s.allPush.all()).map((row) => ({ bareJid: row.bare_jid, registration: pushRegistration(row) })),
    };
  }

  get writeErrors(): number {
    return this.#writeErrors;
  }

  transaction<T>(fn: () => T): T {
    if (this.#closed || this.#db.inTransaction) return fn();
    const began = this.#write('begin a transaction', () => this.#db.exec('BEGIN')) !== undefined;
    try {
      return fn();
    } finally {
      // SQLite rolls a transaction back by itself after some errors (disk full): nothing to commit then.
      if (began && this.#db.inTransaction && this.#write('commit', () => this.#db.exec('COMMIT')) === undefined) {
        if (this.#db.inTransaction) this.#write('roll back', () => this.#db.exec('ROLLBACK'));
      }
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }

  /** Runs a write; a failure is counted and reported, never thrown (see Store). */
  #write<T>(what: string, fn: () => T): T | undefined {
    if (this.#closed) return undefined;
    try {
      return fn();
    } catch (err) {
      this.#writeErrors++;
      this.#report(what, err);
      return undefined;
    }
  }

  #writeAll<K>(what: string, keys: readonly K[], fn: (key: K) => unknown): void {
    if (keys.length === 0) return;
    this.transaction(() => {
      for (const key of keys) this.#write(what, () => fn(key));
    });
  }

  #read<T>(what: string, fn: () => T): T {
    if (this.#closed) throw new StoreError(this.path, `cannot ${what} from`, 'the store is closed');
    try {
      return fn();
    } catch (err) {
      throw new StoreError(this.path, `cannot ${what} from`, err);
    }
  }

  #report(what: string, err: unknown): void {
    const now = Date.now();
    if (now - this.#lastReport < REPORT_INTERVAL_MS) {
      this.#unreported++;
      return;
    }
    this.#lastReport = now;
    const { code, message } = err as { code?: string; message?: string };
    this.#log?.error(
      { err: { code, message }, path: this.path, writeErrors: this.#writeErrors, unreported: this.#unreported },
      `storage: cannot ${what}: kept in memory only, lost at a restart`,
    );
    this.#unreported = 0;
  }
}
