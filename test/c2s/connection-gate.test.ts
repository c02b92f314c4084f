import t from 'tap';
import pino from 'pino';
import { ConnectionGate, normalizeAddress, type Admission, type Refusal } from '../../src/c2s/connection-gate.ts';

/** A logger whose lines (parsed) land in `lines`. */
function captureLog(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

const admitted = (v: Admission | Refusal): Admission => {
  if ('refused' in v) throw new Error(`refused: ${v.refused}`);
  return v;
};

t.test('per-address limit: policy-violation; released places are reused; empty entries deleted', async (t) => {
  const { log } = captureLog();
  const gate = new ConnectionGate({ maxTotal: 10, maxPerIp: 2, log });
  t.teardown(() => gate.close());
  const a1 = admitted(gate.admit('192.0.2.1'));
  admitted(gate.admit('192.0.2.1'));
  t.same(gate.admit('192.0.2.1'), { refused: 'policy-violation' }, 'third from one address refused');
  t.same(gate.admit('::ffff:192.0.2.1'), { refused: 'policy-violation' }, 'the same client on a dual-stack listener');
  admitted(gate.admit('192.0.2.2'));
  t.equal(gate.unauthenticated, 3);
  t.equal(gate.countFor('192.0.2.1'), 2);
  a1.release();
  a1.release();
  t.equal(gate.countFor('192.0.2.1'), 1, 'a second release does nothing');
  admitted(gate.admit('192.0.2.1'));
  t.equal(gate.addresses, 2);
});

t.test('total limit: resource-constraint; the map holds only addresses with connections', async (t) => {
  const { log } = captureLog();
  const gate = new ConnectionGate({ maxTotal: 3, maxPerIp: 3, log });
  t.teardown(() => gate.close());
  const held = ['198.51.100.1', '198.51.100.2', '198.51.100.3'].map((a) => admitted(gate.admit(a)));
  t.same(gate.admit('198.51.100.4'), { refused: 'resource-constraint' });
  t.equal(gate.addresses, 3);
  for (const a of held) a.release();
  t.equal(gate.unauthenticated, 0);
  t.equal(gate.addresses, 0, 'entries deleted at zero');
  t.equal(admitted(gate.admit('198.51.100.4')).address, '198.51.100.4');
});

t.test('a flood of refusals is logged once, then summarised per interval', async (t) => {
  const { log, lines } = captureLog();
  const gate = new ConnectionGate({ maxTotal: 2, maxPerIp: 1, log, logIntervalMs: 200 });
  t.teardown(() => gate.close());
  admitted(gate.admit('203.0.113.9'));
  admitted(gate.admit('203.0.113.10'));
  for (let i = 0; i < 500; i++) gate.admit('203.0.113.9');
  for (let i = 0; i < 30; i++) gate.admit('203.0.113.11');
  const warns = () => lines.filter((l) => l.level === 40);
  t.equal(warns().length, 1, 'one line for 530 refusals within the interval');
  t.equal(warns()[0]!.refusedPerIpLimit, 1, 'the first refusal at once');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(warns().length, 2, 'then one summary line');
  t.match(warns()[1], { refusedPerIpLimit: 499, refusedTotalLimit: 30, lastAddress: '203.0.113.11' }, 'with the counts of the interval');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(warns().length, 2, 'nothing more once the refusals stop');
});

t.test('normalizeAddress', async (t) => {
  t.equal(normalizeAddress('::ffff:127.0.0.1'), '127.0.0.1');
  t.equal(normalizeAddress('2001:DB8::1'), '2001:db8::1');
  t.equal(normalizeAddress('::ffff:7f00:1'), '::ffff:7f00:1', 'only the dotted mapped form is rewritten');
});
