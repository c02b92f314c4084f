/**
 * Cost of counting one stanza for `xmpp_sm_proxy_stanzas_total` (src/metrics/metrics.ts), in ns
 * per hook call, three ways:
 * - `integers`: the proxy's own hook (plain integers, exposed by the counter's collect());
 * - `bound child`: a prom-client child bound once per label set (`counter.labels(...)`), `.inc()`;
 * - `labels object`: `counter.inc({ direction, kind })` on every call.
 *
 *   npx tsx bench/metrics-hooks.ts [calls=2000000] [rounds=5]
 *
 * Each round calls the hook `calls` times over a mix of message/presence/iq stanzas; the first
 * round warms the JIT and is not counted. Prints the median and best of the counted rounds (wall
 * time: the loop does no I/O).
 */
import { EventEmitter } from 'node:events';
import { Counter, Registry } from 'prom-client';
import { createMetrics } from '../src/metrics/metrics.ts';
import type { StanzaHook } from '../src/session/events.ts';
import type { Session } from '../src/session/session.ts';
import type { TopLevel } from '../src/xml/top-level.ts';

const CALLS = Number(process.argv[2] ?? 2_000_000);
const ROUNDS = Number(process.argv[3] ?? 5);

const manager = { events: new EventEmitter(), hooks: { fromClient: [] as StanzaHook[], fromUpstream: [] as StanzaHook[] }, counts: () => ({ attached: 0, hibernated: 0, reconnecting: 0 }) };
const held = { size: 0, bytes: 0, accounts: 0, dropped: 0, droppedExpired: 0 };
createMetrics({ manager: manager as never, held, certificateNotAfter: () => new Date(), ready: () => true });
const integers = manager.hooks.fromClient[0]!;

const registry = new Registry();
const counter = new Counter({ name: 'bench_stanzas_total', help: 'bench', labelNames: ['direction', 'kind'], registers: [registry] });
const children = new Map(['message', 'presence', 'iq'].map((kind) => [kind, counter.labels({ direction: 'in', kind })]));
const boundChild: StanzaHook = (el) => void children.get(el.name)!.inc();
const labelsObject: StanzaHook = (el) => void counter.inc({ direction: 'in', kind: el.name });

// A realistic mix: mostly messages, some presence and iq.
const stanzas = ['message', 'message', 'message', 'presence', 'message', 'iq', 'message', 'presence'].map((name) => ({ name, attrs: {}, raw: '' }) as unknown as TopLevel);
const session = {} as Session;

function round(hook: StanzaHook): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CALLS; i++) hook(stanzas[i & 7]!, session);
  return Number(process.hrtime.bigint() - t0) / CALLS;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, hook] of [['integers', integers], ['bound child', boundChild], ['labels object', labelsObject]] as const) {
  const ns: number[] = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const took = round(hook);
    if (r > 0) ns.push(took);
  }
  console.log(`${name.padEnd(14)} median ${median(ns).toFixed(1)} ns/call (best ${Math.min(...ns).toFixed(1)}), ${CALLS} calls x ${ROUNDS} rounds`);
}
