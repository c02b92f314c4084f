// withLoginRetry (src/upstream/login-retry.ts): which failures are tried again, and when it stops.
import t from 'tap';
import { withLoginRetry, type LoginRetryOptions } from '../../src/upstream/login-retry.ts';
import { UpstreamError } from '../../src/upstream/link.ts';
import { SaslFailure } from '../../src/upstream/sasl.ts';

const quick: LoginRetryOptions = { windowMs: 60_000, delayMs: 1, maxDelayMs: 4 };

/** An attempt failing with `errors` in turn, then succeeding; counts its calls. */
function attempts(errors: Error[]) {
  const state = { calls: 0 };
  const attempt = async () => {
    const err = errors[state.calls++];
    if (err) throw err;
    return 'link';
  };
  return { state, attempt };
}

t.test('an unreachable upstream is tried again until it answers', async (t) => {
  const { state, attempt } = attempts([new UpstreamError('refused', true), new UpstreamError('closed', true)]);
  t.equal(await withLoginRetry(attempt, () => false, quick), 'link');
  t.equal(state.calls, 3);
});

t.test("the server's verdict and non-transient trouble are not tried again", async (t) => {
  for (const err of [new SaslFailure('not-authorized'), new UpstreamError('upstream TLS failed'), new Error('bug')]) {
    const { state, attempt } = attempts([err]);
    await t.rejects(withLoginRetry(attempt, () => false, quick), err, err.message);
    t.equal(state.calls, 1, `${err.message}: one attempt`);
  }
});

t.test('a committed attempt (the client has the first challenge) is not tried again', async (t) => {
  const { state, attempt } = attempts([new UpstreamError('closed', true)]);
  await t.rejects(withLoginRetry(attempt, () => true, quick), { message: 'closed' });
  t.equal(state.calls, 1);
});

t.test('no new attempt once the window is over', async (t) => {
  const { state, attempt } = attempts([new UpstreamError('refused', true), new UpstreamError('refused', true)]);
  await t.rejects(withLoginRetry(attempt, () => false, { ...quick, windowMs: 0 }), { message: 'refused' });
  t.equal(state.calls, 1);
});

t.test('the client leaving stops the retries, also during a wait', async (t) => {
  const gone = new AbortController();
  const { state, attempt } = attempts(Array.from({ length: 100 }, () => new UpstreamError('refused', true)));
  const login = withLoginRetry(attempt, () => false, { windowMs: 600_000, delayMs: 60_000, maxDelayMs: 60_000, signal: gone.signal });
  const rejected = t.rejects(login, { message: 'refused' });
  await new Promise((resolve) => setImmediate(resolve));
  t.equal(state.calls, 1, 'waiting after the first attempt');
  gone.abort();
  await rejected;
  t.equal(state.calls, 1, 'the wait ended with the abort, and no attempt followed');
});
