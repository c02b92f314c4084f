import { timingSafeEqual } from 'node:crypto';
import { ScramClient, SCRAM_MECHANISMS, type ScramMechanism } from './scram.ts';

/**
 * SASL towards the upstream (RFC 6120 §6; RFC 5802/7677 SCRAM in scram.ts, RFC 4616 PLAIN) and
 * the credential the proxy keeps in memory for re-logins (design §4.1.3): the password the
 * client gave in its PLAIN login. Keys derived for one SCRAM salt are not enough: servers that
 * store plaintext passwords (ejabberd's default) hand out a fresh salt on every exchange, so
 * each re-login runs a full exchange. Never logged; dropped when the session ends.
 */

/** What the client gave the proxy in its SASL PLAIN `<auth/>`, kept for re-logins. */
export interface PlainCredential {
  /** Localpart of the account (the SASL authcid without a domain, RFC 7622-prepared). */
  username: string;
  password: string;
}

/** Mechanisms the proxy can use upstream, best first (never -PLUS: TLS ends at the proxy). */
export const UPSTREAM_MECHANISMS = [...SCRAM_MECHANISMS, 'PLAIN'] as const;
export type UpstreamMechanism = ScramMechanism | 'PLAIN';

/** Picks the best mechanism both sides support; undefined when there is none. */
export function chooseMechanism(offered: string[], allowPlain: boolean): UpstreamMechanism | undefined {
  return UPSTREAM_MECHANISMS.find((m) => offered.includes(m) && (m !== 'PLAIN' || allowPlain));
}

/** The upstream refused the login; `condition` is its RFC 6120 §6.5 SASL condition. */
export class SaslFailure extends Error {
  /**
   * @param offered the server's mechanisms, when the failure is that the relayed one is not
   *   among them (`invalid-mechanism`): the proxy learns the offer from it.
   */
  constructor(readonly condition: string, readonly text?: string, readonly offered?: readonly string[]) {
    super(`upstream SASL failure: ${condition}${text ? ` (${text})` : ''}`);
    this.name = 'SaslFailure';
  }
}

/**
 * One SASL exchange as a client: `initial()` gives the initial response, each server challenge
 * goes through `challenge()`, and `success()` checks the server's final data (SCRAM's server
 * signature, RFC 5802 §3).
 */
export interface SaslExchange {
  readonly mechanism: UpstreamMechanism;
  initial(): string;
  /** @throws ScramError on a challenge that breaks RFC 5802 §5. */
  challenge(data: string): Promise<string>;
  /** @throws ScramError when the server's signature does not verify. */
  success(data: string): void;
}

/** Starts an exchange for `mechanism` with the client's credential. */
export function startExchange(mechanism: UpstreamMechanism, cred: PlainCredential): SaslExchange {
  if (mechanism === 'PLAIN') {
    return {
      mechanism,
      initial: () => `\0${cred.username}\0${cred.password}`,
      challenge: async () => '',
      success: () => {},
    };
  }
  const scram = new ScramClient(mechanism, cred.username, cred.password);
  let challenges = 0;
  let verified = false;
  return {
    mechanism,
    initial: () => scram.clientFirst(),
    challenge: async (data) => {
      if (++challenges === 1) return scram.clientFinal(data);
      // RFC 6120 §6.3.10: a server may send its final message as a challenge, then an empty success.
      scram.verifyServerFinal(data);
      verified = true;
      return '';
    },
    success: (data) => {
      if (!verified) scram.verifyServerFinal(data);
    },
  };
}

/** True when `password` is the kept one (constant-time: RFC 5802 §9's concern for verifiers). */
export function verifyPassword(cached: PlainCredential, password: string): boolean {
  if (cached.password === '') return false; // forgotten: the session ended
  const a = Buffer.from(cached.password);
  const b = Buffer.from(password);
  return a.length === b.length && timingSafeEqual(a, b);
}
