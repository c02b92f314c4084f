/** Latency samples (ms) with exact percentiles: a growable Float64Array, sorted once at the end. */
export class LatencyRecorder {
  #data = new Float64Array(1 << 16);
  #n = 0;

  get count(): number {
    return this.#n;
  }

  add(ms: number): void {
    if (this.#n === this.#data.length) {
      const bigger = new Float64Array(this.#data.length * 2);
      bigger.set(this.#data);
      this.#data = bigger;
    }
    this.#data[this.#n++] = ms;
  }

  reset(): void {
    this.#n = 0;
  }

  /** p50/p90/p99/max/mean in ms (NaN without samples). */
  summary(): LatencySummary {
    const n = this.#n;
    if (n === 0) return { count: 0, p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN };
    const sorted = this.#data.slice(0, n).sort();
    const at = (q: number): number => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]!;
    let sum = 0;
    for (let i = 0; i < n; i++) sum += sorted[i]!;
    return { count: n, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[n - 1]!, mean: sum / n };
  }
}

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}
