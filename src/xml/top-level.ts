import { parse, type Element } from 'ltx';

/**
 * One top-level element of a stream (a stanza or a nonza, RFC 6120 §4.1) as received: its name,
 * its own attributes and its exact text. The relay forwards `raw` as it came, so the per-stanza
 * path builds no tree and serializes nothing; `element()` parses the text (once) for the few
 * elements the proxy must look inside (negotiation, SM nonzas, pings).
 */
export class TopLevel {
  #element: Element | undefined;

  constructor(
    /** Qualified name, e.g. `message`, `r`, `stream:error`. */
    readonly name: string,
    /** Attributes of the top-level element itself (with `xmlns` when declared on it). */
    readonly attrs: Readonly<Record<string, string>>,
    /** The element's text exactly as received (well-formed: the parser checked it). */
    readonly raw: string,
  ) {}

  /** The element as an ltx tree, parsed on first use. */
  element(): Element {
    return (this.#element ??= parse(this.raw) as Element);
  }

  /** Same as ltx's `is()`: name and (when given) namespace declared on the element. */
  is(name: string, xmlns?: string): boolean {
    return this.name === name && (xmlns === undefined || this.attrs.xmlns === xmlns);
  }
}
