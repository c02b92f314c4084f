import type { Element } from 'ltx';
import type { TopLevel } from '../xml/top-level.ts';
import { StreamError } from '../xml/stream-error.ts';
import { NS } from '../xml/stream-header.ts';

/**
 * What an established client may send, checked before anything is relayed (issue 10 A).
 *
 * Before this check every top-level element went upstream as it came, and the server closed the
 * upstream stream for what it does not accept (a `<message xmlns='urn:x'>`, an unknown nonza),
 * which cost a re-login each time. The proxy now closes the offender's client stream itself, with
 * the RFC 6120 condition, and nothing reaches the server:
 *
 * - Stanzas (`message`, `presence`, `iq`) are in `jabber:client`: no `xmlns` attribute (the
 *   stream's default namespace) or `xmlns='jabber:client'`. Any other → `invalid-namespace`
 *   (RFC 6120 §4.9.3.10).
 * - Their `type` is one the schema allows (RFC 6120 §8.2.3 and Appendix A.5 for iq, RFC 6121
 *   §5.2.2 for message, §4.7.1 for presence) and an iq has an `id` (RFC 6120 §8.2.3: REQUIRED).
 *   Any other → `invalid-xml` (RFC 6120 §4.9.3.11: invalid XML sent to a server that validates,
 *   §11.4). See the decision note below.
 * - XEP-0198 nonzas (`urn:xmpp:sm:3`) go to the session, which answers them.
 * - Other nonzas pass only in a namespace of {@link RELAYED_NONZAS} that the upstream advertised
 *   in its post-auth stream features ({@link relayedNonzas}): CSI (XEP-0352) `<active/>` and
 *   `<inactive/>` when the server offers `<csi xmlns='urn:xmpp:csi:0'/>`.
 * - Anything else (an unknown nonza, a `jabber:client` element that is no stanza, a prefixed
 *   top-level name) → `unsupported-stanza-type` (RFC 6120 §4.9.3.21).
 * - A `<stream:error>` from the client is its own way of ending the stream: logged, not relayed.
 *
 * Decision (iq without `id`, unknown `type`): Prosody 0.12 answers an iq without id or with an
 * unknown type (core/stanza_router.lua) and presence of an unknown type (mod_presence.lua) with
 * a `bad-request` stanza error and keeps the stream; a message of an unknown type it routes
 * like a normal one. The proxy cannot answer a stanza itself
 * without breaking XEP-0198 counting: the `h` it acks is what the server confirmed (custody
 * rule, design §4.2), in order, and a stanza answered locally has no place in that order yet; an
 * `h` one short for ever would make an SM client re-send or give up. Relaying it hands the
 * verdict to a server that may close the upstream stream for it. So such a stanza ends the
 * client stream with `invalid-xml` (RFC 6120 §11.4 lets a server validate what it accepts);
 * clients of this decade always send ids and valid types.
 */

/**
 * Nonza namespaces the proxy relays after binding, when the upstream advertises them: XEP-0352
 * Client State Indication (the session replays its state after an upstream reconnect). Not
 * every advertised namespace names a nonza protocol: `<bind/>`, `<session/>`, roster versioning
 * `<ver/>` or entity caps `<c/>` are only announcements, and a server closes the stream for a
 * top-level element in them; a nonza of a protocol the proxy does not know would also lose its
 * state at the next upstream reconnect.
 */
export const RELAYED_NONZAS: ReadonlySet<string> = new Set(['urn:xmpp:csi:0']);

/**
 * The nonza namespaces a client may use on a stream whose upstream post-auth features are
 * `features` (`<stream:features>`): {@link RELAYED_NONZAS} that the server advertised. Computed
 * once per stream, when it is established.
 */
export function relayedNonzas(features: Element | undefined): ReadonlySet<string> {
  const allowed = new Set<string>();
  for (const child of features?.getChildElements() ?? []) {
    const xmlns = child.attrs.xmlns as string | undefined;
    if (xmlns !== undefined && RELAYED_NONZAS.has(xmlns)) allowed.add(xmlns);
  }
  return allowed;
}

/** {@link checkClientElement}'s verdict for a client's `<stream:error>`: log it, relay nothing. */
export const CLIENT_STREAM_ERROR = Symbol('client stream error');

const MESSAGE_TYPES: ReadonlySet<string> = new Set(['chat', 'error', 'groupchat', 'headline', 'normal']);
const PRESENCE_TYPES: ReadonlySet<string> = new Set(['error', 'probe', 'subscribe', 'subscribed', 'unavailable', 'unsubscribe', 'unsubscribed']);

/**
 * Judges one top-level element of an established client stream (rules above). Returns
 * undefined when it goes to the session, {@link CLIENT_STREAM_ERROR} for the client's own
 * stream error, or the StreamError to close the stream with. A stanza costs a name switch and
 * two or three attribute reads; nothing is parsed.
 * @param nonzas from {@link relayedNonzas}.
 */
export function checkClientElement(el: TopLevel, nonzas: ReadonlySet<string>): StreamError | typeof CLIENT_STREAM_ERROR | undefined {
  const { name, attrs } = el;
  const xmlns = attrs.xmlns;
  switch (name) {
    case 'message':
      if (xmlns !== undefined && xmlns !== NS.client) return wrongNamespace(name, xmlns);
      if (attrs.type !== undefined && !MESSAGE_TYPES.has(attrs.type)) return badType(name, attrs.type);
      return undefined;
    case 'presence':
      if (xmlns !== undefined && xmlns !== NS.client) return wrongNamespace(name, xmlns);
      if (attrs.type !== undefined && !PRESENCE_TYPES.has(attrs.type)) return badType(name, attrs.type);
      return undefined;
    case 'iq': {
      if (xmlns !== undefined && xmlns !== NS.client) return wrongNamespace(name, xmlns);
      const type = attrs.type;
      if (type !== 'get' && type !== 'set' && type !== 'result' && type !== 'error') return badType(name, type);
      if (attrs.id === undefined) return new StreamError('invalid-xml', 'an <iq/> needs an id (RFC 6120 §8.2.3)');
      return undefined;
    }
    case 'stream:error':
      return CLIENT_STREAM_ERROR;
  }
  if (xmlns === NS.sm || (xmlns !== undefined && nonzas.has(xmlns))) {
    // A prefixed name is in its prefix's namespace, whatever `xmlns` says.
    if (!name.includes(':')) return undefined;
  }
  return new StreamError('unsupported-stanza-type', `<${clip(name)}/>${xmlns === undefined ? '' : ` in ${clip(xmlns)}`} is not accepted on this stream`);
}

function wrongNamespace(name: string, xmlns: string): StreamError {
  return new StreamError('invalid-namespace', `<${name}/> must be in jabber:client, not '${clip(xmlns)}'`);
}

function badType(name: string, type: string | undefined): StreamError {
  return new StreamError('invalid-xml', type === undefined ? `an <${name}/> needs a type` : `'${clip(type)}' is no <${name}/> type`);
}

/** The client's own strings go back to it and to the log: bounded. */
function clip(s: string): string {
  return s.length > 64 ? `${s.slice(0, 64)}…` : s;
}
