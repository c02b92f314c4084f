import type { QueuedStanza } from '../sm/outbound-queue.ts';

/**
 * What a session retired by a new bind of its resource leaves to the session that takes the
 * resource over (design §4.3): the server would kick the old connection; the proxy does the
 * same, and nothing the old session held is lost on the way.
 */
export interface Handover {
  /** Stanzas the retired session had sent its client without an ack, oldest first. */
  readonly unacked: QueuedStanza[];
  /** Client stanzas the server never confirmed (the retired session had no link), oldest first. */
  readonly unconfirmed: string[];
  /**
   * Nobody takes them (the new bind failed, or its client left first): they are settled as at
   * the end of a session (held, bounced or dropped). Idempotent.
   */
  settle(): void;
}
