import * as net from 'node:net';
import * as tls from 'node:tls';
import type { ListenAddress } from '../config/config.ts';

/** XEP-0368 §3: the ALPN protocol of direct-TLS c2s. */
const ALPN = ['xmpp-client'];

/**
 * Opens the c2s listeners: plain TCP for STARTTLS (RFC 6120 §5) and direct TLS (XEP-0368).
 * `onSocket(socket, direct)` gets each accepted connection (a TLSSocket, after the handshake,
 * when `direct`).
 * @throws Error (EADDRINUSE, EACCES …) naming the address when a port cannot be bound.
 */
export async function listenC2s(
  addresses: { starttls: ListenAddress[]; directTls: ListenAddress[] },
  credentials: { key: string; cert: string },
  onSocket: (socket: net.Socket, direct: boolean) => void,
): Promise<net.Server[]> {
  const servers: net.Server[] = [];
  try {
    for (const address of addresses.starttls) {
      servers.push(await bind(net.createServer((socket) => onSocket(socket, false)), address));
    }
    for (const address of addresses.directTls) {
      const server = tls.createServer({ ...credentials, ALPNProtocols: ALPN }, (socket) => onSocket(socket, true));
      // A failed handshake concerns that client only.
      server.on('tlsClientError', (_err, socket) => socket.destroy());
      servers.push(await bind(server, address));
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  return servers;
}

function bind(server: net.Server, address: ListenAddress): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`cannot listen on ${address.host}:${address.port}: ${err.message}`)));
    server.listen(address.port, address.host, () => resolve(server));
  });
}
