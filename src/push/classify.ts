/**
 * Which stanzas queued for a sleeping client are worth a push (XEP-0357 §7), with
 * mod_cloud_notify's `is_important` as the base and the project's rules on top (design §4.7):
 * what is pushed at all, and which pushes carry the body or its placeholder.
 *
 * Runs for every stanza queued for a hibernated session, so it looks at the stanza's name and type
 * first and then at its direct children only, once each (no deep search).
 */
import type { Element } from 'ltx';

/**
 * The push a stanza to the client is worth:
 * - `important`: a message a human should see (a body, an encrypted payload, an incoming call),
 *   pushed with the body (push.withBody) or the placeholder;
 * - `unimportant`: anything else that reaches the client (receipts, markers, reactions, iq
 *   get/set…), pushed without a body so that the client wakes up and fetches it;
 * - `none`: never pushed (presence, errors, results, headlines, chat states alone, carbons of
 *   the user's own messages, subject changes, MAM results, empty messages).
 */
export type PushKind = 'important' | 'unimportant' | 'none';

const NS_CLIENT = 'jabber:client';
const NS_CARBONS = 'urn:xmpp:carbons:2';
const NS_FORWARD = 'urn:xmpp:forward:0';
const NS_OMEMO_PREFIX = 'urn:xmpp:omemo:';

/**
 * Namespaces whose elements carry nothing of their own: thread-like metadata (XEP-0203 delay,
 * XEP-0359 ids, XEP-0334 hints) and XEP-0085 chat states, which alone are not worth a push.
 */
const QUIET = new Set([
  'http://jabber.org/protocol/chatstates',
  'urn:xmpp:delay',
  'urn:xmpp:sid:0',
  'urn:xmpp:hints',
]);

/**
 * Payloads that make a message important, namespace → element name: an encrypted message has no
 * readable body (or only a fallback text), and an incoming call must ring.
 */
const IMPORTANT = new Map([
  ['eu.siacs.conversations.axolotl', 'encrypted'], // OMEMO 0.3 (Conversations); urn:xmpp:omemo:* below
  ['jabber:x:encrypted', 'x'], // XEP-0027 legacy OpenPGP
  ['urn:xmpp:openpgp:0', 'openpgp'], // XEP-0373 OX
  ['urn:xmpp:jingle-message:0', 'propose'], // XEP-0353 JMI (a retract or accept is not a call)
  ['urn:xmpp:jingle-message:1', 'propose'],
]);

/** XEP-0313 results, in a message: an answer to the client's own query, never pushed. */
const MAM = new Set(['urn:xmpp:mam:2', 'urn:xmpp:mam:1']);

/**
 * The push `stanza` is worth. `stanza` is a stanza going to the client (namespace jabber:client;
 * its children may declare their own xmlns). A received carbon (XEP-0280 §7) is judged by the
 * `{jabber:client}message` it carries, that message's type included; a sent carbon is `none`.
 * Nonzas (anything but message and iq, presence included) are `none`.
 */
export function pushKind(stanza: Element): PushKind {
  const type = stanza.attrs.type as string | undefined;
  if (stanza.name === 'message') return type === 'error' ? 'none' : messageKind(stanza, true);
  if (stanza.name === 'iq') return type === 'get' || type === 'set' ? 'unimportant' : 'none';
  return 'none';
}

/** `outer`: a received carbon may be unwrapped (once: a carbon inside a carbon is not one). */
function messageKind(message: Element, outer: boolean): PushKind {
  const type = message.attrs.type as string | undefined;
  if (type === 'headline' || type === 'error') return 'none';
  const stanzaNs = message.getNS() ?? NS_CLIENT;
  let body = false;
  let subject = false;
  let important = false;
  let other = false;
  for (const child of message.children) {
    if (typeof child === 'string') continue;
    // Prefixed names are rare: only they pay for ltx's namespace lookup.
    const prefixed = child.name.includes(':');
    const name = prefixed ? child.getName() : child.name;
    const ns = (prefixed ? child.getNS() : child.attrs.xmlns as string | undefined) ?? stanzaNs;
    if (ns === stanzaNs) {
      // mod_cloud_notify takes only "" as empty; a body of whitespace shows nothing either.
      if (name === 'body') body ||= child.getText().trim() !== '';
      else if (name === 'subject') subject = true;
      else if (name !== 'thread') other = true;
    } else if (QUIET.has(ns)) {
      continue;
    } else if (IMPORTANT.get(ns) === name || (name === 'encrypted' && ns.startsWith(NS_OMEMO_PREFIX))) {
      important = true;
    } else if (ns === NS_CARBONS && outer && name === 'sent') {
      return 'none';
    } else if (ns === NS_CARBONS && outer && name === 'received') {
      const inner = child.getChild('forwarded', NS_FORWARD)?.getChild('message', NS_CLIENT);
      // A carbon without its message has nothing to tell the user.
      return inner ? messageKind(inner, false) : 'none';
    } else if (name === 'result' && MAM.has(ns)) {
      return 'none';
    } else {
      other = true;
    }
  }
  // As mod_cloud_notify: an encrypted payload first (its body, if any, is a fallback text).
  if (important || body) return 'important';
  // A groupchat subject without a body: a subject change, or the subject a room sends on join.
  if (subject && type === 'groupchat') return 'none';
  return other || subject ? 'unimportant' : 'none';
}
