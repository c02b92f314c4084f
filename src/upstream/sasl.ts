import { createHmac, pbkdf2, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import ScramSha1 from 'sasl-scram-sha-1';

/**
 * SASL towards the upstream (RFC 6120 §6, RFC 5802 SCRAM, RFC 4616 PLAIN), and the credential the
 * proxy keeps in memory for a later re-login (design §4.1.3): for SCRAM the derived keys for the
 * account's salt (no password), for PLAIN the password. Never logged; dropped with the session.
 */

/** What the client gave the proxy in its SASL PLAIN `<auth/>`. */
export interface PlainCredential {
  /** Localpart of the account (the SASL authcid, without a domain). */
  username: string;
  password: string;
}

/** The in-memory credential for a later re-login without the client. */
export type CachedCredential =
  | { mechanism: 'SCRAM-SHA-1'; username: string; salt: Uint8Array; iterations: number; clientKey: Uint8Array; serverKey: Uint8Array }
  | { mechanism: 'PLAIN'; username: string; password: string };

/** Mechanisms the proxy can use upstream, best first. */
export const UPSTREAM_MECHANISMS = ['SCRAM-SHA-1', 'PLAIN'] as const;
export type UpstreamMechanism = (typeof UPSTREAM_MECHANISMS)[number];

/** Picks the best mechanism both sides support; undefined when there is none. */
export function chooseMechanism(offered: string[], allowPlain: boolean): UpstreamMechanism | undefined {
  return UPSTREAM_MECHANISMS.find((m) => offered.includes(m) && (m !== 'PLAIN' || allowPlain));
}

/**
 * One SASL exchange as a client. `initial()` gives the initial response; each server challenge
 * goes through `challenge()`; `success()` checks the server's final data (SCRAM's server
 * signature, RFC 5802 §3) and returns the credential to keep.
 */
export interface SaslExchange {
  readonly mechanism: UpstreamMechanism;
  initial(): Promise<string>;
  challenge(data: string): Promise<string>;
  /** @throws Error when the server's signature does not verify. */
  success(data: string): CachedCredential;
}

/**
 * Starts an exchange for `mechanism` from a client's password or from a cached credential.
 * @throws Error when a cached credential is of another mechanism than `mechanism`.
 */
/** The upstream refused the login; `condition` is its RFC 6120 §6.5 SASL condition. */
export class SaslFailure extends Error {
  constructor(readonly condition: string, readonly text?: string) {
    super(`upstream SASL failure: ${condition}${text ? ` (${text})` : ''}`);
    this.name = 'SaslFailure';
  }
}

export function startExchange(mechanism: UpstreamMechanism, cred: PlainCredential | CachedCredential): SaslExchange {
  if (mechanism === 'PLAIN') {
    if ('mechanism' in cred && cred.mechanism !== 'PLAIN') throw new Error('cached SCRAM credential cannot do PLAIN');
    const password = cred.password;
    return {
      mechanism,
      initial: async () => `\0${cred.username}\0${password}`,
      challenge: async () => '',
      success: () => ({ mechanism: 'PLAIN', username: cred.username, password }),
    };
  }
  if ('mechanism' in cred && cred.mechanism !== 'SCRAM-SHA-1') {
    throw new Error('cached PLAIN credential cannot do SCRAM');
  }
  const mech = new ScramSha1();
  // A cached credential holds keys for one salt and iteration count; the server changes them
  // when the password changes (RFC 5802 §5.1), and the keys are then worthless.
  const libCred = 'mechanism' in cred
    ? { username: cred.username, salt: cred.salt, clientKey: cred.clientKey, serverKey: cred.serverKey }
    : { username: cred.username, password: cred.password };
  return {
    mechanism,
    initial: async () => mech.response(libCred) as string,
    challenge: async (data) => {
      mech.challenge(data);
      if ('mechanism' in cred && (mech._iterationCount !== cred.iterations || !sameBytes(mech._salt ?? new Uint8Array(), cred.salt))) {
        throw new SaslFailure('not-authorized', 'the account\'s credentials changed at the server');
      }
      if (!('mechanism' in cred) && mech._salt && mech._iterationCount) {
        // RFC 5802 Hi() is PBKDF2-HMAC-SHA-1: Node's native one is ~100x faster than the
        // library's WebCrypto loop, and its result is reused through the library's cache path.
        const saltedPassword = await pbkdf2Async(cred.password, mech._salt, mech._iterationCount, 20, 'sha1');
        return (await mech.response({ username: cred.username, salt: mech._salt, saltedPassword: new Uint8Array(saltedPassword) })) as string;
      }
      return (await mech.response(libCred)) as string;
    },
    success: (data) => {
      const verifier = /(?:^|,)v=([^,]+)/.exec(data)?.[1];
      const expected = mech._serverSignature;
      if (!verifier || !expected || !sameBytes(Buffer.from(verifier, 'base64'), expected)) {
        throw new Error('upstream SCRAM server signature did not verify');
      }
      const cache = mech.cache;
      return {
        mechanism: 'SCRAM-SHA-1',
        username: cred.username,
        salt: cache.salt,
        iterations: mech._iterationCount!,
        clientKey: cache.clientKey,
        serverKey: cache.serverKey,
      };
    },
  };
}

const pbkdf2Async = promisify(pbkdf2);

/**
 * True when `password` is the one behind `cached` (RFC 5802: the same ClientKey for that salt
 * and iteration count; for PLAIN the same password). Constant-time comparison.
 */
export async function verifyPassword(cached: CachedCredential, password: string): Promise<boolean> {
  if (cached.mechanism === 'PLAIN') {
    const a = Buffer.from(cached.password);
    const b = Buffer.from(password);
    return a.length === b.length && timingSafeEqual(a, b);
  }
  const salted = await pbkdf2Async(password, cached.salt, cached.iterations, 20, 'sha1');
  const clientKey = createHmac('sha1', salted).update('Client Key').digest();
  return sameBytes(clientKey, cached.clientKey);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
