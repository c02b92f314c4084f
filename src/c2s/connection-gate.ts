import type { Logger } from 'pino';
import type { StreamErrorCondition } from '../xml/stream-error.ts';

/** At most one warn line about refused connections per this many ms (a flood gets a summary). */
export const REFUSAL_LOG_INTERVAL_MS = 10_000;

export interface ConnectionGateOptions {
  /** Unauthenticated connections proxy-wide (`limits.maxUnauthenticated`); more get `resource-constraint`. */
  maxTotal: number;
  /** Unauthenticated connections from one IP address (`limits.maxUnauthenticatedPerIp`); more get `policy-violation`. */
  maxPerIp: number;
  log: Logger;
  /** Refusal log lines at most this often (ms; default {@link REFUSAL_LOG_INTERVAL_MS}). */
  logIntervalMs?: number;
}

/**
 * An admitted connection's place in the count. It holds one place until {@link release}: at
 * SASL success (the client stream calls it) or at the close of the TCP socket (the listener calls
 * it), whichever comes first; a second call does nothing.
 */
export interface Admission {
  /** The client's IP address (IPv4-mapped IPv6 addresses in their IPv4 form). */
  readonly address: string;
  /** When the TCP connection was accepted (Date.now() ms): the negotiation deadline counts from here. */
  readonly acceptedAt: number;
  release(): void;
}

/** Why a connection was refused: the stream error condition it gets (RFC 6120 §4.9.3). */
export interface Refusal {
  refused: Extract<StreamErrorCondition, 'policy-violation' | 'resource-constraint'>;
}

/**
 * Counts client connections that have not authenticated yet (issue 10: from TCP accept, direct
 * TLS included before its handshake, until SASL success or close) and refuses new ones past
 * the limits: over the per-address limit `policy-violation` (RFC 6120 §4.9.3.14), over the
 * proxy-wide one `resource-constraint` (§4.9.3.17). The per-address map holds only addresses
 * with at least one connection counted (an entry is deleted when its count drops to zero), so
 * it never has more than `maxTotal` entries.
 *
 * Refusals are logged at warn for the operator, at most one line per `logIntervalMs` (default
 * {@link REFUSAL_LOG_INTERVAL_MS}): the first refusal at once, then, while refusals go on, one
 * line per interval with the interval's counts (a flood is not one line per socket).
 */
export class ConnectionGate {
  readonly #maxTotal: number;
  readonly #maxPerIp: number;
  readonly #log: Logger;
  readonly #logIntervalMs: number;
  #total = 0;
  readonly #perIp = new Map<string, number>();
  /** Refusals since the last log line, by condition, and the address refused most recently. */
  #refused = { 'policy-violation': 0, 'resource-constraint': 0, lastAddress: '' };
  #logTimer: NodeJS.Timeout | undefined;

  constructor(options: ConnectionGateOptions) {
    this.#maxTotal = options.maxTotal;
    this.#maxPerIp = options.maxPerIp;
    this.#log = options.log;
    this.#logIntervalMs = options.logIntervalMs ?? REFUSAL_LOG_INTERVAL_MS;
  }

  /** Unauthenticated connections counted now (proxy-wide). */
  get unauthenticated(): number {
    return this.#total;
  }

  /** Unauthenticated connections counted now from `address`. */
  countFor(address: string): number {
    return this.#perIp.get(normalizeAddress(address)) ?? 0;
  }

  /** Addresses with at least one connection counted (the size of the per-address map). */
  get addresses(): number {
    return this.#perIp.size;
  }

  /** Counts a connection just accepted from `address`, or tells why it must be refused. */
  admit(address: string): Admission | Refusal {
    const ip = normalizeAddress(address);
    const mine = this.#perIp.get(ip) ?? 0;
    if (mine >= this.#maxPerIp) return this.#refuse('policy-violation', ip);
    if (this.#total >= this.#maxTotal) return this.#refuse('resource-constraint', ip);
    this.#perIp.set(ip, mine + 1);
    this.#total++;
    let held = true;
    return {
      address: ip,
      acceptedAt: Date.now(),
      release: () => {
        if (!held) return;
        held = false;
        this.#total--;
        const left = (this.#perIp.get(ip) ?? 1) - 1;
        if (left <= 0) this.#perIp.delete(ip);
        else this.#perIp.set(ip, left);
      },
    };
  }

  /** Stops the summary timer (the proxy is closing). */
  close(): void {
    clearTimeout(this.#logTimer);
    this.#logTimer = undefined;
  }

  #refuse(condition: Refusal['refused'], ip: string): Refusal {
    this.#refused[condition]++;
    this.#refused.lastAddress = ip;
    if (!this.#logTimer) this.#flushLog();
    return { refused: condition };
  }

  /** Logs the refusals since the last line, if any, and keeps logging every interval while they go on. */
  readonly #flushLog = (): void => {
    const perIp = this.#refused['policy-violation'];
    const total = this.#refused['resource-constraint'];
    if (perIp + total === 0) {
      this.#logTimer = undefined;
      return;
    }
    this.#log.warn(
      {
        refusedPerIpLimit: perIp,
        refusedTotalLimit: total,
        lastAddress: this.#refused.lastAddress,
        unauthenticated: this.#total,
        maxUnauthenticated: this.#maxTotal,
        maxUnauthenticatedPerIp: this.#maxPerIp,
      },
      `refused ${perIp + total} client connection(s) over the unauthenticated-connection limits (the next count in ${this.#logIntervalMs / 1000} s if more come)`,
    );
    this.#refused = { 'policy-violation': 0, 'resource-constraint': 0, lastAddress: '' };
    this.#logTimer = setTimeout(this.#flushLog, this.#logIntervalMs);
    this.#logTimer.unref();
  };
}

/** `::ffff:192.0.2.1` (an IPv4 client on a dual-stack listener) counts as `192.0.2.1`. */
export function normalizeAddress(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith('::ffff:') && lower.includes('.') ? lower.slice(7) : lower;
}
