/**
 * The SCRAM client (src/upstream/scram.ts): the RFC 5802 §5 and RFC 7677 §3 examples byte for
 * byte, every way a server message can be refused, username escaping and SASLprep, and live
 * logins against a real Prosody (SCRAM-SHA-1 with its default store, SCRAM-SHA-256 with
 * `password_hash = "SHA-256"`) over a plain socket, server signature verified.
 */
import t, { type Test } from 'tap';
import { RawClient } from '../harness/raw-client.ts';
import { startProsody, type ProsodyInstance } from '../harness/prosody.ts';
import { MAX_ITERATIONS, SCRAM_MECHANISMS, ScramClient, ScramError, type ScramMechanism } from '../../src/upstream/scram.ts';

/** RFC 5802 §5: SCRAM-SHA-1, user 'user', password 'pencil'. */
const SHA1 = {
  nonce: 'fyko+d2lbbFgONRv9qkxdawL',
  clientFirst: 'n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL',
  serverFirst: 'r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096',
  clientFinal: 'c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=',
  serverFinal: 'v=rmF9pqV8S7suAoZWja4dJRkFsKQ=',
};

/** RFC 7677 §3: SCRAM-SHA-256, user 'user', password 'pencil'. */
const SHA256 = {
  nonce: 'rOprNGfwEbeRWgbNEkqO',
  clientFirst: 'n,,n=user,r=rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal: 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};

/** A SHA-1 client on the RFC 5802 example, past clientFirst(). */
function rfc5802Client(password = 'pencil', username = 'user'): ScramClient {
  const c = new ScramClient('SCRAM-SHA-1', username, password, SHA1.nonce);
  c.clientFirst();
  return c;
}

/** Asserts `fn` rejects with a ScramError whose message matches `re`; returns it. */
async function scramError(t: Test, fn: () => unknown, re: RegExp): Promise<ScramError> {
  try {
    await fn();
  } catch (err) {
    t.type(err, ScramError, `ScramError: ${(err as Error).message}`);
    t.match((err as Error).message, re);
    return err as ScramError;
  }
  t.fail(`expected a ScramError matching ${re}`);
  return new ScramError('none');
}

t.test('SCRAM_MECHANISMS lists SHA-256 before SHA-1', async (t) => {
  t.same([...SCRAM_MECHANISMS], ['SCRAM-SHA-256', 'SCRAM-SHA-1']);
});

t.test('RFC 5802 §5 example (SCRAM-SHA-1), byte for byte', async (t) => {
  const c = new ScramClient('SCRAM-SHA-1', 'user', 'pencil', SHA1.nonce);
  t.equal(c.clientFirst(), SHA1.clientFirst);
  t.equal(await c.clientFinal(SHA1.serverFirst), SHA1.clientFinal);
  t.doesNotThrow(() => c.verifyServerFinal(SHA1.serverFinal));
});

t.test('RFC 7677 §3 example (SCRAM-SHA-256), byte for byte', async (t) => {
  const c = new ScramClient('SCRAM-SHA-256', 'user', 'pencil', SHA256.nonce);
  t.equal(c.clientFirst(), SHA256.clientFirst);
  t.equal(await c.clientFinal(SHA256.serverFirst), SHA256.clientFinal);
  t.doesNotThrow(() => c.verifyServerFinal(SHA256.serverFinal));
});

t.test('server signature: tampered, truncated, missing or malformed is refused', async (t) => {
  const flipped = Buffer.from(SHA1.serverFinal.slice(2), 'base64');
  flipped[19]! ^= 1;
  const finals: Array<[string, RegExp]> = [
    [`v=${flipped.toString('base64')}`, /does not verify/],
    [`v=${Buffer.from(SHA1.serverFinal.slice(2), 'base64').subarray(0, 19).toString('base64')}`, /does not verify/],
    // The SHA-256 example's signature is the right shape for another exchange, not for this one.
    [SHA256.serverFinal, /does not verify/],
    ['v=', /lacks a base64 v=/],
    ['v=not base64!', /lacks a base64 v=/],
    ['x=abcd', /lacks a base64 v=/],
    ['', /malformed/],
  ];
  for (const [final, re] of finals) {
    const c = rfc5802Client();
    await c.clientFinal(SHA1.serverFirst);
    await scramError(t, () => c.verifyServerFinal(final), re);
  }
  // Extensions after v= are allowed (RFC 5802 §7 server-final-message).
  const c = rfc5802Client();
  await c.clientFinal(SHA1.serverFirst);
  t.doesNotThrow(() => c.verifyServerFinal(`${SHA1.serverFinal},x=future`));
});

t.test('server-final e= becomes a ScramError carrying the server reason', async (t) => {
  const c = rfc5802Client();
  await c.clientFinal(SHA1.serverFirst);
  const err = await scramError(t, () => c.verifyServerFinal('e=invalid-proof'), /invalid-proof/);
  t.equal(err.serverError, 'invalid-proof');

  // A hostile reason is made printable and bounded before it reaches a log.
  const d = rfc5802Client();
  await d.clientFinal(SHA1.serverFirst);
  const nasty = await scramError(t, () => d.verifyServerFinal(`e=bad\nline\u0000${'x'.repeat(500)}`), /bad\?line\?/);
  t.equal(nasty.serverError?.length, 100);
});

t.test('server nonce must start with the client nonce', async (t) => {
  for (const r of ['3rfcNHYJY1ZVvWVs7j', 'fyko+d2lbbFgONRv9qkxdaw', `x${SHA1.nonce}abc`]) {
    await scramError(t, () => rfc5802Client().clientFinal(`r=${r},s=QSXCR+Q6sek8bf92,i=4096`), /nonce/);
  }
  // RFC 5802 §7: the nonce is `printable`, which excludes controls and non-ASCII.
  await scramError(t, () => rfc5802Client().clientFinal(`r=${SHA1.nonce}\u00e9,s=QSXCR+Q6sek8bf92,i=4096`), /nonce/);
});

t.test('missing, misordered or malformed r=, s=, i= are refused', async (t) => {
  const r = `r=${SHA1.nonce}abc`;
  const cases: Array<[string, RegExp]> = [
    [`${r},i=4096`, /lacks r=, s= and i=/],
    [`${r},s=QSXCR+Q6sek8bf92`, /lacks r=, s= and i=/],
    [`s=QSXCR+Q6sek8bf92,i=4096`, /lacks r=, s= and i=/],
    [`${r},i=4096,s=QSXCR+Q6sek8bf92`, /lacks r=, s= and i=/],
    [`${r},s=,i=4096`, /salt is not base64/],
    [`${r},s=QSXCR+Q6sek8bf9,i=4096`, /salt is not base64/],
    [`${r},s=QSXCR Q6sek8bf92,i=4096`, /salt is not base64/],
    [`${r},s=QSXCR+Q6sek8bf92,i=0`, /not a positive number/],
    [`${r},s=QSXCR+Q6sek8bf92,i=-1`, /not a positive number/],
    [`${r},s=QSXCR+Q6sek8bf92,i=04096`, /not a positive number/],
    [`${r},s=QSXCR+Q6sek8bf92,i=4096x`, /not a positive number/],
    [`${r},s=QSXCR+Q6sek8bf92,i=`, /not a positive number/],
    [`${r},s=QSXCR+Q6sek8bf92,i=${MAX_ITERATIONS + 1}`, /above the limit/],
    [`${r},s=QSXCR+Q6sek8bf92,i=99999999999999999999999`, /above the limit/],
    [`${r},,s=QSXCR+Q6sek8bf92,i=4096`, /malformed/],
    ['', /malformed/],
    ['garbage', /malformed/],
  ];
  for (const [serverFirst, re] of cases) await scramError(t, () => rfc5802Client().clientFinal(serverFirst), re);
});

t.test('extensions after i= are allowed; they are part of AuthMessage', async (t) => {
  const c = rfc5802Client();
  const final = await c.clientFinal(`${SHA1.serverFirst},x=ext`);
  t.match(final, /^c=biws,r=fyko\+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=/);
  t.not(final, SHA1.clientFinal, 'the extension changes the proof');
  await scramError(t, () => c.verifyServerFinal(SHA1.serverFinal), /does not verify/);
});

t.test('a mandatory extension (m=) is refused', async (t) => {
  await scramError(t, () => rfc5802Client().clientFinal(`m=must-understand,${SHA1.serverFirst}`), /mandatory extension/);
});

t.test('e= instead of a server-first-message carries the reason too', async (t) => {
  const err = await scramError(t, () => rfc5802Client().clientFinal('e=unknown-user'), /unknown-user/);
  t.equal(err.serverError, 'unknown-user');
});

t.test('messages out of turn', async (t) => {
  // <success/> before the server saw our proof: a server skipping the check must not pass.
  await scramError(t, () => rfc5802Client().verifyServerFinal(SHA1.serverFinal), /out of turn/);
  // A second challenge.
  const c = rfc5802Client();
  await c.clientFinal(SHA1.serverFirst);
  await scramError(t, () => c.clientFinal(SHA1.serverFirst), /second SCRAM challenge/);
  // An exchange that failed on the server-first-message cannot be continued.
  const d = rfc5802Client();
  await scramError(t, () => d.clientFinal('m=x'), /mandatory/);
  await scramError(t, () => d.clientFinal(SHA1.serverFirst), /second SCRAM challenge/);
  await scramError(t, () => d.verifyServerFinal(SHA1.serverFinal), /out of turn/);
  // A verified exchange is over.
  const e = rfc5802Client();
  await e.clientFinal(SHA1.serverFirst);
  e.verifyServerFinal(SHA1.serverFinal);
  await scramError(t, () => e.verifyServerFinal(SHA1.serverFinal), /out of turn/);
  // Caller bugs are plain Errors.
  const f = new ScramClient('SCRAM-SHA-1', 'user', 'pencil');
  await t.rejects(f.clientFinal(SHA1.serverFirst), { name: 'Error', message: /before clientFirst/ });
  f.clientFirst();
  t.throws(() => f.clientFirst(), { name: 'Error', message: /twice/ });
});

t.test('username: "," and "=" are escaped as =2C and =3D, after SASLprep', async (t) => {
  t.equal(new ScramClient('SCRAM-SHA-1', 'a,b=c', 'x', 'n').clientFirst(), 'n,,n=a=2Cb=3Dc,r=n');
  t.equal(new ScramClient('SCRAM-SHA-1', '=2C,', 'x', 'n').clientFirst(), 'n,,n==3D2C=2C,r=n');
  // SASLprep: soft hyphen mapped to nothing, no-break space to space, NFKC.
  t.equal(new ScramClient('SCRAM-SHA-1', 'us\u00aden\u00a0\u2168', 'x', 'n').clientFirst(), 'n,,n=usen IX,r=n');
  // Unassigned code points are allowed in the username (a query string, RFC 5802 §5.1).
  t.equal(new ScramClient('SCRAM-SHA-1', '\u{1f600}', 'x', 'n').clientFirst(), 'n,,n=\u{1f600},r=n');
  await scramError(t, () => new ScramClient('SCRAM-SHA-1', '\u00ad', 'x'), /empty/);
  await scramError(t, () => new ScramClient('SCRAM-SHA-1', 'bell\u0007', 'x'), /username fails SASLprep/);
  await scramError(t, () => new ScramClient('SCRAM-SHA-1', '\u0627\u0031', 'x'), /username fails SASLprep/);
});

t.test('password: SASLprep gives the prepared form\'s proof (RFC 5802 §2.2 Normalize)', async (t) => {
  for (const password of ['pen\u00adcil', '\u00adpencil\u00ad', 'penc\u200dil']) {
    const c = rfc5802Client(password);
    t.equal(await c.clientFinal(SHA1.serverFirst), SHA1.clientFinal, JSON.stringify(password));
    t.doesNotThrow(() => c.verifyServerFinal(SHA1.serverFinal));
  }
  // U+00A0 and U+2003 are non-ASCII spaces, mapped to U+0020.
  const spaced = async (password: string) => rfc5802Client(password).clientFinal(SHA1.serverFirst);
  const plain = await spaced('pen cil');
  t.equal(await spaced('pen\u00a0cil'), plain);
  t.equal(await spaced('pen\u2003cil'), plain);
  t.not(plain, SHA1.clientFinal);
  // NFKC: U+2168 ROMAN NUMERAL NINE is 'IX'.
  t.equal(await spaced('\u2168'), await spaced('IX'));
  // Only characters mapped to nothing: the empty password (the library alone throws a TypeError here).
  t.equal(await spaced('\u00ad\ufeff'), await spaced(''));
});

t.test('no secret reaches an error message', async (t) => {
  const secret = 'S3cret\u0007';
  const err = await scramError(t, () => new ScramClient('SCRAM-SHA-1', 'user', secret), /password fails SASLprep/);
  t.notMatch(err.message, /S3cret/);
  t.notMatch(String(err.stack), /S3cret/);
  const c = rfc5802Client('S3cret');
  await c.clientFinal(SHA1.serverFirst);
  const bad = await scramError(t, () => c.verifyServerFinal(SHA1.serverFinal), /does not verify/);
  t.notMatch(bad.message, /S3cret/);
});

t.test('client nonce: random, >= 18 bytes, printable', async (t) => {
  const nonces = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const first = new ScramClient('SCRAM-SHA-256', 'user', 'pencil').clientFirst();
    const m = /^n,,n=user,r=([\x21-\x2b\x2d-\x7e]+)$/.exec(first);
    t.ok(m, first);
    t.ok(Buffer.from(m![1]!, 'base64').length >= 18);
    nonces.add(m![1]!);
  }
  t.equal(nonces.size, 20);
  await scramError(t, () => new ScramClient('SCRAM-SHA-1', 'user', 'pencil', 'a,b'), /printable/);
  await scramError(t, () => new ScramClient('SCRAM-SHA-1', 'user', 'pencil', ''), /printable/);
});

t.test('an unknown mechanism name is refused', async (t) => {
  await scramError(t, () => new ScramClient('SCRAM-MD5' as ScramMechanism, 'user', 'pencil'), /unsupported/);
  await scramError(t, () => new ScramClient('toString' as ScramMechanism, 'user', 'pencil'), /unsupported/);
});

/**
 * One SASL login over a plain socket: stream header, `<auth/>`, challenge/response, and on
 * `<success/>` the server signature verified. Returns 'success' or the `<failure/>` condition.
 */
async function liveLogin(prosody: ProsodyInstance, mechanism: ScramMechanism, user: string, password: string): Promise<string> {
  const client = await RawClient.connect({ port: prosody.c2sPort, domain: prosody.domain });
  try {
    await client.open();
    const scram = new ScramClient(mechanism, user, password);
    const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
    const text = (el: { getText(): string }) => Buffer.from(el.getText(), 'base64').toString('utf8');
    const isAnswer = (el: { name: string }) => ['challenge', 'success', 'failure'].includes(el.name);
    client.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='${mechanism}'>${b64(scram.clientFirst())}</auth>`);
    let answer = await client.next(isAnswer);
    while (answer.name === 'challenge') {
      // A second challenge makes clientFinal() throw: that fails the test, as it should.
      client.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${b64(await scram.clientFinal(text(answer)))}</response>`);
      answer = await client.next(isAnswer);
    }
    if (answer.name === 'failure') {
      const condition = answer.children.find((c) => typeof c !== 'string' && c.name !== 'text');
      return typeof condition === 'object' ? condition.name : 'failure';
    }
    scram.verifyServerFinal(text(answer));
    return 'success';
  } finally {
    client.send('</stream:stream>');
    client.destroy();
  }
}

/** The SASL mechanisms a fresh stream's features offer. */
async function offered(prosody: ProsodyInstance): Promise<string[]> {
  const client = await RawClient.connect({ port: prosody.c2sPort, domain: prosody.domain });
  try {
    const features = await client.open();
    return (features.getChild('mechanisms')?.getChildren('mechanism') ?? []).map((m) => m.getText());
  } finally {
    client.destroy();
  }
}

const ACCOUNTS = [
  { user: 'alice', password: 'alice-pw' },
  // ',' and '=' are legal in a localpart (RFC 7622 §3.3.1), so escaping matters live.
  { user: 'o,k=1', password: 'comma-pw' },
  // Stored prepared (Prosody SASLpreps on registration); logged in with the unprepared form.
  { user: 'carol', password: 'pass word' },
];

async function withProsody(t: Test, config?: string): Promise<ProsodyInstance> {
  const prosody = await startProsody({ tls: 'none', accounts: ACCOUNTS, config });
  t.teardown(() => prosody.stop());
  return prosody;
}

t.test('live: Prosody with its default store (SCRAM-SHA-1)', async (t) => {
  const prosody = await withProsody(t);
  const mechs = await offered(prosody);
  t.comment(`offered: ${mechs.join(' ')}`);
  t.ok(mechs.includes('SCRAM-SHA-1'), 'SCRAM-SHA-1 offered');
  const best = SCRAM_MECHANISMS.find((m) => mechs.includes(m));
  t.equal(best, 'SCRAM-SHA-1', 'a SHA-1 store offers SCRAM-SHA-1 only');
  t.equal(await liveLogin(prosody, best!, 'alice', 'alice-pw'), 'success');
  t.equal(await liveLogin(prosody, best!, 'o,k=1', 'comma-pw'), 'success');
  t.equal(await liveLogin(prosody, best!, 'carol', 'pass\u00a0word\u00ad'), 'success');
  t.equal(await liveLogin(prosody, best!, 'alice', 'wrong-pw'), 'not-authorized');
});

t.test('live: Prosody with password_hash = "SHA-256" (SCRAM-SHA-256)', async (t) => {
  const prosody = await withProsody(t, 'password_hash = "SHA-256"');
  const mechs = await offered(prosody);
  t.comment(`offered: ${mechs.join(' ')}`);
  const best = SCRAM_MECHANISMS.find((m) => mechs.includes(m));
  t.equal(best, 'SCRAM-SHA-256');
  t.equal(await liveLogin(prosody, best!, 'alice', 'alice-pw'), 'success');
  t.equal(await liveLogin(prosody, best!, 'o,k=1', 'comma-pw'), 'success');
  t.equal(await liveLogin(prosody, best!, 'carol', 'pass\u00a0word\u00ad'), 'success');
  t.equal(await liveLogin(prosody, best!, 'alice', 'wrong-pw'), 'not-authorized');
});
