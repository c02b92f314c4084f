// Logs an operator can follow a session by (issue 11.8): stream management enable at info, and
// after a resume from a new connection the session's lines name the new connection's `remote`.
import t from 'tap';
import { Writable } from 'node:stream';
import pino from 'pino';
import { startProsodyAndProxy, waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';

interface Line {
  level: number;
  msg: string;
  remote?: string;
  resource?: string;
  resume?: boolean;
}

const lines: Line[] = [];
const sink = new Writable({
  write(chunk: Buffer, _enc, done) {
    for (const text of chunk.toString('utf8').split('\n')) if (text) lines.push(JSON.parse(text) as Line);
    done();
  },
});
const { tp } = await startProsodyAndProxy(t, {}, {}, pino({ level: 'info' }, sink));

const INFO = 30;
const SM = 'urn:xmpp:sm:3';

function lineOf(msg: RegExp, resource: string): Line | undefined {
  return lines.find((l) => l.resource === resource && msg.test(l.msg));
}

t.test('enable at info; after a resume the session names the new connection', async (t) => {
  const { client: first } = await RawClient.login({ port: tp.port, user: 'alice', password: 'alice-pw', resource: 'logs' });
  const firstRemote = `127.0.0.1:${first.socket.localPort}`;
  first.send(`<enable xmlns='${SM}' resume='true'/>`);
  const enabled = await first.next((el) => el.name === 'enabled');
  const session = [...tp.proxy.sessions].find((s) => s.fullJid === 'alice@proxy.test/logs')!;

  await waitFor(() => lineOf(/^stream management enabled$/, 'logs') !== undefined, 'the enable line');
  const enable = lineOf(/^stream management enabled$/, 'logs')!;
  t.equal(enable.level, INFO, 'enable is logged at info');
  t.equal(enable.resume, true, 'with resume: true');
  t.equal(enable.remote, firstRemote, 'naming the connection that enabled it');

  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  first.destroy();
  await hibernating;
  t.equal(lineOf(/^client vanished/, 'logs')?.remote, firstRemote, 'hibernation names the vanished connection');

  const second = await RawClient.authenticated({ port: tp.port, user: 'alice', password: 'alice-pw' });
  const secondRemote = `127.0.0.1:${second.socket.localPort}`;
  t.not(secondRemote, firstRemote);
  second.send(`<resume xmlns='${SM}' previd='${enabled.attrs.id}' h='0'/>`);
  t.equal((await second.next((el) => el.name === 'resumed' || el.name === 'failed')).name, 'resumed');

  await waitFor(() => lineOf(/^session resumed$/, 'logs') !== undefined, 'the resume line');
  const resumed = lineOf(/^session resumed$/, 'logs')!;
  t.equal(resumed.level, INFO, 'resume is logged at info');
  t.equal(resumed.remote, secondRemote, "'session resumed' names the new connection");

  second.send('</stream:stream>');
  await waitFor(() => lineOf(/^session ended/, 'logs') !== undefined, 'the end line');
  const ended = lineOf(/^session ended/, 'logs')!;
  t.equal(ended.level, INFO, 'the end is logged at info');
  t.equal(ended.remote, secondRemote, 'the end names the new connection');
  second.destroy();
});
