/**
 * A TCP relay for a plain-text (no TLS) upstream that records when each connection was accepted
 * and when the server's SASL `<success/>` went through it, optionally with a one-way latency
 * (a WAN, so that a login takes a few round trips' time). With it a test can see how the proxy
 * spreads its upstream logins: how many were in flight at once and over how long they came.
 * Like TcpRelay it can cut every connection.
 */
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

/** One upstream connection seen by the relay; times are performance.now() (ms). */
export interface RelayedLogin {
  acceptedAt: number;
  /** The server's `<success/>` was handed to the proxy. */
  authedAt?: number;
  closedAt?: number;
}

export class LoginWatchRelay {
  readonly port: number;
  readonly logins: RelayedLogin[] = [];
  #server: net.Server;
  #sockets = new Set<net.Socket>();

  private constructor(server: net.Server, port: number) {
    this.#server = server;
    this.port = port;
  }

  /** Listens on a free loopback port; forwards to `targetPort`, each chunk `latencyMs` late. */
  static async start(targetPort: number, latencyMs = 0): Promise<LoginWatchRelay> {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const relay = new LoginWatchRelay(server, (server.address() as net.AddressInfo).port);
    server.on('connection', (a) => relay.#accept(a, targetPort, latencyMs));
    return relay;
  }

  #accept(a: net.Socket, targetPort: number, latencyMs: number): void {
    const login: RelayedLogin = { acceptedAt: performance.now() };
    this.logins.push(login);
    const b = net.connect({ host: '127.0.0.1', port: targetPort });
    let tail = '';
    // Equal delays keep the chunks in order (Node runs same-duration timers first in, first out).
    const forward = (from: net.Socket, to: net.Socket, watch: boolean) =>
      from.on('data', (chunk: Buffer) =>
        setTimeout(() => {
          if (to.destroyed) return;
          to.write(chunk);
          if (!watch || login.authedAt !== undefined) return;
          tail = (tail + chunk.toString('latin1')).slice(-4096);
          if (tail.includes('<success')) login.authedAt = performance.now();
        }, latencyMs),
      );
    forward(a, b, false);
    forward(b, a, true);
    const close = () => {
      login.closedAt ??= performance.now();
      a.destroy();
      b.destroy();
      this.#sockets.delete(a);
      this.#sockets.delete(b);
    };
    for (const s of [a, b]) {
      this.#sockets.add(s);
      s.on('error', close);
      s.on('close', close);
    }
  }

  /** Live sockets (two per relayed connection). */
  get connections(): number {
    return this.#sockets.size / 2;
  }

  /**
   * The most logins in flight at once among `logins`: each counts from its accept until its
   * `<success/>` (or its close, or now). The proxy's own span of a successful login begins before
   * the accept and ends after the success, so for those this never counts more than the proxy
   * really had going (a failed one counts until its close, a little after the proxy let go).
   */
  static maxInFlight(logins: RelayedLogin[]): number {
    const now = performance.now();
    const events = logins.flatMap((l) => [
      { at: l.acceptedAt, d: 1 },
      { at: l.authedAt ?? l.closedAt ?? now, d: -1 },
    ]);
    events.sort((x, y) => x.at - y.at || x.d - y.d);
    let inFlight = 0;
    let max = 0;
    for (const e of events) max = Math.max(max, (inFlight += e.d));
    return max;
  }

  /** Resets every relayed connection (both ends see the drop at once). */
  cutAll(): void {
    for (const s of [...this.#sockets]) {
      // As TcpRelay: resetAndDestroy() on a socket shut down for writing would leave the handle open.
      if (s.destroyed) continue;
      if (s.writableEnded || s.connecting) s.destroy();
      else s.resetAndDestroy();
    }
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}
