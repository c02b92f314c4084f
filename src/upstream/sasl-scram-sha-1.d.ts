// Types for sasl-scram-sha-1 1.4 (no published types): only what upstream/sasl.ts uses.
declare module 'sasl-scram-sha-1' {
  interface ScramCache { salt: Uint8Array; saltedPassword?: Uint8Array; clientKey: Uint8Array; serverKey: Uint8Array }
  class Mechanism {
    constructor(options?: { genNonce?: () => string });
    response(cred: Record<string, unknown>): string | Promise<string>;
    challenge(chal: string): this;
    /** Set after the final client message: the keys for this salt. */
    cache: ScramCache;
    /** RFC 5802 ServerSignature, set with the final client message. */
    _serverSignature?: Uint8Array;
    /** Salt and iteration count of the server's first message, set by challenge(). */
    _salt?: Uint8Array;
    _iterationCount?: number;
  }
  export default Mechanism;
}

