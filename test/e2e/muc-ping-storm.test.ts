// No storms (issue 12.5/12.6d): 10 sessions in 100 rooms each, all idle at once, on real Prosody
// with its own MUC component. Every (session, room) pair is self-pinged exactly once per idle
// period, all found joined (no notice), and the proxy never sends faster than
// muc.maxPingsPerSecond: the pings of one round span at least (n - 1) / rate seconds.
import t from 'tap';
import { startProsodyAndProxy, waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';

const SERVICE = 'conference.proxy.test';
const SESSIONS = 10;
const ROOMS = 100;
const RATE = 200;
const users = Array.from({ length: SESSIONS }, (_, i) => ({ user: `user${i}`, password: `user${i}-pw` }));

const { tp } = await startProsodyAndProxy(
  t,
  { accounts: users, config: [`Component "${SERVICE}" "muc"`, '  muc_room_locking = false'].join('\n') },
  { muc: { idlePingSeconds: 1, pingDelaySeconds: 0, pingTimeoutSeconds: 30, maxPingsPerSecond: RATE } },
);

t.test(`${SESSIONS} sessions × ${ROOMS} idle rooms: each pinged once, at most ${RATE}/s`, async (t) => {
  // Answers to the proxy's self-pings, seen before the MUC feature consumes them.
  const answers: Array<{ at: number; pair: string }> = [];
  tp.proxy.manager.hooks.fromUpstream.unshift((el, session) => {
    if (el.name === 'iq' && el.attrs.id?.startsWith('muc-ping-')) answers.push({ at: performance.now(), pair: `${session.fullJid}|${el.attrs.from}` });
  });
  const verdicts: string[] = [];
  tp.proxy.manager.events.on('muc-self-ping', (_s, verdict) => verdicts.push(verdict));
  const clients: RawClient[] = [];
  for (const { user, password } of users) {
    const { client } = await RawClient.login({ port: tp.port, user, password, resource: 'r' });
    client.send('<presence/>');
    for (let r = 0; r < ROOMS; r++) client.send(`<presence to='room${r}@${SERVICE}/${user}'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>`);
    clients.push(client);
  }
  t.teardown(() => clients.forEach((c) => c.destroy()));
  const joined = (c: RawClient) => c.received.filter((el) => el.name === 'presence' && el.getChild('x', 'http://jabber.org/protocol/muc#user')?.getChildren('status').some((s) => s.attrs.code === '110')).length;
  await waitFor(() => clients.every((c) => joined(c) === ROOMS), 'every join confirmed', 120_000);

  const n = SESSIONS * ROOMS;
  await waitFor(() => verdicts.length >= n, `${n} self-ping rounds`, 120_000);
  const firstRound = answers.slice(0, n);
  t.equal(new Set(firstRound.map((a) => a.pair)).size, n, 'the first round pings every (session, room) pair, each once');
  t.same([...new Set(verdicts.slice(0, n))], ['joined'], 'all found joined');
  const span = (firstRound.at(-1)!.at - firstRound[0]!.at) / 1000;
  t.ok(span >= (0.9 * (n - 1)) / RATE, `spread over ${span.toFixed(2)} s: never faster than ${RATE}/s (at least ${((n - 1) / RATE).toFixed(2)} s)`);
  t.equal(clients.flatMap((c) => c.received).filter((el) => el.name === 'iq' && el.attrs.type === 'get').length, 0, 'no client was woken by a ping');
  t.equal(clients.flatMap((c) => c.received).filter((el) => el.getChild('x', 'http://jabber.org/protocol/muc#user')?.getChildren('status').some((s) => s.attrs.code === '333')).length, 0, 'no notice');
});
