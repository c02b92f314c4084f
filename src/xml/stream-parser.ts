import { Buffer } from 'node:buffer';
import { EventEmitter } from 'node:events';
import { SaxesParser } from 'saxes';
import { StreamError, type StreamErrorCondition } from './stream-error.ts';
import { NS } from './stream-header.ts';
import { TopLevel } from './top-level.ts';

/**
 * Installs saxes handlers with named property stores. saxes' `on()` stores them with computed
 * keys, and past a dozen such stores V8 turns the parser into a dictionary-mode object: every
 * property access then costs a hash lookup and parsing gets ~5x slower (measured: 16.6 vs
 * 2.9 µs per message stanza). The names are saxes 6's (pinned in package.json).
 */
function setHandlers(sax: SaxesParser<{}>, h: {
  openTagHandler: unknown; closeTagHandler: unknown;
  errorHandler: unknown; doctypeHandler: unknown; commentHandler: unknown; piHandler: unknown;
}): void {
  const target = sax as unknown as typeof h;
  target.openTagHandler = h.openTagHandler;
  target.closeTagHandler = h.closeTagHandler;
  target.errorHandler = h.errorHandler;
  target.doctypeHandler = h.doctypeHandler;
  target.commentHandler = h.commentHandler;
  target.piHandler = h.piHandler;
}

/** The namespace names of the `xml` and `xmlns` prefixes (Namespaces in XML 1.0 §3). */
const NS_XML = 'http://www.w3.org/XML/1998/namespace';
const NS_XMLNS = 'http://www.w3.org/2000/xmlns/';

/**
 * saxes 6's per-attribute hook and the list it fills (`xmlns: false`: `pushAttribPlain`, which
 * also calls the `attribute` handler, unused here).
 */
interface SaxesAttributes {
  pushAttrib(name: string, value: string): void;
  attribList: Array<{ name: string; value: string }>;
}

/** What saxes passes to the open and close tag handlers (with `xmlns: false`). */
interface SaxesTag {
  name: string;
  attributes: Record<string, string>;
  isSelfClosing: boolean;
}

/**
 * True if the close tag that ends at `end` (an index just past its `>`) in `text` names `name`:
 * `</name>`, with optional whitespace before the `>` (XML 1.0 §3.1, ETag).
 */
function closeTagNames(text: string, end: number, name: string): boolean {
  // Nearly always `</name>` exactly: compared in place (a lastIndexOf search first cost twice as
  // much in a profile of bench/parse.ts).
  const n = name.length;
  const at = end - 1 - n;
  if (text.charCodeAt(at - 1) === 0x2f && text.charCodeAt(at - 2) === 0x3c) {
    let i = 0;
    while (i < n && text.charCodeAt(at + i) === name.charCodeAt(i)) i++;
    if (i === n) return true;
  }
  const lt = text.lastIndexOf('</', end - 3);
  if (lt === -1 || !text.startsWith(name, lt + 2)) return false;
  for (let i = lt + 2 + name.length; i < end - 1; i++) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return false;
  }
  return true;
}

/** Limits applied to every stream (client and upstream). */
export interface StreamLimits {
  /**
   * Largest top-level element, in bytes of UTF-8 as received: a complete element from its `<` to
   * its last `>`; an unfinished one (refused as soon as it is over, before it is all buffered)
   * with any whitespace received before it since the previous element.
   */
  maxStanzaBytes: number;
  /** Deepest nesting inside a top-level element (the stanza itself is depth 1). */
  maxDepth: number;
}

/**
 * Frames an XMPP stream (RFC 6120 §4) into its header and top-level elements, on saxes (a
 * conforming, non-validating XML parser): every well-formedness error and every RFC 6120 §11
 * restriction becomes a stream error. The elements come out as {@link TopLevel}: name,
 * attributes and the exact text received, cut out of the input by saxes' stream positions,
 * so no tree is built for what is only relayed.
 *
 * Events:
 * - `start` (attrs: Record<string, string>): the `<stream:stream>` header.
 * - `element` (el: TopLevel): one complete top-level element (stanza or nonza).
 * - `end` (): the peer closed its stream with `</stream:stream>`.
 * - `error` (err: StreamError): the input broke RFC 6120 §11 or a limit; the condition says which:
 *   `not-well-formed` (XML well-formedness, including a close tag naming another element, and
 *   namespace well-formedness: §11.2, see below), `restricted-xml` (comment, PI, DTD: §11.1),
 *   `invalid-namespace` (the root is not `<stream:stream>` with `xmlns:stream` bound to
 *   `http://etherx.jabber.org/streams`, §4.9.3.10, §11.2.1), `unsupported-stanza-type` (a
 *   stream header as a top-level child, §4.9.3.24), `policy-violation` (a {@link StreamLimits}
 *   limit). No event follows an error, and nothing read after the offending input is emitted.
 *
 * Namespaces: saxes runs without namespace processing (it costs a tree of scopes per element),
 * so this class checks what Namespaces in XML 1.0 requires of the names (§3, §5, §6.3): every
 * prefixed element or attribute name is one `prefix:local` whose prefix is declared by an
 * `xmlns:prefix` attribute on it or an enclosing element (the stream header's declarations
 * are in scope for every top-level element; `xml` is always bound), `xmlns` is no element
 * prefix, declarations do not bind `xml` or `xmlns` otherwise than XML does and do not undeclare
 * (`xmlns:p=''`, XML 1.0), and no two attributes of an element share an expanded name. Only
 * names with a colon are looked at; a scope is kept only while a stanza declares prefixes.
 *
 * A stream restart (after STARTTLS or SASL, RFC 6120 §4.3.3) needs a new parser.
 */
export class StreamParser extends EventEmitter {
  readonly #sax: SaxesParser<{}>;
  readonly #limits: StreamLimits;
  #depth = 0;
  /** Name and attributes of the top-level element being read. */
  #name = '';
  #attrs: Record<string, string> = {};
  /** Input not yet consumed, and the stream position of its first character. */
  #buf = '';
  #bufStart = 0;
  /** Stream position where the last top-level element (or the header) ended. */
  #boundary = 0;
  /**
   * UTF-8 size of the unfinished input, counted as it grows (each character once): the first
   * `#countedChars` characters of `#buf` hold `#countedBytes` bytes, while `#buf` still starts at
   * stream position `#countedFrom`.
   */
  #countedFrom = -1;
  #countedChars = 0;
  #countedBytes = 0;
  /** Prefixes declared on the stream header (prefix → namespace name), in scope everywhere. */
  readonly #headerPrefixes = new Map<string, string>();
  /**
   * Prefixes declared inside the current top-level element, innermost last, each with the depth
   * of the element that declared it. Empty for nearly every stanza.
   */
  readonly #scope: Array<{ depth: number; prefix: string; uri: string }> = [];
  /**
   * Names with a colon among the attributes of the open tag being read, collected as saxes reads
   * them (see the constructor).
   */
  #prefixedAttrs: string[] = [];
  #failed = false;

  constructor(limits: StreamLimits) {
    super();
    this.#limits = limits;
    // `position` (in UTF-16 units, like string indexes) locates each element in the input.
    const sax = new SaxesParser({ xmlns: false, position: true });
    this.#sax = sax;
    // Prefixed attribute names are collected as saxes reads each attribute, by its own hook
    // (pushAttribPlain's work, plus the colon check). Iterating the attributes object in the open
    // tag handler instead (a dictionary: saxes makes it with `Object.create(null)`) cost
    // ~0.15 µs per element, and an `attribute` handler, called per attribute, ~0.15 µs per
    // ~300-byte stanza (bench/parse.ts).
    const self = this;
    (sax as unknown as SaxesAttributes).pushAttrib = function (this: SaxesAttributes, name: string, value: string): void {
      this.attribList.push({ name, value });
      if (name.indexOf(':') !== -1) self.#prefixedAttrs.push(name);
    };
    setHandlers(sax, {
      openTagHandler: (tag: SaxesTag) => this.#onOpen(tag.name, tag.attributes),
      closeTagHandler: (tag: SaxesTag) => this.#onClose(tag),
      // No text handler: saxes then checks text without accumulating it (text between
      // stanzas is checked on the raw slice instead).
      errorHandler: (err: Error) => this.#fail('not-well-formed', err.message),
      // RFC 6120 §11.1: no comments, processing instructions, DTDs or entity declarations.
      doctypeHandler: () => this.#fail('restricted-xml', 'DTD in stream'),
      commentHandler: () => this.#fail('restricted-xml', 'comment in stream'),
      piHandler: () => this.#fail('restricted-xml', 'processing instruction in stream'),
    });
  }

  /**
   * Feeds decoded text (XmlStream decodes the socket's bytes as strict UTF-8). A surrogate pair
   * may be split across two writes. After an error, input is ignored.
   */
  write(chunk: string): void {
    if (this.#failed) return;
    this.#buf += chunk;
    try {
      this.#sax.write(chunk);
    } catch (err) {
      this.#fail('not-well-formed', (err as Error).message);
      return;
    }
    if (this.#failed) return;
    // saxes only judges an entity reference at its ';', so `a & b` would sit unreported until a
    // later ';' arrives: judge a pending reference as soon as it cannot be one.
    const entity = (this.#sax as unknown as { entity: string }).entity;
    if (entity && !/^#?[\w.:-]{0,32}$/.test(entity)) {
      this.#fail('not-well-formed', 'unescaped & in text or attribute');
      return;
    }
    // Drop what is consumed; keep the start of an unfinished element.
    if (this.#boundary > this.#bufStart) {
      this.#buf = this.#buf.slice(this.#boundary - this.#bufStart);
      this.#bufStart = this.#boundary;
    }
    // An unfinished element (or an open tag) already over the limit. A UTF-16 unit is at most
    // 3 bytes of UTF-8 (a surrogate pair, 2 units, is 4), so bytes are counted only once the
    // characters could be over.
    const limit = this.#limits.maxStanzaBytes;
    if (this.#buf.length * 3 > limit && (this.#buf.length > limit || this.#pendingBytes() > limit)) this.#tooLarge();
  }

  /** UTF-8 bytes in `#buf`, counting only what was added since the last call for this element. */
  #pendingBytes(): number {
    const buf = this.#buf;
    if (this.#countedFrom !== this.#bufStart) {
      this.#countedFrom = this.#bufStart;
      this.#countedChars = 0;
      this.#countedBytes = 0;
    }
    // A high surrogate at the end waits for its pair (alone it would count 3 bytes, then 3 more).
    let end = buf.length;
    const last = buf.charCodeAt(end - 1);
    if (last >= 0xd800 && last <= 0xdbff) end--;
    if (end > this.#countedChars) {
      this.#countedBytes += Buffer.byteLength(buf.slice(this.#countedChars, end));
      this.#countedChars = end;
    }
    return this.#countedBytes;
  }

  #onOpen(name: string, attrs: Record<string, string>): void {
    if (this.#failed) return;
    const depth = ++this.#depth;
    if (depth === 1) return this.#onHeader(name, attrs);
    if (depth - 1 > this.#limits.maxDepth) return this.#fail('policy-violation', `elements nested deeper than ${this.#limits.maxDepth}`);
    // Namespace declarations first: they are in scope for the element's own names.
    const prefixed = this.#prefixedAttrs;
    let prefixedAttrs = false;
    if (prefixed.length !== 0) {
      this.#prefixedAttrs = [];
      for (const key of prefixed) {
        if (key.startsWith('xmlns:')) {
          const prefix = this.#declaredPrefix(key, attrs[key]!);
          if (prefix === undefined) return;
          this.#scope.push({ depth, prefix, uri: attrs[key]! });
        } else {
          prefixedAttrs = true;
        }
      }
    }
    let uri: string | undefined;
    if (name.indexOf(':') !== -1 && (uri = this.#elementNamespace(name)) === undefined) return;
    if (prefixedAttrs && !this.#checkAttributes(prefixed)) return;
    if (depth === 2) {
      // A stream header where a stanza belongs (RFC 6120 §4.9.3.24: a first-level child the
      // server does not support). Taken as an element, it would swallow the stanzas after it and
      // the client's `</stream:stream>` would close it.
      if (name === 'stream:stream' || (name.endsWith('stream') && (uri ?? attrs.xmlns) === NS.stream && (name === 'stream' || name.endsWith(':stream')))) {
        return this.#fail('unsupported-stanza-type', `<${name}> (a stream header) inside the stream`);
      }
      this.#name = name;
      this.#attrs = attrs;
    }
  }

  /** The stream header (RFC 6120 §4.7): `<stream:stream>` in the stream namespace (§11.2.1). */
  #onHeader(name: string, attrs: Record<string, string>): void {
    if (name !== 'stream:stream') return this.#fail('invalid-namespace', `expected <stream:stream>, got <${name}>`);
    const prefixed = this.#prefixedAttrs;
    this.#prefixedAttrs = [];
    let prefixedAttrs = false;
    for (const key of prefixed) {
      if (key.startsWith('xmlns:')) {
        const prefix = this.#declaredPrefix(key, attrs[key]!);
        if (prefix === undefined) return;
        this.#headerPrefixes.set(prefix, attrs[key]!);
      } else {
        prefixedAttrs = true;
      }
    }
    if (this.#headerPrefixes.get('stream') !== NS.stream) return this.#fail('invalid-namespace', `the stream prefix is not bound to ${NS.stream}`);
    if (prefixedAttrs && !this.#checkAttributes(prefixed)) return;
    this.#boundary = this.#sax.position;
    this.emit('start', attrs);
  }

  /**
   * The prefix an `xmlns:prefix` attribute declares, or undefined after failing the stream for a
   * declaration Namespaces in XML 1.0 (§3) forbids.
   */
  #declaredPrefix(key: string, value: string): string | undefined {
    const prefix = key.slice(6);
    if (prefix === '' || prefix.indexOf(':') !== -1) return this.#failNs(`malformed namespace declaration ${key}`);
    if (prefix === 'xmlns' || value === NS_XMLNS) return this.#failNs(`${key}: the xmlns prefix and namespace cannot be declared`);
    if ((prefix === 'xml') !== (value === NS_XML)) return this.#failNs(`${key}: only the xml prefix is bound to ${NS_XML}`);
    if (value === '') return this.#failNs(`${key}='' undeclares a prefix (not allowed in XML 1.0)`);
    return prefix;
  }

  /** The prefix of a qualified name (`prefix:local`), or undefined after failing the stream. */
  #prefixOf(name: string): string | undefined {
    const colon = name.indexOf(':');
    if (colon === 0 || colon === name.length - 1 || name.indexOf(':', colon + 1) !== -1) return this.#failNs(`malformed qualified name ${name}`);
    return name.slice(0, colon);
  }

  /** The namespace bound to `prefix` here, or undefined. */
  #lookup(prefix: string): string | undefined {
    if (prefix === 'xml') return NS_XML;
    const scope = this.#scope;
    for (let i = scope.length - 1; i >= 0; i--) if (scope[i]!.prefix === prefix) return scope[i]!.uri;
    return this.#headerPrefixes.get(prefix);
  }

  /** The namespace of a prefixed element name, or undefined after failing the stream. */
  #elementNamespace(name: string): string | undefined {
    const prefix = this.#prefixOf(name);
    if (prefix === undefined) return undefined;
    if (prefix === 'xmlns') return this.#failNs(`<${name}>: xmlns is not an element prefix`);
    return this.#lookup(prefix) ?? this.#failNs(`<${name}>: namespace prefix ${prefix} is not declared`);
  }

  /**
   * Prefixed attribute names of one element (`names`: those with a colon; declarations are
   * skipped): bound, and no expanded name twice (§6.3).
   */
  #checkAttributes(names: string[]): boolean {
    let first: string | undefined;
    let seen: Set<string> | undefined;
    for (const key of names) {
      if (key.startsWith('xmlns:')) continue;
      const prefix = this.#prefixOf(key);
      if (prefix === undefined) return false;
      const uri = this.#lookup(prefix);
      if (uri === undefined) return this.#failNs(`attribute ${key}: namespace prefix ${prefix} is not declared`) ?? false;
      const expanded = `${uri} ${key.slice(prefix.length + 1)}`;
      if (first === undefined) {
        first = expanded;
      } else {
        seen ??= new Set([first]);
        if (seen.has(expanded)) return this.#failNs(`attribute ${key} repeats another attribute's namespace and name`) ?? false;
        seen.add(expanded);
      }
    }
    return true;
  }

  /** Namespace well-formedness (RFC 6120 §11.2, Namespaces in XML 1.0): always undefined. */
  #failNs(text: string): undefined {
    this.#fail('not-well-formed', text);
    return undefined;
  }

  /**
   * saxes 6 calls this handler for the open tag it pops *before* it compares that tag's name with
   * the close tag's, and reports a mismatch after (`<message>…</iq>` reaches here as the close of
   * `message`). So before anything is emitted for depth 2 (an element) or 1 (the stream's end),
   * the close tag's own text must name the element opened at that depth; whatever order saxes
   * reports in, a mismatch is then `not-well-formed` and nothing is emitted. A mismatch deeper
   * down fails in saxes before the enclosing top-level element can close.
   */
  #onClose(tag: SaxesTag): void {
    if (this.#failed) return;
    const depth = this.#depth--;
    const scope = this.#scope;
    while (scope.length !== 0 && scope[scope.length - 1]!.depth === depth) scope.pop();
    if (depth <= 2 && !tag.isSelfClosing && !closeTagNames(this.#buf, this.#sax.position - this.#bufStart, tag.name)) {
      return this.#fail('not-well-formed', `<${tag.name}> closed by another name`);
    }
    if (depth === 2) {
      const end = this.#sax.position;
      let raw = this.#buf.slice(this.#boundary - this.#bufStart, end - this.#bufStart);
      this.#boundary = end;
      const lt = raw.indexOf('<');
      if (lt > 0) {
        // Only whitespace (keepalives) may sit between top-level elements.
        if (raw.slice(0, lt).trim() !== '') return this.#fail('not-well-formed', 'text between stanzas');
        raw = raw.slice(lt);
      }
      const limit = this.#limits.maxStanzaBytes;
      if (raw.length * 3 > limit && (raw.length > limit || Buffer.byteLength(raw) > limit)) return this.#tooLarge();
      this.emit('element', new TopLevel(this.#name, this.#attrs, raw));
    } else if (depth === 1) {
      this.emit('end');
    }
  }

  #tooLarge(): void {
    this.#fail('policy-violation', `stanza larger than ${this.#limits.maxStanzaBytes} bytes`);
  }

  #fail(condition: StreamErrorCondition, text: string): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#buf = '';
    this.emit('error', new StreamError(condition, text));
  }
}
