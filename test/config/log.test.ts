import t from 'tap';
import { Writable } from 'node:stream';
import { createLogger, LineSink } from '../../src/log.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { lines, stream };
}

t.test('secrets and resumption ids are redacted', async (t) => {
  const { lines, stream } = capture();
  const log = createLogger('info', stream);
  log.info(
    {
      password: 'pw0',
      config: { tls: { pkcs12Password: 'pw1', pkcs12File: '/etc/s.p12' } },
      resume: { previd: 'id1', h: 5 },
      session: { sm: { resumeId: 'id2' } },
      deep: { a: { b: { previd: 'id3' } } },
      jid: 'u@a.test/r',
    },
    'hello',
  );
  t.equal(lines.length, 1);
  const text = JSON.stringify(lines[0]);
  for (const secret of ['pw0', 'pw1', 'id1', 'id2', 'id3']) t.notMatch(text, secret, `${secret} not logged`);
  t.match(lines[0], {
    password: '[redacted]',
    config: { tls: { pkcs12Password: '[redacted]', pkcs12File: '/etc/s.p12' } },
    resume: { previd: '[redacted]', h: 5 },
    session: { sm: { resumeId: '[redacted]' } },
    deep: { a: { b: { previd: '[redacted]' } } },
    jid: 'u@a.test/r',
    msg: 'hello',
  });
});

t.test('level is honoured', async (t) => {
  const { lines, stream } = capture();
  const log = createLogger('warn', stream);
  log.info('dropped');
  log.warn('kept');
  t.same(lines.map((l) => l.msg), ['kept']);
  const silent = capture();
  createLogger('silent', silent.stream).fatal('nothing');
  t.equal(silent.lines.length, 0);
});

// LineSink: the logger's destination must never block, throw or retry forever, whatever state
// stdout is in (the demo hung on a stdout pipe whose reader was gone).

/** A Writable that accepts `accept` writes, then fails every later one with `code` (like EPIPE). */
function failingStream(code: string, accept = 0) {
  const written: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      if (written.length < accept) {
        written.push(String(chunk));
        cb();
      } else cb(Object.assign(new Error(`write ${code}`), { code }));
    },
  });
  return { written, stream };
}

t.test('LineSink: after a stream error (EPIPE) every line is dropped, nothing throws', async (t) => {
  const { written, stream } = failingStream('EPIPE', 1);
  const sink = new LineSink(stream);
  const log = createLogger('info', sink);
  log.info('first');
  log.info('second'); // fails: the reader is gone
  await new Promise((r) => setImmediate(r));
  t.equal(sink.broken, true, 'broken');
  t.match(sink.error, { code: 'EPIPE' });
  for (let i = 0; i < 100; i++) log.info('more');
  t.equal(written.length, 1, 'only the line before the error was written');
  t.ok(sink.dropped >= 100, `lines dropped (${sink.dropped})`);
  await sink.drain(10_000); // returns at once: a broken stream is never waited for
});

t.test('LineSink: a stream whose write throws synchronously does not throw to the logger', async (t) => {
  const stream = {
    writableLength: 0,
    write(): never {
      throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    },
    on() {
      return this;
    },
  };
  const sink = new LineSink(stream);
  const log = createLogger('info', sink);
  t.doesNotThrow(() => log.info('x'));
  t.doesNotThrow(() => log.error('y'));
  t.equal(sink.broken, true);
  t.equal(sink.dropped, 2);
});

t.test('LineSink: a stuck reader makes it drop lines past the limit, and drain() gives up', async (t) => {
  // Never calls back: like a pipe whose reader stopped reading.
  const stream = new Writable({ highWaterMark: 1, write() {} });
  const sink = new LineSink(stream, 10_000);
  const log = createLogger('info', sink);
  const filler = 'x'.repeat(1000);
  for (let i = 0; i < 100; i++) log.info({ filler }, 'line');
  t.ok(stream.writableLength <= 10_000 + 2000, `queue bounded (${stream.writableLength} bytes)`);
  t.ok(sink.dropped > 80, `lines dropped (${sink.dropped})`);
  t.equal(sink.broken, false, 'not broken: the reader may come back');
  await sink.drain(50); // resolves although nothing drains (a must-end guard: tap's timeout)
});

t.test('LineSink: drain() waits for queued lines to be written', async (t) => {
  const written: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      setTimeout(() => {
        written.push(String(chunk));
        cb();
      }, 20);
    },
  });
  const sink = new LineSink(stream);
  sink.write('a\n');
  sink.write('b\n');
  await sink.drain(10_000);
  t.same(written, ['a\n', 'b\n']);
});
