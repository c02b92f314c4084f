import crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import forge from 'node-forge';

/** Key material ready for `tls.createSecureContext`, plus facts the caller logs or warns about. */
export interface TlsCredentials {
  /** PEM private key, PKCS#8 ("BEGIN PRIVATE KEY") whatever the input format */
  key: string;
  /** PEM certificate chain, leaf first */
  cert: string;
  /** where it came from */
  source: 'pem' | 'pkcs12' | 'self-signed';
  /** subject CN and SAN DNS names of the leaf, deduplicated, for logging */
  names: string[];
  /** leaf notAfter; may lie in the past, since an expired certificate still loads and the caller decides whether to warn */
  notAfter: Date;
}

/** Where to find the certificate; give PEM files or a keystore, or nothing for a generated self-signed one. */
export interface CertificateOptions {
  /** path of a PEM file holding the certificate chain (leaf anywhere in it; it is moved first) */
  certFile?: string;
  /** path of a PEM file holding the unencrypted private key; required with certFile */
  keyFile?: string;
  /** path of a PKCS#12 (.p12/.pfx, DER) keystore, e.g. Openfire's resources/security/keystore */
  pkcs12File?: string;
  /**
   * keystore password; absent means the empty string. Never logged nor put in errors. Must be
   * ASCII for AES (PBES2) keystores, the openssl 3 and keytool default (a node-forge limitation).
   */
  pkcs12Password?: string;
}

/**
 * Any problem with certificate configuration or files. The message names the offending file or
 * option and what is wrong; it never contains a password.
 */
export class CertificateError extends Error {
  /** the file the problem is about, when there is one */
  readonly file?: string;

  constructor(message: string, options: { file?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CertificateError';
    this.file = options.file;
  }
}

/**
 * Loads from PEM files (certFile+keyFile), or from a PKCS#12 keystore (pkcs12File + pkcs12Password;
 * Openfire's keystore is PKCS#12 since 4.x), or generates a self-signed cert for `domains` when
 * neither is given. The result is checked to be accepted by `tls.createSecureContext`.
 *
 * @param domains XMPP domains; only used when generating (see {@link generateSelfSigned})
 * @throws CertificateError on inconsistent options, unreadable or unparsable files, a wrong keystore
 *   password, a keystore without a private key, a key that matches no certificate, or material
 *   that node's TLS stack rejects. An expired certificate is NOT an error: check `notAfter`.
 */
export async function loadTlsCredentials(opts: CertificateOptions, domains: string[]): Promise<TlsCredentials> {
  const { certFile, keyFile, pkcs12File, pkcs12Password } = opts;
  const hasPem = certFile !== undefined || keyFile !== undefined;
  if (hasPem && pkcs12File !== undefined) {
    throw new CertificateError('give either certFile+keyFile or pkcs12File, not both');
  }
  if (hasPem && (certFile === undefined || keyFile === undefined)) {
    throw new CertificateError(
      certFile === undefined ? `keyFile ${keyFile} given without certFile` : `certFile ${certFile} given without keyFile`,
    );
  }
  if (pkcs12Password !== undefined && pkcs12File === undefined) {
    throw new CertificateError('pkcs12Password given without pkcs12File');
  }

  let creds: TlsCredentials;
  if (certFile !== undefined && keyFile !== undefined) creds = await loadPem(certFile, keyFile);
  else if (pkcs12File !== undefined) creds = await loadPkcs12(pkcs12File, pkcs12Password ?? '');
  else creds = generateSelfSigned(domains);

  try {
    tls.createSecureContext({ key: creds.key, cert: creds.cert });
  } catch (err) {
    const what = certFile ?? pkcs12File ?? 'generated self-signed certificate';
    throw new CertificateError(`TLS rejected the key/certificate from ${what}: ${(err as Error).message}`, {
      file: certFile ?? pkcs12File,
      cause: err,
    });
  }
  return creds;
}

/**
 * Self-signed RSA-2048 certificate, SHA-256, valid `days` days, CN = first domain, SAN = each domain
 * plus `*.${domain}` (DNS; IP literals become a single IP SAN), basicConstraints CA false, keyUsage
 * digitalSignature+keyEncipherment, extKeyUsage serverAuth. Synchronous; takes ~100 ms.
 *
 * @param domains at least one domain name
 * @param days validity in days from now, default 365
 * @throws CertificateError when `domains` is empty or `days` is not a positive number
 */
export function generateSelfSigned(domains: string[], days = 365): TlsCredentials {
  if (domains.length === 0) throw new CertificateError('cannot generate a self-signed certificate: no domains');
  if (!(days > 0)) throw new CertificateError(`cannot generate a self-signed certificate: days must be > 0, got ${days}`);

  // forge's pure-JS RSA keygen takes seconds; node's native one is fast, forge only builds and signs.
  const pair = crypto.generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(pair.publicKey);
  // Leading 0x01 keeps the 128-bit serial positive, as RFC 5280 requires.
  cert.serialNumber = '01' + crypto.randomBytes(16).toString('hex');
  const now = Date.now();
  // Backdated so that clients with a slightly slow clock do not see a "not yet valid" certificate.
  cert.validity.notBefore = new Date(now - 5 * 60_000);
  cert.validity.notAfter = new Date(now + days * 86_400_000);
  const subject = [{ name: 'commonName', value: domains[0] }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  const altNames = domains.flatMap((d): { type: number; value?: string; ip?: string }[] =>
    net.isIP(d) ? [{ type: 7, ip: d }] : [{ type: 2, value: d }, { type: 2, value: `*.${d}` }],
  );
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(pair.privateKey), forge.md.sha256.create());
  const certPem = forge.pki.certificateToPem(cert);
  return { key: pair.privateKey, cert: certPem, source: 'self-signed', ...describeLeaf(certPem) };
}

async function loadPem(certFile: string, keyFile: string): Promise<TlsCredentials> {
  const [certText, keyText] = await Promise.all([readText(certFile), readText(keyFile)]);
  const certs = certText.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!certs) throw new CertificateError(`no PEM certificate found in ${certFile}`, { file: certFile });
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(keyText);
  } catch (err) {
    // OpenSSL reports a missing passphrase as "interrupted or cancelled"; the PEM header is clearer.
    const encrypted = /BEGIN ENCRYPTED PRIVATE KEY|Proc-Type: 4,ENCRYPTED/.test(keyText);
    const why = encrypted ? 'it is encrypted (decrypt it with openssl pkey)' : (err as Error).message;
    throw new CertificateError(`cannot use private key in ${keyFile}: ${why}`, { file: keyFile, cause: err });
  }
  const chain = orderChain(key, parseCerts(certs, certFile));
  if (!chain) throw new CertificateError(`key in ${keyFile} does not match any certificate in ${certFile}`, { file: keyFile });
  const keyPem = key.export({ type: 'pkcs8', format: 'pem' }) as string;
  return { key: keyPem, cert: chain.join('\n') + '\n', source: 'pem', ...describeLeaf(chain[0]!) };
}

async function loadPkcs12(file: string, password: string): Promise<TlsCredentials> {
  const raw = await readBytes(file);
  let asn1: forge.asn1.Asn1, p12: forge.pkcs12.Pkcs12Pfx;
  try {
    asn1 = forge.asn1.fromDer(raw.toString('binary'));
  } catch (err) {
    throw new CertificateError(`not a PKCS#12 (DER) keystore: ${file}`, { file, cause: err });
  }
  try {
    p12 = forge.pkcs12.pkcs12FromAsn1(asn1, password);
  } catch (err) {
    const msg = (err as Error).message ?? '';
    // forge's messages never contain the password, so quoting them is safe and helps diagnosis.
    if (/unsupported/i.test(msg)) {
      throw new CertificateError(
        `unsupported PKCS#12 encryption in ${file} (${msg}); convert it to PEM with ` +
          `"openssl pkcs12 -in ${file} -nodes -nocerts -out key.pem" and ` +
          `"openssl pkcs12 -in ${file} -nokeys -out cert.pem", then use certFile/keyFile`,
        { file, cause: err },
      );
    }
    // forge feeds PBES2 (AES) the password as Latin-1, while openssl and keytool use UTF-8.
    const hint = /[^\x00-\x7f]/.test(password)
      ? ' (non-ASCII passwords are not supported for AES-encrypted keystores; change the password ' +
        'with keytool -storepasswd, or convert to PEM with "openssl pkcs12 -in ' + file + ' -nodes")'
      : '';
    throw new CertificateError(`wrong password or corrupt keystore: ${file}${hint}`, { file, cause: err });
  }

  const { pkcs8ShroudedKeyBag, keyBag, certBag } = forge.pki.oids;
  const bagsOf = (type: string) => p12.getBags({ bagType: type })[type] ?? [];
  const keyBags = [...bagsOf(pkcs8ShroudedKeyBag), ...bagsOf(keyBag)];
  if (keyBags.length === 0) throw new CertificateError(`no private key in keystore: ${file}`, { file });
  const certs = parseCerts(bagsOf(certBag).map((bag) => bagCertPem(bag, file)), file);
  if (certs.length === 0) throw new CertificateError(`no certificate in keystore: ${file}`, { file });

  // Openfire keystores may hold several entries (e.g. RSA and EC); the first key with a certificate wins.
  for (const bag of keyBags) {
    const key = bagKey(bag, file);
    const chain = orderChain(key, certs);
    if (!chain) continue;
    const keyPem = key.export({ type: 'pkcs8', format: 'pem' }) as string;
    return { key: keyPem, cert: chain.join('\n') + '\n', source: 'pkcs12', ...describeLeaf(chain[0]!) };
  }
  throw new CertificateError(`no certificate matches the private key in keystore: ${file}`, { file });
}

/** forge only decodes RSA keys; others come back as raw PrivateKeyInfo, which node decodes instead. */
function bagKey(bag: forge.pkcs12.Bag, file: string): crypto.KeyObject {
  const info = bag.key
    ? forge.pki.wrapRsaPrivateKey(forge.pki.privateKeyToAsn1(bag.key))
    : (bag as { asn1?: forge.asn1.Asn1 }).asn1;
  if (!info) throw new CertificateError(`unreadable private key in keystore: ${file}`, { file });
  try {
    const der = Buffer.from(forge.asn1.toDer(info).getBytes(), 'binary');
    return crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } catch (err) {
    throw new CertificateError(`unreadable private key in keystore: ${file}`, { file, cause: err });
  }
}

/** Non-RSA certificates also come back from forge as raw ASN.1; both kinds re-encode byte-exact. */
function bagCertPem(bag: forge.pkcs12.Bag, file: string): string {
  const asn1 = bag.cert ? forge.pki.certificateToAsn1(bag.cert) : (bag as { asn1?: forge.asn1.Asn1 }).asn1;
  if (!asn1) throw new CertificateError(`unreadable certificate in keystore: ${file}`, { file });
  const body = forge.asn1.toDer(asn1).getBytes();
  return forge.pem.encode({ type: 'CERTIFICATE', body }, { maxline: 64 }).trim();
}

interface ParsedCert {
  pem: string;
  x509: crypto.X509Certificate;
}

function parseCerts(pems: string[], file: string): ParsedCert[] {
  return pems.map((pem) => {
    try {
      return { pem: pem.trim(), x509: new crypto.X509Certificate(pem) };
    } catch (err) {
      throw new CertificateError(`unparsable certificate in ${file}: ${(err as Error).message}`, { file, cause: err });
    }
  });
}

/**
 * Puts the certificate whose public key matches `key` first, then its issuers in chain order,
 * then any remaining certificates, because TLS clients expect the leaf first and issuers after.
 * Returns null when no certificate matches the key.
 */
function orderChain(key: crypto.KeyObject, certs: ParsedCert[]): string[] | null {
  const leaf = certs.find((c) => c.x509.checkPrivateKey(key));
  if (!leaf) return null;
  const rest = certs.filter((c) => c !== leaf);
  const chain = [leaf];
  for (let cur = leaf; ; ) {
    const i = rest.findIndex((c) => c.x509.fingerprint256 !== cur.x509.fingerprint256 && cur.x509.checkIssued(c.x509));
    if (i < 0) break;
    cur = rest.splice(i, 1)[0]!;
    chain.push(cur);
  }
  return [...chain, ...rest].map((c) => c.pem);
}

function describeLeaf(pem: string): Pick<TlsCredentials, 'names' | 'notAfter'> {
  const x509 = new crypto.X509Certificate(pem);
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x509.subject)?.[1];
  const sans = (x509.subjectAltName ?? '')
    .split(', ')
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4));
  return { names: [...new Set([...(cn ? [cn] : []), ...sans])], notAfter: new Date(x509.validTo) };
}

async function readBytes(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    const code = (err as { code?: string }).code ?? (err as Error).message;
    throw new CertificateError(`cannot read ${file}: ${code}`, { file, cause: err });
  }
}

async function readText(file: string): Promise<string> {
  return (await readBytes(file)).toString('utf8');
}
