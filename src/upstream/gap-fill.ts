import { type Element } from 'ltx';
import type { UpstreamLink } from './link.ts';
import { TopLevel } from '../xml/top-level.ts';
import { bareJidOf, prepJid } from '../jid.ts';

/**
 * Gap fill after an upstream reconnect (design §4.5): messages the server wrote to the dying
 * link are lost on the wire, but a server with an archive (XEP-0313 MAM) still has them. The
 * session remembers the last archived id (XEP-0359 stanza-id by the account) it delivered;
 * after the reconnect it pages through the archive from there and hands over each message
 * addressed to this resource that the client has not had yet.
 */

const NS_SID = 'urn:xmpp:sid:0';
const NS_MAM = 'urn:xmpp:mam:2';
const NS_RSM = 'http://jabber.org/protocol/rsm';
const NS_FORWARD = 'urn:xmpp:forward:0';
const NS_DISCO_INFO = 'http://jabber.org/protocol/disco#info';

/** Prefix of the proxy's own MAM query ids: the link keeps their results from the client. */
export const QUERY_PREFIX = 'proxy-gap-';
let querySeq = 0;

const STANZA_ID = /<stanza-id\s[^>]*>/g;
const ATTR = (name: string) => new RegExp(`\\s${name}=(?:'([^']*)'|"([^"]*)")`);
const BY = ATTR('by');
const ID = ATTR('id');

/**
 * The archive id the account's server gave a message (`<stanza-id by=account id=…/>`), read
 * from the raw text without parsing it; undefined when there is none.
 */
export function archiveId(raw: string, bareJid: string): string | undefined {
  if (!raw.includes(NS_SID)) return undefined;
  for (const tag of raw.match(STANZA_ID) ?? []) {
    const by = BY.exec(tag);
    if ((by?.[1] ?? by?.[2]) !== bareJid) continue;
    const id = ID.exec(tag);
    return id?.[1] ?? id?.[2];
  }
  return undefined;
}

/**
 * True when the account's archive answers queries (disco#info on the bare JID, XEP-0313 §6);
 * undefined when the server did not answer (timeout or lost link: ask again on the next link).
 */
export async function hasArchive(link: UpstreamLink, bareJid: string, timeoutMs: number): Promise<boolean | undefined> {
  const answer = await link.request((id) => `<iq type='get' id='${id}' to='${bareJid}'><query xmlns='${NS_DISCO_INFO}'/></iq>`, timeoutMs);
  if (!answer) return undefined;
  return answer.attrs.type === 'result' && answer.raw.includes(NS_MAM) &&
    answer.element().getChild('query')?.getChildren('feature').some((f) => f.attrs.var === NS_MAM) === true;
}

/** One message of an archive query's results (XEP-0313 §4.2), as the server had it. */
interface Archived {
  message: Element;
  /** Its archive id. */
  id: string;
  /** When the server archived it (XEP-0203), if it said. */
  stamp?: string;
}

/** How the archive is read: results per page (`upstream.gapFillPageSize`), reads per fill (`upstream.gapFillMaxPasses`). */
export interface ArchivePaging {
  pageSize: number;
  maxPasses: number;
}

/**
 * Pages through the account's archive after `afterId` (or since `startMs` when no id is known),
 * `pageSize` results a page, calling `each` with every result in order. Resolves with whether the query is over: false
 * only when the server did not answer (timeout or lost link); an error answer ends it.
 */
async function pageArchive(
  link: UpstreamLink,
  opts: { afterId?: string; startMs: number; timeoutMs: number; maxPages?: number; paging: ArchivePaging },
  each: (result: Archived) => void,
): Promise<boolean> {
  let after = opts.afterId;
  for (let page = 0; page < (opts.maxPages ?? 20); page++) {
    const queryId = `${QUERY_PREFIX}${++querySeq}`;
    const found: Archived[] = [];
    const collect = (el: TopLevel): void => {
      if (el.name !== 'message' || !el.raw.includes(NS_MAM)) return;
      const result = el.element().getChild('result', NS_MAM);
      if (result?.attrs.queryid !== queryId) return;
      const forwarded = result.getChild('forwarded', NS_FORWARD);
      const message = forwarded?.getChild('message');
      if (message) found.push({ message, id: result.attrs.id, stamp: forwarded?.getChild('delay')?.attrs.stamp });
    };
    link.on('archive', collect);
    const max = `<max>${opts.paging.pageSize}</max>`;
    const form = after
      ? `<set xmlns='${NS_RSM}'>${max}<after>${after}</after></set>`
      : `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>${NS_MAM}</value></field>` +
        `<field var='start'><value>${new Date(opts.startMs).toISOString()}</value></field></x><set xmlns='${NS_RSM}'>${max}</set>`;
    const fin = await link.request((id) => `<iq type='set' id='${id}'><query xmlns='${NS_MAM}' queryid='${queryId}'>${form}</query></iq>`, opts.timeoutMs);
    link.off('archive', collect);
    if (!fin) return false;
    if (fin.attrs.type !== 'result') return true;
    for (const result of found) each(result);
    const finEl = fin.element().getChild('fin', NS_MAM);
    const last = finEl?.getChild('set', NS_RSM)?.getChildText('last');
    const lastFound = found.at(-1)?.id;
    // Go on after the last result that arrived, not the server's <last/>: results routed
    // elsewhere (ejabberd sends some to a replaced session of the same resource) are asked again.
    if (lastFound === undefined || (finEl?.attrs.complete === 'true' && lastFound === last)) return true;
    after = lastFound;
  }
  return true;
}

/**
 * Calls `deliver` with each archived message after `afterId` (or since `startMs`) addressed to
 * `fullJid` (or the bare JID) that did not come from the account itself, as the server had sent
 * it, plus its archive id. Resolves with how many were delivered and whether the fill is over:
 * `complete` is false only when the server did not answer (nothing is delivered then, and the
 * caller tries again from the same point on its next link).
 *
 * The archive is read until a read only extends the one before it (at most
 * `paging.maxPasses` reads): right after a reconnect the
 * server is often still archiving what it handled late (a hung server catching up), and a read
 * taken meanwhile can miss entries in its middle (seen with ejabberd's mnesia archive); those
 * would then reach the client after newer ones.
 */
export async function fillGap(
  link: UpstreamLink,
  opts: { bareJid: string; fullJid: string; afterId?: string; startMs: number; timeoutMs: number; maxPages?: number; paging: ArchivePaging },
  deliver: (message: TopLevel, archivedId: string) => void,
): Promise<{ delivered: number; complete: boolean }> {
  let previous: string[] = [];
  let results: Archived[] = [];
  for (let pass = 0; pass < opts.paging.maxPasses; pass++) {
    results = [];
    const seen = new Set<string>();
    const collect = (r: Archived): void => {
      // A server may send a result twice (ejabberd did while catching up): once is enough.
      if (!seen.has(r.id)) results.push(r);
      seen.add(r.id);
    };
    if (!(await pageArchive(link, opts, collect))) return { delivered: 0, complete: false };
    const ids = results.map((r) => r.id);
    const extendsPrevious = pass > 0 && previous.every((id, i) => ids[i] === id);
    previous = ids;
    if (extendsPrevious) break;
  }
  let delivered = 0;
  for (const { message, id, stamp } of results) {
    const to = String(message.attrs.to ?? '');
    const from = String(message.attrs.from ?? '');
    if (bareJidOf(from) === opts.bareJid) continue; // the account's own outgoing message
    // For this resource, or for the bare JID; not for another resource.
    if (to !== opts.fullJid && (to.includes('/') || bareJidOf(to) !== opts.bareJid)) continue;
    message.attrs.xmlns = undefined;
    message.remove('delay', 'urn:xmpp:delay');
    message.c('delay', { xmlns: 'urn:xmpp:delay', from: opts.bareJid.split('@')[1], stamp: stamp ?? new Date().toISOString() });
    deliver(new TopLevel('message', message.attrs as Record<string, string>, message.toString()), id);
    delivered++;
  }
  return { delivered, complete: true };
}

/**
 * The ids of the messages `fullJid` sent that the account's archive holds since `startMs`: a
 * message held across an upstream drop whose id is here reached the server before the drop
 * and must not be sent again (design §4.5). Undefined when the server did not answer.
 */
export async function archivedOwnIds(
  link: UpstreamLink,
  opts: { fullJid: string; startMs: number; timeoutMs: number; maxPages?: number; paging: ArchivePaging },
): Promise<Set<string> | undefined> {
  const ids = new Set<string>();
  const complete = await pageArchive(link, opts, ({ message }) => {
    const from = String(message.attrs.from ?? '');
    if (from !== opts.fullJid && prepJid(from) !== opts.fullJid) return;
    if (typeof message.attrs.id === 'string') ids.add(message.attrs.id);
  });
  return complete ? ids : undefined;
}
