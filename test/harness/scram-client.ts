/**
 * A raw SCRAM exchange on a {@link RawClient} (RFC 6120 §6.4 over RFC 5802), for the relay tests
 * of issue 14: the test decides every step (send the client-first, answer the challenge, abort,
 * or send something malformed), and sees each answer of the proxy as it came. The SCRAM math is
 * the project's own ScramClient (src/upstream/scram.ts), so the server signature in `<success/>`
 * can be verified here: a relay that changed one byte of it fails {@link RawScram.verify}.
 * Gs2 header `n,,` only (what ScramClient sends); slixmpp covers `y,,`.
 */
import type { Element } from 'ltx';
import { ScramClient, type ScramMechanism } from '../../src/upstream/scram.ts';
import type { RawClient } from './raw-client.ts';

export const NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl';

/** base64 as RFC 6120 §6.4.2 wants it on the wire (`=` for an empty payload). */
export const b64 = (text: string): string => (text === '' ? '=' : Buffer.from(text, 'utf8').toString('base64'));
const unb64 = (text: string): string => (text.trim() === '=' ? '' : Buffer.from(text.trim(), 'base64').toString('utf8'));

/** True for the proxy's answers in a SASL exchange: `<challenge/>`, `<success/>`, `<failure/>`. */
export const isSaslAnswer = (el: Element): boolean =>
  (el.name === 'challenge' || el.name === 'success' || el.name === 'failure') && el.attrs.xmlns === NS_SASL;

/** The condition of a `<failure/>` (RFC 6120 §6.5), or a stream error's; undefined for others. */
export function conditionOf(el: Element): string | undefined {
  if (el.name !== 'failure' && el.name !== 'stream:error') return undefined;
  return el.getChildElements().find((c) => c.name !== 'text')?.name;
}

/** Waits for the next SASL answer, or a stream error (which then is the answer). */
export function nextSaslAnswer(client: RawClient, timeoutMs?: number): Promise<Element> {
  return client.next((el) => isSaslAnswer(el) || el.name === 'stream:error', timeoutMs);
}

/** Sends `<auth mechanism>` with `initial` as its text, as is (already base64, or garbage on purpose). */
export function sendAuth(client: RawClient, mechanism: string, initial: string): Promise<Element> {
  client.send(`<auth xmlns='${NS_SASL}' mechanism='${mechanism}'>${initial}</auth>`);
  return nextSaslAnswer(client);
}

/** One SCRAM login attempt, step by step. A new instance per attempt (nonces are single-use). */
export class RawScram {
  readonly scram: ScramClient;

  constructor(
    readonly client: RawClient,
    user: string,
    password: string,
    readonly mechanism: ScramMechanism = 'SCRAM-SHA-1',
  ) {
    this.scram = new ScramClient(mechanism, user, password);
  }

  /** Sends `<auth/>` with the client-first-message; resolves with the answer (challenge or failure). */
  first(): Promise<Element> {
    return sendAuth(this.client, this.mechanism, b64(this.scram.clientFirst()));
  }

  /** Answers the server-first `challenge` with the client-final-message; resolves with the answer. */
  async final(challenge: Element): Promise<Element> {
    const response = await this.scram.clientFinal(unb64(challenge.getText()));
    this.client.send(`<response xmlns='${NS_SASL}'>${b64(response)}</response>`);
    return nextSaslAnswer(this.client);
  }

  /** Sends `<abort/>` (RFC 6120 §6.4.4); resolves with the answer. */
  abort(): Promise<Element> {
    this.client.send(`<abort xmlns='${NS_SASL}'/>`);
    return nextSaslAnswer(this.client);
  }

  /**
   * Checks the server signature of `<success/>` (RFC 5802 `v=`) against this exchange.
   * @throws ScramError when it does not verify.
   */
  verify(success: Element): void {
    this.scram.verifyServerFinal(unb64(success.getText()));
  }

  /**
   * The whole exchange: first, final. Resolves with the last answer and whether the server
   * signature verified (false also when the answer is not `<success/>`).
   */
  async run(): Promise<{ answer: Element; verified: boolean }> {
    const challenge = await this.first();
    if (challenge.name !== 'challenge') return { answer: challenge, verified: false };
    const answer = await this.final(challenge);
    if (answer.name !== 'success') return { answer, verified: false };
    try {
      this.verify(answer);
      return { answer, verified: true };
    } catch {
      return { answer, verified: false };
    }
  }
}
