/**
 * Storage benchmark (design §4.8): what writing through to the SQLite store costs, with
 * `synchronous = FULL` (the default) and NORMAL, on a real file.
 *
 *   npx tsx bench/storage.ts [--dir /var/lib/xmpp-sm-proxy-bench] [--rounds 5] [--load 50000]
 *
 * Per mode: a session end holding 500 messages in one batch (HeldMessages.batch: one
 * transaction), 1000 single holds (one transaction each: late messages), 1000 ended sessions
 * (SessionRegistry.remove), and the start-up load of `--load` held messages. The data directory
 * is a fresh one under `--dir` (default the OS temp dir: make sure it is on the disk you mean to
 * measure, not a tmpfs). Messages are ~300 characters, like a short chat message with ids.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { openStore, type SqliteStoreOptions } from '../src/storage/sqlite-store.ts';
import { HeldMessages } from '../src/session/held-messages.ts';
import { SessionRegistry } from '../src/sm/registry.ts';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: os.tmpdir() },
    rounds: { type: 'string', default: '5' },
    load: { type: 'string', default: '50000' },
  },
});
const ROUNDS = Number(values.rounds);
const LOAD = Number(values.load);

const message = (i: number) => ({
  xml:
    `<message xmlns='jabber:client' from='alice@example.org/phone' to='bob@example.org/laptop' type='chat' id='m-${i}-0f3a9c2e'>` +
    `<body>Message ${i}: see you at the station at eight, bring the tickets please.</body>` +
    `<stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.org' id='${i.toString(36).padStart(12, 'x')}'/></message>`,
  receivedAt: Date.now(),
});

const ms = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(0));

/** Runs `fn` on a fresh store in a fresh directory; removes it after. */
function withStore<T>(options: SqliteStoreOptions, fn: (dir: string) => T): T {
  const dir = mkdtempSync(path.join(values.dir, 'bench-store-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function measure(synchronous: 'FULL' | 'NORMAL'): Record<string, string> {
  return withStore({ synchronous }, (dir) => {
    const store = openStore(dir, { synchronous });
    const held = new HeldMessages(100_000, { maxBytes: 1 << 30, store });
    const batches: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const start = process.hrtime.bigint();
      held.batch(() => {
        for (let i = 0; i < 500; i++) held.hold(`batch${r}@example.org`, message(i));
      });
      batches.push(ms(start));
    }
    const singles: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const start = process.hrtime.bigint();
      for (let i = 0; i < 1000; i++) held.hold(`single${r}@example.org`, message(i));
      singles.push(ms(start));
    }
    const reg = new SessionRegistry<{ bareJid: string }>(10, { store });
    const start = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) {
      const session = { bareJid: `user${i}@example.org` };
      reg.remove(reg.add(session), session, i);
    }
    const ends = ms(start);
    held.batch(() => {
      for (let i = 0; i < LOAD; i++) held.hold(`load${i % 5000}@example.org`, message(i));
    });
    store.close();
    const again = openStore(dir, { synchronous });
    const loadStart = process.hrtime.bigint();
    const loaded = new HeldMessages(100_000, { maxBytes: 1 << 30, store: again });
    const load = ms(loadStart);
    again.close();
    return {
      synchronous,
      '500 holds, 1 batch (ms)': fmt(median(batches)),
      '1000 single holds (ms)': fmt(median(singles)),
      'per single hold (ms)': fmt(median(singles) / 1000),
      '1000 session ends (ms)': fmt(ends),
      [`load ${loaded.size} held (ms)`]: fmt(load),
    };
  });
}

console.log(`storage benchmark: ${ROUNDS} rounds (median shown), data under ${values.dir}, node ${process.version}`);
console.table([measure('FULL'), measure('NORMAL')]);
