/**
 * Notices a peer whose network died silently (issue 10 B): an attached client whose phone lost
 * its network sends no FIN or RST, and without a read timeout its stream would stay attached
 * for ever, so its session would neither hibernate nor end.
 *
 * After `idleMs` with no input at all, the peer is probed once (`probe()`: an XEP-0198 `<r/>` or
 * an XEP-0199 ping, the caller's choice); input within `probeTimeoutMs` after that (any input,
 * the answer or anything else) shows it is alive, none means it has vanished (`vanished()`,
 * once; the monitor stops). This is Prosody's network_settings.read_timeout followed by its
 * c2s ping/`<r/>` and a wait of mod_smacks' max_ack_delay.
 *
 * Cost: nothing per chunk of input. The monitor reads a count the socket keeps anyway
 * (`socket.bytesRead`) on a timer that ticks {@link TICKS_PER_IDLE} times per `idleMs`; the
 * probe goes out once the count has not moved for that many ticks in a row, so after between
 * `idleMs` and 1.25 × `idleMs` of silence. One timer per stream, unref'd (it never keeps the
 * process alive) and cleared by {@link stop}.
 */
export interface LivenessOptions {
  /** Silence (ms) after which the peer is probed (config: `limits.readTimeoutSeconds`). */
  idleMs: number;
  /** How long (ms) the probed peer has to send anything (config: `sm.maxAckDelaySeconds`). */
  probeTimeoutMs: number;
  /** A count that grows with every input received (e.g. `socket.bytesRead`); read on ticks only. */
  inputCount(): number;
  /** Sends the probe (called once per silence). */
  probe(): void;
  /** The peer sent nothing within `probeTimeoutMs` of the probe: it is gone. */
  vanished(): void;
}

/** Timer ticks per idle period (see {@link LivenessMonitor}). */
export const TICKS_PER_IDLE = 4;

export class LivenessMonitor {
  readonly #options: LivenessOptions;
  readonly #tickMs: number;
  #timer: NodeJS.Timeout | undefined;
  #lastCount: number;
  /** Consecutive ticks without input. */
  #quietTicks = 0;
  /** A probe is out and unanswered. */
  #probing = false;
  #stopped = false;

  /** Starts watching at once: the silence counts from now. */
  constructor(options: LivenessOptions) {
    this.#options = options;
    this.#tickMs = Math.max(1, options.idleMs / TICKS_PER_IDLE);
    this.#lastCount = options.inputCount();
    this.#arm(this.#tickMs);
  }

  /** True from the probe until input arrives (or the peer is declared gone). */
  get probing(): boolean {
    return this.#probing;
  }

  /** Stops for good (the stream closed or was released); idempotent. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(this.#tick, ms);
    this.#timer.unref();
  }

  readonly #tick = (): void => {
    this.#timer = undefined;
    if (this.#stopped) return;
    const count = this.#options.inputCount();
    if (count !== this.#lastCount) {
      this.#lastCount = count;
      this.#quietTicks = 0;
      this.#probing = false;
      return this.#arm(this.#tickMs);
    }
    if (this.#probing) {
      this.stop();
      return this.#options.vanished();
    }
    if (++this.#quietTicks < TICKS_PER_IDLE) return this.#arm(this.#tickMs);
    this.#probing = true;
    this.#arm(this.#options.probeTimeoutMs);
    this.#options.probe();
  };
}
