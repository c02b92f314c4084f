/**
 * The proxy's event surface (design §4.8): what features (metrics, MUC self-pings, push) learn
 * about sessions, and the stanza hooks through which they may observe, consume, answer or inject
 * stanzas without touching the per-stanza path itself (`Session#fromClient` / `#fromUpstream`).
 *
 * Listeners run synchronously inside the session's own code: they must not throw (a throw is
 * caught, logged and ignored by the emitter, see SessionManager) and must not block.
 */
import type { TopLevel } from '../xml/top-level.ts';
import type { Session } from './session.ts';
import type { LinkEndKind } from '../upstream/link.ts';
import type { QueuedStanza } from '../sm/outbound-queue.ts';

/**
 * Why a session ended: the fixed set logs and metrics use (design §4.3).
 * - `client-closed`: the client closed its stream (`</stream:stream>`);
 * - `client-lost`: the client's connection was lost and the session was not resumable;
 * - `client-error`: the proxy closed the client's stream with a stream error (bad input, abuse);
 * - `client-stalled`: the client took none of its output for `limits.sendTimeoutSeconds`;
 * - `hibernation-timeout`: no resume within `sm.hibernationSeconds`;
 * - `queue-overflow`: the unacked queue passed `sm.maxQueueSize` / `sm.maxQueueBytes`;
 * - `resume-invalid-h`: a `<resume/>` acknowledged more (or less) than possible (XEP-0198 §5);
 * - `replaced`: a new stream of the account bound the same resource (RFC 6120 §7.7.2.2);
 * - `upstream-refused` / `upstream-unreachable` / `upstream-conflict` / `upstream-rejected` /
 *   `upstream-error`: the upstream side gave up (see UpstreamFailure);
 * - `shutdown`: the proxy is stopping (SIGTERM).
 */
export const END_CAUSES = [
  'client-closed',
  'client-lost',
  'client-error',
  'client-stalled',
  'hibernation-timeout',
  'queue-overflow',
  'resume-invalid-h',
  'replaced',
  'upstream-refused',
  'upstream-unreachable',
  'upstream-conflict',
  'upstream-rejected',
  'upstream-error',
  'shutdown',
] as const;

/** One of {@link END_CAUSES}. */
export type EndCause = (typeof END_CAUSES)[number];

/**
 * Why a `<resume/>` did not resume (XEP-0198 §5), the fixed set:
 * - `unknown-id`: no live session of this account has the id (a foreign id looks the same);
 * - `expired`: the id belongs to a session of the account that already ended;
 * - `bad-request`: no usable `h`;
 * - `overflowed`: the session's queue overflowed (`resource-constraint`);
 * - `invalid-h`: the `h` cannot be right (the session ends);
 * - `superseded`: a later resume of the same session took over;
 * - `ended`: the session ended while the resume waited for the server;
 * - `client-left`: the resuming client closed its connection meanwhile;
 * - `no-upstream`: a relayed session's link is down and the client's new login could not
 *   become it (design §4.1.3): the connection is closed unanswered, and the client tries again.
 */
export const RESUME_FAILURES = ['unknown-id', 'expired', 'bad-request', 'overflowed', 'invalid-h', 'superseded', 'ended', 'client-left', 'no-upstream'] as const;

/** One of {@link RESUME_FAILURES}. */
export type ResumeFailure = (typeof RESUME_FAILURES)[number];

/**
 * How a push ended (design §4.7), the fixed set:
 * - `sent`: the app server accepted it (iq result);
 * - `error`: the app server answered an error (counted against the registration unless of type `wait`);
 * - `timeout`: no answer within `push.replyTimeoutSeconds` (counted against the registration);
 * - `unconfirmed`: it went out but its answer could not come back (the upstream link it went
 *   out on dropped, or the session ended: the push for held messages); not counted.
 */
export const PUSH_OUTCOMES = ['sent', 'error', 'timeout', 'unconfirmed'] as const;

/** One of {@link PUSH_OUTCOMES}. */
export type PushOutcome = (typeof PUSH_OUTCOMES)[number];

/** How an ended session's unacked stanzas were settled (design §4.3). */
export interface SettleCounts {
  archived: number;
  hold: number;
  bounce: number;
  drop: number;
}

/** Payload of `session-ended`. */
export interface SessionEnd {
  cause: EndCause;
  /** Human-readable detail for logs (never a JID, password or resumption id). */
  detail: string;
  /** True when no client was attached: the end of a hibernation. */
  hibernating: boolean;
  /** How the unacked stanzas were settled (absent for `replaced`: they were handed over). */
  settled?: SettleCounts;
}

/**
 * Events of the proxy's {@link SessionManager}, name → listener arguments. Times in ms.
 */
export interface ProxyEventMap {
  /**
   * A client logged in (`success`) or was refused (the SASL condition it got, RFC 6120 §6.5);
   * `mode`: PLAIN, a relayed SCRAM exchange, or another mechanism (design §4.1.3).
   */
  'client-login': [result: string, mode: 'plain' | 'scram-relay' | 'other'];
  /** A client bound a resource: a new session. */
  'session-started': [session: Session];
  /** The client enabled XEP-0198 on its stream (`resume`: it asked for resumption). */
  'sm-enabled': [session: Session, resume: boolean];
  /** The client vanished; the session waits for a resume (design §4.3). */
  'session-hibernating': [session: Session];
  /** A client resumed the session; `resent` unacked stanzas went to it again. */
  'session-resumed': [session: Session, info: { hibernatedMs: number; resent: number }];
  /** A `<resume/>` failed; the client got `<failed/>`. */
  'resume-failed': [reason: ResumeFailure];
  /**
   * The session is ending: its unacked stanzas were just settled (`held`: kept for the account's
   * next login, design §4.3). Its upstream link is still open: the last moment a feature may send
   * on it (push for the held messages, design §4.7). `session-ended` follows.
   */
  'session-ending': [session: Session, info: { held: readonly QueuedStanza[]; cause: EndCause }];
  /**
   * The upstream link of a relayed login (`auth.mode` scram-relay) was lost: the client's
   * connection is closed so that it logs in again and resumes (design §4.1.3).
   */
  'relay-reconnect': [session: Session];
  /** The session is over. */
  'session-ended': [session: Session, end: SessionEnd];
  /** An `<r/>` went unanswered for `sm.maxAckDelaySeconds` (mod_smacks' smacks-ack-delayed). */
  'ack-delayed': [session: Session, info: { unacked: number }];
  /** An `<r/>` went to the client with `unacked` stanzas in its queue (XEP-0198 §4). */
  'ack-requested': [session: Session, info: { unacked: number }];
  /** The client acknowledged `acked` more stanzas (`<a/>`); `unacked` stay in its queue. */
  'ack-received': [session: Session, info: { acked: number; unacked: number }];
  /** The session's upstream link dropped (`reason`: free text for logs); it reconnects (design §4.5). */
  'upstream-down': [session: Session, info: { reason: string; kind: LinkEndKind }];
  /** A replacement upstream link is up: after `downMs`; `resumed` when the server's own SM resumed. */
  'upstream-up': [session: Session, info: { downMs: number; resumed: boolean }];
  /** A custody barrier confirmed `stanzas` client stanzas `latencyMs` after it went out (design §4.4). */
  'custody-confirmed': [session: Session, info: { stanzas: number; latencyMs: number }];
  /** A second copy of a message was dropped before reaching the client (an upstream fault's). */
  'duplicate-dropped': [session: Session];
  /** A room rejoin after an upstream reconnect (design §4.6) was answered: `joined` or `refused`. */
  'muc-rejoin': [session: Session, outcome: 'joined' | 'refused'];
  /** The client was told it is no longer in a room (status 110 + 333). */
  'muc-notice': [session: Session];
  /** A self-ping round (XEP-0410 §3.2) ended with this verdict (after its retries). */
  'muc-self-ping': [session: Session, verdict: 'joined' | 'joined-nick-changed' | 'not-joined' | 'undecided'];
  /** A push (XEP-0357 §7) was settled: see {@link PUSH_OUTCOMES}; `important` when it carried the body placeholder. */
  'push-outcome': [outcome: PushOutcome, info: { important: boolean }];
  /** A hibernated session's time was extended until its first push (`push.maxHibernationSeconds`, design §4.7). */
  'push-hibernation-extended': [session: Session];
}

/**
 * A stanza hook: sees one stanza on its way (from the client, or from the upstream to the
 * client) and returns true to consume it (it goes no further; the hook may answer through
 * {@link Session.sendToClient} / {@link Session.sendToUpstream}), anything else to let it pass.
 * A consumed client stanza still counts in the client's XEP-0198 `h`, in its order.
 * Hooks run in registration order; a throw is logged and counts as "pass".
 */
export type StanzaHook = (stanza: TopLevel, session: Session) => boolean | void;

/** The registered hooks, by direction. Features push onto them; empty lists cost nothing. */
export interface StanzaHooks {
  /** Client → upstream stanzas (message, presence, iq), after XEP-0198 counted them. */
  readonly fromClient: StanzaHook[];
  /** Upstream → client stanzas, before the duplicate check and the unacked queue. */
  readonly fromUpstream: StanzaHook[];
  /**
   * Called when a session's upstream is replaced by a new login (design §4.5, not when the
   * server's own XEP-0198 session was resumed): stanzas of the proxy's own to send on the new
   * link after the replayed presence and before the client's held stanzas (MUC rejoins, §4.6).
   */
  readonly relink: Array<(session: Session) => string[]>;
}
