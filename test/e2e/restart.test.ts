// Restart without loss (issue 11.2), the production command (src/cli.ts) in a child process in
// front of real Prosody, its store in a temp data dir:
// - SIGTERM: clients get system-shutdown; after the restart a client's old id gets <failed/>, it
//   binds, sends presence and gets every message it had not acked, once, with delay stamps;
// - SIGKILL in the middle of traffic: what was stored (messages held for an account whose
//   session ended, and those queued for a hibernated session) is there after the restart.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Element } from 'ltx';
import { freePort, startProsody, type ProsodyInstance } from '../harness/prosody.ts';
import { RawClient } from '../harness/raw-client.ts';
import { ACCOUNTS, waitFor } from '../harness/proxy.ts';
import { TcpRelay } from '../harness/tcp-relay.ts';
import { processGone, runTs, type Child } from '../cli/child.ts';

const SM = 'urn:xmpp:sm:3';
/** Startup (tsx) on a loaded machine: a "must start at all" guard, not a timing assertion. */
const MUST_START_MS = 60_000;
const USERS = [...ACCOUNTS, { user: 'dave', password: 'dave-pw' }, { user: 'erin', password: 'erin-pw' }];

const prosody = await startProsody({ tls: 'required', accounts: USERS });
t.teardown(() => prosody.stop());

/** A config file for the proxy in front of `prosody`, its store in `dataDir`. */
function writeConfig(dir: string, port: number, server: ProsodyInstance): string {
  const file = path.join(dir, 'config.yaml');
  writeFileSync(
    file,
    [
      `domains: [${server.domain}]`,
      `upstream: { host: 127.0.0.1, port: ${server.c2sPort}, caFile: ${JSON.stringify(server.caFile)} }`,
      'listen:',
      `  starttls: ["127.0.0.1:${port}"]`,
      '  directTls: none',
      'metrics: { listen: none }',
      'log: { level: info }',
      '',
    ].join('\n'),
  );
  return file;
}

async function startCli(t: { teardown(fn: () => unknown): void }, config: string, dataDir: string): Promise<Child> {
  const child = runTs('src/cli.ts', ['--config', config, '--data-dir', dataDir]);
  t.teardown(async () => {
    if (!processGone(child.proc.pid!)) child.proc.kill('SIGKILL');
    await child.exited(20_000);
  });
  await child.waitForStdout(/"msg":"proxy listening"/, MUST_START_MS);
  return child;
}

/** Logs in `user` on `resource`, enables XEP-0198 with resumption, sends presence. */
async function online(port: number, user: string, resource: string): Promise<{ client: RawClient; id: string }> {
  const password = USERS.find((u) => u.user === user)!.password;
  const { client } = await RawClient.login({ port, user, password, resource });
  client.send(`<enable xmlns='${SM}' resume='true'/>`);
  const enabled = await client.next((el) => el.name === 'enabled');
  client.send('<presence/>');
  return { client, id: String(enabled.attrs.id) };
}

type Inbox = () => Array<{ body: string; delayed: boolean }>;

/** Message bodies `client` receives from now on, with their delay stamps (read when called). */
function inbox(client: RawClient): Inbox {
  const from = client.received.length;
  return () =>
    client.received
      .slice(from)
      .filter((el) => el.name === 'message' && el.getChildText('body') !== null)
      .map((el) => ({ body: el.getChildText('body')!, delayed: el.getChild('delay', 'urn:xmpp:delay') !== undefined }));
}

/** Resolves once the server answered a ping on `client`'s stream: everything sent before it arrived. */
async function roundTrip(client: RawClient, id: string): Promise<void> {
  client.send(`<iq type='get' id='${id}'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await client.next((el) => el.name === 'iq' && el.attrs.id === id);
}

/** A client that comes back after the restart: its old id fails, it binds, sends presence. */
async function comeBack(port: number, user: string, resource: string, oldId: string): Promise<{ client: RawClient; failed: Element; got: Inbox }> {
  const password = USERS.find((u) => u.user === user)!.password;
  const client = await RawClient.authenticated({ port, user, password });
  client.send(`<resume xmlns='${SM}' previd='${oldId}' h='0'/>`);
  const failed = await client.next((el) => el.name === 'failed' || el.name === 'resumed');
  await client.bind(resource);
  const got = inbox(client);
  client.send('<presence/>');
  return { client, failed, got };
}

t.test('SIGTERM: system-shutdown, then every unacked message once after the restart', async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'restart-term-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  const config = writeConfig(dataDir, port, prosody);
  const first = await startCli(t, config, dataDir);

  const alice = await online(port, 'alice', 'phone');
  const aliceGot = inbox(alice.client);
  // erin's connection goes half-open: nothing she is sent arrives, nothing comes back, no FIN.
  const relay = await TcpRelay.start(port);
  t.teardown(() => relay.close());
  const erin = await online(relay.port, 'erin', 'laptop');
  const { client: bob } = await RawClient.login({ port, user: 'bob', password: 'bob-pw', resource: 'pc' });
  const sent = Array.from({ length: 6 }, (_, i) => `term-${i + 1}`);
  for (const body of sent) bob.send(`<message to='alice@${prosody.domain}/phone' type='chat' id='${body}'><body>${body}</body></message>`);
  await roundTrip(bob, 'b1');
  await waitFor(() => aliceGot().length === sent.length, 'alice gets the messages');
  // alice read them but never acked: her phone lost its network just then.

  await roundTrip(erin.client, 'e0');
  relay.blackhole();
  const streamError = alice.client.next((el) => el.name === 'stream:error');
  first.proc.kill('SIGTERM');
  const error = await streamError;
  t.ok(error.getChild('system-shutdown'), 'the client gets the system-shutdown stream error');
  const exit = await first.exited(30_000);
  // Exit code 1 would mean the shutdown deadline (shutdown.timeoutSeconds) cut it short.
  t.same(exit, { code: 0, signal: null }, 'the proxy exits 0 after SIGTERM, a half-open client included');
  alice.client.destroy();
  bob.destroy();

  await startCli(t, config, dataDir);
  const back = await comeBack(port, 'alice', 'phone', alice.id);
  t.equal(back.failed.name, 'failed', 'the old id cannot be resumed after a restart');
  t.ok(back.failed.getChild('item-not-found'), 'item-not-found');
  t.equal(back.failed.attrs.h, '1', 'with the h the proxy remembered (her presence)');
  await roundTrip(back.client, 'a1');
  await waitFor(() => back.got().length >= sent.length, 'the messages after the restart', 30_000);
  await roundTrip(back.client, 'a2');
  t.same(back.got().map((m) => m.body), sent, 'every message she had not acked, once, in order');
  t.ok(back.got().every((m) => m.delayed), 'each with an XEP-0203 delay stamp');
  back.client.destroy();
});

t.test('SIGKILL in the middle of traffic loses nothing that was stored', async (t) => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'restart-kill-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  const config = writeConfig(dataDir, port, prosody);
  const first = await startCli(t, config, dataDir);

  // dave's session ends with messages unacked: they are held for his next login (stored).
  const dave = await online(port, 'dave', 'tablet');
  const daveGot = inbox(dave.client);
  // erin's phone vanishes: her session hibernates, messages for her queue at the proxy.
  const erin = await online(port, 'erin', 'phone');
  const { client: bob } = await RawClient.login({ port, user: 'bob', password: 'bob-pw', resource: 'pc' });
  for (const n of [1, 2, 3]) bob.send(`<message to='dave@${prosody.domain}/tablet' type='chat' id='d${n}'><body>held-${n}</body></message>`);
  await roundTrip(bob, 'b1');
  await waitFor(() => daveGot().length === 3, 'dave gets the messages');
  dave.client.send('</stream:stream>');
  await dave.client.closed;
  await first.waitForStdout(/"cause":"client-closed"/, 30_000);

  erin.client.destroy();
  await first.waitForStdout(/client vanished: hibernating/, 30_000);
  for (const n of [1, 2, 3]) bob.send(`<message to='erin@${prosody.domain}/phone' type='chat' id='e${n}'><body>queued-${n}</body></message>`);
  await roundTrip(bob, 'b2');
  // Traffic goes on (bob to himself through the proxy) when the proxy is killed.
  const traffic = setInterval(() => bob.send(`<message to='bob@${prosody.domain}/pc' type='chat'><body>noise</body></message>`), 20);
  await first.waitForStdout(/messages queued for a hibernated session stored|"stored":3/, 30_000).catch(() => undefined);
  first.proc.kill('SIGKILL');
  await first.exited(30_000);
  clearInterval(traffic);
  bob.destroy();

  await startCli(t, config, dataDir);
  const daveBack = await comeBack(port, 'dave', 'tablet', dave.id);
  await waitFor(() => daveBack.got().length >= 3, 'the held messages', 30_000);
  await roundTrip(daveBack.client, 'd1');
  t.same(daveBack.got().map((m) => m.body), ['held-1', 'held-2', 'held-3'], 'held messages survive a SIGKILL, once each');
  t.ok(daveBack.got().every((m) => m.delayed), 'with delay stamps');
  daveBack.client.destroy();

  const erinBack = await comeBack(port, 'erin', 'phone', erin.id);
  await waitFor(() => erinBack.got().length >= 3, 'the queued messages', 30_000);
  await roundTrip(erinBack.client, 'e1');
  t.same(erinBack.got().map((m) => m.body), ['queued-1', 'queued-2', 'queued-3'], "a hibernated session's queue survives a SIGKILL, once each");
  erinBack.client.destroy();
});
