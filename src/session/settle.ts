import { parse, type Element } from 'ltx';
import type { QueuedStanza } from '../sm/outbound-queue.ts';
import { NS } from '../xml/stream-header.ts';

/** What becomes of one unacked stanza when its session ends (design §4.3, mod_smacks). */
export type Settlement =
  /** A message the server archived (XEP-0359 stanza-id by the account): MAM will deliver it. */
  | { action: 'archived' }
  /** Chat/normal message of the account's last session: the proxy holds it for the next login. */
  | { action: 'hold' }
  /** Returned to its sender as an error; `reply` is the error stanza (serialized). */
  | { action: 'bounce'; reply: string }
  /** Dropped: presence, errors, iq results, headlines. */
  | { action: 'drop' };

const NS_SID = 'urn:xmpp:sid:0';

/**
 * Settles one stanza left in the unacked queue of an ending session.
 * @param bareJid the session's account.
 * @param lastSession true when no other session of the account is live at the proxy.
 */
export function settle(stanza: QueuedStanza, bareJid: string, lastSession: boolean): Settlement {
  let el: Element;
  try {
    el = parse(stanza.xml) as Element;
  } catch {
    return { action: 'drop' };
  }
  const type = el.attrs.type ?? (el.name === 'message' ? 'normal' : undefined);
  if (el.name === 'presence' || type === 'error') return { action: 'drop' };
  if (el.name === 'message') {
    const archived = el.getChildren('stanza-id', NS_SID).some((sid) => sid.attrs.by === bareJid);
    if (archived) return { action: 'archived' };
    if ((type === 'chat' || type === 'normal') && lastSession) return { action: 'hold' };
    if (type === 'headline') return { action: 'drop' };
  }
  if (el.name === 'iq' && type !== 'get' && type !== 'set') return { action: 'drop' };
  return { action: 'bounce', reply: errorReply(el) };
}

/** RFC 6120 §8.3: the stanza back to its sender, type error, cancel/recipient-unavailable. */
function errorReply(el: Element): string {
  const to = el.attrs.from;
  const reply = new (el.constructor as typeof Element)(el.name, { type: 'error', id: el.attrs.id, to });
  // Message bodies and iq payloads go back so the sender can tell what failed (RFC 6120 §8.3.1).
  for (const child of el.getChildElements()) if (child.name !== 'delay') reply.cnode(child);
  reply.c('error', { type: 'cancel' }).c('recipient-unavailable', { xmlns: NS.stanzas });
  return reply.toString();
}
