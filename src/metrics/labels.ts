/**
 * The fixed label values of the proxy's metrics (design §3 `metrics/`). A label never carries a
 * JID, resource, address or free text: only a value from one of these sets, and anything else
 * is counted as {@link OTHER}. That bounds every metric's series, whatever clients and servers send.
 */
import type { Counter } from 'prom-client';
import { END_CAUSES, RESUME_FAILURES } from '../session/events.ts';
import type { LinkEndKind } from '../upstream/link.ts';

/** The value a label takes when the source gave one outside its set. */
export const OTHER = 'other';

/** Session states of `SessionManager.counts()`. */
export const SESSION_STATES = ['attached', 'hibernated', 'reconnecting'] as const;

/** The SASL failure conditions of RFC 6120 §6.5, what a refused client login reports. */
export const SASL_CONDITIONS = [
  'aborted',
  'account-disabled',
  'credentials-expired',
  'encryption-required',
  'incorrect-encoding',
  'invalid-authzid',
  'invalid-mechanism',
  'malformed-request',
  'mechanism-too-weak',
  'not-authorized',
  'temporary-auth-failure',
] as const;

/** Results of a client login: `success` or a SASL condition. */
/** How a client logged in (client-stream.ts LoginMode); `other` is {@link OTHER}. */
export const LOGIN_MODES = ['plain', 'scram-relay', OTHER] as const;

export const LOGIN_RESULTS = ['success', ...SASL_CONDITIONS] as const;

/** Stanza kinds (RFC 6120 §8). */
export const STANZA_KINDS = ['message', 'presence', 'iq'] as const;

/** How an upstream link ended (upstream/link.ts LinkEndKind, every member: checked below). */
export const LINK_END_KINDS = ['connection-lost', 'stream-closed', 'stream-error', 'bad-xml', 'timeout', 'proxy'] as const satisfies readonly LinkEndKind[];
// Compile-time check that LINK_END_KINDS lists every LinkEndKind: a new kind fails here.
const allLinkEndKinds: [Exclude<LinkEndKind, (typeof LINK_END_KINDS)[number]>] extends [never] ? true : never = true;
void allLinkEndKinds;

/** Why a hibernation ended: a resume, or the session's end cause. */
export const HIBERNATION_ENDS = ['resumed', ...END_CAUSES] as const;

/** How an ended session's unacked stanzas were settled (events.ts SettleCounts keys). */
export const SETTLE_OUTCOMES = ['archived', 'hold', 'bounce', 'drop'] as const;

export { END_CAUSES, RESUME_FAILURES };

/**
 * A counter's increment function for one label with a fixed set of values (and, optionally,
 * other labels with fixed values): each known value's series exists from the start at 0 (so
 * `rate()` sees its first increment), its child is bound once, and a value outside the set
 * counts as {@link OTHER} (that series appears when first used).
 */
export function fixedLabelCounter<L extends string>(
  counter: Counter<L>,
  label: NoInfer<L>,
  values: readonly string[],
  fixed: Partial<Record<NoInfer<L>, string>> = {},
): (value: string, by?: number) => void {
  const child = (value: string) => counter.labels({ ...fixed, [label]: value } as Record<L, string>);
  const children = new Map<string, { inc(by?: number): void }>();
  for (const value of values) {
    const bound = child(value);
    bound.inc(0);
    children.set(value, bound);
  }
  let other: { inc(by?: number): void } | undefined;
  return (value, by = 1) => (children.get(value) ?? (other ??= child(OTHER))).inc(by);
}
