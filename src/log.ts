/**
 * The proxy's logger: pino, JSON lines on stdout (through {@link LineSink}, which never blocks,
 * throws or retries forever when stdout is gone or stuck).
 *
 * Secrets and resumption ids must never reach a log (design.md §4.1: credentials are "never
 * logged"; an SM resumption id lets whoever holds it take over a session). Fields with the names
 * in {@link REDACT_PATHS} are replaced by `"[redacted]"` at the top level and up to three levels
 * deep (`log.info({ config })` included). Redaction works on object fields only: never put a
 * secret or a resumption id into the message string itself.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';
import type { Config } from './config/config.ts';

/** pino's Logger, the type every module takes. */
export type Logger = PinoLogger;

/** Field names whose values are secret (passwords, SASL state) or session-stealing (SM ids). */
export const SECRET_FIELDS: readonly string[] = [
  'password',
  'pkcs12Password',
  'saltedPassword',
  'credential',
  'credentials',
  'previd',
  'resumeId',
];

/** pino `redact` paths built from {@link SECRET_FIELDS}: `x`, `*.x`, `*.*.x`, `*.*.*.x`. */
export const REDACT_PATHS: readonly string[] = SECRET_FIELDS.flatMap((f) => [
  f,
  `*.${f}`,
  `*.*.${f}`,
  `*.*.*.${f}`,
]);

/** Bytes a {@link LineSink} lets queue in its stream before it drops lines. */
export const MAX_BUFFERED_BYTES = 1 << 20;

/** The subset of a Node Writable that {@link LineSink} uses. */
export interface SinkStream {
  write(chunk: string): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  readonly writableLength: number;
  readonly destroyed?: boolean;
}

/**
 * Where log lines (and the demo's text) go: a Node stream, normally `process.stdout`, written so
 * that its state can never hang, crash or busy the process.
 *
 * Why not pino's default destination (sonic-boom on fd 1): when the reader of a stdout pipe is
 * gone (`proxy | tee log`, then Ctrl-C kills tee), a write fails with EPIPE. sonic-boom only
 * stops writing once the callback of a failed asynchronous write has run; a line logged just
 * before `process.exit()` (the "stopped" line) is instead written by pino's 'exit' hook with
 * sonic-boom's `flushSync()`, whose loop sleeps 100 ms and retries after any error other than an
 * EAGAIN it is told to give up on: with EPIPE, forever, on the main thread. The process then
 * never exits and, its event loop being blocked, no longer acts on SIGINT/SIGTERM (whose
 * handlers replaced the default action): only SIGKILL ends it. EAGAIN (a reader alive but not
 * reading) is retried forever the same way.
 *
 * Here nothing is ever written synchronously at exit and nothing is retried: `process.stdout`
 * on a pipe is a non-blocking libuv stream whose writes are queued in memory. On a stream error
 * (EPIPE, EBADF, ENOSPC...) the sink is broken and drops every later line; while more than
 * `maxBufferedBytes` wait for a slow or stuck reader, new lines are dropped; `write()` never
 * throws. Lines still queued at `process.exit()` are lost: {@link drain} waits (bounded) first.
 */
export class LineSink implements DestinationStream {
  /** Lines dropped because the stream was broken or its queue full. */
  dropped = 0;
  /** The error that broke the stream, if one did. */
  error: Error | undefined;

  constructor(
    private readonly stream: SinkStream,
    private readonly maxBufferedBytes: number = MAX_BUFFERED_BYTES,
  ) {
    stream.on('error', (err) => {
      this.error ??= err;
    });
  }

  /** Whether the stream failed (or was destroyed): nothing is written any more. */
  get broken(): boolean {
    return this.error !== undefined || this.stream.destroyed === true;
  }

  /** Queues `line` (a complete line, newline included), or drops it; never throws. */
  write(line: string): void {
    if (this.broken || this.stream.writableLength > this.maxBufferedBytes) {
      this.dropped++;
      return;
    }
    try {
      this.stream.write(line);
    } catch (err) {
      // A synchronous stream (a file) can throw; a stdout we cannot write to is not the caller's problem.
      this.error ??= err instanceof Error ? err : new Error(String(err));
      this.dropped++;
    }
  }

  /**
   * Resolves once every queued line has been handed to the OS, or the stream broke, or after
   * `timeoutMs`, whichever is first. Never rejects. Call it before `process.exit()`.
   */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.broken && this.stream.writableLength > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

let stdout: LineSink | undefined;

/** The process-wide {@link LineSink} on `process.stdout` (one, so one 'error' listener). */
export function stdoutSink(): LineSink {
  stdout ??= new LineSink(process.stdout);
  return stdout;
}

/**
 * Creates the root logger at `level` (one of pino's levels; `'silent'` logs nothing), writing
 * JSON lines to stdout through {@link stdoutSink}, or to `destination` if given (tests pass a
 * stream to inspect output). Secret fields are redacted (see {@link REDACT_PATHS}).
 */
export function createLogger(
  level: Config['log']['level'],
  destination: DestinationStream = stdoutSink(),
): Logger {
  const options = {
    name: 'xmpp-sm-proxy',
    level,
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
  };
  return pino(options, destination);
}
