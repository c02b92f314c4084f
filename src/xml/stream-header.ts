import { escapeXML } from 'ltx';

/** Namespaces of the stream layer (RFC 6120). */
export const NS = {
  client: 'jabber:client',
  stream: 'http://etherx.jabber.org/streams',
  tls: 'urn:ietf:params:xml:ns:xmpp-tls',
  sasl: 'urn:ietf:params:xml:ns:xmpp-sasl',
  bind: 'urn:ietf:params:xml:ns:xmpp-bind',
  session: 'urn:ietf:params:xml:ns:xmpp-session',
  stanzas: 'urn:ietf:params:xml:ns:xmpp-stanzas',
  sm: 'urn:xmpp:sm:3',
  delay: 'urn:xmpp:delay',
  ping: 'urn:xmpp:ping',
} as const;

/**
 * Opening tag of an XMPP stream, with the XML declaration (RFC 6120 §4.7).
 * `attrs` are e.g. `{ from, to, id, version: '1.0' }`; undefined values are left out.
 */
export function streamHeader(attrs: Record<string, string | undefined>): string {
  let out = `<?xml version='1.0'?><stream:stream xmlns='${NS.client}' xmlns:stream='${NS.stream}'`;
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined) out += ` ${name}='${escapeXML(value)}'`;
  }
  return out + '>';
}

/** Closing tag of an XMPP stream. */
export const STREAM_CLOSE = '</stream:stream>';

/** True for the three stanza kinds counted by XEP-0198 (message, presence, iq; §4 "h"). */
export function isStanzaName(name: string): boolean {
  return name === 'message' || name === 'presence' || name === 'iq';
}
