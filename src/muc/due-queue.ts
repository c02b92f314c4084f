/** A place in a {@link DueQueue}: kept by the owner of the item so it can be removed later. */
export interface DueTicket<T> {
  /** When the item is due (ms, on the owner's clock). */
  readonly dueAt: number;
  readonly item: T;
  /** Insertion order: items due at the same time come out first in, first out. */
  readonly seq: number;
  /** Out of the queue: removed, or popped. */
  removed: boolean;
}

/** Removed tickets tolerated in the heap before it is rebuilt without them (and at least half of it). */
const COMPACT_AFTER = 1024;

/**
 * Items ordered by due time (a binary min-heap on `dueAt`, ties broken by insertion order), for
 * the self-ping scheduler's timers: one timer for the earliest item instead of one per item.
 *
 * Removal is lazy: {@link remove} marks the ticket and the heap skips it when it comes to the
 * top; once removed tickets pass {@link COMPACT_AFTER} and half the heap, it is rebuilt without
 * them, so memory stays within about twice the live items.
 */
export class DueQueue<T> {
  #heap: DueTicket<T>[] = [];
  #seq = 0;
  #removed = 0;

  /** Live items (pushed, neither popped nor removed). */
  get size(): number {
    return this.#heap.length - this.#removed;
  }

  /** Adds `item`, due at `dueAt` (ms); keep the ticket to {@link remove} it. */
  push(item: T, dueAt: number): DueTicket<T> {
    const ticket: DueTicket<T> = { dueAt, item, seq: ++this.#seq, removed: false };
    this.#heap.push(ticket);
    this.#up(this.#heap.length - 1);
    return ticket;
  }

  /** The earliest live ticket, left in place; undefined when empty. */
  peek(): DueTicket<T> | undefined {
    while (this.#heap.length > 0 && this.#heap[0]!.removed) {
      this.#removed--;
      this.#take();
    }
    return this.#heap[0];
  }

  /** Takes the earliest live ticket out; undefined when empty. */
  pop(): DueTicket<T> | undefined {
    return this.peek() === undefined ? undefined : this.#take();
  }

  /** Takes `ticket` out wherever it is (idempotent; a popped ticket is ignored). */
  remove(ticket: DueTicket<T>): void {
    if (ticket.removed) return;
    ticket.removed = true;
    this.#removed++;
    if (this.#removed > COMPACT_AFTER && this.#removed * 2 > this.#heap.length) this.#compact();
  }

  /** Forgets everything. */
  clear(): void {
    for (const ticket of this.#heap) ticket.removed = true;
    this.#heap = [];
    this.#removed = 0;
  }

  #take(): DueTicket<T> {
    const top = this.#heap[0]!;
    const last = this.#heap.pop()!;
    if (this.#heap.length > 0) {
      this.#heap[0] = last;
      this.#down(0);
    }
    top.removed = true; // a later remove() of a popped ticket must not count it again
    return top;
  }

  #compact(): void {
    this.#heap = this.#heap.filter((t) => !t.removed);
    this.#removed = 0;
    for (let i = (this.#heap.length >> 1) - 1; i >= 0; i--) this.#down(i);
  }

  #up(i: number): void {
    const h = this.#heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i]!, h[parent]!)) return;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  #down(i: number): void {
    const h = this.#heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && before(h[l]!, h[m]!)) m = l;
      if (r < h.length && before(h[r]!, h[m]!)) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}

function before<T>(a: DueTicket<T>, b: DueTicket<T>): boolean {
  return a.dueAt < b.dueAt || (a.dueAt === b.dueAt && a.seq < b.seq);
}
