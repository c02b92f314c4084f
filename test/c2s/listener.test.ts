/**
 * The c2s listeners on real loopback sockets: TCP keepalive as the kernel sees it (`ss`), the
 * unauthenticated-connection limits at accept (STARTTLS and direct TLS, before its handshake),
 * the admission's release at close, and direct TLS's handshake timeout.
 */
import t, { type Test } from 'tap';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import pino from 'pino';
import { Parser } from '@xmpp/xml';
import type { Element } from 'ltx';
import { listenC2s, type C2sListenOptions } from '../../src/c2s/listener.ts';
import { ConnectionGate, type Admission } from '../../src/c2s/connection-gate.ts';
import { generateSelfSigned } from '../../src/tls/certificates.ts';
import { waitFor } from '../harness/proxy.ts';

const credentials = generateSelfSigned(['proxy.test']);
const silent = pino({ level: 'silent' });

/** Listeners on free loopback ports; accepted sockets are kept (and destroyed at the end). */
async function listen(t: Test, options: Partial<C2sListenOptions> = {}) {
  const gate = options.gate ?? new ConnectionGate({ maxTotal: 100, maxPerIp: 100, log: silent });
  const accepted: Array<{ socket: net.Socket; direct: boolean; admission: Admission }> = [];
  const servers = await listenC2s(
    { starttls: [{ host: '127.0.0.1', port: 0 }], directTls: [{ host: '127.0.0.1', port: 0 }] },
    credentials,
    { gate, keepaliveMs: 0, handshakeTimeoutMs: 10_000, domain: 'proxy.test', ...options },
    (socket, direct, admission) => {
      socket.on('error', () => {});
      accepted.push({ socket, direct, admission });
    },
  );
  const clients: net.Socket[] = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    for (const a of accepted) a.socket.destroy();
    gate.close();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });
  const port = (servers[0]!.address() as net.AddressInfo).port;
  const tlsPort = (servers[1]!.address() as net.AddressInfo).port;
  /** A plain TCP client (to either port), connected. */
  const connect = async (p: number): Promise<net.Socket> => {
    const c = net.connect({ host: '127.0.0.1', port: p });
    c.on('error', () => {});
    clients.push(c);
    await new Promise((r) => c.once('connect', r));
    return c;
  };
  /** A direct-TLS client; resolves true once its handshake is done, false if the socket closed first. */
  const connectTls = (): Promise<boolean> =>
    new Promise((resolve) => {
      const c = tls.connect({ host: '127.0.0.1', port: tlsPort, rejectUnauthorized: false, ALPNProtocols: ['xmpp-client'] });
      c.on('error', () => {});
      clients.push(c);
      c.once('secureConnect', () => resolve(true));
      c.once('close', () => resolve(false));
    });
  return { gate, accepted, port, tlsPort, connect, connectTls };
}

/** The kernel's timers on the server side of established connections to `port` (`ss -o`). */
function serverTimers(port: number): string[] {
  const out = execFileSync('ss', ['-Htno', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() !== '');
}

/** Everything a socket receives until it closes, parsed (top-level elements inside the stream). */
function readAll(socket: net.Socket): Promise<{ header: Record<string, string> | undefined; elements: Element[] }> {
  const parser = new Parser();
  const result: { header: Record<string, string> | undefined; elements: Element[] } = { header: undefined, elements: [] };
  parser.on('start', (el: Element) => (result.header = el.attrs as Record<string, string>));
  parser.on('element', (el: Element) => result.elements.push(el));
  parser.on('error', () => {});
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => parser.write(chunk));
  return new Promise((resolve) => socket.once('close', () => resolve(result)));
}

t.test('TCP keepalive is on for accepted sockets (STARTTLS and direct TLS), off with 0', async (t) => {
  const on = await listen(t, { keepaliveMs: 45_000 });
  await on.connect(on.port);
  await on.connectTls();
  await waitFor(() => on.accepted.length === 2, 'both accepted');
  for (const p of [on.port, on.tlsPort]) {
    const lines = serverTimers(p);
    t.equal(lines.length, 1, `one connection on port ${p}`);
    const m = /timer:\(keepalive,(\d+)sec/.exec(lines[0]!);
    t.ok(m, `the kernel runs a keepalive timer: ${lines[0]}`);
    t.ok(Number(m?.[1]) <= 45 && Number(m?.[1]) >= 40, 'first probe after the configured idle time');
  }

  const off = await listen(t, { keepaliveMs: 0 });
  await off.connect(off.port);
  await waitFor(() => off.accepted.length === 1, 'accepted');
  t.notMatch(serverTimers(off.port)[0], /keepalive/, 'no keepalive with 0');
});

t.test('STARTTLS over the per-address limit: our header, policy-violation, close', async (t) => {
  const l = await listen(t, { gate: new ConnectionGate({ maxTotal: 100, maxPerIp: 2, log: silent }) });
  await l.connect(l.port);
  await l.connect(l.port);
  await waitFor(() => l.accepted.length === 2, 'two admitted');
  t.equal(l.gate.countFor('127.0.0.1'), 2);
  const third = await l.connect(l.port);
  const got = await readAll(third);
  t.equal(got.header?.from, 'proxy.test', 'a stream header from the served domain');
  t.equal(got.header?.version, '1.0');
  const err = got.elements.find((e) => e.name === 'stream:error');
  t.ok(err?.getChild('policy-violation', 'urn:ietf:params:xml:ns:xmpp-streams'), `policy-violation: ${err?.toString()}`);
  t.equal(l.accepted.length, 2, 'the refused socket never reached the client stream');
  t.equal(l.gate.unauthenticated, 2, 'a refused connection is not counted');

  // A closed connection gives its place back.
  l.accepted[0]!.socket.destroy();
  await waitFor(() => l.gate.countFor('127.0.0.1') === 1, 'released at close');
  await l.connect(l.port);
  await waitFor(() => l.accepted.length === 3, 'admitted again');
});

t.test('over the total limit: resource-constraint', async (t) => {
  const l = await listen(t, { gate: new ConnectionGate({ maxTotal: 1, maxPerIp: 5, log: silent }) });
  await l.connect(l.port);
  await waitFor(() => l.accepted.length === 1, 'one admitted');
  const got = await readAll(await l.connect(l.port));
  const err = got.elements.find((e) => e.name === 'stream:error');
  t.ok(err?.getChild('resource-constraint', 'urn:ietf:params:xml:ns:xmpp-streams'), `resource-constraint: ${err?.toString()}`);
});

t.test('direct TLS is counted from accept, before its handshake, and refused by a plain drop', async (t) => {
  const l = await listen(t, { gate: new ConnectionGate({ maxTotal: 100, maxPerIp: 2, log: silent }) });
  // Two TCP connections to the direct-TLS port that never start a handshake hold both places.
  const idle = [await l.connect(l.tlsPort), await l.connect(l.tlsPort)];
  await waitFor(() => l.gate.countFor('127.0.0.1') === 2, 'counted before any handshake');
  t.equal(await l.connectTls(), false, 'a third is dropped without a TLS handshake');
  t.equal(await l.connectTls(), false, 'and the next one too');
  idle[0]!.destroy();
  await waitFor(() => l.gate.countFor('127.0.0.1') === 1, 'a connection closed before its handshake is released');
  t.equal(await l.connectTls(), true, 'room again');
  await waitFor(() => l.accepted.length === 1, 'handed over after the handshake');
  t.equal(l.accepted[0]!.direct, true);
  t.equal(l.accepted[0]!.admission.address, '127.0.0.1');
});

t.test('direct TLS: a handshake not done within handshakeTimeoutMs is dropped and released', async (t) => {
  const l = await listen(t, { handshakeTimeoutMs: 500 });
  const silentPeer = await l.connect(l.tlsPort);
  await waitFor(() => l.gate.unauthenticated === 1, 'counted');
  const closedAt = await new Promise<number>((r) => silentPeer.once('close', () => r(Date.now())));
  t.ok(closedAt > 0, 'the silent direct-TLS connection was closed by the proxy');
  await waitFor(() => l.gate.unauthenticated === 0, 'released');
});
