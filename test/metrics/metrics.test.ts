// The proxy's metrics (issue 11.4) against a real proxy on real Prosody, read the way Prometheus
// reads them: over HTTP from the proxy's own endpoint (metrics.listen), parsed from the text format. Real traffic moves each
// counter: logins (refused and accepted), SM chat with acks, a hibernation and its resume, a
// failed resume, an upstream cut and reconnect, a takeover of a hibernated session, a session
// end whose unacked message is held and delivered at the next login. No label may carry a JID,
// resource or address.
import t from 'tap';
import type { Element } from 'ltx';
import { prosodyBehindRelay, sessionOf } from '../harness/chat.ts';
import { RawClient } from '../harness/raw-client.ts';
import { waitFor } from '../harness/proxy.ts';
import { parseSamples, request, valueOf, type Sample } from './scrape.ts';

const SM = 'urn:xmpp:sm:3';
const P = 'xmpp_sm_proxy_';
const { relay, tp } = await prosodyBehindRelay(t, {}, { metrics: { listen: { host: '127.0.0.1', port: 0 } } });
const port = tp.proxy.metricsAddress!.port;

async function scrape(): Promise<Sample[]> {
  const got = await request(port, '/metrics');
  if (got.status !== 200) throw new Error(`scrape answered ${got.status}`);
  return parseSamples(got.body);
}

/** Scrapes until `cond` holds (polling, never a fixed sleep); returns that scrape. */
async function scrapeUntil(cond: (s: Sample[]) => boolean, what: string, timeoutMs = 20_000): Promise<Sample[]> {
  const start = Date.now();
  for (;;) {
    const samples = await scrape();
    if (cond(samples)) return samples;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until metric `name` (with `labels`) reaches `min`; returns that scrape. */
const atLeast = (name: string, labels: Record<string, string>, min: number) =>
  scrapeUntil((s) => valueOf(s, P + name, labels) >= min, `${name}${JSON.stringify(labels)} >= ${min}`);

/** A client logged in through the proxy with XEP-0198 (resumable) enabled; its resumption id. */
async function smClient(user: string, resource: string): Promise<{ client: RawClient; id: string }> {
  const { client } = await RawClient.login({ port: tp.port, user, password: `${user}-pw`, resource });
  client.send(`<enable xmlns='${SM}' resume='true'/>`);
  const enabled = await client.next((el) => el.name === 'enabled');
  client.send('<presence/>');
  return { client, id: enabled.attrs.id as string };
}

/** Stanzas `client` received after its `<enabled/>`/`<resumed/>` (its XEP-0198 h). */
function handled(client: RawClient): number {
  let start = client.received.length - 1;
  while (start >= 0 && !['enabled', 'resumed'].includes(client.received[start]!.name)) start--;
  return client.received.slice(start + 1).filter((el: Element) => ['message', 'presence', 'iq'].includes(el.name)).length;
}

const chat = (to: string, body: string) => `<message to='${to}' type='chat'><body>${body}</body></message>`;

t.test('endpoints: health, readiness, 404', async (t) => {
  t.same((await request(port, '/healthz')).status, 200);
  t.equal(tp.proxy.metricsAddress!.address, '127.0.0.1', 'on loopback');
  t.equal((await request(port, '/readyz')).status, 200, 'ready: the listeners are up');
  t.equal((await request(port, '/other')).status, 404);
  const samples = await scrape();
  t.equal(valueOf(samples, P + 'build_info', { version: '0.1.0' }), 1, 'build info carries the version');
  t.equal(valueOf(samples, P + 'tls_certificate_expiry_timestamp_seconds'), tp.proxy.certificateNotAfter.getTime() / 1000, 'certificate expiry in Unix seconds');
  t.ok(samples.some((s) => s.name === 'process_cpu_user_seconds_total'), 'Node process metrics');
  t.ok(samples.some((s) => s.name === 'nodejs_heap_size_used_bytes'), 'Node heap metrics');
});

let alice: RawClient;
let aliceId: string;
let bob: RawClient;

t.test('logins by result, sessions, stanzas, acks, queue depth, custody latency', async (t) => {
  const bad = await RawClient.tls({ port: tp.port });
  t.equal((await bad.auth('alice', 'wrong')).name, 'failure');
  bad.destroy();
  await atLeast('client_logins_total', { mode: 'plain', result: 'not-authorized' }, 1);

  ({ client: alice, id: aliceId } = await smClient('alice', 'phone'));
  ({ client: bob } = await smClient('bob', 'desk'));
  let samples = await atLeast('client_logins_total', { result: 'success' }, 2);
  t.equal(valueOf(samples, P + 'sessions_started_total'), 2, 'two sessions started');
  samples = await atLeast('sessions', { state: 'attached' }, 2);
  t.equal(valueOf(samples, P + 'sessions', { state: 'hibernated' }), 0);

  alice.send(`<iq type='get' id='ping1' to='proxy.test'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await alice.next((el) => el.name === 'iq' && el.attrs.id === 'ping1');
  bob.send(chat('alice@proxy.test/phone', 'hello'));
  await alice.next((el) => el.name === 'message' && el.getChildText('body') === 'hello');
  // The proxy asks for an ack after a burst (one request outstanding; it may precede 'hello').
  await waitFor(() => alice.received.some((el) => el.name === 'r'), 'an ack request to alice');
  alice.send(`<a xmlns='${SM}' h='${handled(alice)}'/>`);
  samples = await atLeast('sm_acks_received_total', {}, 1);
  t.ok(valueOf(samples, P + 'sm_ack_requests_total') >= 1, 'ack requests counted');
  t.ok(valueOf(samples, P + 'sm_queue_depth_count') >= 1, 'queue depth observed at each request');
  t.ok(valueOf(samples, P + 'sm_queue_depth_bucket', { le: '+Inf' }) >= 1);
  t.ok(valueOf(samples, P + 'stanzas_total', { direction: 'in', kind: 'message' }) >= 1, 'client message in');
  t.ok(valueOf(samples, P + 'stanzas_total', { direction: 'in', kind: 'presence' }) >= 2, 'client presences in');
  t.ok(valueOf(samples, P + 'stanzas_total', { direction: 'out', kind: 'message' }) >= 1, 'message out to a client');
  t.ok(valueOf(samples, P + 'stanzas_total', { direction: 'in', kind: 'iq' }) >= 1, 'an iq in');
  t.ok(valueOf(samples, P + 'stanzas_total', { direction: 'out', kind: 'iq' }) >= 1, 'its answer out');
  t.notOk(samples.some((s) => s.name === P + 'stanzas_total' && s.labels.kind === 'other'), 'no other kind');
  await atLeast('custody_ack_latency_seconds_count', {}, 1);
});

t.test('hibernation, a failed and a successful resume', async (t) => {
  const gone = alice;
  alice.destroy();
  let samples = await atLeast('hibernations_total', {}, 1);
  samples = await atLeast('sessions', { state: 'hibernated' }, 1);
  bob.send(chat('alice@proxy.test/phone', 'while away'));

  const stranger = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  stranger.send(`<resume xmlns='${SM}' previd='no-such-id' h='0'/>`);
  await stranger.next((el) => el.name === 'failed');
  stranger.destroy();
  await atLeast('resumptions_total', { result: 'failed', reason: 'unknown-id' }, 1);

  alice = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  alice.send(`<resume xmlns='${SM}' previd='${aliceId}' h='${handled(gone)}'/>`);
  t.equal((await alice.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');
  await alice.next((el) => el.name === 'message' && el.getChildText('body') === 'while away');
  samples = await atLeast('resumptions_total', { result: 'success', reason: 'none' }, 1);
  t.ok(valueOf(samples, P + 'hibernation_ends_total', { cause: 'resumed' }) >= 1, 'the hibernation ended by a resume');
  t.ok(valueOf(samples, P + 'hibernation_duration_seconds_count') >= 1, 'its duration observed');
  t.ok(valueOf(samples, P + 'hibernation_duration_seconds_sum') > 0);
});

t.test('an upstream cut: reconnects by reason, links restored, reconnect duration', async (t) => {
  const session = sessionOf(tp, 'alice@proxy.test/phone');
  relay.cutAll();
  const samples = await scrapeUntil(
    (s) => valueOf(s, P + 'upstream_links_restored_total', { how: 'bound' }) >= 2,
    'both links restored by a new login',
  );
  t.ok(valueOf(samples, P + 'upstream_reconnects_total') >= 2, 'both losses counted');
  t.ok(valueOf(samples, P + 'upstream_reconnects_total', { reason: 'connection-lost' }) >= 1, 'as connection losses');
  t.ok(valueOf(samples, P + 'upstream_reconnect_duration_seconds_count') >= 2, 'reconnect durations observed');
  await waitFor(() => session.upstreamLinked, 'alice linked again', 20_000);
  await atLeast('sessions', { state: 'attached' }, 2);
});

t.test('a hibernated session taken over ends its hibernation as replaced', async (t) => {
  const { client: tablet } = await smClient('bob', 'tablet');
  tablet.destroy();
  await atLeast('hibernations_total', {}, 2);
  const { client: again } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'tablet' });
  const samples = await atLeast('hibernation_ends_total', { cause: 'replaced' }, 1);
  t.ok(valueOf(samples, P + 'sessions_ended_total', { cause: 'replaced' }) >= 1, 'and the session ended as replaced');
  again.send('</stream:stream>');
  await again.closed;
});

t.test('a session end settles an unacked message into the hold; the next login gets it', async (t) => {
  const heldBefore = tp.proxy.held as { stored?: number; delivered?: number };
  bob.send(chat('alice@proxy.test/phone', 'keep me'));
  await alice.next((el) => el.name === 'message' && el.getChildText('body') === 'keep me');
  alice.send('</stream:stream>');
  let samples = await atLeast('sessions_ended_total', { cause: 'client-closed' }, 1);
  samples = await atLeast('settled_stanzas_total', { outcome: 'hold' }, 1);
  t.ok(valueOf(samples, P + 'held_messages') >= 1, 'a message is held');
  t.ok(valueOf(samples, P + 'held_messages_bytes') > 0, 'with its size');
  t.ok(valueOf(samples, P + 'held_messages_accounts') >= 1, 'for an account');

  const { client: back } = await smClient('alice', 'laptop');
  await back.next((el) => el.name === 'message' && el.getChildText('body') === 'keep me');
  samples = await scrapeUntil((s) => valueOf(s, P + 'held_messages') === 0, 'the hold emptied');
  for (const [key, name] of [['stored', 'held_messages_stored_total'], ['delivered', 'held_messages_delivered_total']] as const) {
    if (typeof heldBefore[key] === 'number') t.ok(valueOf(samples, P + name) >= 1, `${name} counts it`);
    else t.notOk(samples.some((s) => s.name === P + name), `${name} has no sample while HeldMessages has no ${key}`);
  }
  t.ok(samples.some((s) => s.name === P + 'held_messages_expired_total'), 'expired held messages exposed');
  t.ok(samples.some((s) => s.name === P + 'held_messages_dropped_total'), 'dropped held messages exposed');
  t.ok(samples.some((s) => s.name === P + 'duplicates_dropped_total'), 'duplicates exposed');
  t.ok(samples.some((s) => s.name === P + 'sm_acks_delayed_total'), 'delayed acks exposed');
  back.send('</stream:stream>');
  bob.send('</stream:stream>');
  await Promise.all([back.closed, bob.closed]);
});

t.test('no label value carries a JID, a resource or an address', async (t) => {
  const samples = await scrape();
  const values = samples.flatMap((s) => Object.values(s.labels));
  t.ok(values.length > 100, `${values.length} label values checked`);
  t.same(values.filter((v) => v.includes('@') || v.includes('/') || v.includes('127.0.0.1') || v.includes('proxy.test')), []);
  const names = new Set(samples.filter((s) => s.name.startsWith(P)).flatMap((s) => Object.keys(s.labels)));
  t.same([...names].sort(), ['cause', 'direction', 'how', 'kind', 'le', 'mode', 'outcome', 'reason', 'result', 'state', 'version'], 'only the fixed label names');
});
