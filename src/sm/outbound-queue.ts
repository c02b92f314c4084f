import { addH, diffH } from './counter.ts';

/** A stanza written to the client and not yet acknowledged by it. */
export interface QueuedStanza {
  /** The stanza as serialized when first sent. */
  xml: string;
  /** When the proxy first received it (ms since the epoch), for XEP-0203 delay stamps on re-send. */
  receivedAt: number;
}

/**
 * The unacked queue of XEP-0198 §4: stanzas sent to the client, in order, with the count of
 * stanzas sent (`sent`) and acknowledged (`acked`), both modulo 2^32. Kept as strings to bound
 * memory per entry to the stanza's size plus ~80 bytes; `bytes` measures the unacked ones.
 */
export class OutboundQueue {
  #items: QueuedStanza[] = [];
  /** Index of the oldest unacked item in #items (compacted lazily). */
  #head = 0;
  #acked: number;
  /** Sum of `xml.length` over the unacked items. */
  #bytes = 0;

  /** @param acked Starting count (0 on enable; tests start near 2^32 to check wrapping). */
  constructor(acked = 0) {
    this.#acked = acked;
  }

  /** Unacked stanzas held. */
  get length(): number {
    return this.#items.length - this.#head;
  }

  /**
   * Size of the unacked stanzas: the sum of their `xml` lengths (UTF-16 code units; characters
   * ≈ bytes, within 2× of the memory V8 keeps them in; free to compute, unlike a UTF-8 length).
   */
  get bytes(): number {
    return this.#bytes;
  }

  /** Count of stanzas the client has acknowledged (the last valid `h` it sent). */
  get acked(): number {
    return this.#acked;
  }

  /** Count of stanzas sent (mod 2^32). */
  get sent(): number {
    return addH(this.#acked, this.length);
  }

  push(stanza: QueuedStanza): void {
    this.#items.push(stanza);
    this.#bytes += stanza.xml.length;
  }

  /**
   * Applies the client's `h` (XEP-0198 §4 `<a h/>`, §5 `<resume h/>`): drops what it covers.
   * @returns how many stanzas were newly acknowledged, or -1 when `h` acknowledges more than
   *   was sent (the queue is left unchanged).
   */
  ack(h: number): number {
    const n = diffH(h, this.#acked);
    if (n > this.length) return -1;
    for (let i = this.#head; i < this.#head + n; i++) this.#bytes -= this.#items[i]!.xml.length;
    this.#head += n;
    this.#acked = h;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return n;
  }

  /** The unacked stanzas, oldest first (a copy). */
  unacked(): QueuedStanza[] {
    return this.#items.slice(this.#head);
  }

  /** Empties the queue, returning what it held (oldest first). */
  drain(): QueuedStanza[] {
    const rest = this.unacked();
    this.#acked = addH(this.#acked, rest.length);
    this.#items = [];
    this.#head = 0;
    this.#bytes = 0;
    return rest;
  }
}
