import t from 'tap';
import { chooseMechanism, startExchange, verifyPassword } from '../../src/upstream/sasl.ts';

t.test('the best mechanism the server offers: SCRAM-SHA-256, then SCRAM-SHA-1, then PLAIN; never -PLUS', async (t) => {
  // What ejabberd 23.01 offers after STARTTLS (test/harness/ejabberd.test.ts).
  const ejabberd = ['DIGEST-MD5', 'PLAIN', 'SCRAM-SHA-512-PLUS', 'SCRAM-SHA-512', 'SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256', 'SCRAM-SHA-1-PLUS', 'SCRAM-SHA-1', 'X-OAUTH2'];
  t.equal(chooseMechanism(ejabberd, true), 'SCRAM-SHA-256');
  t.equal(chooseMechanism(['PLAIN', 'SCRAM-SHA-1'], true), 'SCRAM-SHA-1', "Prosody's default");
  t.equal(chooseMechanism(['SCRAM-SHA-1-PLUS', 'PLAIN'], true), 'PLAIN', 'channel binding cannot cross the proxy');
  t.equal(chooseMechanism(['PLAIN'], false), undefined, 'no PLAIN on a clear-text link');
});

t.test('a re-login runs a fresh exchange from the kept password (a new salt each time is fine)', async (t) => {
  const cred = { username: 'alice', password: 'pencil' };
  const a = startExchange('SCRAM-SHA-256', cred);
  const b = startExchange('SCRAM-SHA-256', cred);
  const first = a.initial();
  t.not(first, b.initial(), 'a new client nonce per exchange');
  t.match(first, /^n,,n=alice,r=/);
  t.equal(startExchange('PLAIN', cred).initial(), '\0alice\0pencil');
});

t.test('verifyPassword compares with the kept password', async (t) => {
  const cred = { username: 'alice', password: 'pencil' };
  t.equal(verifyPassword(cred, 'pencil'), true);
  t.equal(verifyPassword(cred, 'pencil2'), false);
  t.equal(verifyPassword(cred, ''), false);
  t.equal(verifyPassword({ username: 'alice', password: '' }, ''), false, 'a forgotten credential matches nothing');
});
