import t from 'tap';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import forge from 'node-forge';
import {
  CertificateError,
  generateSelfSigned,
  loadTlsCredentials,
  type TlsCredentials,
} from '../../src/tls/certificates.ts';

const hasTool = (cmd: string, arg: string) => spawnSync(cmd, [arg], { stdio: 'ignore' }).status === 0;
// No skips: a missing tool fails the suite (.ci/run installs both).
for (const [tool, arg, pkg] of [['openssl', 'version', 'openssl'], ['keytool', '-help', 'default-jre-headless']] as const) {
  if (!hasTool(tool, arg)) throw new Error(`${tool} not found: apt-get install ${pkg}`);
}

function rsaPair(bits = 2048) {
  return crypto.generateKeyPairSync('rsa', {
    modulusLength: bits,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
}

/** Builds a certificate with forge; self-signed unless an issuer is given. */
function issue(o: {
  cn: string;
  publicKey: string;
  signKey: string;
  issuerCn?: string;
  ca?: boolean;
  notBefore?: Date;
  notAfter?: Date;
}): string {
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(o.publicKey);
  cert.serialNumber = '01' + crypto.randomBytes(8).toString('hex');
  cert.validity.notBefore = o.notBefore ?? new Date(Date.now() - 60_000);
  cert.validity.notAfter = o.notAfter ?? new Date(Date.now() + 86_400_000);
  cert.setSubject([{ name: 'commonName', value: o.cn }]);
  cert.setIssuer([{ name: 'commonName', value: o.issuerCn ?? o.cn }]);
  cert.setExtensions(
    o.ca
      ? [{ name: 'basicConstraints', cA: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true }]
      : [{ name: 'subjectAltName', altNames: [{ type: 2, value: o.cn }] }],
  );
  cert.sign(forge.pki.privateKeyFromPem(o.signKey), forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

/** A CA and a leaf for `cn` signed by it. */
function caAndLeaf(cn: string) {
  const caKeys = rsaPair();
  const leafKeys = rsaPair();
  const ca = issue({ cn: 'Test CA', publicKey: caKeys.publicKey, signKey: caKeys.privateKey, ca: true });
  const leaf = issue({ cn, publicKey: leafKeys.publicKey, signKey: caKeys.privateKey, issuerCn: 'Test CA' });
  return { ca, leaf, key: leafKeys.privateKey };
}

function p12WithForge(keyPem: string | null, certs: string[], password: string): Buffer {
  const key = keyPem === null ? null : forge.pki.privateKeyFromPem(keyPem);
  const asn1 = forge.pkcs12.toPkcs12Asn1(key, certs.map((c) => forge.pki.certificateFromPem(c)), password, {
    algorithm: '3des',
  });
  return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
}

/** Serves `creds` on a real TLS socket and connects a client trusting only `ca`. */
async function handshake(creds: TlsCredentials, servername: string, ca: string) {
  const server = tls.createServer({ key: creds.key, cert: creds.cert }, (sock) => sock.end('hello'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise<{ peer: tls.PeerCertificate; data: string; chainLength: number }>((resolve, reject) => {
      const sock = tls.connect({ host: '127.0.0.1', port, servername, ca }, () => {
        const peer = sock.getPeerCertificate(true);
        let chainLength = 1;
        for (let c = peer; c.issuerCertificate && c.issuerCertificate !== c; c = c.issuerCertificate) chainLength++;
        let data = '';
        sock.setEncoding('utf8');
        sock.on('data', (d: string) => (data += d));
        sock.on('end', () => resolve({ peer, data, chainLength }));
      });
      sock.on('error', reject);
    });
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

async function rejection(p: Promise<unknown>): Promise<CertificateError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CertificateError) return err;
    throw err;
  }
  throw new Error('expected a CertificateError, but it resolved');
}

t.test('self-signed for example.test serves TLS that a trusting client accepts', async (t) => {
  const creds = await loadTlsCredentials({}, ['example.test']);
  t.equal(creds.source, 'self-signed');
  t.same(creds.names, ['example.test', '*.example.test']);
  const x509 = new crypto.X509Certificate(creds.cert);
  t.match(x509.subjectAltName, /DNS:example\.test(,|$)/);
  t.match(x509.subjectAltName, /DNS:\*\.example\.test/);
  t.match(x509.subject, /CN=example\.test/);
  t.equal(x509.ca, false);
  t.same(x509.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'extKeyUsage serverAuth');
  t.equal(x509.publicKey.asymmetricKeyDetails?.modulusLength, 2048);
  const days = (creds.notAfter.getTime() - Date.now()) / 86_400_000;
  t.ok(days > 364 && days <= 365, `valid ~1 year, got ${days}`);

  const { peer, data } = await handshake(creds, 'example.test', creds.cert);
  t.equal(data, 'hello', 'handshake completed and data flowed');
  t.equal(tls.checkServerIdentity('example.test', peer), undefined, 'identity matches example.test');
  t.equal(tls.checkServerIdentity('xmpp.example.test', peer), undefined, 'wildcard SAN matches subdomain');
  t.type(tls.checkServerIdentity('other.test', peer), Error, 'a different name is rejected');
});

t.test('a client that does not trust the self-signed cert is refused', async (t) => {
  const creds = generateSelfSigned(['example.test']);
  const other = generateSelfSigned(['example.test']);
  await t.rejects(handshake(creds, 'example.test', other.cert), { code: /SELF_SIGNED|UNABLE_TO_VERIFY|CERT_SIGNATURE/ });
});

t.test('generateSelfSigned honours days and several domains', async (t) => {
  const creds = generateSelfSigned(['a.test', 'b.test'], 10);
  t.same(creds.names, ['a.test', '*.a.test', 'b.test', '*.b.test']);
  const days = (creds.notAfter.getTime() - Date.now()) / 86_400_000;
  t.ok(days > 9.9 && days <= 10, `valid 10 days, got ${days}`);
  t.throws(() => generateSelfSigned([]), CertificateError);
  t.throws(() => generateSelfSigned(['a.test'], 0), CertificateError);
});

t.test('PEM round-trip', async (t) => {
  const dir = t.testdir();
  const gen = generateSelfSigned(['pem.test']);
  writeFileSync(join(dir, 'cert.pem'), gen.cert);
  writeFileSync(join(dir, 'key.pem'), gen.key);
  const creds = await loadTlsCredentials({ certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem') }, ['ignored.test']);
  t.equal(creds.source, 'pem');
  t.same(creds.names, ['pem.test', '*.pem.test']);
  t.equal(new crypto.X509Certificate(creds.cert).fingerprint256, new crypto.X509Certificate(gen.cert).fingerprint256);
  t.equal(creds.notAfter.getTime(), gen.notAfter.getTime());
  const { data } = await handshake(creds, 'pem.test', gen.cert);
  t.equal(data, 'hello');
});

t.test('PEM chain given CA first is reordered leaf first and served whole', async (t) => {
  const dir = t.testdir();
  const { ca, leaf, key } = caAndLeaf('chain.test');
  writeFileSync(join(dir, 'chain.pem'), ca + leaf);
  writeFileSync(join(dir, 'key.pem'), key);
  const creds = await loadTlsCredentials({ certFile: join(dir, 'chain.pem'), keyFile: join(dir, 'key.pem') }, []);
  const blocks = creds.cert.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  t.equal(blocks.length, 2);
  t.match(new crypto.X509Certificate(blocks[0]!).subject, /CN=chain\.test/, 'leaf first');
  t.match(new crypto.X509Certificate(blocks[1]!).subject, /CN=Test CA/, 'CA second');
  t.same(creds.names, ['chain.test']);
  const { data, chainLength } = await handshake(creds, 'chain.test', ca);
  t.equal(data, 'hello', 'client trusting only the CA accepts the leaf');
  t.equal(chainLength, 2);
});

t.test('an expired certificate loads and reports its notAfter', async (t) => {
  const dir = t.testdir();
  const keys = rsaPair();
  const notAfter = new Date(Math.floor((Date.now() - 86_400_000) / 1000) * 1000);
  const cert = issue({
    cn: 'old.test',
    publicKey: keys.publicKey,
    signKey: keys.privateKey,
    notBefore: new Date(Date.now() - 10 * 86_400_000),
    notAfter,
  });
  writeFileSync(join(dir, 'cert.pem'), cert);
  writeFileSync(join(dir, 'key.pem'), keys.privateKey);
  const creds = await loadTlsCredentials({ certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem') }, []);
  t.equal(creds.notAfter.getTime(), notAfter.getTime());
  t.ok(creds.notAfter.getTime() < Date.now());
});

t.test('PKCS#12 built by forge (3DES)', async (t) => {
  const dir = t.testdir();
  const gen = generateSelfSigned(['p12.test']);
  const file = join(dir, 'keystore.p12');
  writeFileSync(file, p12WithForge(gen.key, [gen.cert], 'sekrit-pass'));

  const creds = await loadTlsCredentials({ pkcs12File: file, pkcs12Password: 'sekrit-pass' }, []);
  t.equal(creds.source, 'pkcs12');
  t.same(creds.names, ['p12.test', '*.p12.test']);
  t.match(creds.key, /^-----BEGIN PRIVATE KEY-----/);
  const { data } = await handshake(creds, 'p12.test', gen.cert);
  t.equal(data, 'hello');

  const err = await rejection(loadTlsCredentials({ pkcs12File: file, pkcs12Password: 'wrong-pass' }, []));
  t.equal(err.message, `wrong password or corrupt keystore: ${file}`);
  t.equal(err.file, file);
  t.notMatch(err.message, /wrong-pass|sekrit-pass/, 'no password in the message');
  t.notMatch(String((err.cause as Error)?.message), /wrong-pass|sekrit-pass/, 'nor in the cause');
});

t.test('PKCS#12 chain: CA stored first, leaf found by its key', async (t) => {
  const dir = t.testdir();
  const { ca, leaf, key } = caAndLeaf('p12chain.test');
  const file = join(dir, 'chain.p12');
  writeFileSync(file, p12WithForge(key, [ca, leaf], 'pw'));
  const creds = await loadTlsCredentials({ pkcs12File: file, pkcs12Password: 'pw' }, []);
  t.same(creds.names, ['p12chain.test'], 'leaf first');
  const { chainLength } = await handshake(creds, 'p12chain.test', ca);
  t.equal(chainLength, 2);
});

t.test('PKCS#12 problems', async (t) => {
  const dir = t.testdir();
  const a = generateSelfSigned(['a.test']);
  const b = generateSelfSigned(['b.test']);
  writeFileSync(join(dir, 'nokey.p12'), p12WithForge(null, [a.cert], 'pw'));
  writeFileSync(join(dir, 'mismatch.p12'), p12WithForge(a.key, [b.cert], 'pw'));
  writeFileSync(join(dir, 'garbage.p12'), a.cert);

  const nokey = await rejection(loadTlsCredentials({ pkcs12File: join(dir, 'nokey.p12'), pkcs12Password: 'pw' }, []));
  t.equal(nokey.message, `no private key in keystore: ${join(dir, 'nokey.p12')}`);
  const mismatch = await rejection(loadTlsCredentials({ pkcs12File: join(dir, 'mismatch.p12'), pkcs12Password: 'pw' }, []));
  t.equal(mismatch.message, `no certificate matches the private key in keystore: ${join(dir, 'mismatch.p12')}`);
  const garbage = await rejection(loadTlsCredentials({ pkcs12File: join(dir, 'garbage.p12'), pkcs12Password: 'pw' }, []));
  t.match(garbage.message, join(dir, 'garbage.p12'));
  const missing = await rejection(loadTlsCredentials({ pkcs12File: join(dir, 'none.p12'), pkcs12Password: 'pw' }, []));
  t.equal(missing.message, `cannot read ${join(dir, 'none.p12')}: ENOENT`);
});

t.test('PKCS#12 from openssl 3 defaults (PBES2, AES-256-CBC, SHA-256 MAC)', async (t) => {
  const dir = t.testdir();
  const gen = generateSelfSigned(['openssl.test']);
  writeFileSync(join(dir, 'cert.pem'), gen.cert);
  writeFileSync(join(dir, 'key.pem'), gen.key);
  const file = join(dir, 'openssl.p12');
  const run = (args: string[]) => spawnSync('openssl', args, { encoding: 'utf8' });
  const made = run(['pkcs12', '-export', '-in', join(dir, 'cert.pem'), '-inkey', join(dir, 'key.pem'), '-out', file, '-passout', 'pass:changeit']);
  t.equal(made.status, 0, made.stderr);
  const info = run(['pkcs12', '-in', file, '-info', '-noout', '-passin', 'pass:changeit']);
  t.match(info.stdout + info.stderr, /PBES2, PBKDF2, AES-256-CBC/, 'the keystore really uses AES/PBKDF2');

  const creds = await loadTlsCredentials({ pkcs12File: file, pkcs12Password: 'changeit' }, []);
  t.same(creds.names, ['openssl.test', '*.openssl.test']);
  t.equal(new crypto.X509Certificate(creds.cert).fingerprint256, new crypto.X509Certificate(gen.cert).fingerprint256);
  const { data } = await handshake(creds, 'openssl.test', gen.cert);
  t.equal(data, 'hello');
  const err = await rejection(loadTlsCredentials({ pkcs12File: file, pkcs12Password: 'nope' }, []));
  t.equal(err.message, `wrong password or corrupt keystore: ${file}`);

  // Known forge limitation: PBES2 gets the password as Latin-1, openssl uses UTF-8.
  const utf8 = join(dir, 'utf8.p12');
  run(['pkcs12', '-export', '-in', join(dir, 'cert.pem'), '-inkey', join(dir, 'key.pem'), '-out', utf8, '-passout', 'pass:pässwörd']);
  const u = await rejection(loadTlsCredentials({ pkcs12File: utf8, pkcs12Password: 'pässwörd' }, []));
  t.match(u.message, /non-ASCII passwords are not supported/);
  t.notMatch(u.message, /pässwörd/);
});

t.test('PKCS#12 with an EC key and CA chain from openssl', async (t) => {
  const dir = t.testdir();
  const p = (f: string) => join(dir, f);
  const run = (args: string[]) => t.equal(spawnSync('openssl', args, { stdio: 'ignore' }).status, 0, args.join(' '));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-subj', '/CN=EC CA', '-days', '2']);
  run(['req', ...ec, '-keyout', p('leaf.key'), '-out', p('leaf.csr'), '-subj', '/CN=ec.test']);
  writeFileSync(p('ext'), 'subjectAltName=DNS:ec.test\n');
  run(['x509', '-req', '-in', p('leaf.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p('leaf.pem'), '-days', '1', '-extfile', p('ext')]);
  run(['pkcs12', '-export', '-in', p('leaf.pem'), '-inkey', p('leaf.key'), '-certfile', p('ca.pem'), '-out', p('ec.p12'), '-passout', 'pass:pw']);

  const creds = await loadTlsCredentials({ pkcs12File: p('ec.p12'), pkcs12Password: 'pw' }, []);
  t.same(creds.names, ['ec.test']);
  t.equal(crypto.createPrivateKey(creds.key).asymmetricKeyType, 'ec');
  const { data, chainLength } = await handshake(creds, 'ec.test', readFileSync(p('ca.pem'), 'utf8'));
  t.equal(data, 'hello');
  t.equal(chainLength, 2);
});

t.test('PKCS#12 keystore from keytool (as Openfire writes it)', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'keystore');
  const r = spawnSync('keytool', [
    '-genkeypair', '-alias', 'rsa', '-keyalg', 'RSA', '-keysize', '2048', '-dname', 'CN=openfire.test',
    '-ext', 'SAN=dns:openfire.test', '-validity', '30', '-storetype', 'PKCS12', '-keystore', file,
    '-storepass', 'changeit', '-keypass', 'changeit',
  ], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const creds = await loadTlsCredentials({ pkcs12File: file, pkcs12Password: 'changeit' }, []);
  t.equal(creds.source, 'pkcs12');
  t.same(creds.names, ['openfire.test']);
  const { peer } = await handshake(creds, 'openfire.test', creds.cert);
  t.equal(tls.checkServerIdentity('openfire.test', peer), undefined);
});

t.test('option and file errors', async (t) => {
  const dir = t.testdir();
  const a = generateSelfSigned(['a.test']);
  const b = generateSelfSigned(['b.test']);
  const f = (name: string, body: string) => (writeFileSync(join(dir, name), body), join(dir, name));
  const aCert = f('a.crt', a.cert);
  const aKey = f('a.key', a.key);
  const bKey = f('b.key', b.key);

  const e1 = await rejection(loadTlsCredentials({ certFile: aCert }, []));
  t.equal(e1.message, `certFile ${aCert} given without keyFile`);
  const e2 = await rejection(loadTlsCredentials({ keyFile: aKey }, []));
  t.equal(e2.message, `keyFile ${aKey} given without certFile`);
  const e3 = await rejection(loadTlsCredentials({ certFile: aCert, keyFile: aKey, pkcs12File: aCert }, []));
  t.match(e3.message, /not both/);
  const e4 = await rejection(loadTlsCredentials({ pkcs12Password: 'x' }, []));
  t.match(e4.message, /pkcs12Password given without pkcs12File/);

  const missing = join(dir, 'missing.pem');
  const e5 = await rejection(loadTlsCredentials({ certFile: missing, keyFile: aKey }, []));
  t.equal(e5.message, `cannot read ${missing}: ENOENT`);
  t.equal(e5.file, missing);

  const e6 = await rejection(loadTlsCredentials({ certFile: aCert, keyFile: bKey }, []));
  t.equal(e6.message, `key in ${bKey} does not match any certificate in ${aCert}`);

  const e7 = await rejection(loadTlsCredentials({ certFile: aKey, keyFile: aKey }, []));
  t.equal(e7.message, `no PEM certificate found in ${aKey}`);

  const e8 = await rejection(loadTlsCredentials({ certFile: aCert, keyFile: aCert }, []));
  t.match(e8.message, `cannot use private key in ${aCert}`);

  const encrypted = crypto.createPrivateKey(a.key).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pp' });
  const e9 = await rejection(loadTlsCredentials({ certFile: aCert, keyFile: f('enc.key', encrypted as string) }, []));
  t.match(e9.message, `cannot use private key in ${join(dir, 'enc.key')}: it is encrypted`);
  const legacyEnc = crypto.createPrivateKey(a.key).export({ type: 'pkcs1', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pp' });
  const e10 = await rejection(loadTlsCredentials({ certFile: aCert, keyFile: f('enc1.key', legacyEnc as string) }, []));
  t.match(e10.message, /it is encrypted/);
});

t.test('material that node TLS rejects is wrapped in CertificateError', async (t) => {
  const dir = t.testdir();
  const weak = rsaPair(768);
  const cert = issue({ cn: 'weak.test', publicKey: weak.publicKey, signKey: weak.privateKey });
  writeFileSync(join(dir, 'c.pem'), cert);
  writeFileSync(join(dir, 'k.pem'), weak.privateKey);
  const err = await rejection(loadTlsCredentials({ certFile: join(dir, 'c.pem'), keyFile: join(dir, 'k.pem') }, []));
  t.match(err.message, `TLS rejected the key/certificate from ${join(dir, 'c.pem')}`);
  t.match(err.message, /key too small/);
  t.ok(err.cause instanceof Error);
});
