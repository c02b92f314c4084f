import type { TopLevel } from '../xml/top-level.ts';

/**
 * Recognises a message a client behind the proxy already got (design §4.5). After an upstream
 * drop the proxy sends the stanzas the server had not confirmed again, and the server may have
 * handled the first copy; a server with its own SM also re-delivers from offline storage what it
 * wrote to a dying link. Both copies carry the sender's full JID, the same stanza id (or
 * XEP-0359 origin-id) and the same body: the second is dropped.
 *
 * The window is per recipient session and bounded: the last `size` messages' keys, hashed to
 * 53-bit numbers (about 30 bytes each), allocated with the first message that has an id.
 * The body (its length, start and end) is part of the key so that a client that reuses ids
 * (against RFC 6120 §8.1.3) still gets every different message.
 */
export class DuplicateWindow {
  readonly #size: number;
  #keys: Set<number> | undefined;
  #ring: Float64Array | undefined;
  #next = 0;

  /** @param size messages remembered (0 turns the window off). */
  constructor(size: number) {
    this.#size = size;
  }

  /**
   * True when `el` is a message this window has seen (drop it); otherwise remembers it and
   * returns false. Messages without an id, errors and archive results are never duplicates.
   */
  seen(el: TopLevel): boolean {
    if (this.#size === 0 || el.name !== 'message') return false;
    const key = duplicateKey(el);
    if (key === undefined) return false;
    this.#keys ??= new Set();
    this.#ring ??= new Float64Array(this.#size).fill(-1);
    if (this.#keys.has(key)) return true;
    const evicted = this.#ring[this.#next]!;
    if (evicted !== -1) this.#keys.delete(evicted);
    this.#ring[this.#next] = key;
    this.#next = (this.#next + 1) % this.#size;
    this.#keys.add(key);
    return false;
  }
}

const NS_CARBONS = 'urn:xmpp:carbons:2';
/** An archive query result (XEP-0313 §4.2), not ejabberd's `<archived xmlns='urn:xmpp:mam:tmp'/>` mark. */
const MAM_RESULT = /<result\s[^>]*xmlns=['"]urn:xmpp:mam:/;
const ORIGIN_ID = /<origin-id\s[^>]*?\bid=(?:'([^']*)'|"([^"]*)")/;

/**
 * The identity of a message as its sender made it: sender full JID, id (else origin-id) and
 * body, hashed. A carbon (XEP-0280) is keyed by the message it carries. Undefined when the
 * message cannot be told apart from another (no id), or must never be dropped (errors, the
 * client's own archive query results).
 */
export function duplicateKey(el: TopLevel): number | undefined {
  if (el.attrs.type === 'error') return undefined;
  let raw = el.raw;
  let from: string | undefined = el.attrs.from;
  let id: string | undefined = el.attrs.id;
  let tag = 0;
  if (raw.includes('urn:xmpp:mam:') && MAM_RESULT.test(raw)) return undefined;
  if (raw.includes(NS_CARBONS)) {
    const wrapper = el.element().getChildElements().find((c) => c.attrs.xmlns === NS_CARBONS);
    const inner = wrapper?.getChild('forwarded')?.getChild('message');
    if (!wrapper || !inner) return undefined;
    raw = inner.toString();
    from = inner.attrs.from;
    id = inner.attrs.id;
    tag = wrapper.name === 'sent' ? 1 : 2;
  }
  if (id === undefined) {
    const origin = ORIGIN_ID.exec(raw);
    id = origin?.[1] ?? origin?.[2];
  }
  if (id === undefined || from === undefined) return undefined;
  // Per-stanza path: one 32-bit FNV-1a pass over the short parts (sender, id, the body's first
  // and last characters), and the body's exact length in the low 21 bits of the 53-bit key.
  const body = bodyOf(raw);
  let h = fnv(0x811c9dc5 ^ tag, from);
  h = fnv(h, id);
  h = fnv(h, body.length <= 2 * FINGERPRINT ? body : body.slice(0, FINGERPRINT) + body.slice(-FINGERPRINT));
  return (h >>> 0) * 0x200000 + (body.length & 0x1fffff);
}

/** Characters of a body's start and of its end that go into its key (with its exact length). */
const FINGERPRINT = 8;

/** FNV-1a over `s` from hash `h`, plus a separator so that ('ab','c') and ('a','bc') differ. */
function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return Math.imul(h ^ 0xff, 0x01000193);
}

/** The body's text as serialized (both copies come from the same server: the same text). */
function bodyOf(raw: string): string {
  const start = raw.indexOf('<body');
  if (start === -1) return '';
  const end = raw.indexOf('</body>', start);
  return end === -1 ? '' : raw.slice(start, end);
}
