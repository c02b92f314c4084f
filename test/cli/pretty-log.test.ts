// The demo's human-readable log lines (scripts/pretty-log.ts): one line per record with the time,
// the level name, the message and the fields; secrets redacted as in the JSON lines; an error's
// stack below its line; a line it cannot format passes unchanged; nothing throws.
import t from 'tap';
import { createLogger } from '../../src/log.ts';
import { formatRecord, prettyDestination } from '../../scripts/pretty-log.ts';

/** A logger at `level` writing pretty lines into the returned array (no colours). */
function capture(level: 'info' | 'debug' = 'info') {
  const out: string[] = [];
  const log = createLogger(level, prettyDestination({ write: (s: string) => void out.push(s) }, false));
  return { log, out };
}

const TIME = String.raw`\[\d\d:\d\d:\d\d\.\d{3}\]`;

t.test('one line: [time] LEVEL: message key=value ..., no JSON record', async (t) => {
  const { log, out } = capture();
  log.info({ starttls: [5222], upstream: '127.0.0.1:15222', note: 'two words', n: 3 }, 'proxy listening');
  log.child({ session: 's1' }).warn('a warning');
  log.debug('not at info');
  t.equal(out.length, 2, 'one write per record at or above the level');
  t.match(out[0], new RegExp(`^${TIME} INFO: proxy listening starttls=\\[5222\\] upstream=127\\.0\\.0\\.1:15222 note="two words" n=3\\n$`));
  t.match(out[1], new RegExp(`^${TIME} WARN: a warning session=s1\\n$`));
  for (const line of out) t.notMatch(line, /"level"|"msg"|"pid"|"hostname"/, 'none of pino\'s JSON keys');
});

t.test('secret fields are redacted, at the top level and nested', async (t) => {
  const { log, out } = capture();
  log.info({ password: 'hunter2', user: { credentials: 'c-secret', name: 'alice' }, resumeId: 'r-secret' }, 'login');
  t.equal(out.length, 1);
  t.notMatch(out[0], /hunter2|c-secret|r-secret/, 'no secret value');
  t.match(out[0], 'password=[redacted]');
  t.match(out[0], 'user={"credentials":"[redacted]","name":"alice"}');
  t.match(out[0], 'resumeId=[redacted]');
});

t.test("an error: its own fields on the line, its stack indented below", async (t) => {
  const { log, out } = capture();
  const err = Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE' });
  log.error({ err, port: 5222 }, 'cannot listen');
  const lines = out.join('').split('\n');
  t.match(lines[0], new RegExp(`^${TIME} ERROR: cannot listen port=5222 err\\.code=EADDRINUSE$`));
  t.equal(lines[1], '    Error: listen EADDRINUSE', 'the stack, indented');
  t.match(lines[2], /^ {8}at /, 'its frames');
});

t.test('formatRecord: no message, odd err values', async (t) => {
  t.equal(formatRecord({ level: 30, time: 1, k: 1 }), 'k=1', 'fields alone');
  t.equal(formatRecord({ msg: 'm', err: 'text' }), 'm err=text');
  t.equal(formatRecord({ msg: 'm', err: null }), 'm err=null');
  t.equal(formatRecord({ msg: 'm', err: { message: 'no stack' } }), 'm err={"message":"no stack"}');
});

t.test('a line that is not a pino record is written unchanged; write never throws', async (t) => {
  const out: string[] = [];
  const dest = prettyDestination({ write: (s: string) => void out.push(s) }, false);
  t.doesNotThrow(() => dest.write('not json\n'));
  t.doesNotThrow(() => dest.write('{"level":30,"msg":\n'));
  t.same(out, ['not json\n', '{"level":30,"msg":\n']);
});
