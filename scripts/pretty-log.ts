/**
 * Human-readable log lines for the demo (scripts/demo.ts), through pino-pretty (a
 * devDependency: the installed `xmpp-sm-proxy` command keeps JSON lines, src/log.ts).
 *
 * One line per record, `[HH:MM:ss.mmm] LEVEL: message key=value ...`, then the stack of an
 * `err` field, if any, indented below it. The records are pino's JSON lines, formatted after
 * pino has redacted them, so secret fields read `[redacted]` here too (src/log.ts).
 *
 * pino-pretty runs in this thread, on each line as pino writes it (its `prettyFactory`), not as
 * a pino transport: a transport is a worker thread that pino flushes synchronously at exit, which
 * is what {@link LineSink} exists to avoid (a gone or stuck stdout must never hang the demo).
 */
import type { DestinationStream } from 'pino';
import { prettyFactory } from 'pino-pretty';
import type { LineSink } from '../src/log.ts';

/** pino's own keys, and the ones shown elsewhere on the line (time, level, message). */
const NOT_FIELDS = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'err']);

/** `value` as the right-hand side of `key=value`: a plain word bare, anything else as JSON. */
function fieldValue(value: unknown): string {
  if (typeof value === 'string' && /^[^\s"=]+$/.test(value)) return value;
  return JSON.stringify(value) ?? String(value);
}

/**
 * The text after `LEVEL: ` for one parsed pino record: its message, then its other fields as
 * `key=value` in their order, space-separated; an `err` field with a stack adds its own fields
 * as `err.key=value` and its stack on the lines below, indented by 4 spaces.
 */
export function formatRecord(record: Record<string, unknown>): string {
  const parts = typeof record.msg === 'string' ? [record.msg] : [];
  for (const [key, value] of Object.entries(record)) {
    if (!NOT_FIELDS.has(key)) parts.push(`${key}=${fieldValue(value)}`);
  }
  const err = record.err;
  if (err === undefined) return parts.join(' ');
  if (err === null || typeof err !== 'object' || typeof (err as { stack?: unknown }).stack !== 'string') {
    return [...parts, `err=${fieldValue(err)}`].join(' ');
  }
  // pino's error serializer: type, message and stack, plus the error's own fields (code, errno...).
  const { stack, type: _type, message: _message, ...more } = err as Record<string, unknown>;
  for (const [key, value] of Object.entries(more)) parts.push(`err.${key}=${fieldValue(value)}`);
  return `${parts.join(' ')}\n    ${(stack as string).split('\n').join('\n    ')}`;
}

/**
 * A pino destination that turns each JSON line into the human-readable form above and writes it
 * to `sink` (normally `stdoutSink()`). `colorize` colours the level (default: pino-pretty's
 * guess, i.e. whether stdout is a colour terminal and NO_COLOR is unset). Never throws: a line
 * pino-pretty cannot format is written unchanged.
 */
export function prettyDestination(sink: Pick<LineSink, 'write'>, colorize?: boolean): DestinationStream {
  const prettify = prettyFactory({
    ...(colorize === undefined ? {} : { colorize }),
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,name',
    hideObject: true, // the fields are on the message line (formatRecord)
    messageFormat: (record) => formatRecord(record),
  });
  return {
    write(line: string): void {
      let text: string;
      try {
        // pino's line ends in a newline; pino-pretty adds its own (and keeps ours on a line it cannot parse).
        text = prettify(line.endsWith('\n') ? line.slice(0, -1) : line);
      } catch {
        text = line;
      }
      sink.write(text);
    },
  };
}
