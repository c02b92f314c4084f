/**
 * One benchmark phase: K sender→receiver pairs log in to one endpoint (Prosody directly, or the
 * proxy), exchange ~100-byte chat messages either at saturation (each sender keeps `window`
 * messages in flight) or at a paced total rate, and the phase is charged with the delivered
 * messages, their latency and the CPU each process used during the measured window.
 *
 * A message is "delivered" when its receiver parses it; the receiver tells its sender through
 * shared memory (the Pair object), never over XMPP.
 *
 * With SM, each sender's periodic `<r/>` is timed until the server's `<a h/>` covers it (ack
 * latency): Prosody's mod_smacks answering directly, or the proxy's custody ack, which counts a
 * stanza only once the upstream server confirmed it.
 */
import { BenchClient } from './client.ts';
import { LatencyRecorder, type LatencySummary } from './stats.ts';
import { cpuDelta, cpuSnapshot, type CpuDelta } from './proc.ts';

export interface PhaseSpec {
  /** Short key, e.g. `proxy-sm-sat`. */
  name: string;
  /** Human label for the table. */
  label: string;
  target: 'direct' | 'proxy';
  /** Proxy phases: how the proxy confirms custody upstream (`upstream.streamManagement` true / false). */
  custody?: Custody;
  sm: boolean;
  mode: 'saturation' | 'paced';
  /** Paced mode: total messages per second over all pairs. */
  rate?: number;
  pairs: number;
  window: number;
  warmupMs: number;
  measureMs: number;
  host: string;
  port: number;
  domain: string;
  /** Account of pair i (0-based): sender and receiver. */
  accounts: (i: number) => { sender: string; receiver: string; password: string };
  pids: { proxy?: number; prosody?: number };
  /** Clients send `<r/>` after every this many stanzas they send (SM). */
  rEvery?: number;
  /** Upper bound on in-flight messages per pair in paced mode (a backstop, not a window). */
  pacedMaxInFlight?: number;
}

/** The proxy's custody confirmation: the server's own XEP-0198 acks, or XEP-0199 ping barriers. */
export type Custody = 'server-sm' | 'ping';

export interface PhaseResult {
  name: string;
  label: string;
  target: 'direct' | 'proxy';
  custody: Custody | null;
  sm: boolean;
  mode: 'saturation' | 'paced';
  pairs: number;
  window: number | null;
  targetRate: number | null;
  measuredSeconds: number;
  delivered: number;
  /** Delivered messages per second during the measured window. */
  rate: number;
  latencyMs: LatencySummary;
  /**
   * SM: senders' `<r/>` (every rEvery-th stanza) → the first `<a h/>` covering it, for acks that
   * arrived in the window (count 0, NaN figures without SM).
   */
  ackMs: LatencySummary;
  cpu: CpuDelta;
  /** CPU µs per delivered message in the measured window. */
  usPerMsg: { proxy: number; prosody: number; bench: number };
  /** Read/write system calls per delivered message (from /proc/PID/io). */
  syscallsPerMsg: { proxyRead: number; proxyWrite: number; prosodyRead: number; prosodyWrite: number };
  /** Proxy and Prosody CPU as a share of one core during the window. */
  coreShare: { proxy: number; prosody: number; bench: number; other: number };
  checks: {
    sent: number;
    deliveredTotal: number;
    lost: number;
    outOfOrder: number;
    /** Senders whose every stanza the server acknowledged (`<a h/>` = sent) before closing. */
    sendersFullyAcked: number | null;
    /** Server `<r/>` received by receivers per 100 delivered messages (its ack-request rate). */
    serverAckRequestsPer100: number | null;
    /**
     * `<a/>` the senders received per periodic `<r/>` they sent, in the window: 1 when each is
     * answered once with a covering h; more when the server also sends unrequested `<a/>`.
     */
    serverAcksPerClientRequest: number | null;
    errors: string[];
  };
}

const BODY_LEN = 100;
const PAD = 'x'.repeat(BODY_LEN);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class Pair {
  inFlight = 0;
  seq = 0;
  delivered = 0;
  expected = 0;
  outOfOrder = 0;
  constructor(
    readonly sender: BenchClient,
    readonly receiver: BenchClient,
  ) {}

  sendOne(now: number): void {
    const s = this.seq++;
    const head = `${s} ${now.toFixed(3)} `;
    this.sender.sendMessage(this.receiver.jid, `m${s}`, head + PAD.slice(head.length));
    this.inFlight++;
  }
}

export async function runPhase(spec: PhaseSpec, log: (line: string) => void): Promise<PhaseResult> {
  const errors: string[] = [];
  const logins: Array<Promise<[BenchClient, BenchClient]>> = [];
  for (let i = 0; i < spec.pairs; i++) {
    const acc = spec.accounts(i);
    const common = { host: spec.host, port: spec.port, domain: spec.domain, password: acc.password, sm: spec.sm, rEvery: spec.rEvery };
    logins.push(
      Promise.all([
        BenchClient.login({ ...common, user: acc.sender, resource: `${spec.name}-s${i}` }),
        BenchClient.login({ ...common, user: acc.receiver, resource: `${spec.name}-r${i}` }),
      ]),
    );
  }
  const settled = await Promise.allSettled(logins);
  const failedLogin = settled.find((s) => s.status === 'rejected') as PromiseRejectedResult | undefined;
  if (failedLogin) {
    for (const s of settled) if (s.status === 'fulfilled') for (const c of s.value) c.destroy();
    throw failedLogin.reason;
  }
  const pairs = settled.map((s) => {
    const [sender, receiver] = (s as PromiseFulfilledResult<[BenchClient, BenchClient]>).value;
    return new Pair(sender, receiver);
  });

  const rec = new LatencyRecorder();
  const ackRec = new LatencyRecorder();
  let recording = false;
  let sending = true;
  let delivered = 0;
  const window = spec.window;
  const saturation = spec.mode === 'saturation';

  for (const pair of pairs) {
    pair.receiver.onMessage = (body: string): void => {
      const now = performance.now();
      const sp1 = body.indexOf(' ');
      const sp2 = body.indexOf(' ', sp1 + 1);
      const seq = Number(body.slice(0, sp1));
      if (seq !== pair.expected) pair.outOfOrder++;
      pair.expected = seq + 1;
      if (recording) rec.add(now - Number(body.slice(sp1 + 1, sp2)));
      pair.inFlight--;
      pair.delivered++;
      delivered++;
      if (saturation && sending) while (pair.inFlight < window) pair.sendOne(now);
    };
    pair.sender.onAckLatency = (ms: number): void => {
      if (recording) ackRec.add(ms);
    };
  }
  const senderAcks = (): { requests: number; acks: number } => ({
    requests: pairs.reduce((a, p) => a + p.sender.ackRequestsSent, 0),
    acks: pairs.reduce((a, p) => a + p.sender.acksReceived, 0),
  });

  // Start the traffic.
  let pacer: NodeJS.Timeout | undefined;
  if (saturation) {
    const now = performance.now();
    for (const pair of pairs) while (pair.inFlight < window) pair.sendOne(now);
  } else {
    const perPairPerMs = (spec.rate ?? 100) / spec.pairs / 1000;
    const maxInFlight = spec.pacedMaxInFlight ?? 5000;
    const start = performance.now();
    // Spread the pairs' send instants evenly over one inter-message interval.
    const offsets = pairs.map((_, i) => (i / spec.pairs) / perPairPerMs);
    pacer = setInterval(() => {
      if (!sending) return;
      const now = performance.now();
      for (let i = 0; i < pairs.length; i++) {
        const pair = pairs[i]!;
        const due = Math.floor((now - start + offsets[i]!) * perPairPerMs) - pair.seq;
        for (let k = 0; k < due && pair.inFlight < maxInFlight; k++) pair.sendOne(now);
      }
    }, 1);
  }

  await sleep(spec.warmupMs);
  const before = cpuSnapshot(spec.pids.proxy, spec.pids.prosody);
  const deliveredBefore = delivered;
  const acksBefore = senderAcks();
  rec.reset();
  ackRec.reset();
  recording = true;
  await sleep(spec.measureMs);
  recording = false;
  const after = cpuSnapshot(spec.pids.proxy, spec.pids.prosody);
  const acksAfter = senderAcks();
  const deliveredInWindow = delivered - deliveredBefore;
  sending = false;
  clearInterval(pacer);

  // Drain: every message sent must arrive.
  const drainDeadline = Date.now() + 10_000;
  while (pairs.some((p) => p.inFlight > 0) && Date.now() < drainDeadline) await sleep(20);

  let sendersFullyAcked: number | null = null;
  if (spec.sm) {
    const acked = await Promise.all(pairs.map((p) => p.sender.confirmAllAcked(5000)));
    sendersFullyAcked = acked.filter(Boolean).length;
    if (sendersFullyAcked < pairs.length) errors.push(`${pairs.length - sendersFullyAcked} sender(s) not fully acked by the server`);
  }
  const sent = pairs.reduce((a, p) => a + p.seq, 0);
  const lost = pairs.reduce((a, p) => a + p.inFlight, 0);
  const outOfOrder = pairs.reduce((a, p) => a + p.outOfOrder, 0);
  if (lost > 0) errors.push(`${lost} message(s) not delivered within 10 s after the phase`);
  if (outOfOrder > 0) errors.push(`${outOfOrder} message(s) out of order`);
  const requests = pairs.reduce((a, p) => a + p.receiver.requestsAnswered, 0);
  for (const p of pairs) {
    for (const c of [p.sender, p.receiver]) if (c.error) errors.push(`${c.jid}: ${c.error}`);
  }

  await Promise.all(pairs.flatMap((p) => [p.sender.close(), p.receiver.close()]));

  const cpu = cpuDelta(before, after);
  const per = (us: number): number => (deliveredInWindow > 0 ? us / deliveredInWindow : NaN);
  const share = (us: number): number => us / 1000 / cpu.wallMs;
  const result: PhaseResult = {
    name: spec.name,
    label: spec.label,
    target: spec.target,
    custody: spec.custody ?? null,
    sm: spec.sm,
    mode: spec.mode,
    pairs: spec.pairs,
    window: saturation ? spec.window : null,
    targetRate: saturation ? null : (spec.rate ?? null),
    measuredSeconds: cpu.wallMs / 1000,
    delivered: deliveredInWindow,
    rate: deliveredInWindow / (cpu.wallMs / 1000),
    latencyMs: rec.summary(),
    ackMs: ackRec.summary(),
    cpu,
    usPerMsg: { proxy: per(cpu.proxyUs), prosody: per(cpu.prosodyUs), bench: per(cpu.benchUs) },
    syscallsPerMsg: {
      proxyRead: per(cpu.proxyIo.reads),
      proxyWrite: per(cpu.proxyIo.writes),
      prosodyRead: per(cpu.prosodyIo.reads),
      prosodyWrite: per(cpu.prosodyIo.writes),
    },
    coreShare: { proxy: share(cpu.proxyUs), prosody: share(cpu.prosodyUs), bench: share(cpu.benchUs), other: share(cpu.otherUs) },
    checks: {
      sent,
      deliveredTotal: delivered,
      lost,
      outOfOrder,
      sendersFullyAcked,
      serverAckRequestsPer100: spec.sm ? (requests / Math.max(1, delivered)) * 100 : null,
      serverAcksPerClientRequest: spec.sm ? (acksAfter.acks - acksBefore.acks) / Math.max(1, acksAfter.requests - acksBefore.requests) : null,
      errors,
    },
  };
  log(
    `  ${spec.label}: ${result.rate.toFixed(0)} msg/s, p50 ${result.latencyMs.p50.toFixed(2)} ms, p99 ${result.latencyMs.p99.toFixed(2)} ms` +
      (spec.sm ? `, ack p50 ${result.ackMs.p50.toFixed(2)} ms, p99 ${result.ackMs.p99.toFixed(2)} ms` : '') +
      (errors.length ? `  ERRORS: ${errors.join('; ')}` : ''),
  );
  return result;
}
