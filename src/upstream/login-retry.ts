/**
 * A client's login while the upstream cannot be reached (design §4.1, §4.5): a server that
 * restarts is back within seconds, and its clients come back to log in at once (a relayed
 * session's client is sent to, design §4.1.3). Each of them answered `temporary-auth-failure`
 * would wait out its own backoff, or sit on its connection until the negotiation deadline;
 * tried again here for a few seconds, its login is only slower.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { UpstreamError } from './link.ts';

/** How a login is tried again. Times in milliseconds. */
export interface LoginRetryOptions {
  /** No attempt starts after this long from the first one. */
  windowMs: number;
  /** The first wait between attempts; doubled after each, up to `maxDelayMs`. */
  delayMs: number;
  maxDelayMs: number;
  /** Aborted when the client left: no further attempt. */
  signal?: AbortSignal;
}

/**
 * Runs `attempt` until it succeeds, fails with the server's verdict, or may not be tried again.
 * @param attempt one login; `committed()` is true once the attempt has done what cannot be
 *   repeated (a relayed exchange that passed the server's first challenge to the client: the
 *   client's next message is bound to that connection's nonce, RFC 5802 §5).
 * @throws the error of the last attempt: at once unless it is a transient UpstreamError (the
 *   server's verdict, a TLS or protocol failure), else once the window is over, the attempt
 *   was committed, or the signal aborted.
 */
export async function withLoginRetry<T>(attempt: () => Promise<T>, committed: () => boolean, options: LoginRetryOptions): Promise<T> {
  const deadline = Date.now() + options.windowMs;
  let delay = options.delayMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof UpstreamError && err.transient) || committed() || options.signal?.aborted || Date.now() + delay > deadline) throw err;
      await sleep(delay, undefined, { signal: options.signal }).catch(() => {}); // an abort ends the wait
      if (options.signal?.aborted) throw err;
    }
    delay = Math.min(delay * 2, options.maxDelayMs);
  }
}
