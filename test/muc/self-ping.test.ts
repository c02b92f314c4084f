import t from 'tap';
import {
  NODE_TIMERS,
  SELF_PING_DEFAULTS,
  SelfPinger,
  classifySelfPing,
  type PingAnswer,
  type SelfPingOutcome,
  type SelfPingTarget,
  type SelfPingVerdict,
  type SelfPingerOptions,
} from '../../src/muc/self-ping.ts';
import { FakeTimers, prng } from './fake-timers.ts';

const RESULT: PingAnswer = { type: 'result' };
const TIMEOUT: PingAnswer = { type: 'timeout' };
const err = (condition: string): PingAnswer => ({ type: 'error', condition });
/** An answer that never comes. */
const NEVER = (): Promise<PingAnswer> => new Promise(() => {});

function target(sessionKey = 's1', roomJid = 'room@muc.example', nick = 'alice'): SelfPingTarget {
  return { sessionKey, fromFullJid: `alice@example/${sessionKey}`, roomJid, nick };
}

type Answerer = (target: SelfPingTarget, n: number) => PingAnswer | Promise<PingAnswer>;

/** A pinger on fake timers whose `send` records each ping and answers with `answer` (default: result). */
function harness(answer: Answerer = () => RESULT, options: Partial<SelfPingerOptions> = {}) {
  const clock = new FakeTimers();
  const sends: Array<{ at: number; target: SelfPingTarget }> = [];
  const outcomes: Array<{ at: number; target: SelfPingTarget; outcome: SelfPingOutcome }> = [];
  const pinger = new SelfPinger({
    timers: clock,
    send: async (target) => {
      sends.push({ at: clock.now(), target });
      return answer(target, sends.length);
    },
    onOutcome: (target, outcome) => void outcomes.push({ at: clock.now(), target, outcome }),
    ...options,
  });
  return { clock, sends, outcomes, pinger };
}

/** Answers handed out by hand: `send` waits until the test resolves (or rejects) it. */
function manual() {
  const waiting: Array<{ resolve(a: PingAnswer): void; reject(e: unknown): void }> = [];
  const answer: Answerer = () => new Promise<PingAnswer>((resolve, reject) => void waiting.push({ resolve, reject }));
  return { answer, waiting };
}

/** RFC 6120 §8.3.3: every defined stanza error condition. */
const CONDITIONS = [
  'bad-request', 'conflict', 'feature-not-implemented', 'forbidden', 'gone', 'internal-server-error', 'item-not-found',
  'jid-malformed', 'not-acceptable', 'not-allowed', 'not-authorized', 'policy-violation', 'recipient-unavailable',
  'redirect', 'registration-required', 'remote-server-not-found', 'remote-server-timeout', 'resource-constraint',
  'service-unavailable', 'subscription-required', 'undefined-condition', 'unexpected-request',
];

t.test('classification follows XEP-0410 v1.1 §3.2 for every answer', async (t) => {
  t.equal(CONDITIONS.length, 22, 'all of RFC 6120 §8.3.3');
  const notDefault: Record<string, SelfPingVerdict> = {
    'service-unavailable': 'joined',
    'feature-not-implemented': 'joined',
    'item-not-found': 'joined-nick-changed',
    'remote-server-not-found': 'undecided',
    'remote-server-timeout': 'undecided',
  };
  for (const condition of CONDITIONS) {
    t.equal(classifySelfPing(err(condition)), notDefault[condition] ?? 'not-joined', condition);
  }
  t.equal(classifySelfPing(RESULT), 'joined', 'result');
  t.equal(classifySelfPing(TIMEOUT), 'undecided', 'no answer');
  for (const odd of ['', 'Service-Unavailable', 'item-not-found ', 'urn:ietf:params:xml:ns:xmpp-stanzas', 'x-custom']) {
    t.equal(classifySelfPing(err(odd)), 'not-joined', `an unknown condition ${JSON.stringify(odd)} is "any other error"`);
  }
});

t.test('the defaults are the documented ones', async (t) => {
  t.same(SELF_PING_DEFAULTS, {
    delayMs: 60_000, timeoutMs: 30_000, maxPerSecond: 20, burst: 1,
    retryInitialMs: 30_000, retryMaxMs: 600_000, maxAttempts: 6, maxPending: 100_000,
  });
});

t.test('options out of range are refused', async (t) => {
  const base = { send: NEVER, onOutcome: () => {} };
  for (const bad of [
    { maxPerSecond: 0 }, { maxPerSecond: -1 }, { maxPerSecond: Number.NaN }, { burst: 0 }, { burst: 1.5 },
    { maxAttempts: 0 }, { maxAttempts: 2.5 }, { delayMs: -1 }, { timeoutMs: Number.NaN }, { maxPending: -1 },
    { retryInitialMs: -5 }, { retryMaxMs: -5 },
  ]) {
    t.throws(() => new SelfPinger({ ...base, ...bad }), RangeError, JSON.stringify(bad));
  }
  t.doesNotThrow(() => new SelfPinger({ ...base, maxPerSecond: Infinity, delayMs: 0, maxPending: 0 }).close());
});

t.test('a trigger gives one ping delayMs later, from the client to the occupant; nothing is kept after the outcome', async (t) => {
  const { clock, sends, outcomes, pinger } = harness();
  t.equal(pinger.schedule(target(), 'room-idle'), 'scheduled');
  t.equal(pinger.pending, 1);
  await clock.advance(SELF_PING_DEFAULTS.delayMs - 1);
  t.equal(sends.length, 0, 'not before ping_muc_delay');
  await clock.advance(1);
  t.same(sends, [{ at: 60_000, target: target() }]);
  t.same(outcomes, [{ at: 60_000, target: target(), outcome: { verdict: 'joined', attempts: 1, trigger: 'room-idle', answer: RESULT } }]);
  t.equal(pinger.pending, 0);
  t.equal(pinger.inFlight, 0);
  t.equal(clock.pending, 0, 'no timer left');
  t.match(pinger.stats, { scheduled: 1, sent: 1, joined: 1, rateLimited: 0, retried: 0, cancelled: 0 });
});

t.test('the target is copied: a change to the caller object does not reach the ping', async (t) => {
  const { clock, sends, pinger } = harness(undefined, { delayMs: 10 });
  const mine = { ...target() };
  pinger.schedule(mine, 'room-idle');
  mine.nick = 'mallory';
  await clock.advance(10);
  t.equal(sends[0]?.target.nick, 'alice');
});

t.test('one ping pending per (session, room): later triggers are coalesced, waiting, in flight or between retries', async (t) => {
  const { answer, waiting } = manual();
  const { clock, sends, outcomes, pinger } = harness(answer, { delayMs: 1000, retryInitialMs: 1000, maxPerSecond: Infinity });
  t.equal(pinger.schedule(target(), 'remote-server-error'), 'scheduled');
  t.equal(pinger.schedule(target(), 'room-idle'), 'coalesced', 'while waiting');
  t.equal(pinger.schedule(target('s1', 'other@muc.example'), 'room-idle'), 'scheduled', 'another room of the session');
  t.equal(pinger.schedule(target('s2'), 'room-idle'), 'scheduled', 'the room for another session');
  await clock.advance(1000);
  t.equal(sends.length, 3);
  t.equal(pinger.inFlight, 3);
  t.equal(pinger.schedule(target(), 'room-idle'), 'coalesced', 'while in flight');
  waiting[0]!.resolve(err('remote-server-timeout'));
  await clock.advance(0);
  t.equal(pinger.schedule(target(), 'room-idle'), 'coalesced', 'between retries');
  await clock.advance(1000);
  t.equal(sends.length, 4, 'the retry');
  waiting[3]!.resolve(RESULT);
  await clock.advance(0);
  t.same(outcomes.map((o) => o.outcome), [{ verdict: 'joined', attempts: 2, trigger: 'remote-server-error', answer: RESULT }], 'the first trigger is reported');
  t.equal(pinger.stats.coalesced, 3);
  t.equal(pinger.schedule(target(), 'room-idle'), 'scheduled', 'after its outcome the pair can be scheduled again');
});

t.test('each final answer gives its outcome and counter', async (t) => {
  const answers: Record<string, PingAnswer> = {
    'r1@muc': RESULT,
    'r2@muc': err('service-unavailable'),
    'r3@muc': err('feature-not-implemented'),
    'r4@muc': err('item-not-found'),
    'r5@muc': err('not-allowed'),
    'r6@muc': err('bad-request'),
    'r7@muc': err('not-acceptable'),
  };
  const { clock, outcomes, pinger } = harness((target) => answers[target.roomJid]!, { maxPerSecond: Infinity });
  for (const room of Object.keys(answers)) pinger.schedule(target('s1', room), 'room-idle');
  await clock.advance(60_000);
  t.same(
    Object.fromEntries(outcomes.map((o) => [o.target.roomJid, o.outcome.verdict])),
    { 'r1@muc': 'joined', 'r2@muc': 'joined', 'r3@muc': 'joined', 'r4@muc': 'joined-nick-changed', 'r5@muc': 'not-joined', 'r6@muc': 'not-joined', 'r7@muc': 'not-joined' },
  );
  t.ok(outcomes.every((o) => o.outcome.attempts === 1), 'decided at once: no retry');
  t.match(pinger.stats, { sent: 7, joined: 3, joinedNickChanged: 1, notJoined: 3, undecided: 0, retried: 0 });
  t.equal(pinger.pending, 0);
});

t.test('undecided is retried with doubling backoff; after maxAttempts the outcome is undecided', async (t) => {
  const { clock, sends, outcomes, pinger } = harness(() => err('remote-server-not-found'));
  pinger.schedule(target(), 'remote-server-error');
  await clock.advance(3_600_000);
  t.same(sends.map((s) => s.at), [60_000, 90_000, 150_000, 270_000, 510_000, 990_000], 'delay, then +30 s, +60 s, +120 s, +240 s, +480 s');
  t.same(outcomes, [{ at: 990_000, target: target(), outcome: { verdict: 'undecided', attempts: 6, trigger: 'remote-server-error', answer: err('remote-server-not-found') } }]);
  t.match(pinger.stats, { sent: 6, retried: 5, undecided: 1 });
  t.equal(pinger.pending, 0);
  t.equal(clock.pending, 0);
});

t.test('the backoff is capped at retryMaxMs; maxAttempts 1 means no retry', async (t) => {
  const capped = harness(() => err('remote-server-timeout'), { delayMs: 0, retryInitialMs: 100_000, retryMaxMs: 300_000, maxAttempts: 6 });
  capped.pinger.schedule(target(), 'room-idle');
  await capped.clock.advance(10_000_000);
  const at = capped.sends.map((s) => s.at);
  t.same(at.slice(1).map((x, i) => x - at[i]!), [100_000, 200_000, 300_000, 300_000, 300_000]);

  const once = harness(() => err('remote-server-timeout'), { maxAttempts: 1 });
  once.pinger.schedule(target(), 'room-idle');
  await once.clock.advance(10_000_000);
  t.equal(once.sends.length, 1);
  t.match(once.outcomes[0]?.outcome, { verdict: 'undecided', attempts: 1 });
});

t.test('an undecided ping then an answer decides', async (t) => {
  const { clock, outcomes, pinger } = harness((_, n) => (n === 1 ? err('remote-server-timeout') : err('item-not-found')));
  pinger.schedule(target(), 'remote-server-error');
  await clock.advance(90_000);
  t.same(outcomes.map((o) => [o.at, o.outcome.verdict, o.outcome.attempts]), [[90_000, 'joined-nick-changed', 2]]);
});

t.test('no answer within timeoutMs is undecided; a late answer is ignored', async (t) => {
  const { answer, waiting } = manual();
  const { clock, sends, outcomes, pinger } = harness(answer, { delayMs: 0, timeoutMs: 5000, retryInitialMs: 1000, maxAttempts: 2 });
  pinger.schedule(target(), 'room-idle');
  await clock.advance(0);
  t.equal(pinger.inFlight, 1);
  await clock.advance(4999);
  t.equal(pinger.stats.timedOut, 0);
  await clock.advance(1);
  t.equal(pinger.stats.timedOut, 1);
  t.equal(pinger.inFlight, 0);
  waiting[0]!.resolve(err('not-allowed')); // too late: must not kick
  await clock.advance(999);
  t.equal(outcomes.length, 0);
  t.equal(sends.length, 1);
  await clock.advance(1);
  t.equal(sends.length, 2, 'retried');
  await clock.advance(5000);
  t.same(outcomes.map((o) => o.outcome), [{ verdict: 'undecided', attempts: 2, trigger: 'room-idle', answer: TIMEOUT }]);
  t.match(pinger.stats, { timedOut: 2, notJoined: 0, undecided: 1 });
  waiting[1]!.resolve(RESULT);
  await clock.advance(0);
  t.equal(outcomes.length, 1, 'still one outcome');
  t.equal(clock.pending, 0);
});

t.test('the feature answering timeout counts as no answer', async (t) => {
  const { clock, outcomes, pinger } = harness((_, n) => (n === 1 ? TIMEOUT : RESULT), { delayMs: 0, retryInitialMs: 10 });
  pinger.schedule(target(), 'room-idle');
  await clock.advance(100);
  t.match(outcomes[0]?.outcome, { verdict: 'joined', attempts: 2 });
  t.equal(pinger.stats.timedOut, 1);
});

t.test('a send that throws or rejects is undecided (retried), never a kick', async (t) => {
  const clock = new FakeTimers();
  let n = 0;
  const outcomes: SelfPingOutcome[] = [];
  const pinger = new SelfPinger({
    timers: clock,
    delayMs: 0,
    retryInitialMs: 10,
    send: (): Promise<PingAnswer> => {
      n++;
      if (n === 1) throw new Error('no upstream');
      if (n === 2) return Promise.reject(new Error('link lost'));
      return Promise.resolve(RESULT);
    },
    onOutcome: (_, outcome) => void outcomes.push(outcome),
  });
  pinger.schedule(target(), 'room-idle');
  await clock.advance(100);
  t.equal(n, 3);
  t.same(outcomes, [{ verdict: 'joined', attempts: 3, trigger: 'room-idle', answer: RESULT }]);
  t.match(pinger.stats, { sendFailures: 2, retried: 2, timedOut: 0 });
});

t.test('cancel drops a waiting pair, ignores the answer of one in flight, and can drop a whole session', async (t) => {
  const { answer, waiting } = manual();
  const { clock, sends, outcomes, pinger } = harness(answer, { delayMs: 1000, maxPerSecond: Infinity });
  pinger.schedule(target('s1', 'a@muc'), 'room-idle');
  t.equal(pinger.cancel('s1', 'a@muc'), 1);
  t.equal(pinger.pending, 0);
  t.equal(clock.pending, 0, 'its timer is cleared');
  await clock.advance(5000);
  t.equal(sends.length, 0, 'never sent');

  pinger.schedule(target('s1', 'a@muc'), 'room-idle');
  pinger.schedule(target('s1', 'b@muc'), 'room-idle');
  pinger.schedule(target('s2', 'a@muc'), 'room-idle');
  await clock.advance(1000);
  t.equal(pinger.inFlight, 3);
  t.equal(pinger.cancel('s1', 'a@muc'), 1, 'in flight');
  t.equal(pinger.inFlight, 2);
  t.equal(pinger.cancel('s1', 'nowhere@muc'), 0);
  t.equal(pinger.cancel('s9'), 0);
  waiting[0]!.resolve(err('not-allowed'));
  await clock.advance(0);
  t.equal(outcomes.length, 0, 'the cancelled ping has no outcome');
  t.equal(pinger.cancel('s1'), 1, 'the rest of session s1');
  waiting[1]!.resolve(RESULT);
  waiting[2]!.resolve(RESULT);
  await clock.advance(0);
  t.same(outcomes.map((o) => o.target.sessionKey), ['s2'], 'only the other session');
  t.equal(pinger.stats.cancelled, 3);
  t.equal(pinger.pending, 0);
  t.equal(clock.pending, 0);
});

t.test('a paused session sends nothing; its pairs and new triggers are held and pinged delayMs after resume', async (t) => {
  const { clock, sends, outcomes, pinger } = harness(undefined, { maxPerSecond: Infinity });
  pinger.schedule(target('s1', 'a@muc'), 'room-idle');
  pinger.schedule(target('s1', 'b@muc'), 'room-idle');
  pinger.schedule(target('s2', 'a@muc'), 'room-idle');
  await clock.advance(30_000);
  pinger.pause('s1');
  t.equal(pinger.schedule(target('s1', 'c@muc'), 'remote-server-error'), 'held');
  t.equal(pinger.schedule(target('s1', 'a@muc'), 'remote-server-error'), 'coalesced', 'a held pair is pending');
  await clock.advance(600_000);
  t.same(sends.map((s) => s.target.sessionKey), ['s2'], 'nothing for the paused session');
  t.equal(pinger.pending, 3, 's2 decided, s1 held');
  pinger.resume('s1');
  await clock.advance(59_999);
  t.equal(sends.length, 1);
  await clock.advance(1);
  t.same(sends.slice(1).map((s) => s.target.roomJid), ['a@muc', 'b@muc', 'c@muc']);
  t.same(outcomes.map((o) => [o.target.sessionKey, o.target.roomJid, o.outcome.trigger]), [
    ['s2', 'a@muc', 'room-idle'], ['s1', 'a@muc', 'room-idle'], ['s1', 'b@muc', 'room-idle'], ['s1', 'c@muc', 'remote-server-error'],
  ]);
  pinger.resume('s1'); // not paused: nothing
  t.equal(pinger.pending, 0);
  t.equal(clock.pending, 0);
});

t.test('pausing during a ping ignores its answer; after resume the attempts count afresh', async (t) => {
  const { answer, waiting } = manual();
  let byHand = true;
  const { clock, sends, outcomes, pinger } = harness((target, n) => (byHand ? answer(target, n) : err('remote-server-not-found')), {
    delayMs: 100, retryInitialMs: 100, maxAttempts: 3,
  });
  pinger.schedule(target(), 'remote-server-error');
  await clock.advance(100);
  waiting[0]!.resolve(err('remote-server-not-found'));
  await clock.advance(100);
  t.equal(sends.length, 2, 'a retry in flight');
  pinger.pause('s1');
  t.equal(pinger.inFlight, 0);
  waiting[1]!.resolve(err('forbidden'));
  await clock.advance(10_000);
  t.equal(outcomes.length, 0, 'no kick from an answer that came in while paused');
  byHand = false;
  pinger.resume('s1');
  await clock.advance(10_000);
  t.same(sends.slice(2).map((s) => s.at - 10_200), [100, 200, 400], 'delayMs after the resume, then the backoff from its start');
  t.same(outcomes.map((o) => [o.outcome.verdict, o.outcome.attempts]), [['undecided', 3]], 'maxAttempts pings after the resume');
});

t.test('a session paused before any trigger holds them; cancel(session) forgets the paused state', async (t) => {
  const { clock, sends, pinger } = harness(undefined, { delayMs: 10 });
  pinger.pause('s1');
  pinger.pause('s1');
  t.equal(pinger.schedule(target(), 'room-idle'), 'held');
  await clock.advance(1000);
  t.equal(sends.length, 0);
  t.equal(pinger.cancel('s1'), 1);
  t.equal(pinger.schedule(target(), 'room-idle'), 'scheduled', 'no longer paused');
  await clock.advance(10);
  t.equal(sends.length, 1);
  pinger.pause('s2');
  pinger.resume('s2');
  t.equal(pinger.schedule(target('s2'), 'room-idle'), 'scheduled', 'resumed with nothing held');
});

t.test('at most maxPending pairs: beyond, a schedule is refused and counted', async (t) => {
  const { clock, outcomes, pinger } = harness(undefined, { maxPending: 3, maxPerSecond: Infinity });
  for (const room of ['a', 'b', 'c']) t.equal(pinger.schedule(target('s1', `${room}@muc`), 'room-idle'), 'scheduled');
  t.equal(pinger.schedule(target('s1', 'd@muc'), 'room-idle'), 'refused');
  t.equal(pinger.schedule(target('s1', 'a@muc'), 'room-idle'), 'coalesced', 'a pending pair is coalesced, not refused');
  pinger.pause('s2');
  t.equal(pinger.schedule(target('s2', 'a@muc'), 'room-idle'), 'refused', 'held pairs count too');
  t.equal(pinger.stats.refused, 2);
  await clock.advance(60_000);
  t.equal(outcomes.length, 3);
  t.equal(pinger.schedule(target('s1', 'd@muc'), 'room-idle'), 'scheduled', 'room again after outcomes');
});

t.test('100 rooms × 10 sessions triggered at once: sent at maxPerSecond, each pair exactly once, none lost', async (t) => {
  const { clock, sends, outcomes, pinger } = harness(undefined, { maxPerSecond: 50 });
  const order: string[] = [];
  for (let room = 0; room < 100; room++) {
    for (let session = 0; session < 10; session++) {
      t.equal(pinger.schedule(target(`s${session}`, `room${room}@muc`), 'remote-server-error'), 'scheduled');
      order.push(`s${session} room${room}@muc`);
    }
  }
  t.equal(pinger.pending, 1000);
  await clock.advance(60_000);
  t.equal(sends.length, 1, 'one at the due time, the rest wait their turn');
  await clock.advance(30_000);
  t.equal(sends.length, 1000);
  const keys = sends.map((s) => `${s.target.sessionKey} ${s.target.roomJid}`);
  t.equal(new Set(keys).size, 1000, 'each pair pinged exactly once');
  t.same(keys, order, 'in the order triggered');
  const at = sends.map((s) => s.at);
  t.equal(at[0], 60_000);
  t.equal(at[999], 60_000 + 999 * 20, 'the last 20 s later: 1000 at 50/s');
  t.ok(at.every((x, i) => i === 0 || x - at[i - 1]! === 20), 'evenly spaced, 1/50 s apart');
  t.ok(at.every((x, i) => i < 50 || x - at[i - 50]! >= 1000), 'never more than 50 in any second');
  t.equal(outcomes.length, 1000);
  t.ok(outcomes.every((o) => o.outcome.verdict === 'joined'));
  t.match(pinger.stats, { scheduled: 1000, sent: 1000, joined: 1000, rateLimited: 999, refused: 0 });
  t.equal(pinger.pending, 0);
  t.equal(clock.pending, 0);
});

t.test('retries share the rate limit with first pings; a burst lets that many out back to back', async (t) => {
  const { clock, sends, pinger } = harness((target, n) => (target.roomJid === 'r0@muc' && n === 1 ? err('remote-server-timeout') : RESULT), {
    maxPerSecond: 1, burst: 3, delayMs: 0, retryInitialMs: 0,
  });
  for (let i = 0; i < 6; i++) pinger.schedule(target('s1', `r${i}@muc`), 'room-idle');
  await clock.advance(10_000);
  t.same(sends.map((s) => [s.at, s.target.roomJid]), [
    [0, 'r0@muc'], [0, 'r1@muc'], [0, 'r2@muc'], // the burst
    [1000, 'r3@muc'], [2000, 'r4@muc'], [3000, 'r5@muc'], [4000, 'r0@muc'], // then 1/s; the retry, due at 0, waits its turn
  ]);
});

t.test('callbacks may call back in: a new trigger from onOutcome, a cancel or close from send', async (t) => {
  const clock = new FakeTimers();
  const verdicts: string[] = [];
  let mode = 'reschedule';
  const pinger: SelfPinger = new SelfPinger({
    timers: clock,
    delayMs: 10,
    maxPerSecond: Infinity,
    send: async (target) => {
      if (target.roomJid === 'cancel@muc') pinger.cancel(target.sessionKey, target.roomJid);
      if (target.roomJid === 'close@muc') pinger.close();
      return RESULT;
    },
    onOutcome: (target, outcome) => {
      verdicts.push(`${target.roomJid} ${outcome.verdict}`);
      if (mode === 'reschedule') t.equal(pinger.schedule(target, 'room-idle'), 'scheduled', 'the pair was forgotten before onOutcome');
      mode = 'stop';
    },
  });
  pinger.schedule(target('s1', 'a@muc'), 'room-idle');
  await clock.advance(20);
  t.same(verdicts, ['a@muc joined', 'a@muc joined']);
  pinger.schedule(target('s1', 'cancel@muc'), 'room-idle');
  await clock.advance(20);
  t.equal(verdicts.length, 2, 'cancelled from inside send: no outcome');
  pinger.schedule(target('s1', 'close@muc'), 'room-idle');
  pinger.schedule(target('s1', 'z@muc'), 'room-idle');
  await clock.advance(20);
  t.equal(verdicts.length, 2, 'closed from inside send: nothing more');
  t.equal(pinger.stats.sent, 4);
  t.equal(clock.pending, 0);
});

t.test('close drops everything, clears every timer and ignores late answers', async (t) => {
  const { answer, waiting } = manual();
  const { clock, outcomes, pinger } = harness(answer, { delayMs: 100, maxPerSecond: Infinity });
  pinger.schedule(target('s1', 'a@muc'), 'room-idle');
  await clock.advance(100);
  pinger.schedule(target('s1', 'b@muc'), 'room-idle');
  pinger.pause('s2');
  pinger.schedule(target('s2', 'a@muc'), 'room-idle');
  t.ok(clock.pending > 0);
  pinger.close();
  pinger.close();
  t.equal(clock.pending, 0, 'no timer left to keep the process alive');
  t.equal(pinger.pending, 0);
  t.equal(pinger.inFlight, 0);
  t.equal(pinger.stats.cancelled, 3);
  waiting[0]!.resolve(err('not-allowed'));
  await clock.advance(1000);
  t.equal(outcomes.length, 0);
  t.equal(pinger.schedule(target('s1', 'c@muc'), 'room-idle'), 'closed');
  pinger.pause('s3');
  pinger.resume('s2');
  t.equal(clock.pending, 0);
});

t.test("Node's timers are unref'd: a scheduled ping never keeps the process alive", async (t) => {
  const handle = NODE_TIMERS.setTimeout(() => t.fail('must not fire'), 3_600_000) as NodeJS.Timeout;
  t.equal(handle.hasRef(), false);
  NODE_TIMERS.clearTimeout(handle);
  const pinger = new SelfPinger({ send: NEVER, onOutcome: () => t.fail('no outcome') });
  t.equal(pinger.schedule(target(), 'room-idle'), 'scheduled');
  pinger.close();
});

t.test('random operations keep the books: every accepted pair ends once (outcome or cancel), none while paused', async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rand = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const clock = new FakeTimers();
    const paused = new Set<string>();
    const problems: string[] = [];
    let outcomes = 0;
    const answers: Array<() => PingAnswer | Promise<PingAnswer>> = [
      () => RESULT, () => err('item-not-found'), () => err('not-allowed'), () => err('remote-server-not-found'),
      () => TIMEOUT, NEVER, () => Promise.reject(new Error('gone')),
    ];
    let lastSend = -Infinity;
    const pinger = new SelfPinger({
      timers: clock,
      delayMs: 1000, timeoutMs: 500, retryInitialMs: 300, retryMaxMs: 2000, maxAttempts: 3, maxPerSecond: 10, maxPending: 15,
      send: async (target) => {
        if (paused.has(target.sessionKey)) problems.push(`sent for paused ${target.sessionKey}`);
        if (clock.now() - lastSend < 100) problems.push(`rate broken at ${clock.now()}`);
        lastSend = clock.now();
        return pick(answers)();
      },
      onOutcome: () => void outcomes++,
    });
    const sessions = ['s1', 's2', 's3', 's4'];
    const rooms = ['a@muc', 'b@muc', 'c@muc', 'd@muc', 'e@muc'];
    for (let step = 0; step < 2000; step++) {
      const r = rand();
      const s = pick(sessions);
      if (r < 0.5) pinger.schedule(target(s, pick(rooms)), 'room-idle');
      else if (r < 0.55) pinger.cancel(s, pick(rooms));
      else if (r < 0.57) {
        pinger.cancel(s);
        paused.delete(s);
      } else if (r < 0.6) {
        pinger.pause(s);
        paused.add(s);
      } else if (r < 0.65) {
        pinger.resume(s);
        paused.delete(s);
      } else await clock.advance(Math.floor(rand() * 1500));
      const st = pinger.stats;
      const ended = st.joined + st.joinedNickChanged + st.notJoined + st.undecided;
      if (ended !== outcomes) problems.push(`step ${step}: ${outcomes} outcomes, counted ${ended}`);
      if (st.scheduled !== ended + st.cancelled + pinger.pending) problems.push(`step ${step}: books do not balance ${JSON.stringify(st)} pending ${pinger.pending}`);
      if (pinger.pending > 15 || pinger.inFlight > pinger.pending) problems.push(`step ${step}: pending ${pinger.pending}, in flight ${pinger.inFlight}`);
      if (problems.length > 0) break;
    }
    for (const s of sessions) pinger.resume(s);
    paused.clear();
    await clock.advance(100_000);
    t.same(problems, [], `seed ${seed}`);
    t.equal(pinger.pending, 0, `seed ${seed}: everything ended`);
    t.equal(clock.pending, 0, `seed ${seed}: no timer left`);
    t.ok(pinger.stats.sent > 100 && pinger.stats.cancelled > 0 && pinger.stats.refused > 0 && pinger.stats.undecided > 0, `seed ${seed}: the paths were taken`);
  }
});
