/**
 * Account identity as the server sees it (RFC 7622). The proxy compares accounts in several
 * places (resumption is bound to the account, the last-session rule, a bind that takes over a
 * hibernated resource); a client that logs in as `Alice` must be the same account as the
 * server's `alice@…`, so every comparison goes through these functions.
 */

/**
 * RFC 7622 §3.3 localpart, PRECIS UsernameCaseMapped (RFC 8265 §3.3): fullwidth and halfwidth
 * characters mapped to their decompositions, lowercased, then NFC. Directionality and the
 * disallowed-character checks are left to the server, which refuses such a login anyway.
 */
export function prepLocalpart(localpart: string): string {
  // RFC 8264 §9.3 width mapping: only the compatibility forms of U+FF00–U+FFEF.
  const widthMapped = localpart.replace(/[\uff00-\uffef]/g, (c) => c.normalize('NFKC'));
  return widthMapped.toLowerCase().normalize('NFC');
}

/** RFC 7622 §3.2 domainpart as compared here: lowercase, NFC, no trailing dot. */
export function prepDomain(domain: string): string {
  return domain.toLowerCase().normalize('NFC').replace(/\.$/, '');
}

/**
 * The account (bare JID, `local@domain`) of a bare or full JID, prepared for comparison.
 * The resourcepart is opaque (RFC 7622 §3.4: case-sensitive) and kept apart: see {@link splitJid}.
 */
export function bareJidOf(jid: string): string {
  return splitJid(jid).bare;
}

/**
 * Splits a JID into its prepared bare JID and its resource (undefined for a bare JID; kept as
 * given, only NFC-normalised as RFC 7622 §3.4's OpaqueString asks).
 */
export function splitJid(jid: string): { bare: string; resource: string | undefined } {
  const slash = jid.indexOf('/');
  const bare = slash === -1 ? jid : jid.slice(0, slash);
  const resource = slash === -1 ? undefined : jid.slice(slash + 1).normalize('NFC');
  const at = bare.indexOf('@');
  const prepared = at === -1 ? prepDomain(bare) : `${prepLocalpart(bare.slice(0, at))}@${prepDomain(bare.slice(at + 1))}`;
  return { bare: prepared, resource };
}

/** A bare or full JID prepared for comparison (bare part as {@link bareJidOf}, resource NFC). */
export function prepJid(jid: string): string {
  const { bare, resource } = splitJid(jid);
  return resource === undefined ? bare : `${bare}/${resource}`;
}
