// SIGHUP renews the certificate without a restart (issue 11): connected clients keep their
// connection, later handshakes (STARTTLS and direct TLS) present the new certificate, and a broken
// new file keeps the previous certificate and is logged as an error naming the file.
import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { freePort } from '../harness/prosody.ts';
import { RawClient } from '../harness/raw-client.ts';
import { generateSelfSigned } from '../../src/tls/certificates.ts';
import { eventually, processGone, runTs } from './child.ts';

/** Startup (tsx) on a loaded machine. */
const MUST_START_MS = 40_000;
const DOMAIN = 'cli.test';

const fingerprint = (client: RawClient): string => (client.socket as TLSSocket).getPeerCertificate().fingerprint256;

/** An answer on an open stream: SASL PLAIN towards an upstream nobody listens on fails softly. */
/** A SASL round trip the proxy answers by itself (a mechanism it does not offer): the stream is served. */
async function answers(client: RawClient): Promise<string> {
  client.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-NONE'>=</auth>`);
  const answer = await client.next((el) => el.name === 'success' || el.name === 'failure');
  return answer.name;
}

t.test('SIGHUP reloads the PEM pair without dropping connections', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cli-reload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  const a = generateSelfSigned([DOMAIN]);
  const b = generateSelfSigned([DOMAIN]);
  writeFileSync(certFile, a.cert);
  writeFileSync(keyFile, a.key);
  const starttls = await freePort();
  const direct = await freePort();
  const config = path.join(dir, 'config.yaml');
  // Port 1 on loopback: nothing listens there (the proxy needs no upstream to answer `answers`).
  writeFileSync(
    config,
    [
      `domains: [${DOMAIN}]`,
      'upstream: { host: 127.0.0.1, port: 1 }',
      'listen:',
      `  starttls: ["127.0.0.1:${starttls}"]`,
      `  directTls: ["127.0.0.1:${direct}"]`,
      `tls: { certFile: ${JSON.stringify(certFile)}, keyFile: ${JSON.stringify(keyFile)} }`,
      'log: { level: info }',
      'metrics: { listen: none }',
      `storage: { dataDir: ${JSON.stringify(path.join(dir, 'data'))} }`,
      '',
    ].join('\n'),
  );
  const child = runTs('src/cli.ts', ['--config', config]);
  t.teardown(async () => {
    if (!processGone(child.proc.pid!)) child.proc.kill('SIGTERM');
    await child.exited(20_000);
  });
  await child.waitForStdout(/"msg":"proxy listening"/, MUST_START_MS);

  const clients: RawClient[] = [];
  t.teardown(() => clients.forEach((c) => c.socket.destroy()));
  const connect = async (opts: { direct: boolean }): Promise<RawClient> => {
    const c = await RawClient.tls({ port: opts.direct ? direct : starttls, domain: DOMAIN, direct: opts.direct });
    clients.push(c);
    return c;
  };
  const fpA = new X509Certificate(a.cert).fingerprint256;
  const fpB = new X509Certificate(b.cert).fingerprint256;
  const oldDirect = await connect({ direct: true });
  const oldStarttls = await connect({ direct: false });
  t.equal(fingerprint(oldDirect), fpA, 'direct TLS presents certificate A');
  t.equal(fingerprint(oldStarttls), fpA, 'STARTTLS presents certificate A');
  // Connected before the reload, STARTTLS after it.
  const plain = await RawClient.connect({ port: starttls, domain: DOMAIN });
  clients.push(plain);
  await plain.open();

  writeFileSync(certFile, b.cert);
  writeFileSync(keyFile, b.key);
  child.proc.kill('SIGHUP');
  await child.waitForStdout(/"msg":"TLS certificate reloaded"/, 20_000);
  t.notOk(processGone(child.proc.pid!), 'the process lives after SIGHUP');

  t.equal(await answers(oldDirect), 'failure', 'the direct-TLS client connected before still gets answers');
  t.equal(await answers(oldStarttls), 'failure', 'the STARTTLS client connected before still gets answers');
  t.equal(fingerprint(oldDirect), fpA, 'the old connection keeps certificate A');

  const newDirect = await connect({ direct: true });
  const newStarttls = await connect({ direct: false });
  t.equal(fingerprint(newDirect), fpB, 'a new direct-TLS connection gets certificate B');
  t.equal((newDirect.socket as TLSSocket).alpnProtocol, 'xmpp-client', 'still with ALPN xmpp-client');
  t.equal(fingerprint(newStarttls), fpB, 'a new STARTTLS connection gets certificate B');
  await plain.starttls();
  t.equal(fingerprint(plain), fpB, 'a stream open before the reload gets the new certificate at its STARTTLS');
  t.equal(await answers(newStarttls), 'failure', 'the new connection works');

  // A broken key: the reload fails, certificate B stays.
  writeFileSync(keyFile, '-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n');
  child.proc.kill('SIGHUP');
  await child.waitForStdout(/"msg":"TLS reload failed[^"]*"/, 20_000);
  t.ok(await eventually(() => !processGone(child.proc.pid!), 1000), 'the process lives after a failed reload');
  const failure = child.stdout().split('\n').find((line) => line.includes('TLS reload failed'))!;
  t.match(JSON.parse(failure), { level: 50 }, 'logged at error level');
  t.ok(failure.includes(keyFile), 'the error names the key file');
  t.equal(fingerprint(await connect({ direct: true })), fpB, 'direct TLS still presents certificate B');
  t.equal(fingerprint(await connect({ direct: false })), fpB, 'STARTTLS still presents certificate B');

  // A mismatched pair (certificate A with key B): refused as well.
  writeFileSync(certFile, a.cert);
  writeFileSync(keyFile, b.key);
  const before = child.stdout().split('TLS reload failed').length;
  child.proc.kill('SIGHUP');
  t.ok(await eventually(() => child.stdout().split('TLS reload failed').length > before, 20_000), 'a mismatched pair is refused');
  t.equal(fingerprint(await connect({ direct: true })), fpB, 'certificate B stays after a mismatched pair');
  t.equal(await answers(oldDirect), 'failure', 'the first client is still served');

  child.proc.kill('SIGTERM');
  t.same(await child.exited(20_000), { code: 0, signal: null }, 'SIGTERM still stops it cleanly');
});
