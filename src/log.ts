/**
 * The proxy's logger: pino, JSON lines on stdout.
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

/**
 * Creates the root logger at `level` (one of pino's levels; `'silent'` logs nothing), writing
 * JSON lines to stdout, or to `destination` if given (tests pass a stream to inspect output).
 * Secret fields are redacted (see {@link REDACT_PATHS}).
 */
export function createLogger(
  level: Config['log']['level'],
  destination?: DestinationStream,
): Logger {
  const options = {
    name: 'xmpp-sm-proxy',
    level,
    redact: { paths: [...REDACT_PATHS], censor: '[redacted]' },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}
