// The production entry point stops on SIGTERM/SIGINT whatever state stdout is in: here stdout is
// a pipe whose reader has gone away (`xmpp-sm-proxy | tee log`, then tee is killed), so every
// log line written after that fails with EPIPE. Before the fix, pino's destination retried the
// last line every 100 ms forever from its exit hook, and the process ignored every later signal.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../harness/prosody.ts';
import { eventually, runTs } from './child.ts';

/** A "must end at all" guard: the fixed CLI exits in about a second, the broken one never. */
const MUST_EXIT_MS = 30_000;
/** Startup (tsx, a generated certificate) on a loaded machine. */
const MUST_START_MS = 40_000;

async function configFile(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cli-shutdown-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'config.yaml');
  // Port 1 on loopback: nothing listens there; no client logs in, so the upstream is never dialled.
  writeFileSync(
    file,
    [
      'domains: [cli.test]',
      'upstream: { host: 127.0.0.1, port: 1 }',
      'listen:',
      `  starttls: ["127.0.0.1:${await freePort()}"]`,
      '  directTls: none',
      'log: { level: info }',
      'metrics: { listen: none }',
      `storage: { dataDir: ${JSON.stringify(path.join(dir, 'data'))} }`,
      '',
    ].join('\n'),
  );
  return file;
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`${signal} ends the CLI with exit code 0 after the reader of its stdout is gone`, async (t) => {
    const child = runTs('src/cli.ts', ['--config', await configFile(t)]);
    await child.waitForStdout(/"msg":"proxy listening"/, MUST_START_MS);
    // Close our end of the stdout pipe: the child's next write gets EPIPE.
    child.proc.stdout.destroy();
    child.proc.kill(signal);
    const result = await child.exited(MUST_EXIT_MS);
    t.ok(result, `exited after ${signal} (instead of retrying the write forever)`);
    t.same(result, { code: 0, signal: null }, 'exit code 0, not killed');
    t.notMatch(child.stderr(), /Error|EPIPE/, 'no error on stderr');
  });
}

t.test('SIGTERM with a client connected that never closes its side, stdout gone: exit code 0', async (t) => {
  const file = await configFile(t);
  const port = Number(/127\.0\.0\.1:(\d+)/.exec(readFileSync(file, 'utf8'))![1]);
  const child = runTs('src/cli.ts', ['--config', file]);
  await child.waitForStdout(/"msg":"proxy listening"/, MUST_START_MS);
  // A client in the middle of its stream negotiation that ignores the proxy's stream error and
  // never closes (allowHalfOpen): the proxy cuts it after its grace period.
  const sock = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  t.teardown(() => sock.destroy());
  sock.on('error', () => {});
  let received = '';
  sock.setEncoding('utf8').on('data', (s: string) => (received += s));
  await new Promise((resolve) => sock.once('connect', resolve));
  sock.write("<?xml version='1.0'?><stream:stream to='cli.test' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
  t.ok(await eventually(() => received.includes('starttls'), 10_000), 'the proxy offered STARTTLS');
  child.proc.stdout.destroy();
  child.proc.kill('SIGTERM');
  const result = await child.exited(MUST_EXIT_MS);
  t.same(result, { code: 0, signal: null }, 'exited with code 0');
  t.notMatch(child.stderr(), /Error|EPIPE/, 'no error on stderr');
});

t.test('with stdout intact, the stop is logged and the exit code is 0', async (t) => {
  const child = runTs('src/cli.ts', ['--config', await configFile(t)]);
  await child.waitForStdout(/"msg":"proxy listening"/, MUST_START_MS);
  child.proc.kill('SIGTERM');
  const result = await child.exited(MUST_EXIT_MS);
  t.same(result, { code: 0, signal: null });
  const msgs = child
    .stdout()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { msg: string; signal?: string });
  t.match(msgs.slice(-2), [{ msg: 'stopping', signal: 'SIGTERM' }, { msg: 'stopped' }], 'stopping and stopped are logged');
});
