/** SASL PLAIN (RFC 4616) as the proxy accepts it from clients: the message parsed into the account and password. */
import type { PlainCredential } from '../upstream/sasl.ts';
import { bareJidOf, prepDomain, prepLocalpart } from '../jid.ts';

/** Why a PLAIN message is refused: the SASL failure condition (RFC 6120 §6.5). */
export interface PlainRefusal {
  /** `malformed-request` (§6.5.8): not a PLAIN message for this domain; `invalid-authzid` (§6.5.6): it asks to act as another account. */
  condition: 'malformed-request' | 'invalid-authzid';
}

/**
 * RFC 4616 PLAIN message: [authzid] NUL authcid NUL passwd (base64). The credential, or why it is
 * refused: an authzid is allowed only when it names the authenticating account itself (bare or
 * full JID), since the proxy logs in upstream as the authcid alone.
 */
export function parsePlain(b64: string, domain: string): PlainCredential | PlainRefusal {
  const malformed: PlainRefusal = { condition: 'malformed-request' };
  const text = b64.trim();
  if (text === '' || text === '=') return malformed;
  const parts = Buffer.from(text, 'base64').toString('utf8').split('\0');
  if (parts.length !== 3) return malformed;
  const [authzid, authcid, password] = parts as [string, string, string];
  const host = prepDomain(domain);
  // Some clients send the bare JID as authcid; the account is its localpart on this domain.
  const at = authcid.lastIndexOf('@');
  if (at !== -1 && prepDomain(authcid.slice(at + 1)) !== host) return malformed;
  // RFC 7622: `Alice` is the account `alice`; every comparison of accounts uses this form.
  const username = prepLocalpart(at === -1 ? authcid : authcid.slice(0, at));
  if (username === '' || password === '' || username.includes('@')) return malformed;
  if (authzid !== '' && bareJidOf(authzid) !== `${username}@${host}`) return { condition: 'invalid-authzid' };
  return { username, password };
}
