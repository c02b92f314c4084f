// Proves the ejabberd harness: loopback-only ports (c2s + Erlang distribution, no epmd), STARTTLS
// with the generated certificate, SASL mechanisms, a fresh SCRAM salt per exchange, chatting,
// durable accounts across SIGKILL + restart(), SIGSTOP/SIGCONT, stop() leaving nothing behind.
//
// STARTTLS in @xmpp/client has no per-connection CA option and NODE_EXTRA_CA_CERTS is only read
// at process start, so the self-signed upstream certificate is accepted globally here.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
process.removeAllListeners('warning');

import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { client, xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { eventually } from '../cli/child.ts';
import { runInChildNode } from './child-node.ts';
import { startEjabberd, type EjabberdInstance } from './ejabberd.ts';
import type { ProsodyInstance } from './prosody.ts';
import { RawClient } from './raw-client.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** pid -> cmdline of the live (non-zombie) processes whose cmdline or parent matches. */
function processes(match: (cmdline: string, ppid: number) => boolean): Map<number, string> {
  const out = new Map<number, string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (state === 'Z') continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      if (match(cmdline, Number(ppid))) out.set(Number(entry), cmdline);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

const epmdPids = (): number[] => [...processes((c) => /(^|\/)epmd( |$)/.test(c)).keys()];

/** Local addresses of the TCP sockets `pid` listens on, from `ss`. */
function listeningAddresses(pid: number): string[] {
  const out = execFileSync('ss', ['-ltnpH'], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => l.trim().split(/\s+/)[3]!)
    .sort();
}

/** Stream features of a fresh connection, or a rejection when none arrive within timeoutMs. */
async function rawFeatures(port: number, domain: string, timeoutMs = 5000): Promise<Element> {
  const c = await RawClient.connect({ port, domain });
  try {
    c.send(`<?xml version='1.0'?><stream:stream to='${domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`);
    return await c.next((el) => el.name === 'stream:features', timeoutMs);
  } finally {
    c.destroy();
  }
}

const mechanisms = (features: Element): string[] =>
  (features.getChild('mechanisms')?.getChildren('mechanism') ?? []).map((m) => m.getText());

/**
 * STARTTLS, then send a SCRAM-SHA-1 client-first-message and return the parsed
 * server-first-message (r, s, i). The exchange is not finished.
 */
async function scramServerFirst(e: EjabberdInstance, user: string): Promise<{ r: string; s: string; i: string; clientNonce: string }> {
  const c = await RawClient.tls({ port: e.c2sPort, domain: e.domain });
  try {
    const clientNonce = randomBytes(18).toString('base64');
    const clientFirst = `n,,n=${user},r=${clientNonce}`;
    c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>${Buffer.from(clientFirst).toString('base64')}</auth>`);
    const answer = await c.next((el) => el.name === 'challenge' || el.name === 'failure' || el.name === 'success');
    if (answer.name !== 'challenge') throw new Error(`expected a SCRAM challenge, got ${answer.toString()}`);
    const serverFirst = Buffer.from(answer.getText(), 'base64').toString('utf8');
    const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
    return { r: attrs.r ?? '', s: attrs.s ?? '', i: attrs.i ?? '', clientNonce };
  } finally {
    c.destroy();
  }
}

interface Online {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  xmpp: any;
  /** Every <stream:features> received, serialized. */
  features: string[];
  /** Bodies of the messages received. */
  bodies: string[];
  /** The SASL mechanism the client chose. */
  mechanism: string | undefined;
}

/** Log in with @xmpp/client (STARTTLS + SCRAM) and send initial presence. */
async function online(e: EjabberdInstance, username: string, password: string, resource = 'harness'): Promise<Online> {
  // timeout: @xmpp/client's default of 2 s per step fails under load (two test files in parallel on
  // 2 cores); a slow answer is not what this harness test is about.
  const xmpp = client({ service: `xmpp://127.0.0.1:${e.c2sPort}`, domain: e.domain, username, password, resource, timeout: 15_000 });
  const features: string[] = [];
  const bodies: string[] = [];
  const result: Online = { xmpp, features, bodies, mechanism: undefined };
  xmpp.on('send', (el: Element) => {
    if (el.name === 'auth') result.mechanism = el.attrs.mechanism as string;
  });
  xmpp.on('element', (el: Element) => {
    if (el.name === 'stream:features') features.push(el.toString());
  });
  xmpp.on('stanza', (st: Element) => {
    const body = st.is('message') ? st.getChildText('body') : null;
    if (body !== null) bodies.push(body);
  });
  xmpp.on('error', () => {}); // failures surface through start() rejecting
  // A dropped connection must surface (and leave nothing running), not be reconnected quietly.
  (xmpp as unknown as { reconnect: { stop(): void } }).reconnect.stop();
  try {
    await xmpp.start();
    await xmpp.send(xml('presence'));
  } catch (err) {
    await xmpp.stop().catch(() => {});
    throw err;
  }
  return result;
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Log in as every account, each sending a message to the next; all must arrive. */
async function chatRound(e: EjabberdInstance, accounts: Array<[string, string]>, tag: string): Promise<Online[]> {
  const clients: Online[] = [];
  try {
    for (const [user, pw] of accounts) {
      const c = await online(e, user, pw);
      clients.push(c);
      if (c.mechanism !== 'SCRAM-SHA-1') throw new Error(`${user} logged in with ${c.mechanism}, not SCRAM-SHA-1`);
    }
    for (let k = 0; k < clients.length; k++) {
      // To the full JID: delivery then does not depend on the recipient's presence having been
      // processed yet (a bare-JID message would go to offline storage in that window).
      const to = `${accounts[(k + 1) % accounts.length]![0]}@${e.domain}/harness`;
      await clients[k]!.xmpp.send(xml('message', { to, type: 'chat' }, xml('body', {}, `${tag} from ${accounts[k]![0]}`)));
    }
    for (let k = 0; k < clients.length; k++) {
      const from = accounts[(k + clients.length - 1) % clients.length]![0];
      await waitFor(() => clients[k]!.bodies.includes(`${tag} from ${from}`), `${accounts[k]![0]} to receive "${tag} from ${from}"`);
    }
    return clients;
  } finally {
    // Bounded: a client whose connection dropped must not hold the test up.
    for (const c of clients) await Promise.race([c.xmpp.stop().catch(() => {}), sleep(3000)]);
  }
}

/**
 * {@link chatRound} right after a fault: on a loaded machine a server that just came back has
 * dropped a fresh client connection now and then; one more round tells that apart from a server
 * that did not come back (accounts lost, not serving).
 */
async function chatRoundAfterFault(t: Test, e: EjabberdInstance, accounts: Array<[string, string]>, tag: string): Promise<void> {
  try {
    await chatRound(e, accounts, tag);
  } catch (err) {
    t.comment(`first round after the fault failed (${(err as Error).message}); one more`);
    await chatRound(e, accounts, `${tag} (again)`);
  }
}

t.test('ejabberd upstream: TLS, SASL, fresh SCRAM salts, chat, durable accounts, faults, clean stop', async (t) => {
  const epmdBefore = epmdPids();
  const t0 = Date.now();
  const e = await startEjabberd({
    accounts: [
      { user: 'alice', password: 'alice-pw' },
      { user: 'bob', password: 'bob-pw' },
    ],
  });
  t.comment(`startEjabberd (2 accounts) took ${Date.now() - t0} ms`);
  let stopped = false;
  t.teardown(() => (stopped ? undefined : e.stop()));

  // Same shape as a Prosody instance, so tests (and testConfig) can take either.
  const asProsody: ProsodyInstance = e;
  t.equal(asProsody.host, '127.0.0.1', 'host');
  t.equal(e.domain, 'proxy.test', 'default domain');
  t.ok(e.pid, `beam.smp pid ${e.pid}`);
  t.match(readFileSync(`/proc/${e.pid}/stat`, 'utf8'), /\(beam\.smp\)/, 'pid is beam.smp itself');
  t.match(readFileSync(e.caFile, 'utf8'), /^-----BEGIN CERTIFICATE-----[^]*-----END CERTIFICATE-----\s*$/, 'caFile is a lone certificate');

  // Loopback only: the c2s port and the Erlang distribution port, nothing else, and no epmd.
  t.same(listeningAddresses(e.pid!), [`127.0.0.1:${e.c2sPort}`, `127.0.0.1:${e.distPort}`].sort(), 'beam listens on c2s + distribution, loopback only');
  t.same(epmdPids().filter((p) => !epmdBefore.includes(p)), [], 'no epmd started');

  // Before TLS: STARTTLS required and nothing else.
  const pre = await rawFeatures(e.c2sPort, e.domain);
  t.comment(`features before STARTTLS: ${pre.toString()}`);
  t.ok(pre.getChild('starttls', 'urn:ietf:params:xml:ns:xmpp-tls')?.getChild('required'), 'STARTTLS required');
  t.same(mechanisms(pre), [], 'no SASL before TLS');

  // After STARTTLS: the served certificate is caFile's, valid for the domain.
  const rc = await RawClient.tls({ port: e.c2sPort, domain: e.domain });
  const served = (rc.socket as TLSSocket).getPeerX509Certificate();
  const ca = new X509Certificate(readFileSync(e.caFile));
  t.equal(served?.fingerprint256, ca.fingerprint256, 'served certificate is caFile');
  t.equal(ca.checkHost(e.domain), e.domain, 'certificate valid for the domain');
  t.comment(`TLS: ${(rc.socket as TLSSocket).getProtocol()} ${(rc.socket as TLSSocket).getCipher().name}`);
  const post = rc.received.filter((el) => el.name === 'stream:features').at(-1)!;
  rc.destroy();
  const mechs = mechanisms(post);
  t.comment(`features after STARTTLS: ${post.toString()}`);
  t.comment(`SASL mechanisms after STARTTLS: ${mechs.join(', ')}`);
  t.ok(mechs.includes('SCRAM-SHA-1'), 'SCRAM-SHA-1 offered');
  t.comment(`SCRAM-SHA-256 offered: ${mechs.includes('SCRAM-SHA-256')}; PLAIN offered: ${mechs.includes('PLAIN')}`);

  // The property this upstream exists for: a fresh salt on every SCRAM exchange.
  const a = await scramServerFirst(e, 'alice');
  const b = await scramServerFirst(e, 'alice');
  t.comment(`server-first #1: s=${a.s} i=${a.i}; #2: s=${b.s} i=${b.i}`);
  t.ok(a.r.startsWith(a.clientNonce) && b.r.startsWith(b.clientNonce), 'server nonces extend the client nonces');
  t.ok(a.s.length > 0 && b.s.length > 0, 'salts present');
  t.not(a.s, b.s, 'two exchanges for the same account get different salts');

  // Both accounts log in and chat; no XEP-0198 with smacks off.
  const clients = await chatRound(e, [['alice', 'alice-pw'], ['bob', 'bob-pw']], 'hello');
  t.pass('alice and bob logged in (STARTTLS + SCRAM-SHA-1) and exchanged messages');
  const afterAuth = clients[0]!.features.at(-1)!;
  t.comment(`features after auth: ${afterAuth}`);
  t.match(afterAuth, 'urn:ietf:params:xml:ns:xmpp-bind', 'last features are post-auth');
  for (const f of clients[0]!.features) t.notMatch(f, 'urn:xmpp:sm:', 'no urn:xmpp:sm in any feature set');

  // Accounts are durable: one registered the instant before a SIGKILL survives it too.
  const tr = Date.now();
  await e.register('carol', 'carol-pw');
  t.comment(`register() took ${Date.now() - tr} ms`);
  const { c2sPort } = e;
  const killedPid = e.pid;
  e.kill('SIGKILL');
  await waitFor(() => e.pid === undefined, 'pid undefined after SIGKILL');
  t.throws(() => e.kill('SIGTERM'), /not running/, 'kill() throws while not running');
  const t1 = Date.now();
  await e.restart();
  t.comment(`restart() after SIGKILL took ${Date.now() - t1} ms`);
  t.not(e.pid, killedPid, 'new beam');
  t.equal(e.c2sPort, c2sPort, 'same c2s port');
  await chatRoundAfterFault(t, e, [['alice', 'alice-pw'], ['bob', 'bob-pw'], ['carol', 'carol-pw']], 'after SIGKILL');
  t.pass('after SIGKILL + restart(): alice, bob and carol logged in (SCRAM-SHA-1) and exchanged messages');
  t.same((await e.ctl(['registered_users', e.domain])).trim().split('\n').sort(), ['alice', 'bob', 'carol'], 'ctl registered_users');

  // A frozen server accepts TCP (kernel backlog) but answers nothing; SIGCONT brings it back.
  e.kill('SIGSTOP');
  await t.rejects(rawFeatures(e.c2sPort, e.domain, 1000), /timed out/, 'SIGSTOPped server does not answer');
  e.kill('SIGCONT');
  t.ok(await rawFeatures(e.c2sPort, e.domain), 'answers again after SIGCONT');
  await chatRoundAfterFault(t, e, [['alice', 'alice-pw'], ['bob', 'bob-pw']], 'after SIGCONT');
  t.pass('after SIGCONT: alice and bob logged in (SCRAM-SHA-1) and exchanged messages');

  // stop() of a SIGSTOPped server is still graceful (SIGCONT follows SIGTERM) and leaves nothing.
  const beam = e.pid!;
  const helpers = [...processes((_, ppid) => ppid === beam).keys()];
  t.ok(helpers.length > 0, `beam helper processes: ${helpers.join(', ')}`);
  const { dir, nodeName } = e;
  e.kill('SIGSTOP');
  const t2 = Date.now();
  await e.stop();
  stopped = true;
  t.comment(`stop() of a SIGSTOPped server took ${Date.now() - t2} ms`);
  t.ok(Date.now() - t2 < 8000, 'no SIGKILL grace wait needed');
  t.equal(e.pid, undefined, 'no pid after stop()');
  t.same([...processes((c) => c.includes(nodeName)).values()], [], `no process of node ${nodeName} left`);
  t.same([...processes(() => true).keys()].filter((p) => p === beam || helpers.includes(p)), [], 'beam and its helpers gone');
  t.same(epmdPids().filter((p) => !epmdBefore.includes(p)), [], 'no epmd left');
  t.notOk(existsSync(dir), 'temp dir removed');
  await e.stop(); // idempotent
  await t.rejects(e.restart(), /stopped/, 'restart() after stop() rejects');
});

t.test('smacks + mam: XEP-0198 with resumption and MAM offered after login (tls optional)', async (t) => {
  const t0 = Date.now();
  const e = await startEjabberd({ smacks: true, mam: true, tls: 'optional', accounts: [{ user: 'dave', password: 'pw' }] });
  t.comment(`startEjabberd (smacks, mam, 1 account) took ${Date.now() - t0} ms`);
  t.teardown(() => e.stop());
  const pre = await rawFeatures(e.c2sPort, e.domain);
  t.notOk(pre.getChild('starttls')?.getChild('required'), 'STARTTLS offered, not required');
  t.comment(`SASL mechanisms before STARTTLS (tls optional): ${mechanisms(pre).join(', ')}`);

  const c = await RawClient.login({ port: e.c2sPort, domain: e.domain, user: 'dave', password: 'pw' });
  try {
    const postAuth = c.client.received.filter((el) => el.name === 'stream:features').at(-1)!;
    t.comment(`features after auth (smacks): ${postAuth.toString()}`);
    t.ok(postAuth.getChild('sm', 'urn:xmpp:sm:3'), 'urn:xmpp:sm:3 offered');
    c.client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
    const enabled = await c.client.next((el) => el.name === 'enabled' || el.name === 'failed');
    t.equal(enabled.name, 'enabled', '<enable resume=true/> answered <enabled/>');
    t.ok(enabled.attrs.resume === 'true' && enabled.attrs.id, `resumable, id ${enabled.attrs.id}`);
    c.client.send(`<iq type='get' id='disco1' to='${e.domain}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`);
    const info = await c.client.next((el) => el.name === 'iq' && el.attrs.id === 'disco1');
    const vars = info.getChild('query')!.getChildren('feature').map((f) => f.attrs.var as string);
    t.comment(`server disco#info features: ${vars.join(' ')}`);
    c.client.send(`<iq type='get' id='disco2'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`);
    const own = await c.client.next((el) => el.name === 'iq' && el.attrs.id === 'disco2');
    const ownVars = own.getChild('query')?.getChildren('feature').map((f) => f.attrs.var as string) ?? [];
    t.ok(ownVars.includes('urn:xmpp:mam:2'), 'MAM (urn:xmpp:mam:2) on the account');
  } finally {
    c.client.destroy();
  }
});

// Runs startEjabberd in a separate Node process (see runInChildNode) and reports its pid, dir
// and node name on stdout.
const CHILD_SCRIPT = `
  const { startEjabberd } = await import(${JSON.stringify(fileURLToPath(new URL('./ejabberd.ts', import.meta.url)))});
  const e = await startEjabberd();
  console.log(JSON.stringify({ pid: e.pid, dir: e.dir, nodeName: e.nodeName }));
`;

const runChild = (mode: 'exit' | 'hang') => runInChildNode<{ pid: number; dir: string; nodeName: string }>(CHILD_SCRIPT, mode);
const nodeGone = (nodeName: string): Promise<boolean> => eventually(() => processes((c) => c.includes(nodeName)).size === 0, 5000);

t.test('no ejabberd survives its Node process', async (t) => {
  const [exited, hung] = await Promise.all([runChild('exit'), runChild('hang')]);
  t.teardown(() => {
    hung.child.kill('SIGKILL');
    for (const c of [exited.child, hung.child]) {
      c.stdout?.destroy();
      c.stderr?.destroy();
    }
    rmSync(exited.dir, { recursive: true, force: true });
    rmSync(hung.dir, { recursive: true, force: true });
  });
  t.ok(await nodeGone(exited.nodeName), 'process.exit() without stop(): exit handler killed the beam');
  t.ok(processes((c) => c.includes(hung.nodeName)).size > 0, 'beam runs while its parent does');
  hung.child.kill('SIGKILL');
  t.ok(await nodeGone(hung.nodeName), 'parent SIGKILLed (no exit handler): pdeathsig killed the beam');
});
