import * as net from 'node:net';
import * as tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { ListenAddress } from '../config/config.ts';
import { StreamError } from '../xml/stream-error.ts';
import { STREAM_CLOSE, streamHeader } from '../xml/stream-header.ts';
import type { Admission, ConnectionGate } from './connection-gate.ts';

/** XEP-0368 §3: the ALPN protocol of direct-TLS c2s. */
const ALPN = ['xmpp-client'];

/** A refused connection that does not close its side after our stream error is dropped after this (ms). */
const REFUSED_LINGER_MS = 2000;

export interface C2sListenOptions {
  /** Counts each accepted connection until it authenticates, and refuses those over the limits. */
  gate: ConnectionGate;
  /** TCP keepalive on accepted sockets: first probe after this much idle time (ms; 0: off). */
  keepaliveMs: number;
  /** Direct TLS: a TLS handshake not done this long after accept is dropped (ms; tls.Server's `handshakeTimeout`). */
  handshakeTimeoutMs: number;
  /** The `from` of the stream header sent before refusing a STARTTLS connection (a served domain). */
  domain: string;
}

/**
 * Opens the c2s listeners: plain TCP for STARTTLS (RFC 6120 §5) and direct TLS (XEP-0368).
 *
 * Each accepted TCP connection gets TCP keepalive (`keepaliveMs`) and is admitted by the gate
 * at once (direct TLS before its handshake). Over a limit, a STARTTLS connection gets our
 * stream header and `<stream:error>` (`policy-violation` or `resource-constraint`) and is
 * closed; a direct-TLS one, which has no stream yet, is destroyed. The admission is released
 * when the TCP socket closes (and earlier by the client stream, at SASL success).
 *
 * `onSocket(socket, direct, admission)` gets each admitted connection (a TLSSocket, after the
 * handshake, when `direct`).
 * @throws Error (EADDRINUSE, EACCES …) naming the address when a port cannot be bound.
 */
export async function listenC2s(
  addresses: { starttls: ListenAddress[]; directTls: ListenAddress[] },
  credentials: { key: string; cert: string },
  options: C2sListenOptions,
  onSocket: (socket: net.Socket, direct: boolean, admission: Admission) => void,
): Promise<net.Server[]> {
  const servers: net.Server[] = [];
  try {
    for (const address of addresses.starttls) {
      const server = net.createServer((socket) => {
        const admission = admit(socket, options, true);
        if (admission) onSocket(socket, false, admission);
      });
      servers.push(await bind(server, address));
    }
    for (const address of addresses.directTls) {
      // The TLSSocket of 'secureConnection' has no public link to its TCP socket: the admission
      // made at 'connection' is found again by the peer's address and port.
      const pending = new Map<string, Admission>();
      const server = tls.createServer(
        { ...credentials, ALPNProtocols: ALPN, handshakeTimeout: options.handshakeTimeoutMs },
        (socket) => {
          const key = peerKey(socket);
          const admission = pending.get(key);
          pending.delete(key);
          if (admission) onSocket(socket, true, admission);
          else socket.destroy();
        },
      );
      server.on('connection', (raw: net.Socket) => {
        const admission = admit(raw, options, false);
        if (!admission) return;
        const key = peerKey(raw);
        pending.set(key, admission);
        raw.once('close', () => {
          if (pending.get(key) === admission) pending.delete(key);
        });
      });
      // A failed or timed-out handshake concerns that client only.
      server.on('tlsClientError', (_err, socket) => socket.destroy());
      servers.push(await bind(server, address));
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  return servers;
}

/**
 * Keepalive, then the gate: the admission (released at the socket's close), or undefined when
 * the connection was refused (and is being closed).
 */
function admit(socket: net.Socket, options: C2sListenOptions, starttls: boolean): Admission | undefined {
  if (options.keepaliveMs > 0) socket.setKeepAlive(true, options.keepaliveMs);
  const address = socket.remoteAddress;
  if (address === undefined) {
    // Already reset by the peer: nothing to count.
    socket.destroy();
    return undefined;
  }
  const verdict = options.gate.admit(address);
  if ('refused' in verdict) {
    socket.on('error', () => {});
    if (!starttls) {
      socket.destroy();
      return undefined;
    }
    // RFC 6120 §4.9.1.1: the error goes inside a stream, so our header comes first.
    const header = streamHeader({ from: options.domain, id: randomBytes(9).toString('base64url'), version: '1.0', 'xml:lang': 'en' });
    const err = new StreamError(verdict.refused, verdict.refused === 'policy-violation' ? 'too many unauthenticated connections from your address' : 'too many unauthenticated connections');
    // Input is read and dropped so that the peer's close is seen.
    socket.resume();
    socket.end(header + err.toXML() + STREAM_CLOSE);
    setTimeout(() => socket.destroy(), REFUSED_LINGER_MS).unref();
    return undefined;
  }
  socket.once('close', verdict.release);
  return verdict;
}

function peerKey(socket: net.Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}`;
}

function bind(server: net.Server, address: ListenAddress): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${address.host}:${address.port}: ${err.message}`)));
    server.listen(address.port, address.host, () => resolve(server));
  });
}
