/**
 * XEP-0198 §4: `h` is an unsigned 32-bit counter that wraps to 0 after 2^32 - 1.
 * All arithmetic on it goes through these helpers.
 */

const MOD = 2 ** 32;

/** `h + n` modulo 2^32. */
export function addH(h: number, n: number): number {
  return (h + n) % MOD;
}

/** How far `to` is ahead of `from`, modulo 2^32 (0 … 2^32 - 1). */
export function diffH(to: number, from: number): number {
  return (((to - from) % MOD) + MOD) % MOD;
}

/** Parses an `h` attribute; undefined when it is not an integer in 0 … 2^32 - 1. */
export function parseH(value: unknown): number | undefined {
  if (typeof value !== 'string' || !/^[0-9]{1,10}$/.test(value)) return undefined;
  const h = Number(value);
  return h < MOD ? h : undefined;
}
