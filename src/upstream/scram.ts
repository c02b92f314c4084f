import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import saslprep from '@mongodb-js/saslprep';

/**
 * SCRAM client (RFC 5802 SCRAM-SHA-1, RFC 7677 SCRAM-SHA-256) for the proxy's upstream login:
 * one implementation parametrised by the hash, without channel binding (gs2 header `n,,`, never
 * the -PLUS variants: TLS ends at the proxy, so there is no client channel to bind to).
 *
 * Messages in and out are the decoded SASL payloads (RFC 5802 §7 text, UTF-8); the base64 of
 * RFC 6120 §6.4 `<auth/>`/`<challenge/>`/`<response/>`/`<success/>` is the caller's business.
 * Nothing here logs. No error message carries the password, the salted password or a key.
 */

/**
 * The SCRAM mechanisms this client implements (IANA SASL names, RFC 5802 §4, RFC 7677 §2), best
 * first: pick the first one the server offers (RFC 6120 §6.3.3 `<mechanisms/>`).
 */
export const SCRAM_MECHANISMS = Object.freeze(['SCRAM-SHA-256', 'SCRAM-SHA-1'] as const);

/** One of {@link SCRAM_MECHANISMS}. */
export type ScramMechanism = (typeof SCRAM_MECHANISMS)[number];

/**
 * Highest iteration count (RFC 5802 §5.1 `i=`) the client accepts, bounding the CPU one login
 * can cost: Hi() is PBKDF2 with this many HMAC rounds, run on libuv's thread pool (shared with
 * fs and dns.lookup). 1,000,000 rounds took ~0.6 s of one core (SHA-1 or SHA-256) on the 2-core test machine;
 * real servers use 4096 (ejabberd, Openfire) or 10000 (Prosody). A larger count is refused
 * rather than computed, so a broken or hostile upstream cannot pin the proxy's CPU.
 *
 * There is no lower bound beyond RFC 5802 §7's `posit-number` (≥ 1): RFC 5802 §5.1 and RFC 7677
 * §4 say the count SHOULD be at least 4096, but that is advice for the server's stored
 * credential, which the client cannot change; refusing would only lock the account out.
 */
export const MAX_ITERATIONS = 1_000_000;

/** Random bytes in a generated client nonce (RFC 5802 §5.1 `r=`): 24 bytes, 32 base64 characters. */
export const CLIENT_NONCE_BYTES = 24;

/**
 * A SCRAM protocol failure: the server's message breaks RFC 5802 §7 (missing or malformed
 * attribute, foreign nonce, mandatory extension, message out of turn), the server's signature
 * does not verify, the server sent `e=` (then {@link serverError} holds its value), or the
 * username or password fails SASLprep (RFC 4013). The message never holds a secret.
 */
export class ScramError extends Error {
  /**
   * @param message what went wrong, for logs.
   * @param serverError the server's RFC 5802 §7 `server-error-value` (e.g. 'invalid-proof'),
   *   when the server sent `e=`; sanitized to printable ASCII, at most 100 characters.
   */
  constructor(message: string, readonly serverError?: string) {
    super(message);
    this.name = 'ScramError';
  }
}

/** Hash parameters per mechanism: Node digest name and output length in bytes (RFC 5802 §2.2 Hi dkLen). */
const HASHES: Record<ScramMechanism, { digest: 'sha1' | 'sha256'; bytes: number }> = {
  'SCRAM-SHA-1': { digest: 'sha1', bytes: 20 },
  'SCRAM-SHA-256': { digest: 'sha256', bytes: 32 },
};

/** GS2 header without channel binding or authzid (RFC 5802 §7 `gs2-header`, `gs2-cbind-flag` "n"). */
const GS2_HEADER = 'n,,';
/** RFC 5802 §7 `printable`: %x21-2B / %x2D-7E (visible ASCII except ','). */
const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/;
/** Padded base64 (RFC 5802 §7 `base64`, RFC 4648 §4); also matches '', which callers refuse. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** RFC 5802 §7 `posit-number`. */
const POSIT_NUMBER = /^[1-9][0-9]*$/;

const pbkdf2Async = promisify(pbkdf2);

type State =
  | { step: 'start' }
  | { step: 'first-sent'; clientFirstBare: string }
  | { step: 'final-sent'; serverSignature: Buffer }
  | { step: 'done' };

/**
 * The client side of one SCRAM exchange (RFC 5802 §3, §5; RFC 7677 for SHA-256). Use a new
 * instance per login: the nonce and the signatures are single-use.
 *
 * ```ts
 * const scram = new ScramClient('SCRAM-SHA-256', 'user', 'pencil');
 * send(scram.clientFirst());                         // <auth mechanism='SCRAM-SHA-256'>
 * send(await scram.clientFinal(challengeText));      // <response>
 * scram.verifyServerFinal(successText);              // <success> data; throws unless verified
 * ```
 */
export class ScramClient {
  readonly mechanism: ScramMechanism;
  readonly #username: string;
  readonly #password: string;
  readonly #nonce: string;
  #state: State = { step: 'start' };

  /**
   * Prepares the credentials; no I/O, no hashing yet.
   *
   * @param mechanism which SCRAM hash to run.
   * @param username the authentication identity (RFC 5802 §5.1 `n=`), unescaped: it is
   *   SASLprep'd as a query string (RFC 4013, unassigned code points allowed, as §5.1 says),
   *   then ',' and '=' are escaped as '=2C' and '=3D'.
   * @param password the account's password, SASLprep'd before Hi() (RFC 5802 §2.2 Normalize).
   *   §2.2 calls for "stored string" rules (unassigned code points prohibited); this client uses
   *   query rules instead, which give the same result for every password a strict server could
   *   have stored, and also match lenient servers (Prosody's saslprep allows unassigned ones).
   * @param nonce the client nonce (RFC 5802 §5.1 `r=`), for the RFC test vectors only;
   *   default {@link CLIENT_NONCE_BYTES} random bytes in base64.
   * @throws ScramError when the username or password fails SASLprep (prohibited or bidi-invalid
   *   characters) or the username prepares to '', or when `nonce` is not RFC 5802 `printable`.
   */
  constructor(mechanism: ScramMechanism, username: string, password: string, nonce?: string) {
    if (!Object.hasOwn(HASHES, mechanism)) throw new ScramError(`unsupported SASL mechanism ${JSON.stringify(mechanism)}`);
    this.mechanism = mechanism;
    const user = prepare(username, 'username');
    if (user === '') throw new ScramError('SCRAM username is empty after SASLprep');
    this.#username = user.replace(/=/g, '=3D').replace(/,/g, '=2C');
    this.#password = prepare(password, 'password');
    this.#nonce = nonce ?? randomBytes(CLIENT_NONCE_BYTES).toString('base64');
    if (!PRINTABLE.test(this.#nonce)) throw new ScramError('SCRAM client nonce must be RFC 5802 printable characters');
  }

  /**
   * The client-first-message (RFC 5802 §5.1, §7): `n,,n=<escaped user>,r=<client nonce>`,
   * the initial response of `<auth/>`.
   * @throws Error when called twice (a caller bug).
   */
  clientFirst(): string {
    if (this.#state.step !== 'start') throw new Error('ScramClient.clientFirst() called twice');
    const clientFirstBare = `n=${this.#username},r=${this.#nonce}`;
    this.#state = { step: 'first-sent', clientFirstBare };
    return GS2_HEADER + clientFirstBare;
  }

  /**
   * Checks the server-first-message (RFC 5802 §5.1, §7: `r=<nonce>,s=<salt>,i=<count>`, in that
   * order, optional extensions after) and returns the client-final-message
   * `c=biws,r=<nonce>,p=<base64 ClientProof>` (§3 ClientProof, §5.1 `c=`/`p=`). Hi() runs on
   * the thread pool (crypto.pbkdf2), at most {@link MAX_ITERATIONS} rounds.
   *
   * @param serverFirst the decoded `<challenge/>` payload.
   * @throws ScramError when the message starts with `m=` (a mandatory extension, §5.1), carries
   *   `e=`, lacks or misorders `r=`/`s=`/`i=`, has a nonce that does not start with ours or is not
   *   `printable`, a salt that is not non-empty base64, an iteration count that is not a positive
   *   decimal number or is above {@link MAX_ITERATIONS}, or arrives out of turn (not right after
   *   {@link clientFirst}).
   */
  async clientFinal(serverFirst: string): Promise<string> {
    const state = this.#state;
    if (state.step === 'start') throw new Error('ScramClient.clientFinal() before clientFirst()');
    if (state.step !== 'first-sent') throw new ScramError('server sent a second SCRAM challenge');
    // However it ends, this exchange cannot take another challenge.
    this.#state = { step: 'done' };

    const attrs = parseAttributes(serverFirst, 'server-first-message');
    const [first] = attrs;
    if (first?.name === 'm') throw new ScramError('server-first-message requires an unsupported mandatory extension (m=)');
    if (first?.name === 'e') throw serverErrorOf(first.value);
    const [r, s, i] = attrs;
    if (r?.name !== 'r' || s?.name !== 's' || i?.name !== 'i') {
      throw new ScramError('server-first-message lacks r=, s= and i= in that order');
    }
    if (!PRINTABLE.test(r.value) || !r.value.startsWith(this.#nonce)) {
      throw new ScramError('server nonce is not printable or does not start with the client nonce');
    }
    if (!BASE64.test(s.value) || s.value === '') throw new ScramError('server salt is not base64');
    if (!POSIT_NUMBER.test(i.value)) throw new ScramError('server iteration count is not a positive number');
    const iterations = i.value.length > 10 ? Infinity : Number(i.value);
    if (iterations > MAX_ITERATIONS) {
      throw new ScramError(`server iteration count ${i.value.slice(0, 20)} is above the limit of ${MAX_ITERATIONS}`);
    }

    const { digest, bytes } = HASHES[this.mechanism];
    const salt = Buffer.from(s.value, 'base64');
    // RFC 5802 §3: SaltedPassword := Hi(Normalize(password), salt, i), Hi = PBKDF2 with HMAC-H.
    const password = Buffer.from(this.#password, 'utf8');
    let saltedPassword: Buffer;
    try {
      saltedPassword = await pbkdf2Async(password, salt, iterations, bytes, digest);
    } finally {
      password.fill(0);
    }
    const hmac = (key: Buffer, text: string): Buffer => createHmac(digest, key).update(text, 'utf8').digest();
    const clientKey = hmac(saltedPassword, 'Client Key');
    const storedKey = createHash(digest).update(clientKey).digest();
    const serverKey = hmac(saltedPassword, 'Server Key');
    const withoutProof = `c=${Buffer.from(GS2_HEADER).toString('base64')},r=${r.value}`;
    const authMessage = `${state.clientFirstBare},${serverFirst},${withoutProof}`;
    const clientSignature = hmac(storedKey, authMessage);
    const clientProof = Buffer.alloc(bytes);
    for (let k = 0; k < bytes; k++) clientProof[k] = clientKey[k]! ^ clientSignature[k]!;
    const serverSignature = hmac(serverKey, authMessage);
    for (const secret of [saltedPassword, clientKey, storedKey, serverKey]) secret.fill(0);
    this.#state = { step: 'final-sent', serverSignature };
    return `${withoutProof},p=${clientProof.toString('base64')}`;
  }

  /**
   * Checks the server-final-message (RFC 5802 §5.1, §7): `v=<base64 ServerSignature>` must equal
   * the signature computed in {@link clientFinal} (constant-time compare), proving the server
   * knows the credential. Returns normally only then.
   *
   * @param serverFinal the decoded additional data of `<success/>`.
   * @throws ScramError when the server sent `e=<reason>` ({@link ScramError.serverError} holds
   *   it), when `v=` is missing, not base64 or does not match, or when the message arrives out
   *   of turn (e.g. `<success/>` before the server saw our proof).
   */
  verifyServerFinal(serverFinal: string): void {
    const state = this.#state;
    if (state.step !== 'final-sent') throw new ScramError('server ended the SCRAM exchange out of turn');
    this.#state = { step: 'done' };
    const [first] = parseAttributes(serverFinal, 'server-final-message');
    if (first?.name === 'e') throw serverErrorOf(first.value);
    if (first?.name !== 'v' || !BASE64.test(first.value) || first.value === '') {
      throw new ScramError('server-final-message lacks a base64 v= verifier');
    }
    const given = Buffer.from(first.value, 'base64');
    const expected = state.serverSignature;
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new ScramError('server signature does not verify: the server does not know the credential');
    }
  }
}

/**
 * RFC 3454 B.1 ("commonly mapped to nothing") minus U+200B, which RFC 4013 §2.1 also lists as a
 * non-ASCII space and the library (like libidn) maps to ' '. A string of only these prepares to ''.
 */
const ONLY_MAPPED_TO_NOTHING = /^[\u00ad\u034f\u1806\u180b-\u180d\u200c\u200d\u2060\ufe00-\ufe0f\ufeff]+$/;

/** RFC 4013 SASLprep as a query string; a failure becomes a ScramError naming only `what`. */
function prepare(text: string, what: 'username' | 'password'): string {
  // @mongodb-js/saslprep 1.6.3 throws a TypeError when the mapping leaves nothing.
  if (ONLY_MAPPED_TO_NOTHING.test(text)) return '';
  try {
    return saslprep(text, { allowUnassigned: true });
  } catch {
    // Whatever the library says (its wording may change) is about a secret: leave it out.
    throw new ScramError(`SCRAM ${what} fails SASLprep (RFC 4013)`);
  }
}

/** Splits an RFC 5802 §7 message into `name=value` attributes (name one ASCII letter). */
function parseAttributes(message: string, what: string): Array<{ name: string; value: string }> {
  return message.split(',').map((part) => {
    const m = /^([A-Za-z])=(.*)$/s.exec(part);
    if (!m) throw new ScramError(`${what} is malformed`);
    return { name: m[1]!, value: m[2]! };
  });
}

/** The ScramError for a server's `e=` (RFC 5802 §7 `server-error`), its value made log-safe. */
function serverErrorOf(value: string): ScramError {
  const reason = value.replace(/[^\x20-\x7e]/g, '?').slice(0, 100);
  return new ScramError(`server rejected the SCRAM exchange: ${reason}`, reason);
}
