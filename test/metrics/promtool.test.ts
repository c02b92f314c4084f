// Prometheus' own linter on a real scrape: `promtool check metrics` (Debian package `prometheus`,
// installed by .ci/run) must find no problem in what the endpoint serves after real traffic
// through the proxy on Prosody (names, types, suffixes, HELP). Without promtool this test fails.
import t from 'tap';
import { spawn } from 'node:child_process';
import pino from 'pino';
import { startProsodyAndProxy } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { createMetrics } from '../../src/metrics/metrics.ts';
import { startMetricsServer } from '../../src/metrics/server.ts';
import { parseSamples, request, valueOf } from './scrape.ts';

const SM = 'urn:xmpp:sm:3';

/** Runs `promtool check metrics` on `text`; its exit code and everything it printed. */
function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d));
    child.stderr.on('data', (d: Buffer) => (output += d));
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'ENOENT' ? new Error('promtool not found: install the Debian package prometheus (see .ci/run)') : err),
    );
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.on('error', () => {}); // an early exit is reported by 'close'
    child.stdin.end(text);
  });
}

t.test('promtool check metrics finds no problem in a scrape after traffic', async (t) => {
  const { tp } = await startProsodyAndProxy(t);
  const metrics = createMetrics({ manager: tp.proxy.manager, held: tp.proxy.held, certificateNotAfter: () => tp.proxy.certificateNotAfter, ready: () => true });
  t.teardown(() => metrics.close());
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, metrics, pino({ level: 'silent' }));
  t.teardown(() => server.close());

  const bad = await RawClient.tls({ port: tp.port });
  await bad.auth('alice', 'wrong');
  bad.destroy();
  const { client: alice } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'lint' });
  const { client: bob } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'lint' });
  alice.send(`<enable xmlns='${SM}' resume='true'/>`);
  const id = (await alice.next((el) => el.name === 'enabled')).attrs.id as string;
  alice.send('<presence/>');
  bob.send(`<message to='alice@proxy.test/lint' type='chat'><body>lint me</body></message>`);
  await alice.next((el) => el.name === 'message');
  alice.destroy();
  const again = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  again.send(`<resume xmlns='${SM}' previd='${id}' h='0'/>`);
  t.equal((await again.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');

  // Scrape once every kind of metric has samples (histograms observed, labeled counters moved).
  let body = '';
  const start = Date.now();
  for (;;) {
    const got = await request(server.address.port, '/metrics');
    t.equal(got.status, 200);
    body = got.body;
    const s = parseSamples(body);
    const moved = ['xmpp_sm_proxy_sm_queue_depth_count', 'xmpp_sm_proxy_custody_ack_latency_seconds_count', 'xmpp_sm_proxy_hibernation_duration_seconds_count'];
    if (moved.every((name) => valueOf(s, name) > 0)) break;
    if (Date.now() - start > 20_000) throw new Error(`metrics did not move: ${moved.filter((name) => valueOf(s, name) === 0)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const { code, output } = await promtool(body);
  t.equal(output.trim(), '', 'promtool printed no problem');
  t.equal(code, 0, 'promtool exit code 0');
  again.send('</stream:stream>');
  bob.send('</stream:stream>');
  await Promise.all([again.closed, bob.closed]);
});

t.test('promtool is not fooled: it flags a badly named metric', async (t) => {
  const { code, output } = await promtool('# HELP bad_total A gauge.\n# TYPE bad_total gauge\nbad_total 1\n');
  t.not(code, 0, 'non-zero exit code');
  t.match(output, /bad_total/, 'names the metric');
});
