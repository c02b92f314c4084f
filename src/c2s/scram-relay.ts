/**
 * SCRAM as the proxy relays it from clients to a new upstream login (auth mode `scram-relay`).
 * The relay cannot change a message: the gs2 header is inside AuthMessage, which the client's
 * proof and the server's signature cover (RFC 5802 §3, §7 `c=`). So the proxy can only accept or
 * refuse the client-first-message, and it does so here, before any upstream login exists.
 */
import { bareJidOf, prepDomain, prepLocalpart } from '../jid.ts';

/** SCRAM names without -PLUS (RFC 5802 §4, RFC 7677 §2); exact: mechanism names are upper case (RFC 4422 §3.1). */
const RELAYABLE = /^SCRAM-SHA-(?:1|224|256|384|512)$/;

/**
 * SCRAM mechanism names the proxy can relay (RFC 5802/7677 family; never -PLUS: TLS ends at the
 * proxy, so channel binding cannot cross it). `offered` is the upstream's RFC 6120 §6.3.3
 * `<mechanisms/>` list; the result keeps its order (the client picks by its own priority),
 * without duplicates, e.g. ejabberd's list gives `['SCRAM-SHA-512', 'SCRAM-SHA-256', 'SCRAM-SHA-1']`.
 */
export function relayableMechanisms(offered: readonly string[]): string[] {
  return [...new Set(offered.filter((name) => RELAYABLE.test(name)))];
}

/**
 * The verdict on a client-first-message: the account (RFC 7622 localpart, prepared as
 * {@link prepLocalpart}) and the gs2-cbind-flag it came with, or the RFC 6120 §6.5 SASL failure
 * to send: `malformed-request` (§6.5.8) or `invalid-authzid` (§6.5.6), with a fixed English
 * `text` for the failure's `<text/>` (never an echo of the input).
 */
export type ClientFirst =
  | { username: string; gs2: 'n' | 'y' }
  | { condition: 'malformed-request' | 'invalid-authzid'; text: string };

/** Largest decoded client-first-message accepted; real ones are under 200 bytes. */
const MAX_BYTES = 4096;
/** Padded base64 (RFC 4648 §4) as RFC 6120 §6.4.2 asks: no whitespace or line breaks inside. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * True for SASL data as RFC 6120 §6.4.2 carries it: padded base64, or `=` (empty). Relayed
 * texts are written into the other stream as they are: anything else could carry markup.
 */
export function isSaslData(text: string): boolean {
  return text === '=' || BASE64.test(text);
}
/** RFC 5802 §7 `saslname`: '=' only in =2C or =3D (',' is already split off, NUL refused before). */
const SASLNAME = /^(?:[^=,]|=2C|=3D)+$/;
/** RFC 5802 §7 `printable`: %x21-2B / %x2D-7E (visible ASCII except ','). */
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;
/** RFC 5802 §7 `attr-val` of `extensions`: one letter, '=', a non-empty value. */
const EXTENSION = /^[A-Za-z]=.+$/s;
// ignoreBOM keeps a leading U+FEFF in the text, so it fails the flag check instead of being
// dropped here while the upstream still gets it.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const TEXT = {
  malformed: 'Not a valid SCRAM client-first-message.',
  channelBinding: 'Channel binding cannot cross this proxy: TLS ends at the proxy. Use SCRAM without -PLUS.',
  mandatoryExtension: 'Mandatory SCRAM extensions are not supported.',
  account: 'The SCRAM username is not an account of this domain.',
  authzid: 'The authorization identity may only name the authenticating account.',
} as const;

const malformed = (text: string = TEXT.malformed): ClientFirst => ({ condition: 'malformed-request', text });

/** RFC 5802 §5.1 saslname unescaped (=2C → ',', =3D → '='), or undefined when it breaks §7. */
function unescapeSaslname(value: string): string | undefined {
  if (!SASLNAME.test(value)) return undefined;
  // One pass, so `=3D2C` gives `=2C`, not ','.
  return value.replace(/=2C|=3D/g, (escape) => (escape === '=2C' ? ',' : '='));
}

/**
 * Checks a client's SCRAM client-first-message (RFC 5802 §7:
 * `gs2-cbind-flag "," [authzid] "," [reserved-mext ","] username "," nonce ["," extensions]`)
 * before it is relayed, so bad input gets a clean SASL failure and no upstream login.
 *
 * @param initialResponse the base64 text of `<auth mechanism='SCRAM-…'>` (RFC 6120 §6.4.2;
 *   `=` is an empty response, refused like no response: SCRAM needs the message here).
 * @param domain the XMPP domain the client logs in to.
 * @returns `{ username, gs2 }` when the message may be relayed as is. Refused as
 *   `malformed-request`: bad base64, UTF-8 or size, NUL, a flag other than `n`/`y` (`p=` gets a
 *   channel-binding text: the proxy never offers -PLUS), `m=`, a bad saslname, a username of
 *   another domain, a missing or bad nonce, a bad extension. As `invalid-authzid`: an `a=`
 *   that does not name the authenticating account (relaying it would let an upstream that
 *   honours authzids, like ejabberd before 26.07, log in as someone else).
 */
export function checkClientFirst(initialResponse: string, domain: string): ClientFirst {
  const b64 = initialResponse.trim();
  // Length first: no decoding of a megabyte only to refuse it.
  if (b64 === '' || b64 === '=' || b64.length > 4 * Math.ceil(MAX_BYTES / 3) || !BASE64.test(b64)) return malformed();
  const bytes = Buffer.from(b64, 'base64');
  if (bytes.length > MAX_BYTES) return malformed();
  let message: string;
  try {
    message = UTF8.decode(bytes);
  } catch {
    return malformed();
  }
  if (message.includes('\0')) return malformed();

  const [flag, authzField, ...rest] = message.split(',');
  if (flag?.startsWith('p=')) return malformed(TEXT.channelBinding);
  // `y` is right for a client with channel binding that sees no -PLUS offered (RFC 5802 §6).
  if ((flag !== 'n' && flag !== 'y') || authzField === undefined) return malformed();
  if (rest[0]?.startsWith('m=')) return malformed(TEXT.mandatoryExtension);
  const [userField, nonceField, ...extensions] = rest;
  if (!userField?.startsWith('n=') || !nonceField?.startsWith('r=')) return malformed();
  const name = unescapeSaslname(userField.slice(2));
  if (name === undefined || !PRINTABLE.test(nonceField.slice(2))) return malformed();
  if (!extensions.every((attr) => EXTENSION.test(attr))) return malformed();
  let authzid: string | undefined;
  if (authzField !== '') {
    authzid = authzField.startsWith('a=') ? unescapeSaslname(authzField.slice(2)) : undefined;
    if (authzid === undefined) return malformed();
  }

  // As parsePlain: a bare JID as username means its localpart on this domain. The prepared
  // form is for account comparison only; the upstream gets the client's bytes.
  const host = prepDomain(domain);
  const at = name.lastIndexOf('@');
  if (at !== -1 && prepDomain(name.slice(at + 1)) !== host) return malformed(TEXT.account);
  let username: string;
  try {
    username = prepLocalpart(at === -1 ? name : name.slice(0, at));
  } catch {
    return malformed(TEXT.account);
  }
  if (username === '' || username.includes('@')) return malformed(TEXT.account);

  if (authzid !== undefined) {
    let account: string | undefined;
    try {
      account = bareJidOf(authzid);
    } catch {
      account = undefined;
    }
    if (account !== `${username}@${host}`) return { condition: 'invalid-authzid', text: TEXT.authzid };
  }
  return { username, gs2: flag };
}

/** How clients log in (`auth.mode`, design §4.1.3). */
export type AuthMode = 'plain' | 'scram-relay' | 'auto';

/** Offered to clients while the upstream's own offer is not known yet (no login or probe so far). */
const ASSUMED_UPSTREAM = ['SCRAM-SHA-1'];

/**
 * The mechanisms offered to clients in `mode`: PLAIN (the proxy logs in for the client, and again
 * after an upstream loss), the upstream's SCRAM mechanisms without -PLUS (relayed), or both.
 * @param upstream the upstream's last known offer (undefined: not known yet).
 */
export function clientMechanisms(mode: AuthMode, upstream: readonly string[] | undefined): string[] {
  if (mode === 'plain') return ['PLAIN'];
  const scram = relayableMechanisms(upstream ?? ASSUMED_UPSTREAM);
  return mode === 'auto' ? [...scram, 'PLAIN'] : scram;
}
