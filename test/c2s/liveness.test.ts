import t from 'tap';
import { LivenessMonitor, TICKS_PER_IDLE } from '../../src/c2s/liveness.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A peer whose input is a counter the test moves, and what the monitor did to it. */
function watched(idleMs: number, probeTimeoutMs: number) {
  const peer = { bytes: 0, probes: 0, vanished: 0, probedAt: [] as number[] };
  const start = Date.now();
  const monitor = new LivenessMonitor({
    idleMs,
    probeTimeoutMs,
    inputCount: () => peer.bytes,
    probe: () => {
      peer.probes++;
      peer.probedAt.push(Date.now() - start);
    },
    vanished: () => peer.vanished++,
  });
  return { peer, monitor };
}

t.test('a silent peer is probed once after the idle time, then declared gone', async (t) => {
  const { peer, monitor } = watched(100, 100);
  t.teardown(() => monitor.stop());
  await sleep(60);
  t.equal(peer.probes, 0, 'not probed before the idle time');
  await waitUntil(() => peer.probes === 1);
  t.ok(peer.probedAt[0]! >= 100, `not before idleMs (${peer.probedAt[0]} ms)`);
  t.ok(monitor.probing);
  t.equal(peer.vanished, 0, 'given probeTimeoutMs to answer');
  await waitUntil(() => peer.vanished === 1);
  t.pass('gone after no answer');
  await sleep(300);
  t.equal(peer.probes, 1, 'no probe after that');
  t.equal(peer.vanished, 1, 'declared gone once');
});

t.test('any input keeps a peer from being probed', async (t) => {
  const { peer, monitor } = watched(300, 100);
  t.teardown(() => monitor.stop());
  for (let i = 0; i < 20; i++) {
    await sleep(40);
    peer.bytes += 1;
  }
  t.equal(peer.probes, 0, 'never probed while input keeps coming');
  t.equal(peer.vanished, 0);
});

t.test('a probed peer that answers stays, and is probed again after the next silence', async (t) => {
  const { peer, monitor } = watched(80, 200);
  t.teardown(() => monitor.stop());
  await waitUntil(() => peer.probes === 1);
  peer.bytes += 10; // the <a/> or the ping's result
  await sleep(250);
  t.equal(peer.vanished, 0, 'the answer counts');
  await waitUntil(() => peer.probes === 2);
  t.equal(peer.vanished, 0, 'probed again, not yet gone');
  await waitUntil(() => peer.vanished === 1);
  t.pass('the second silence ends it');
});

t.test('stop() ends all timers', async (t) => {
  const { peer, monitor } = watched(40, 40);
  monitor.stop();
  monitor.stop();
  await sleep(200);
  t.equal(peer.probes + peer.vanished, 0);
});

t.test('its timer never keeps the process alive', async (t) => {
  const refed = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = refed();
  const { monitor } = watched(10_000, 10_000);
  t.equal(refed(), before, 'unref\'d');
  monitor.stop();
});

t.test('the probe waits between idleMs and 1.25 × idleMs of silence', async (t) => {
  t.equal(TICKS_PER_IDLE, 4);
  const { peer, monitor } = watched(200, 1000);
  t.teardown(() => monitor.stop());
  // Input just after the first tick: the silence counts from there.
  await sleep(60);
  peer.bytes++;
  const lastInput = 60;
  await waitUntil(() => peer.probes === 1);
  const silence = peer.probedAt[0]! - lastInput;
  t.ok(silence >= 200 - 5, `probed after ${silence} ms of silence`);
  // 1.25 × idleMs by design; the slack is for a loaded machine's late timers.
  t.ok(silence <= 250 + 150, `not much later than 1.25 × idleMs (${silence} ms)`);
});

async function waitUntil(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error('timed out');
    await sleep(5);
  }
}
