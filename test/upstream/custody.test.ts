/**
 * Custody's byte accounting (issue 10): what it holds is measured, `full` fires past
 * `maxBytes` and `room` once under half of it, on every path that lets stanzas go (a barrier's
 * confirmation, confirmWhere, release). The link is a stand-in whose pings the test answers.
 */
import t from 'tap';
import { Custody } from '../../src/upstream/custody.ts';
import { fakeLink, tick } from './fake-link.ts';

/** A stanza of exactly `n` characters. */
const stanza = (n: number, id = 'x'): string => {
  const head = `<message id='${id}'><body>`;
  const tail = '</body></message>';
  return head + 'a'.repeat(n - head.length - tail.length) + tail;
};

function events(custody: Custody) {
  const seen: string[] = [];
  custody.on('full', () => seen.push('full'));
  custody.on('room', () => seen.push('room'));
  return seen;
}

t.test('pendingBytes sums what is held; full once past maxBytes, room once under half', async (t) => {
  const custody = new Custody(1000, { maxBytes: 1000 });
  const seen = events(custody);
  const { link, answer } = fakeLink();
  custody.attach(link);
  for (let i = 0; i < 5; i++) custody.push(stanza(200, `a${i}`));
  t.equal(custody.pendingBytes, 1000);
  t.same(seen, [], 'at the limit, not past it');
  custody.push(stanza(200, 'a5'));
  custody.push(stanza(200, 'a6'));
  t.same(seen, ['full'], 'emitted once, not per stanza');
  t.ok(custody.full);
  await answer(); // confirms all 7
  t.equal(custody.pending, 0);
  t.equal(custody.pendingBytes, 0);
  t.same(seen, ['full', 'room']);
  t.notOk(custody.full);
});

t.test('room waits until under half the limit (hysteresis)', async (t) => {
  const custody = new Custody(1000, { maxBytes: 1000 });
  const seen = events(custody);
  const { link, answer } = fakeLink();
  custody.attach(link);
  for (let i = 0; i < 6; i++) custody.push(stanza(200, `a${i}`)); // 1200: full; barrier covers these 6
  await tick(); // the barrier went out
  for (let i = 6; i < 9; i++) custody.push(stanza(200, `a${i}`)); // 1800
  t.same(seen, ['full']);
  await answer(); // the first 6 confirmed: 600 left, still over 500
  t.equal(custody.pendingBytes, 600);
  t.same(seen, ['full'], 'not under half yet');
  await answer(); // the other 3
  t.equal(custody.pendingBytes, 0);
  t.same(seen, ['full', 'room']);
});

t.test('a failed barrier frees nothing', async (t) => {
  const custody = new Custody(1000, { maxBytes: 500 });
  const seen = events(custody);
  const { link, answer } = fakeLink();
  custody.on('timeout', () => {});
  custody.attach(link);
  for (let i = 0; i < 3; i++) custody.push(stanza(200, `a${i}`));
  await answer(false);
  t.equal(custody.pendingBytes, 600);
  t.same(seen, ['full']);
});

t.test('held while no link is attached; confirmWhere frees what it takes', async (t) => {
  const custody = new Custody(1000, { maxBytes: 1000 });
  const seen = events(custody);
  for (let i = 0; i < 8; i++) custody.push(stanza(200, `a${i}`));
  t.equal(custody.pendingBytes, 1600, 'a client sending while the server is down is measured');
  t.same(seen, ['full']);
  t.equal(custody.confirmWhere((raw) => raw.includes("id='a1'") || raw.includes("id='a2'")), 2);
  t.equal(custody.pendingBytes, 1200);
  t.same(seen, ['full']);
  t.equal(custody.confirmWhere((raw) => !raw.includes("id='a7'")), 5);
  t.equal(custody.pendingBytes, 200);
  t.same(seen, ['full', 'room']);
});

t.test('release frees what it returns; a second crossing emits full again', async (t) => {
  const custody = new Custody(1000, { maxBytes: 1000 });
  const seen = events(custody);
  for (let i = 0; i < 6; i++) custody.push(stanza(200, `a${i}`));
  const rest = custody.release();
  t.equal(rest.length, 6);
  t.equal(custody.pendingBytes, 0);
  t.same(seen, ['full', 'room']);
  for (let i = 0; i < 6; i++) custody.push(stanza(200, `b${i}`));
  t.same(seen, ['full', 'room', 'full']);
});

t.test('release keeps the bytes of what was sent on a live link', async (t) => {
  const custody = new Custody(1000, { maxBytes: 1000 });
  const { link } = fakeLink();
  custody.attach(link);
  custody.push(stanza(300, 'sent'));
  custody.detach();
  custody.push(stanza(100, 'unsent'));
  // Detached: nothing counts as sent, so release returns both and frees both.
  t.equal(custody.release().length, 2);
  t.equal(custody.pendingBytes, 0);
  custody.attach(link);
  custody.push(stanza(300, 'sent'));
  t.same(custody.release(), [], 'sent on a live link: kept for its barrier');
  t.equal(custody.pendingBytes, 300);
});

t.test('the default limit is the configured default (1 MiB)', async (t) => {
  const custody = new Custody(1000);
  const seen = events(custody);
  custody.push(stanza(1024 * 1024));
  t.same(seen, []);
  custody.push(stanza(100));
  t.same(seen, ['full']);
});

t.test('a stanza the proxy handled itself (a hook consumed it) is confirmed in its place', async (t) => {
  const custody = new Custody(1000);
  const confirmed: number[] = [];
  const barriers: number[] = [];
  custody.on('confirmed', (_n: number, counted: number) => confirmed.push(counted));
  custody.on('barrier', (n: number, latencyMs: number) => {
    barriers.push(n);
    t.ok(latencyMs >= 0, 'a barrier reports its latency');
  });
  const { link, sent, answer } = fakeLink();
  custody.attach(link);
  custody.push('');
  t.same(confirmed, [1], 'with nothing before it, confirmed at once');
  custody.push(stanza(100, 'a'));
  custody.push('');
  t.same(confirmed, [1], 'behind a stanza the server has not confirmed, it waits');
  t.same(sent, [stanza(100, 'a')], 'nothing is written for it');
  await answer();
  t.same(confirmed, [1, 2], 'confirmed with the stanza before it');
  t.same(barriers, [2]);
  t.equal(custody.pending, 0);
});

t.test('handled stanzas held while no link is up are confirmed on the next link', async (t) => {
  const custody = new Custody(1000);
  const confirmed: number[] = [];
  custody.on('confirmed', (_n: number, counted: number) => confirmed.push(counted));
  custody.push(stanza(100, 'a'));
  custody.push('');
  const { link, sent, answer } = fakeLink();
  custody.attach(link);
  t.same(sent, [stanza(100, 'a')]);
  await answer();
  t.same(confirmed, [2]);
});
