// The demo (scripts/demo.ts) stops cleanly: Ctrl-C with a client connected and its stdout a
// pipe whose reader is gone (`bash scripts/demo.sh | tee demo.log`) exits 0, stops Prosody and
// removes Prosody's temp dir; so do a second signal and a crash (through the harness's 'exit'
// handler). Needs Prosody (apt-get install prosody), like the end-to-end tests.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0'; // the demo proxy's certificate is self-signed
process.removeAllListeners('warning');

import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { client as xmppClient } from '@xmpp/client';
import { freePort } from '../harness/prosody.ts';
import { eventually, processGone, runTs, type Child } from './child.ts';

/** "Must end at all" guards. */
const MUST_EXIT_MS = 30_000;
const MUST_START_MS = 40_000;

interface Demo {
  child: Child;
  port: number;
  tlsPort: number;
  dir: string;
  prosodyPid: number;
  bobPassword: string;
}

async function startDemo(t: { teardown(fn: () => unknown): void }): Promise<Demo> {
  const port = await freePort();
  let tlsPort = await freePort();
  while (tlsPort === port) tlsPort = await freePort();
  const child = runTs('scripts/demo.ts', ['--port', String(port), '--tls-port', String(tlsPort)]);
  t.teardown(() => {
    if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  });
  await child.waitForStdout(/demo is running[\s\S]*={20}\n/, MUST_START_MS);
  const dir = (await child.waitForStdout(/Prosody's files\s+(\S+)/, 1000))[1]!;
  const bobPassword = (await child.waitForStdout(/bob@demo\.test\s+password (\S+)/, 1000))[1]!;
  const prosodyPid = Number(readFileSync(`${dir}/prosody.pid`, 'utf8').trim());
  return { child, port, tlsPort, dir, prosodyPid, bobPassword };
}

/** bob, logged in through the demo proxy (a client connected while the demo stops). */
async function connectBob(t: { teardown(fn: () => unknown): void }, demo: Demo) {
  const xmpp = xmppClient({
    service: `xmpp://127.0.0.1:${demo.port}`,
    domain: 'demo.test',
    username: 'bob',
    password: demo.bobPassword,
    timeout: 15_000, // per negotiation step; the default 2 s failed under load in CI
  });
  xmpp.on('error', () => {});
  t.teardown(() => xmpp.stop().catch(() => {}));
  await xmpp.start();
  return xmpp;
}

t.test('SIGINT with a client connected and the stdout reader gone: exit 0, Prosody stopped, temp dir removed', async (t) => {
  const demo = await startDemo(t);
  t.match(demo.dir, /\/prosody-harness-/, 'the banner names the temp dir');
  t.ok(existsSync(demo.dir), 'the temp dir exists while the demo runs');
  await connectBob(t, demo);
  demo.child.proc.stdout.destroy(); // tee is gone
  demo.child.proc.kill('SIGINT');
  const result = await demo.child.exited(MUST_EXIT_MS);
  t.same(result, { code: 0, signal: null }, 'exited with code 0');
  t.notOk(existsSync(demo.dir), 'the temp dir is removed');
  t.ok(await eventually(() => processGone(demo.prosodyPid), 10_000), 'Prosody is stopped');
  t.notMatch(demo.child.stderr(), /Error|EPIPE/, 'no error on stderr');
});

/** The SHA-256 fingerprint of the certificate the demo proxy serves on direct TLS. */
async function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'demo.test', rejectUnauthorized: false, ALPNProtocols: ['xmpp-client'] }, () => {
      const fp = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fp);
    });
    socket.once('error', reject);
  });
}

t.test("the banner names the certificate's PEM file and the SHA-256 fingerprint the proxy serves", async (t) => {
  const demo = await startDemo(t);
  // The log lines are for people (scripts/pretty-log.ts): time, level name, message, fields.
  await demo.child.waitForStdout(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: proxy listening starttls=\[\d+\] directTls=\[\d+\] /m, 1000);
  const fingerprint = (await demo.child.waitForStdout(/SHA-256\s+([0-9A-F]{2}(?::[0-9A-F]{2}){31})\s/, 1000))[1]!;
  const certFile = (await demo.child.waitForStdout(/certificate\s+(\S+\.pem)/, 1000))[1]!;
  t.equal(fingerprint, await servedFingerprint(demo.tlsPort), 'the fingerprint of the certificate served');
  t.equal(new X509Certificate(readFileSync(certFile)).fingerprint256, fingerprint, 'the PEM file holds that certificate');
  t.ok(certFile.startsWith(`${demo.dir}/`), "the PEM file is in the demo's temp dir");
  demo.child.proc.kill('SIGINT');
  t.same(await demo.child.exited(MUST_EXIT_MS), { code: 0, signal: null }, 'exited with code 0');
  t.notOk(existsSync(certFile), 'the PEM file is removed with the temp dir');
  const lines = demo.child.stdout().split('\n');
  t.ok(lines.some((l) => /^\[[\d:.]+\] INFO: stopping signal=SIGINT deadlineMs=\d+$/.test(l)), 'the stop is logged, with its signal');
  t.same(lines.filter((l) => l.startsWith('{')), [], 'no JSON log line');
});

t.test('a second signal: exit 1 at once, Prosody killed, temp dir removed', async (t) => {
  const demo = await startDemo(t);
  await connectBob(t, demo);
  demo.child.proc.kill('SIGINT');
  demo.child.proc.kill('SIGTERM');
  const result = await demo.child.exited(MUST_EXIT_MS);
  t.same(result, { code: 1, signal: null }, 'exited with code 1');
  // Two signals pending at once may be handled in either order (seen under load): whichever came second.
  t.match(demo.child.stdout(), /^\[[\d:.]+\] WARN: second signal, exiting without waiting signal=SIG(?:INT|TERM)$/m);
  t.notOk(existsSync(demo.dir), 'the temp dir is removed');
  t.ok(await eventually(() => processGone(demo.prosodyPid), 10_000), 'Prosody is stopped');
});

t.test('a crash with a harness Prosody running: Prosody killed, temp dir removed', async (t) => {
  const child = runTs('test/cli/fixtures/prosody-crash.ts');
  t.teardown(() => {
    if (child.proc.exitCode === null && child.proc.signalCode === null) child.proc.kill('SIGKILL');
  });
  const info = JSON.parse((await child.waitForStdout(/^\{.*\}\n/m, MUST_START_MS))[0]) as { dir: string; pid: number };
  t.ok(existsSync(info.dir), 'the temp dir exists while Prosody runs');
  const result = await child.exited(MUST_EXIT_MS);
  t.same(result, { code: 1, signal: null }, 'crashed (exit code 1)');
  t.match(child.stderr(), /boom: a crash while Prosody runs/);
  t.notOk(existsSync(info.dir), 'the temp dir is removed');
  t.ok(await eventually(() => processGone(info.pid), 10_000), 'Prosody is stopped');
});
