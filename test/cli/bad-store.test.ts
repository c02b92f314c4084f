// A corrupt or unusable store fails the start at once (issue 11.1), with a message naming the
// file: the production command exits 1 and says why on stderr and in its log.
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../harness/prosody.ts';
import { runTs } from './child.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'cli-bad-store-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function start(dataDir: string) {
  const child = runTs('src/cli.ts', ['--domain', 'store.test', '--upstream', '127.0.0.1:1', '--listen', `127.0.0.1:${await freePort()}`, '--listen-tls', 'none', '--metrics', 'none', '--data-dir', dataDir]);
  const exit = await child.exited(60_000);
  return { exit, stderr: child.stderr(), stdout: child.stdout() };
}

t.test('a store file of garbage', async (t) => {
  const dataDir = path.join(dir, 'garbage');
  mkdirSync(dataDir);
  const file = path.join(dataDir, 'xmpp-sm-proxy.sqlite');
  writeFileSync(file, Buffer.alloc(8192, 0x5a));
  const { exit, stderr, stdout } = await start(dataDir);
  t.same(exit, { code: 1, signal: null }, 'exit code 1');
  t.match(stderr, file, 'stderr names the file');
  t.match(stderr, /not a database/);
  t.match(stdout, /"level":60.*failed to start/, 'a fatal log line');
  t.notMatch(stdout, /proxy listening/, 'it never listened');
});

t.test('a data dir that cannot be created (under a regular file)', async (t) => {
  const blocker = path.join(dir, 'a-file');
  writeFileSync(blocker, 'x');
  const { exit, stderr } = await start(path.join(blocker, 'data'));
  t.same(exit, { code: 1, signal: null }, 'exit code 1');
  t.match(stderr, path.join(blocker, 'data'), 'stderr names the path');
});
