/**
 * XEP-0045 (MUC) and XEP-0410 (self-ping) steps for a {@link RawClient}: join, leave, say,
 * self-ping and the owner's config form. Each waits for the answer that belongs to it (by the
 * room's address or the iq id), so tests read as the protocol does.
 */
import type { Element } from 'ltx';
import type { RawClient } from './raw-client.ts';

export const NS_MUC = 'http://jabber.org/protocol/muc';
export const NS_MUC_USER = 'http://jabber.org/protocol/muc#user';
export const NS_MUC_OWNER = 'http://jabber.org/protocol/muc#owner';
const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

/** Escape text or an attribute value for the XML a test sends. */
export function esc(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

/** The bare part of a JID. */
export const bareJid = (jid: string | undefined): string => (jid ?? '').split('/')[0]!;

/** The MUC status codes (`<status code='110'/>`…) of a presence or message. */
export function mucStatuses(el: Element): string[] {
  const x = el.getChild('x', NS_MUC_USER);
  return x ? x.getChildren('status').map((s) => s.attrs.code as string) : [];
}

/** A stanza error: its type (cancel, wait…), defined condition, optional text and who generated it. */
export interface StanzaError {
  type: string;
  condition: string;
  text?: string;
  /** The `by` attribute: which entity answered (a server, a MUC service or the room itself). */
  by?: string;
}

/** The `<error/>` of an error stanza, undefined when it has none. */
export function stanzaError(el: Element): StanzaError | undefined {
  const error = el.getChild('error');
  if (!error) return undefined;
  const condition = error.children.find((c): c is Element => typeof c !== 'string' && c.attrs.xmlns === NS_STANZAS && c.name !== 'text');
  const text = error.getChildText('text', NS_STANZAS) ?? undefined;
  const by = error.attrs.by as string | undefined;
  return { type: error.attrs.type as string, condition: condition?.name ?? '', ...(text ? { text } : {}), ...(by ? { by } : {}) };
}

let seq = 0;
/** A fresh stanza id with a readable prefix. */
export const nextId = (prefix: string): string => `${prefix}-${++seq}`;

/** Send an iq and wait for its result or error (matched by id). */
export function iq(client: RawClient, type: 'get' | 'set', to: string, payload: string, timeoutMs?: number): Promise<Element> {
  const id = nextId('iq');
  client.send(`<iq type='${type}' id='${id}' to='${esc(to)}'>${payload}</iq>`);
  return client.next((el) => el.name === 'iq' && el.attrs.id === id && (el.attrs.type === 'result' || el.attrs.type === 'error'), timeoutMs);
}

/**
 * Join `room@service/nick` (occupantJid) and wait for the room's answer: the self-presence
 * (status 110, whatever nick the room assigned) or a presence error about the room. Returns that
 * presence; use {@link mucStatuses} / {@link stanzaError} on it. `maxstanzas` limits the history
 * the room sends (default: the room's default). Only what arrives after the join is looked at:
 * an error bounced for an earlier presence to the room (say, while its server was down) is not
 * the answer to this join.
 */
export async function joinRoom(client: RawClient, occupantJid: string, opts: { maxstanzas?: number; timeoutMs?: number } = {}): Promise<Element> {
  const room = bareJid(occupantJid);
  const history = opts.maxstanzas === undefined ? '' : `<history maxstanzas='${opts.maxstanzas}'/>`;
  const earlier = new Set(client.received);
  client.send(`<presence to='${esc(occupantJid)}'><x xmlns='${NS_MUC}'>${history}</x></presence>`);
  return client.next(
    (el) =>
      !earlier.has(el) &&
      el.name === 'presence' &&
      bareJid(el.attrs.from) === room &&
      (el.attrs.type === 'error' || (el.attrs.type !== 'unavailable' && mucStatuses(el).includes('110'))),
    opts.timeoutMs,
  );
}

/** Leave: unavailable presence to the occupant JID, wait for the room's unavailable self-presence. */
export async function leaveRoom(client: RawClient, occupantJid: string, timeoutMs?: number): Promise<Element> {
  const room = bareJid(occupantJid);
  const earlier = new Set(client.received);
  client.send(`<presence type='unavailable' to='${esc(occupantJid)}'/>`);
  return client.next((el) => !earlier.has(el) && el.name === 'presence' && bareJid(el.attrs.from) === room && el.attrs.type === 'unavailable' && mucStatuses(el).includes('110'), timeoutMs);
}

/** Send a groupchat message to a room; returns the id it carries. */
export function sayInRoom(client: RawClient, roomJid: string, body: string): string {
  const id = nextId('gc');
  client.send(`<message type='groupchat' id='${id}' to='${esc(roomJid)}'><body>${esc(body)}</body></message>`);
  return id;
}

/** Wait for a groupchat message with `body` from the room `roomJid` (any occupant). */
export function groupchatFrom(client: RawClient, roomJid: string, body: string, timeoutMs?: number): Promise<Element> {
  return client.next((el) => el.name === 'message' && el.attrs.type === 'groupchat' && bareJid(el.attrs.from) === roomJid && el.getChildText('body') === body, timeoutMs);
}

/** Outcome of an XEP-0410 self-ping: 'result', or the error the room (or a server on the way) answered. */
export type SelfPingOutcome = { type: 'result' } | { type: 'error'; from: string; error: StanzaError };

/**
 * XEP-0410 self-ping: `<ping xmlns='urn:xmpp:ping'/>` from the client's full JID to its own
 * occupant JID. Resolves with the answer; rejects when none comes within timeoutMs.
 */
export async function selfPing(client: RawClient, occupantJid: string, timeoutMs?: number): Promise<SelfPingOutcome> {
  const answer = await iq(client, 'get', occupantJid, `<ping xmlns='urn:xmpp:ping'/>`, timeoutMs);
  if (answer.attrs.type === 'result') return { type: 'result' };
  return { type: 'error', from: answer.attrs.from as string, error: stanzaError(answer) ?? { type: '', condition: '' } };
}

/**
 * Submit the owner's config form (XEP-0045 §10.2) with the given `muc#roomconfig_*` fields,
 * e.g. `{ persistentroom: '1' }`. Resolves with the iq answer.
 */
export function configureRoom(client: RawClient, roomJid: string, fields: Record<string, string>, timeoutMs?: number): Promise<Element> {
  const xfields = Object.entries(fields)
    .map(([name, value]) => `<field var='muc#roomconfig_${esc(name)}'><value>${esc(value)}</value></field>`)
    .join('');
  return iq(
    client,
    'set',
    roomJid,
    `<query xmlns='${NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>` +
      `<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>${xfields}</x></query>`,
    timeoutMs,
  );
}

/** The disco#info features of a JID (empty when it answers an error). */
export async function discoFeatures(client: RawClient, jid: string, timeoutMs?: number): Promise<string[]> {
  const answer = await iq(client, 'get', jid, `<query xmlns='http://jabber.org/protocol/disco#info'/>`, timeoutMs);
  const query = answer.getChild('query', 'http://jabber.org/protocol/disco#info');
  return query ? query.getChildren('feature').map((f) => f.attrs.var as string) : [];
}
