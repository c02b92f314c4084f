/** A stand-in upstream link for custody tests: no SM; its pings wait for the test's `answer()`. */
import type { UpstreamLink } from '../../src/upstream/link.ts';

/** One turn of the event loop (custody schedules its barrier after the burst). */
export const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * `sent`: what custody wrote, in order; `answer(ok)`: the server answers the oldest ping
 * (true) or it times out (false), after the barrier had its turn to go out.
 */
export function fakeLink() {
  const sent: string[] = [];
  const pings: Array<(ok: boolean) => void> = [];
  const link = {
    sm: undefined,
    send: (raw: string) => void sent.push(raw),
    ping: () => new Promise<boolean>((resolve) => pings.push(resolve)),
  } as unknown as UpstreamLink;
  const answer = async (ok = true): Promise<void> => {
    await tick();
    pings.shift()!(ok);
    await tick();
  };
  return { link, sent, pings, answer };
}
