// The metrics endpoint alone (src/metrics/server.ts), on a loopback port: routes, methods, HEAD,
// readiness, a failing scrape (500 and a log line, the server lives on), a port in use, close().
import t from 'tap';
import * as http from 'node:http';
import pino from 'pino';
import { Gauge, Registry } from 'prom-client';
import { startMetricsServer } from '../../src/metrics/server.ts';
import { request } from './scrape.ts';

const lines: string[] = [];
const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });

let ready = false;
let broken = false;
const registry = new Registry();
new Gauge({
  name: 'test_value',
  help: 'A test gauge (units).',
  registers: [registry],
  collect() {
    if (broken) throw new Error('a source failed');
    this.set(42);
  },
});
const server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, { registry, ready: () => ready }, log);
t.teardown(() => server.close());
const { port } = server.address;

t.test('GET and HEAD /metrics serve the registry in its content type', async (t) => {
  const got = await request(port, '/metrics');
  t.equal(got.status, 200);
  t.equal(got.headers['content-type'], registry.contentType);
  t.match(got.body, /^test_value 42$/m);
  const head = await request(port, '/metrics', 'HEAD');
  t.equal(head.status, 200);
  t.equal(head.body, '', 'HEAD has no body');
  t.equal(Number(head.headers['content-length']), Buffer.byteLength(got.body), 'but the length of the GET body');
  t.equal((await request(port, '/metrics?x=1')).status, 200, 'a query string is ignored');
});

t.test('/healthz is live, /readyz follows ready()', async (t) => {
  const health = await request(port, '/healthz');
  t.same([health.status, health.body], [200, 'ok\n']);
  t.equal((await request(port, '/healthz', 'HEAD')).status, 200);
  t.equal((await request(port, '/readyz')).status, 503, 'not ready yet');
  ready = true;
  t.equal((await request(port, '/readyz')).status, 200, 'ready');
});

t.test('other paths 404, other methods 405 with Allow', async (t) => {
  t.equal((await request(port, '/')).status, 404);
  t.equal((await request(port, '/metrics/x')).status, 404);
  const post = await request(port, '/metrics', 'POST');
  t.equal(post.status, 405);
  t.equal(post.headers.allow, 'GET, HEAD');
  t.equal((await request(port, '/healthz', 'DELETE')).status, 405);
});

t.test('a failing scrape answers 500 and logs; the endpoint lives on', async (t) => {
  broken = true;
  const got = await request(port, '/metrics');
  t.equal(got.status, 500);
  t.ok(lines.some((l) => l.includes('answering a request failed') && l.includes('a source failed')), 'an error line names the cause');
  broken = false;
  t.equal((await request(port, '/metrics')).status, 200, 'the next scrape works');
});

t.test('a port in use is a clear error naming the address', async (t) => {
  await t.rejects(startMetricsServer({ host: '127.0.0.1', port }, { registry, ready: () => true }, log), {
    message: new RegExp(`metrics endpoint: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`),
  });
});

t.test('close() resolves with a keep-alive connection open', async (t) => {
  const other = await startMetricsServer({ host: '127.0.0.1', port: 0 }, { registry, ready: () => true }, log);
  const agent = new http.Agent({ keepAlive: true });
  await new Promise<void>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: other.address.port, path: '/healthz', agent }, (res) => {
      res.resume();
      res.on('end', resolve);
    }).on('error', reject);
  });
  await other.close();
  agent.destroy();
  t.pass('closed');
});
