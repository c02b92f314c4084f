/**
 * A TCP relay on loopback between the proxy and its upstream (or between a client and the
 * proxy), for injecting network faults: cut every connection, or freeze them (half-open: nothing
 * is forwarded and nothing is closed, as when a NAT or a cable silently drops traffic), or
 * {@link TcpRelay.blackhole} them (frozen, and a close on one side is not passed on either: a
 * phone whose network vanished).
 */
import * as net from 'node:net';

/** Characters of each connection's client-side traffic kept in {@link TcpRelay.sent}. */
const SENT_TAIL = 64 * 1024;

/** One relayed connection: `held` is what a hold keeps back from the client side until released. */
interface Pair {
  a: net.Socket;
  b: net.Socket;
  frozen: boolean;
  holdCloses: boolean;
  held?: Buffer[];
}

export class TcpRelay {
  readonly port: number;
  #server: net.Server;
  #pairs = new Set<Pair>();
  #frozen = false;
  #holdCloses = false;
  /** Connections whose target side closed while their client side was still open. */
  closedByTarget = 0;
  /** Connections accepted so far (each upstream link is one). */
  accepted = 0;
  /** Connections reset by {@link killOn}. */
  killed = 0;
  #kills: RegExp[] = [];
  #inTurn: RegExp[] = [];
  #holds: Array<{ pattern: RegExp; release: Promise<void> }> = [];
  /** Whether {@link sent} records what the client side sends (off by default: it costs a copy per chunk). */
  record = false;
  /**
   * While {@link record} is on: what the client side sent, per connection in accept order
   * (latin1 text, its last 64 KiB; empty for what it sent while recording was off).
   */
  readonly sent: string[] = [];

  private constructor(server: net.Server, port: number) {
    this.#server = server;
    this.port = port;
  }

  /** Listens on a free loopback port and forwards each connection to `targetPort`. */
  static async start(targetPort: number): Promise<TcpRelay> {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const relay = new TcpRelay(server, (server.address() as net.AddressInfo).port);
    server.on('connection', (a) => relay.#accept(a, targetPort));
    return relay;
  }

  #accept(a: net.Socket, targetPort: number): void {
    this.accepted++;
    const b = net.connect({ host: '127.0.0.1', port: targetPort });
    const pair: Pair = { a, b, frozen: this.#frozen, holdCloses: this.#holdCloses };
    this.#pairs.add(pair);
    const index = this.sent.push('') - 1;
    // Client side to target: recorded, and watched for the armed kills.
    a.on('data', (chunk: Buffer) => {
      if (!this.record && this.#kills.length === 0 && this.#inTurn.length === 0) {
        if (!pair.frozen) b.write(chunk);
        return;
      }
      // The proxy writes each event-loop turn's output as one chunk: a stanza is not split.
      const text = chunk.toString('latin1');
      if (this.record) this.sent[index] = (this.sent[index] + text).slice(-SENT_TAIL);
      const i = this.#kills.findIndex((k) => k.test(text));
      if (i !== -1 || this.#inTurn[0]?.test(text)) {
        if (i !== -1) this.#kills.splice(i, 1);
        else this.#inTurn.shift();
        // The upstream "dies" just as this arrives: the server never sees it.
        this.killed++;
        reset(a);
        reset(b);
        return;
      }
      if (!pair.frozen) b.write(chunk);
    });
    // Target to client side: watched for the armed holds.
    b.on('data', (chunk: Buffer) => {
      if (pair.held) return void pair.held.push(chunk);
      const i = this.#holds.length > 0 ? this.#holds.findIndex((h) => h.pattern.test(chunk.toString('latin1'))) : -1;
      if (i !== -1) {
        // Held in order: this and what follows wait for the release.
        const { release } = this.#holds.splice(i, 1)[0]!;
        pair.held = [chunk];
        void release.then(() => {
          const held = pair.held ?? [];
          pair.held = undefined;
          if (!pair.frozen && !a.destroyed) for (const c of held) a.write(c);
        });
        return;
      }
      if (!pair.frozen) a.write(chunk);
    });
    const close = () => {
      a.destroy();
      b.destroy();
      this.#pairs.delete(pair);
    };
    let targetGone = false;
    const targetClosed = () => {
      if (!targetGone && !a.destroyed) this.closedByTarget++;
      targetGone = true;
      // Blackholed: the client side learns nothing (it finds out by itself, or the test tells it).
      if (pair.holdCloses) b.destroy();
      else close();
    };
    a.on('error', close);
    a.on('close', close);
    b.on('error', targetClosed);
    b.on('close', targetClosed);
  }

  /**
   * Arms a one-shot fault: the next connection on which the proxy sends something matching
   * `pattern` (plain-text upstreams only) is reset before that data reaches the server.
   */
  killOn(pattern: RegExp): void {
    this.#kills.push(pattern);
  }

  /**
   * Arms one-shot faults that fire in the given order, as {@link killOn} each: only the first
   * not yet fired is watched for. Armed up front, so no reconnect can outrun the test re-arming.
   */
  killInTurn(patterns: RegExp[]): void {
    this.#inTurn.push(...patterns);
  }

  /**
   * Arms a one-shot hold: the next chunk the target sends that matches `pattern`, and everything
   * after it on that connection, is forwarded (in order) only once `release` resolves: a server
   * answer that is late, without anything overtaking it.
   */
  holdFromTarget(pattern: RegExp, release: Promise<void>): void {
    this.#holds.push({ pattern, release });
  }

  /** Live connections. */
  get connections(): number {
    return this.#pairs.size;
  }

  /** Resets every connection (both ends see the drop at once). */
  cutAll(): void {
    for (const { a, b } of [...this.#pairs]) {
      reset(a);
      reset(b);
    }
  }

  /** Half-open: connections stay up but forward nothing, new ones included. */
  freeze(): void {
    this.#frozen = true;
    for (const pair of this.#pairs) pair.frozen = true;
  }

  /**
   * Frozen both ways, new connections included, and the target closing a connection is not
   * passed on to its client side (a client whose network vanished learns of nothing).
   * {@link thaw} makes new connections work again; blackholed ones stay dead.
   */
  blackhole(): void {
    this.freeze();
    this.#holdCloses = true;
    for (const pair of this.#pairs) pair.holdCloses = true;
  }

  /** New connections work again; frozen ones stay dead (what they swallowed is lost). */
  thaw(): void {
    this.#frozen = false;
    this.#holdCloses = false;
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}

/**
 * RST when the socket can still send one; a plain destroy otherwise. Node's resetAndDestroy() on
 * a socket already shut down for writing fails inside libuv (EINVAL) and leaves the handle open,
 * which keeps the test process alive.
 */
function reset(s: net.Socket): void {
  if (s.destroyed) return;
  if (s.writableEnded || s.connecting) s.destroy();
  else s.resetAndDestroy();
}
