/**
 * The answer to one self-ping, as the feature read it off the wire. `condition` is the local name
 * of the error's defined condition (RFC 6120 §8.3.3, namespace urn:ietf:params:xml:ns:xmpp-stanzas),
 * e.g. `'item-not-found'`. `timeout`: no answer.
 */
export type PingAnswer = { type: 'result' } | { type: 'error'; condition: string } | { type: 'timeout' };

/** What an answer says about the occupant (XEP-0410 v1.1 §3.2), see {@link classifySelfPing}. */
export type SelfPingVerdict = 'joined' | 'joined-nick-changed' | 'not-joined' | 'undecided';

/**
 * XEP-0410 v1.1 §3.2, the reading of a self-ping's answer (pure):
 * - `result` → joined;
 * - `service-unavailable`, `feature-not-implemented` → joined (the occupant's client does not
 *   answer pings, but the room routed the ping to an occupant);
 * - `item-not-found` → joined, under another nick (the nick changed, e.g. by another client);
 * - `remote-server-not-found`, `remote-server-timeout`, no answer → undecided (the room was not
 *   reached: retry later);
 * - any other error (`not-acceptable`, `not-allowed`, `bad-request`, an unknown condition, ...)
 *   → not joined.
 * (mod_ping_muc takes every error and a timeout as not joined; this follows the XEP instead.)
 */
export function classifySelfPing(answer: PingAnswer): SelfPingVerdict {
  if (answer.type === 'result') return 'joined';
  if (answer.type !== 'error') return 'undecided';
  switch (answer.condition) {
    case 'service-unavailable':
    case 'feature-not-implemented':
      return 'joined';
    case 'item-not-found':
      return 'joined-nick-changed';
    case 'remote-server-not-found':
    case 'remote-server-timeout':
      return 'undecided';
    default:
      return 'not-joined';
  }
}
