import t from 'tap';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { startProsody } from '../harness/prosody.ts';
import { startTestProxy, clientFor, waitFor, ACCOUNTS } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';

const accounts = ACCOUNTS;

t.test('upstream STARTTLS with an untrusted self-signed certificate is refused unless allowed', async (t) => {
  const prosody = await startProsody({ tls: 'required', accounts });
  t.teardown(() => prosody.stop());
  const strict = await startTestProxy(prosody, { upstream: { caFile: undefined } });
  t.teardown(() => strict.close());
  const c = await RawClient.tls({ port: strict.port });
  const answer = await c.auth('alice', 'alice-pw');
  t.equal(answer.getChildElements()[0]?.name, 'temporary-auth-failure', 'an unverifiable upstream is not a wrong password');
  c.destroy();

  const lax = await startTestProxy(prosody, { upstream: { caFile: undefined, acceptSelfSigned: true } });
  t.teardown(() => lax.close());
  const { jid } = await RawClient.login({ port: lax.port, user: 'alice', password: 'alice-pw' });
  t.equal(jid, 'alice@proxy.test/raw', 'explicit switch accepts it');
});

t.test('plain TCP upstream (tls none) works, and tls required refuses it', async (t) => {
  const prosody = await startProsody({ tls: 'none', accounts });
  t.teardown(() => prosody.stop());
  const plain = await startTestProxy(prosody, { upstream: { tls: 'none' } });
  t.teardown(() => plain.close());
  const { client, jid } = await RawClient.login({ port: plain.port, user: 'bob', password: 'bob-pw' });
  t.equal(jid, 'bob@proxy.test/raw');
  client.send('</stream:stream>');

  const required = await startTestProxy(prosody, { upstream: { tls: 'required' } });
  t.teardown(() => required.close());
  const c = await RawClient.tls({ port: required.port });
  t.equal((await c.auth('bob', 'bob-pw')).getChildElements()[0]?.name, 'temporary-auth-failure');
  c.destroy();
});

t.test("an upstream with its own SM: the client sees only the proxy's SM", async (t) => {
  const prosody = await startProsody({ tls: 'optional', smacks: true, accounts });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody);
  t.teardown(() => tp.close());
  const c = await RawClient.tls({ port: tp.port });
  await c.auth('alice', 'alice-pw');
  const features = await c.open();
  const sm = features.getChildElements().filter((f) => String(f.attrs.xmlns).startsWith('urn:xmpp:sm:'));
  t.same(sm.map((f) => f.attrs.xmlns), ['urn:xmpp:sm:3'], 'exactly one SM feature');
  t.ok(features.getChild('bind'), "the upstream's other features are relayed");
  await c.bind('r');
  c.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const enabled = await c.next((el) => el.name === 'enabled');
  const session = [...tp.proxy.sessions][0]!;
  t.equal(session.sm.enabled, true, 'the proxy, not the upstream, enabled SM');
  t.ok(enabled.attrs.id);
  c.send('</stream:stream>');
});

t.test('@xmpp/client logging in to offline messages keeps its stream (design §4.2 tolerance)', async (t) => {
  const prosody = await startProsody({ tls: 'required', accounts });
  t.teardown(() => prosody.stop());
  const tp = await startTestProxy(prosody);
  t.teardown(() => tp.close());
  const bob = clientFor(tp, 'bob', 'bob-pw', { resource: 'b' });
  await bob.start();
  for (let i = 1; i <= 3; i++) await bob.send(xml('message', { to: 'alice@proxy.test', type: 'chat' }, xml('body', {}, `offline ${i}`)));

  const alice = clientFor(tp, 'alice', 'alice-pw', { resource: 'a' });
  const got: string[] = [];
  let errors = 0;
  alice.on('stanza', (s: Element) => {
    const body = s.is('message') ? s.getChildText('body') : null;
    if (body !== null) got.push(body);
  });
  alice.on('element', (el: Element) => {
    if (el.name === 'stream:error') errors++;
  });
  alice.on('online', () => alice.send(xml('presence')));
  await alice.start();
  await waitFor(() => got.length === 3, 'offline messages delivered');
  for (let i = 1; i <= 10; i++) await bob.send(xml('message', { to: 'alice@proxy.test/a', type: 'chat' }, xml('body', {}, `live ${i}`)));
  await waitFor(() => got.length === 13, 'live messages delivered');
  const session = [...tp.proxy.sessions].find((s) => s.fullJid === 'alice@proxy.test/a')!;
  await waitFor(() => session.sm.queue.length === 0, 'acks accepted');
  t.equal(errors, 0, 'no stream error');
  t.same(got, ['offline 1', 'offline 2', 'offline 3', ...Array.from({ length: 10 }, (_, i) => `live ${i + 1}`)]);
  await alice.stop();
  await bob.stop();
});
