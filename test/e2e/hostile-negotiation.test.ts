/**
 * Hostile, dead and slow clients before a session exists (issue 10), against a real Prosody:
 * the negotiation deadline (`limits.c2sTimeoutSeconds`), the unauthenticated-connection limits
 * (`limits.maxUnauthenticated`, `limits.maxUnauthenticatedPerIp`), the failed-login throttle
 * (`limits.maxAuthFailures` per `limits.authFailurePeriodSeconds`) and SASL authzid checks.
 * Every upstream connection goes through a LoginWatchRelay, so a test can count the proxy's
 * upstream logins and see that none is left behind. Another client IP address is another
 * loopback source address (127.0.0.2).
 */
import t from 'tap';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { Parser } from '@xmpp/xml';
import type { Element } from 'ltx';
import { startProsody } from '../harness/prosody.ts';
import { ACCOUNTS, startTestProxy, waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { LoginWatchRelay } from '../harness/login-watch-relay.ts';

const USERS = [...ACCOUNTS, { user: 'carol', password: 'carol-pw' }];
const prosody = await startProsody({ tls: 'required', accounts: USERS });
t.teardown(() => prosody.stop());
const relay = await LoginWatchRelay.start(prosody.c2sPort);
t.teardown(() => relay.close());

/** A proxy on the relay, with `limits` overridden; closed at the end of the file. */
async function proxyWith(limits: Record<string, number>) {
  const tp = await startTestProxy(prosody, { upstream: { port: relay.port }, limits });
  t.teardown(() => tp.close());
  return tp;
}

const HEADER = `<?xml version='1.0'?><stream:stream to='proxy.test' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;

/** What a socket gets until it closes, parsed: the stream error's condition (if any). */
function streamErrorOf(socket: net.Socket): Promise<string | undefined> {
  const parser = new Parser();
  let condition: string | undefined;
  parser.on('element', (el: Element) => {
    if (el.name === 'stream:error') condition = el.getChildElements().find((c) => c.name !== 'text')?.name;
  });
  parser.on('error', () => {});
  socket.on('data', (chunk: Buffer) => parser.write(chunk.toString('utf8')));
  return new Promise((resolve) => socket.once('close', () => resolve(condition)));
}

/** A plain TCP connection to `port` from the loopback address `from`, connected. */
async function connectFrom(from: string, port: number): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
  socket.on('error', () => {});
  t.teardown(() => socket.destroy());
  await new Promise((r) => socket.once('connect', r));
  return socket;
}

/**
 * SASL PLAIN over direct TLS from the loopback address `from`: 'success', or the `<failure/>`
 * condition. The connection is dropped afterwards.
 */
async function directAuthFrom(from: string, tlsPort: number, user: string, password: string): Promise<string> {
  const tcp = net.connect({ host: '127.0.0.1', port: tlsPort, localAddress: from });
  tcp.on('error', () => {});
  const socket = tls.connect({ socket: tcp, rejectUnauthorized: false, servername: 'proxy.test' });
  socket.on('error', () => {});
  const parser = new Parser();
  parser.on('error', () => {});
  try {
    return await new Promise<string>((resolve, reject) => {
      parser.on('element', (el: Element) => {
        if (el.name === 'stream:features') {
          const payload = Buffer.from(`\0${user}\0${password}`).toString('base64');
          socket.write(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${payload}</auth>`);
        } else if (el.name === 'success') resolve('success');
        else if (el.name === 'failure') resolve(el.getChildElements().find((c) => c.name !== 'text')?.name ?? '');
      });
      socket.on('data', (chunk: Buffer) => parser.write(chunk.toString('utf8')));
      socket.once('secureConnect', () => socket.write(HEADER));
      socket.once('close', () => reject(new Error('closed before a SASL outcome')));
    });
  } finally {
    socket.destroy();
  }
}

/** Resolves with the ms until `socket` closes; rejects after `limitMs` (the proxy kept it). */
function closesWithin(socket: { once(ev: 'close', cb: () => void): unknown }, limitMs: number): Promise<number> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still open after ${limitMs} ms`)), limitMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - start);
    });
  });
}

t.test('negotiation deadline (c2sTimeoutSeconds: 2)', async (t) => {
  const tp = await proxyWith({ c2sTimeoutSeconds: 2 });
  // The deadline is 2 s; a proxy without one keeps these connections forever.
  const LIMIT_MS = 6000;

  t.test('a silent plain socket gets connection-timeout', async (t) => {
    const socket = await connectFrom('127.0.0.1', tp.port);
    const error = streamErrorOf(socket);
    await closesWithin(socket, LIMIT_MS);
    t.equal(await error, 'connection-timeout', 'RFC 6120 §4.9.3.4, inside our stream header');
  });

  t.test('a socket that sent only the stream header gets connection-timeout', async (t) => {
    const c = await RawClient.connect({ port: tp.port });
    await c.open();
    t.equal(await c.streamError(LIMIT_MS), 'connection-timeout');
    await c.closed;
  });

  t.test('a half-done STARTTLS (proceed, then no handshake) is dropped', async (t) => {
    const c = await RawClient.connect({ port: tp.port });
    await c.open();
    c.send(`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
    await c.next((el) => el.name === 'proceed');
    await closesWithin(c.socket, LIMIT_MS);
    t.pass('closed by the proxy (no stream to put an error in)');
  });

  t.test('a direct-TLS socket that never starts its handshake is dropped', async (t) => {
    const socket = await connectFrom('127.0.0.1', tp.tlsPort);
    await closesWithin(socket, LIMIT_MS);
    t.pass('closed by the proxy');
  });

  t.test('SASL done but no bind: connection-timeout, and its upstream login is closed', async (t) => {
    await waitFor(() => relay.connections === 0, 'no upstream links before');
    const c = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
    t.equal(relay.connections, 1, 'the login holds an upstream link');
    t.equal(await c.streamError(LIMIT_MS), 'connection-timeout');
    await waitFor(() => relay.connections === 0, 'the upstream link of the unbound login is closed', 2000);
    await c.closed;
  });

  t.test('a stream that bound in time is not touched by the deadline', async (t) => {
    const { client } = await RawClient.login({ port: tp.port, user: 'bob', password: 'bob-pw', resource: 'in-time' });
    await new Promise((r) => setTimeout(r, 2500));
    client.send(`<iq type='get' id='ping1' to='proxy.test'><ping xmlns='urn:xmpp:ping'/></iq>`);
    const pong = await client.next((el) => el.name === 'iq' && el.attrs.id === 'ping1');
    t.equal(pong.attrs.type, 'result', 'still served after the deadline passed');
    client.send('</stream:stream>');
    await client.closed;
  });
});

t.test('unauthenticated connections: 2 per address, 3 in all', async (t) => {
  const tp = await proxyWith({ maxUnauthenticatedPerIp: 2, maxUnauthenticated: 3 });
  const idle = [await connectFrom('127.0.0.1', tp.port), await connectFrom('127.0.0.1', tp.tlsPort)];

  const third = await connectFrom('127.0.0.1', tp.port);
  t.equal(await streamErrorOf(third), 'policy-violation', 'a third from one address: policy-violation, closed');
  const thirdTls = await connectFrom('127.0.0.1', tp.tlsPort);
  await closesWithin(thirdTls, 2000);
  t.pass('a third on direct TLS is dropped before its handshake');

  const other = await connectFrom('127.0.0.2', tp.port);
  const overTotal = await connectFrom('127.0.0.2', tp.port);
  t.equal(await streamErrorOf(overTotal), 'resource-constraint', 'over the proxy-wide limit: resource-constraint');

  // Places come back: at close, and at SASL success.
  other.destroy();
  idle[0]!.destroy();
  await new Promise((r) => setTimeout(r, 100));
  const { client } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'counted' });
  t.teardown(() => client.destroy());
  const again = [await connectFrom('127.0.0.1', tp.port)];
  const probe = streamErrorOf(again[0]!);
  const extra = await connectFrom('127.0.0.2', tp.port);
  const extraError = streamErrorOf(extra);
  // 127.0.0.1 holds idle[1] and again[0]; 127.0.0.2 holds extra: 3 in all, the logged-in client not counted.
  const refused = await connectFrom('127.0.0.2', tp.port);
  t.equal(await streamErrorOf(refused), 'resource-constraint', 'full again with the two idle ones and the new one');
  t.equal(await Promise.race([probe, extraError, new Promise((r) => setTimeout(() => r('still open'), 300))]), 'still open', 'the admitted ones are served');
});

t.test('SASL PLAIN with an authzid naming another account: invalid-authzid, no upstream login', async (t) => {
  const tp = await proxyWith({});
  const c = await RawClient.tls({ port: tp.port });
  const before = relay.logins.length;
  const auth = (authzid: string) => {
    c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`${authzid}\0alice\0alice-pw`).toString('base64')}</auth>`);
    return c.next((el) => el.name === 'success' || el.name === 'failure');
  };
  const refused = await auth('bob@proxy.test');
  t.equal(refused.name, 'failure');
  t.equal(refused.getChildElements()[0]?.name, 'invalid-authzid', 'RFC 6120 §6.5.6, not malformed-request');
  t.equal(relay.logins.length, before, 'no upstream login for it');
  const own = await auth('alice@proxy.test');
  t.equal(own.name, 'success', 'an authzid naming the account itself is fine');
  c.destroy();
});

t.test('failed logins are throttled per address and per account (3 within 3 s)', async (t) => {
  const tp = await proxyWith({ maxAuthFailures: 3, authFailurePeriodSeconds: 3 });
  const conditionOf = (answer: Element): string => (answer.name === 'success' ? 'success' : (answer.getChildElements()[0]?.name ?? ''));

  // Successes do not count.
  for (let i = 0; i < 4; i++) (await RawClient.authenticated({ port: tp.port, user: 'carol', password: 'carol-pw' })).destroy();

  const before = relay.logins.length;
  const first = await RawClient.tls({ port: tp.port });
  t.equal(conditionOf(await first.auth('alice', 'guess-1')), 'not-authorized');
  t.equal(conditionOf(await first.auth('alice', 'guess-2')), 'not-authorized');
  first.destroy();
  const second = await RawClient.tls({ port: tp.port });
  t.equal(conditionOf(await second.auth('alice', 'guess-3')), 'not-authorized', 'the third failure reaches the limit');
  const limitReachedAt = Date.now();
  t.equal(relay.logins.length - before, 3, 'each guess so far was an upstream login');

  const refused = await second.auth('alice', 'alice-pw');
  t.equal(conditionOf(refused), 'temporary-auth-failure', 'even the right password is refused now');
  t.match(refused.getChildText('text'), /too many failed logins/);
  second.destroy();
  t.equal(await directAuthFrom('127.0.0.1', tp.tlsPort, 'bob', 'bob-pw'), 'temporary-auth-failure', 'another account from the same address: refused');
  t.equal(await directAuthFrom('127.0.0.2', tp.tlsPort, 'alice', 'alice-pw'), 'temporary-auth-failure', 'the same account from another address: refused');
  t.equal(relay.logins.length - before, 3, 'no upstream login for a refused attempt');

  t.equal(await directAuthFrom('127.0.0.2', tp.tlsPort, 'bob', 'bob-pw'), 'success', 'another account from another address works');
  t.equal(relay.logins.length - before, 4, 'with its upstream login');

  await new Promise((r) => setTimeout(r, Math.max(0, limitReachedAt + 3200 - Date.now())));
  const after = await RawClient.tls({ port: tp.port });
  t.equal(conditionOf(await after.auth('alice', 'alice-pw')), 'success', 'after the period the right password works again');
  after.destroy();
});
