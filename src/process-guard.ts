/**
 * Process-level guards shared by the production entry point (`src/cli.ts`) and the demo
 * (`scripts/demo.ts`): a last-resort handler for errors nobody caught, and shutdown on
 * SIGINT/SIGTERM that always ends the process within a bounded time.
 */
import { DEFAULTS } from './config/config.ts';
import { stdoutSink, type LineSink, type Logger } from './log.ts';

/**
 * How long a shutdown may take before the process exits anyway (exit code 1), unless the caller
 * gives its own deadline: the default of the config's `shutdown.timeoutSeconds` (10 s), in ms.
 */
export const SHUTDOWN_DEADLINE_MS = DEFAULTS.shutdown.timeoutSeconds * 1000;
/** At most this long is spent writing queued log lines out before exiting. */
const DRAIN_MS = 1_000;

let crashGuardInstalled = false;

/**
 * Installs `unhandledRejection` and `uncaughtException` handlers that log the error at `error`
 * level (with its stack) and let the process run on. Idempotent.
 *
 * Why never exit here: every async path in the proxy has its own owner (the client stream, the
 * session, the upstream link, the listener) that handles its errors and ends only what it owns.
 * An error reaching these handlers is therefore a bug in one of those paths, usually affecting
 * one session; Node's default (print and exit) would turn it into every session being dropped
 * at once. This only catches such a bug, so that one session's bug cannot take every session
 * down; the log line is what gets it fixed.
 */
export function installCrashGuard(log: Logger): void {
  if (crashGuardInstalled) return;
  crashGuardInstalled = true;
  const report = (what: string, value: unknown, origin?: string): void => {
    const err = value instanceof Error ? value : new Error(`non-Error value: ${String(value)}`);
    try {
      log.error({ err, origin }, `${what} (a bug; the process keeps running)`);
    } catch {
      // The logger does not throw (LineSink drops instead); if it did, there is nowhere left to report to.
    }
  };
  process.on('unhandledRejection', (reason) => report('unhandled promise rejection', reason));
  process.on('uncaughtException', (err, origin) => report('uncaught exception', err, origin));
}

/** Options for {@link exitOnSignals}. */
export interface ShutdownOptions {
  log: Logger;
  /**
   * Stops what runs; resolves to the exit code (0 for a clean stop). A rejection is logged and
   * exits 1. Called once, for the first signal.
   */
  stop(signal: NodeJS.Signals): Promise<number>;
  /** Signals that stop the process. Default SIGINT and SIGTERM. */
  signals?: readonly NodeJS.Signals[];
  /** Hard deadline for `stop` (default {@link SHUTDOWN_DEADLINE_MS}); then exit 1 anyway. */
  deadlineMs?: number;
  /** Where the log lines go, drained (bounded) before exiting. Default {@link stdoutSink}. */
  sink?: LineSink;
}

/**
 * Makes the process exit on the first of `signals`: logs "stopping", runs `stop`, writes out
 * queued log lines (for at most 1 s) and exits with `stop`'s code. Whatever state `stop`, the
 * sessions or stdout are in, the process exits: after `deadlineMs` with code 1 (the timer is
 * unref'd, so it never keeps an otherwise finished process alive), and at once with code 1 on a
 * second signal. Nothing on this path writes synchronously to stdout or retries a write, so a
 * stdout whose reader is gone or stuck cannot hold it up (see {@link LineSink}).
 */
export function exitOnSignals(opts: ShutdownOptions): void {
  const { log, stop } = opts;
  const signals = opts.signals ?? ['SIGINT', 'SIGTERM'];
  const deadlineMs = opts.deadlineMs ?? SHUTDOWN_DEADLINE_MS;
  const sink = opts.sink ?? stdoutSink();
  let stopping = false;
  let exiting = false;

  const exit = async (code: number, drainMs: number): Promise<void> => {
    if (exiting) return;
    exiting = true;
    await sink.drain(drainMs);
    process.exit(code);
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal, exiting without waiting');
      process.exit(1);
    }
    stopping = true;
    const started = Date.now();
    log.info({ signal, deadlineMs }, 'stopping');
    setTimeout(() => {
      log.error({ signal, deadlineMs }, 'not stopped within the deadline, exiting anyway');
      process.exit(1);
    }, deadlineMs).unref();
    // Promise.resolve().then: a stop() that throws synchronously is handled like a rejection.
    Promise.resolve()
      .then(() => stop(signal))
      .then(
        (code) => code,
        (err: unknown) => {
          log.error({ err }, 'error while stopping');
          return 1;
        },
      )
      .then((code) => exit(code, Math.max(0, Math.min(DRAIN_MS, deadlineMs - (Date.now() - started)))));
  };
  for (const signal of signals) process.on(signal, onSignal);
}
