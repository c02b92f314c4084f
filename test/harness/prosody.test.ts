// Proves the Prosody harness: config (TLS modes, smacks on/off), accounts, register() while
// running, restart(), kill(), stop().
//
// STARTTLS in @xmpp/client has no per-connection CA option and NODE_EXTRA_CA_CERTS is only read
// at process start, so the self-signed upstream certificate is accepted globally here.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

import t from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { eventually, processGone } from '../cli/child.ts';
import { runInChildNode } from './child-node.ts';
import { freePort, startProsody, type ProsodyInstance } from './prosody.ts';

/** The subset of @xmpp/client 0.14 used here (the package ships no type declarations). */
interface XmlElement {
  name: string;
  attrs: Record<string, string | undefined>;
  getChild(name: string, xmlns?: string): XmlElement | undefined;
  toString(): string;
}
interface XmppClient {
  start(): Promise<unknown>;
  stop(): Promise<unknown>;
  on(event: 'element', cb: (el: XmlElement) => void): void;
  on(event: 'error', cb: (err: Error) => void): void;
  iqCaller: { request(iq: XmlElement, timeout?: number): Promise<XmlElement> };
  streamManagement: { enabled: boolean; id: string };
}
interface XmppClientModule {
  client(opts: { service: string; domain: string; username: string; password: string; resource?: string }): XmppClient;
  xml(name: string, attrs?: Record<string, string>, ...children: XmlElement[]): XmlElement;
}
// A non-literal specifier keeps tsc from demanding declarations for the untyped package without
// adding a project-wide ambient `declare module` from inside test/harness.
const xmppClientSpecifier = '@xmpp/client';
const { client, xml } = (await import(xmppClientSpecifier)) as XmppClientModule;

const STREAM_HEADER =
  "<?xml version='1.0'?><stream:stream to='proxy.test' version='1.0' " +
  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/** Open a raw TCP stream and return everything up to and including </stream:features>. */
function rawFeatures(port: number, header = STREAM_HEADER, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no </stream:features> within ${timeoutMs} ms; got: ${buf}`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(header));
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.includes('</stream:features>')) {
        clearTimeout(timer);
        sock.end('</stream:stream>');
        sock.destroy();
        resolve(buf);
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * Negotiate STARTTLS by hand and verify the server certificate against caFile only (no global
 * override), proving caFile is what Prosody serves and that it is valid for the domain.
 */
function startTlsWithCa(port: number, domain: string, caFile: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    let phase: 'features' | 'proceed' = 'features';
    const onData = (d: string): void => {
      buf += d;
      if (phase === 'features' && buf.includes('</stream:features>')) {
        phase = 'proceed';
        buf = '';
        sock.write("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
      } else if (phase === 'proceed' && buf.includes('<proceed')) {
        sock.removeListener('data', onData);
        const secure = tls.connect({ socket: sock, servername: domain, ca: readFileSync(caFile), rejectUnauthorized: true });
        secure.once('secureConnect', () => resolve(secure));
        secure.once('error', reject);
      }
    };
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(STREAM_HEADER));
    sock.on('data', onData);
    sock.on('error', reject);
  });
}

/** SASL mechanisms listed in a raw features blob. */
function mechanisms(features: string): string[] {
  return [...features.matchAll(/<mechanism>([^<]+)<\/mechanism>/g)].map((m) => m[1]!);
}

interface LoginResult {
  smEnabled: boolean;
  smId: string;
  /** Every <stream:features> the client received, serialized. */
  features: string[];
}

/**
 * Log in with @xmpp/client and do an XEP-0199 ping round trip. The client fires 'online' (and
 * start() resolves) before it sends <enable/>, so when the server offered urn:xmpp:sm:3 wait for
 * the <enabled/> or <failed/> answer before reading streamManagement.enabled.
 */
async function login(p: ProsodyInstance, username: string, password: string): Promise<LoginResult> {
  const xmpp = client({
    service: `xmpp://127.0.0.1:${p.c2sPort}`,
    domain: p.domain,
    username,
    password,
  });
  const features: string[] = [];
  let smAnswered: () => void = () => {};
  const smAnswer = new Promise<void>((r) => (smAnswered = r));
  xmpp.on('element', (el) => {
    if (el.name === 'stream:features') features.push(el.toString());
    if ((el.name === 'enabled' || el.name === 'failed') && el.attrs.xmlns === 'urn:xmpp:sm:3') smAnswered();
  });
  xmpp.on('error', () => {}); // failures surface through start() rejecting
  try {
    await xmpp.start();
    if (features.at(-1)?.includes('urn:xmpp:sm:3')) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        smAnswer,
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no <enabled/>/<failed/> within 5 s')), 5000))),
      ]).finally(() => clearTimeout(timer));
    }
    await xmpp.iqCaller.request(xml('iq', { type: 'get', to: p.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })), 5000);
    return { smEnabled: xmpp.streamManagement.enabled, smId: xmpp.streamManagement.id, features };
  } finally {
    await xmpp.stop().catch(() => {});
  }
}

t.test('freePort returns a bindable loopback port', async (t) => {
  const port = await freePort();
  t.ok(port > 0 && port < 65536, `port ${port}`);
  await new Promise<void>((resolve, reject) => {
    const srv = net.createServer().listen(port, '127.0.0.1', () => srv.close(() => resolve()));
    srv.on('error', reject);
  });
});

t.test('tls optional: STARTTLS offered, no urn:xmpp:sm, login without SM', async (t) => {
  const t0 = Date.now();
  const p = await startProsody({ tls: 'optional', accounts: [{ user: 'alice', password: 'secret' }] });
  t.comment(`startProsody (tls optional, 1 account) took ${Date.now() - t0} ms`);
  t.teardown(() => p.stop());

  t.equal(p.host, '127.0.0.1');
  t.equal(p.domain, 'proxy.test');
  t.ok(p.pid, 'has a pid');
  t.ok(p.caFile && existsSync(p.caFile), 'caFile exists');
  t.match(readFileSync(p.caFile!, 'utf8'), /-----BEGIN CERTIFICATE-----/);

  const features = await rawFeatures(p.c2sPort);
  t.comment(`pre-TLS features: ${features.slice(features.indexOf('<stream:features'))}`);
  t.comment(`pre-TLS SASL mechanisms: ${mechanisms(features).join(', ') || '(none)'}`);
  t.match(features, 'urn:ietf:params:xml:ns:xmpp-tls', 'STARTTLS offered');
  t.notMatch(features, /<required\s*\/>/, 'STARTTLS not required');
  t.notMatch(features, 'urn:xmpp:sm:', 'no stream management before auth');

  const secure = await startTlsWithCa(p.c2sPort, p.domain, p.caFile!);
  t.ok(secure.authorized, 'certificate verifies against caFile for the domain');
  secure.destroy();

  const r = await login(p, 'alice', 'secret');
  t.equal(r.smEnabled, false, 'SM not enabled with smacks: false');
  t.equal(r.smId, '');
  t.ok(r.features.length >= 2, `client saw ${r.features.length} feature sets`);
  for (const f of r.features) t.notMatch(f, 'urn:xmpp:sm:', 'no urn:xmpp:sm in any feature set');
  t.match(r.features.at(-1)!, 'urn:ietf:params:xml:ns:xmpp-bind', 'last features are post-auth');

  await t.rejects(login(p, 'alice', 'wrong'), 'wrong password is refused');
});

t.test('smacks: true enables XEP-0198 after login', async (t) => {
  const p = await startProsody({ smacks: true, accounts: [{ user: 'alice', password: 'secret' }] });
  t.teardown(() => p.stop());
  const r = await login(p, 'alice', 'secret');
  t.match(r.features.at(-1)!, 'urn:xmpp:sm:3', 'post-auth features offer urn:xmpp:sm:3');
  t.equal(r.smEnabled, true, 'SM enabled');
  t.ok(r.smId.length > 0, `resumption id ${r.smId}`);
});

t.test('tls none: no STARTTLS, no certificate, PLAIN offered in clear', async (t) => {
  const t0 = Date.now();
  const p = await startProsody({ tls: 'none', accounts: [{ user: 'bob', password: 'pw' }] });
  t.comment(`startProsody (tls none) took ${Date.now() - t0} ms`);
  t.teardown(() => p.stop());
  t.equal(p.caFile, undefined);
  const features = await rawFeatures(p.c2sPort);
  t.notMatch(features, 'urn:ietf:params:xml:ns:xmpp-tls');
  t.same(mechanisms(features).sort(), ['PLAIN', 'SCRAM-SHA-1'].sort(), 'SCRAM-SHA-1 and PLAIN');
  const r = await login(p, 'bob', 'pw');
  t.equal(r.smEnabled, false);
});

t.test('tls required: STARTTLS marked required, no SASL before TLS', async (t) => {
  const p = await startProsody({ tls: 'required', accounts: [{ user: 'carol', password: 'pw' }] });
  t.teardown(() => p.stop());
  const features = await rawFeatures(p.c2sPort);
  t.match(features, /<starttls xmlns=['"]urn:ietf:params:xml:ns:xmpp-tls['"]><required\s*\/><\/starttls>/);
  t.same(mechanisms(features), [], 'no SASL offered before TLS');
  await login(p, 'carol', 'pw'); // the client upgrades with STARTTLS and logs in
});

t.test('register() while running, restart() keeps accounts and port, kill(), stop() removes dir', async (t) => {
  const p = await startProsody({ accounts: [{ user: 'alice', password: 'secret' }], mam: true, logLevel: 'debug' });
  let stopped = false;
  t.teardown(() => (stopped ? undefined : p.stop()));

  await p.register('dave', 'pw2');
  await login(p, 'dave', 'pw2'); // account created by prosodyctl while the server runs

  const { pid, c2sPort, dir } = p;
  const t0 = Date.now();
  await p.restart();
  t.comment(`restart() took ${Date.now() - t0} ms`);
  t.not(p.pid, pid, 'new process');
  t.equal(p.c2sPort, c2sPort, 'same port');
  await login(p, 'alice', 'secret');
  await login(p, 'dave', 'pw2');

  // Fault injection: a frozen server still accepts TCP (kernel backlog) but answers nothing;
  // a SIGKILLed one is gone and restart() must bring it back.
  p.kill('SIGSTOP');
  await t.rejects(rawFeatures(p.c2sPort, STREAM_HEADER, 1000), /no <\/stream:features>/, 'stopped server does not answer');
  p.kill('SIGCONT');
  await rawFeatures(p.c2sPort);

  const killedPid = p.pid;
  p.kill('SIGKILL');
  for (let i = 0; i < 100 && p.pid !== undefined; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(p.pid, undefined, 'pid undefined after SIGKILL');
  t.throws(() => p.kill('SIGTERM'), /not running/);
  await p.restart();
  t.not(p.pid, killedPid);
  await login(p, 'alice', 'secret');

  // stop() also copes with a SIGSTOPped process (it sends SIGCONT after SIGTERM).
  p.kill('SIGSTOP');
  const t1 = Date.now();
  await p.stop();
  stopped = true;
  t.comment(`stop() of a SIGSTOPped server took ${Date.now() - t1} ms`);
  t.ok(Date.now() - t1 < 4000, 'no SIGKILL grace wait needed');
  t.equal(p.pid, undefined);
  t.notOk(existsSync(dir), 'temp dir removed');
  await p.stop(); // idempotent
  await t.rejects(p.restart(), /stopped/);
});

t.test('startup failures reject with the reason', async (t) => {
  // A broken config makes Prosody exit at once; the rejection carries its output.
  await t.rejects(startProsody({ config: 'this is not lua' }), /exited during startup/);

  // A taken port does not make Prosody exit (it runs on with no listener); startProsody must
  // notice instead of mistaking the other listener for Prosody.
  const port = await freePort();
  const blocker = net.createServer((s) => s.destroy());
  await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', () => r()));
  t.teardown(() => blocker.close());
  await t.rejects(startProsody({ c2sPort: port, tls: 'none' }), /could not listen on 127\.0\.0\.1:\d+/);
});

// Runs startProsody in a separate Node process (see runInChildNode) and reports Prosody's pid
// and dir on stdout.
const CHILD_SCRIPT = `
  const { startProsody } = await import(${JSON.stringify(fileURLToPath(new URL('./prosody.ts', import.meta.url)))});
  const p = await startProsody({ tls: 'none' });
  console.log(JSON.stringify({ pid: p.pid, dir: p.dir }));
`;

const runChild = (mode: 'exit' | 'hang') => runInChildNode<{ pid: number; dir: string }>(CHILD_SCRIPT, mode);
const waitDead = (pid: number): Promise<boolean> => eventually(() => processGone(pid), 5000);

t.test('no Prosody survives its Node process', async (t) => {
  const exited = await runChild('exit');
  t.teardown(() => {
    exited.child.stdout?.destroy();
    exited.child.stderr?.destroy();
    rmSync(exited.dir, { recursive: true, force: true });
  });
  t.ok(await waitDead(exited.pid), 'process.exit() without stop(): exit handler killed Prosody');

  const hung = await runChild('hang');
  t.teardown(() => {
    hung.child.stdout?.destroy();
    hung.child.stderr?.destroy();
    rmSync(hung.dir, { recursive: true, force: true });
  });
  t.notOk(processGone(hung.pid), 'Prosody runs while its parent does');
  hung.child.kill('SIGKILL');
  t.ok(await waitDead(hung.pid), 'parent SIGKILLed (no exit handler): pdeathsig killed Prosody');
});
