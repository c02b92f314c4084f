/** Checked numeric options for the benchmark scripts (their parseArgs values are strings). */

/** `--name` as an integer >= min, or `def` when absent. @throws Error naming the option. */
export function intArg(name: string, v: string | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min} (got ${JSON.stringify(v)})`);
  return n;
}

/** `--name` as a number >= min, or `def` when absent. @throws Error naming the option. */
export function numArg(name: string, v: string | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min} (got ${JSON.stringify(v)})`);
  return n;
}
