import t from 'tap';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log.ts';

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
