/**
 * Crash durability (design §4.8): a proxy process that is SIGKILLed loses nothing it had written
 * through. A child Node process holds messages (singly and in a batch), ends a session, enables
 * push, reports, then keeps holding one message at a time, printing each index once `hold`
 * returned; it is killed mid-stream. The reopened store has everything reported.
 */
import t from 'tap';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { runInChildNode } from '../harness/child-node.ts';
import { openStore, STORE_FILE } from '../../src/storage/sqlite-store.ts';
import { HeldMessages } from '../../src/session/held-messages.ts';
import { SessionRegistry } from '../../src/sm/registry.ts';
import { PushRegistrations } from '../../src/push/registrations.ts';

const src = (file: string) => JSON.stringify(new URL(`../../src/${file}`, import.meta.url).href);

t.test('SIGKILL loses nothing that was held, remembered or registered', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'store-crash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const script = `
    const { openStore } = await import(${src('storage/sqlite-store.ts')});
    const { HeldMessages } = await import(${src('session/held-messages.ts')});
    const { SessionRegistry } = await import(${src('sm/registry.ts')});
    const { PushRegistrations } = await import(${src('push/registrations.ts')});
    const store = openStore(${JSON.stringify(dir)});
    const held = new HeldMessages(100000, { store });
    const msg = (body) => ({ xml: '<message><body>' + body + '</body></message>', receivedAt: Date.now() });
    for (let i = 0; i < 50; i++) held.hold('single@x', msg('s' + i));
    held.batch(() => { for (let i = 0; i < 500; i++) held.hold('batch@x', msg('b' + i)); });
    const reg = new SessionRegistry(10, { store });
    const session = { bareJid: 'alice@x' };
    const id = reg.add(session);
    reg.remove(id, session, 42);
    const push = new PushRegistrations({ store });
    push.enable('alice@x', 'push.example', 'n1', '<x/>');
    push.failed('alice@x', 'push.example', 'n1');
    console.log(JSON.stringify({ id }));
    let n = 0;
    const more = () => { held.hold('stream@x', msg('m' + n)); process.stdout.write(n++ + '\\n'); setImmediate(more); };
    more();
  `;
  const { child, id } = await runInChildNode<{ id: string }>(script, 'hang');
  let last = -1;
  let out = '';
  child.stdout!.on('data', (d: string) => {
    out += d;
    const lines = out.split('\n');
    out = lines.pop()!;
    for (const line of lines) if (/^\d+$/.test(line)) last = Number(line);
  });
  while (last < 200) {
    if (child.exitCode !== null) throw new Error(`the child exited (${child.exitCode}) before it was killed`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  child.kill('SIGKILL');
  await once(child, 'exit');
  child.stdout!.destroy();
  child.stderr!.destroy();
  const file = path.join(dir, STORE_FILE);
  t.ok(existsSync(`${file}-wal`) && statSync(`${file}-wal`).size > 0, 'the writes were in the WAL: recovery is exercised');

  const store = openStore(dir);
  t.teardown(() => store.close());
  const held = new HeldMessages(100000, { store });
  const single = held.take('single@x');
  t.equal(single.length, 50, 'single holds');
  const batch = held.take('batch@x');
  t.equal(batch.length, 500, 'the batch');
  t.match(batch[499]!.xml, '<body>b499</body>');
  const stream = held.take('stream@x');
  t.ok(stream.length >= last + 1, `every message reported held before the kill (${last + 1}, ${stream.length} found)`);
  t.same(
    stream.slice(0, last + 1).map((s) => /<body>m(\d+)</.exec(s.xml)![1]),
    Array.from({ length: last + 1 }, (_, i) => String(i)),
    'in order',
  );
  const reg = new SessionRegistry(10, { store });
  t.same(reg.old(id, 'alice@x'), { id, h: 42, condition: 'item-not-found' });
  const push = new PushRegistrations({ store });
  t.match(push.list('alice@x'), [{ jid: 'push.example', node: 'n1', form: '<x/>', failures: 1 }]);
});
