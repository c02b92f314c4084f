/**
 * The metrics HTTP endpoint (design §3 `metrics/`, §5: 127.0.0.1:9464 by default; loopback
 * unless configured otherwise, since the metrics describe the proxy's users' traffic):
 * - `GET /metrics`: the registry in the Prometheus text format;
 * - `GET /healthz`: 200 `ok` while the event loop answers (liveness);
 * - `GET /readyz`: 200 `ready` once the proxy serves clients, else 503 (readiness).
 * HEAD works on each; other methods get 405, other paths 404. A failing scrape answers 500 and
 * logs; nothing here can throw into the process.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from './metrics.ts';

/** Where the endpoint listens (config `metrics.listen`). */
export interface MetricsListen {
  host: string;
  port: number;
}

/** A running metrics endpoint. */
export interface MetricsServer {
  /** The bound address (the port resolved when 0 was asked). */
  address: AddressInfo;
  /** Stops listening and closes open connections (keep-alive ones included). */
  close(): Promise<void>;
}

const TEXT = 'text/plain; charset=utf-8';

/**
 * Starts the endpoint for `metrics` on `listen`.
 * @throws Error naming the address when it cannot be bound (in use, not local, no permission).
 */
export async function startMetricsServer(listen: MetricsListen, metrics: Pick<Metrics, 'registry' | 'ready'>, log: Logger): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    handle(req, res, metrics).catch((err: unknown) => {
      log.error({ err }, 'metrics endpoint: answering a request failed');
      if (!res.headersSent) reply(res, req, 500, TEXT, 'internal error\n');
      else res.destroy();
    });
  });
  // A scraper that stops mid-request must not hold a socket for long.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  const where = listen.host.includes(':') ? `[${listen.host}]:${listen.port}` : `${listen.host}:${listen.port}`;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(new Error(`metrics endpoint: cannot listen on ${where}: ${err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen(listen.port, listen.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  // After startup an error of the server itself is logged, never thrown.
  server.on('error', (err) => log.error({ err }, 'metrics endpoint error'));
  const address = server.address() as AddressInfo;
  log.info({ host: address.address, port: address.port }, 'metrics endpoint listening (/metrics, /healthz, /readyz)');
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, metrics: Pick<Metrics, 'registry' | 'ready'>): Promise<void> {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz') return reply(res, req, 404, TEXT, 'not found\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return reply(res, req, 405, TEXT, 'method not allowed\n');
  }
  if (path === '/healthz') return reply(res, req, 200, TEXT, 'ok\n');
  if (path === '/readyz') return metrics.ready() ? reply(res, req, 200, TEXT, 'ready\n') : reply(res, req, 503, TEXT, 'not ready\n');
  const body = await metrics.registry.metrics();
  reply(res, req, 200, metrics.registry.contentType, body);
}

/** Answers with `body` (its headers only for HEAD); never cached. */
function reply(res: http.ServerResponse, req: http.IncomingMessage, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
}
