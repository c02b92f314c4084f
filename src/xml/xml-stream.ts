import { Buffer, isAscii } from 'node:buffer';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import * as tls from 'node:tls';
import type { TopLevel } from './top-level.ts';
import { StreamParser, type StreamLimits } from './stream-parser.ts';
import { StreamError } from './stream-error.ts';
import { STREAM_CLOSE } from './stream-header.ts';
import { DEFAULTS } from '../config/config.ts';

const EMPTY = Buffer.alloc(0);

function newDecoder(): TextDecoder {
  return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
}

/**
 * One XML stream over one socket (plain or TLS), either side: framing, writes, stream errors,
 * restarts and the STARTTLS upgrade. Used by the client stream (c2s) and the upstream link.
 *
 * Events:
 * - `start` (attrs): the peer's stream header.
 * - `element` (el: TopLevel): a top-level element.
 * - `end` (): the peer sent `</stream:stream>`.
 * - `streamError` (err: StreamError): the peer's input broke the rules; the owner decides
 *   whether to answer it (usually `fail(err)`). Bytes that are not UTF-8 are
 *   `unsupported-encoding` (RFC 6120 §4.9.3.22, §11.6); nothing read after them is emitted
 *   (nor anything else from the TCP/TLS read that carried them), and the stream reads no more.
 * - `handlerError` (err: unknown): a listener of `start`, `element` or `end` threw (a bug). The
 *   parser goes on with the next element; the owner decides what the bug costs (a client stream
 *   ends with `internal-server-error`, an upstream link drops the element).
 * - `drain` (): output that was waiting has been handed to the kernel. The current socket's own
 *   `drain` (after a write reached its `writableHighWaterMark`, 16 KiB by default), re-emitted;
 *   and once {@link bufferedBytes} was read non-zero, a `drain` is sure to follow when the socket
 *   buffer and the coalesced output are both empty (unless `close` comes first), even where the
 *   socket would emit none. A backpressure owner waits for it after it saw too much buffered.
 * - `close` (): the socket is gone (after `end`, an error, or a network drop). Emitted once.
 *
 * Backpressure: {@link pauseReading} / {@link resumeReading} stop and restart reading the socket
 * (the peer's TCP window then fills); {@link bufferedBytes} is what was written and not yet taken
 * by the kernel.
 */
export class XmlStream extends EventEmitter {
  #socket: Socket;
  #parser!: StreamParser;
  readonly #limits: StreamLimits;
  readonly #closeGraceMs: number;
  /** Output of this event-loop turn, written as one chunk (one TLS record, one syscall). */
  #out = '';
  /** UTF-8 bytes of the first `#outCounted` characters of `#out` (counted when asked for). */
  #outCounted = 0;
  #outBytes = 0;
  #flushScheduled = false;
  readonly #flush = (): void => {
    this.#flushScheduled = false;
    const out = this.#takeOut();
    if (out !== '' && !this.#closed) this.#writeOut(out);
  };
  #readingPaused = false;
  /** Between the start of a STARTTLS upgrade and the TLS socket's attach. */
  #upgrading = false;
  /** `bufferedBytes` was read non-zero since the last `drain`: one is owed (see the class doc). */
  #drainOwed = false;
  #closed = false;
  #ending = false;
  /**
   * UTF-8 decoding of the current socket's bytes, one decoder per socket (a TLS socket after
   * STARTTLS gets a fresh one): `fatal`, so a bad sequence throws instead of becoming U+FFFD, and
   * `stream`, so a character split across two reads is held until its last byte. `ignoreBOM`:
   * U+FEFF goes to the parser as sent (saxes skips a byte-order mark at the very start; anywhere
   * else it is content, which the decoder would drop at the start of its first non-ASCII chunk).
   */
  #decoder = newDecoder();
  /** The decoder holds no partial character (the last chunk ended on a complete one). */
  #decoderIdle = true;
  #badEncoding = false;
  #onData = (chunk: Buffer): void => {
    if (this.#badEncoding || chunk.length === 0) return;
    let text: string;
    if (this.#decoderIdle && isAscii(chunk)) {
      // Most XMPP traffic is ASCII: checked and converted ~10x faster than by the decoder.
      text = chunk.toString('latin1');
    } else {
      try {
        text = this.#decoder.decode(chunk, { stream: true });
      } catch {
        this.#badEncoding = true;
        this.emit('streamError', new StreamError('unsupported-encoding', 'input is not UTF-8'));
        return;
      }
      // A chunk that ends in ASCII cannot end inside a character (the decoder would have thrown).
      this.#decoderIdle = chunk[chunk.length - 1]! < 0x80;
    }
    this.#parser.write(text);
  };

  /**
   * @param socket A connected socket; the stream takes ownership.
   * @param closeGraceMs After {@link end} (or {@link fail}) the peer has this long (ms) to close
   *   its side before the socket is destroyed (default: the config's `limits.closeGraceSeconds`).
   */
  constructor(socket: Socket, limits: StreamLimits, closeGraceMs = DEFAULTS.limits.closeGraceSeconds * 1000) {
    super();
    this.#limits = limits;
    this.#closeGraceMs = closeGraceMs;
    this.#socket = socket;
    this.restart();
    this.#attach(socket);
  }

  /** The current socket (a TLSSocket after `upgrade*`). */
  get socket(): Socket {
    return this.#socket;
  }

  /**
   * Bytes written to this stream that the kernel has not taken yet: the socket's
   * `writableLength` (in bytes: the stream writes Buffers) plus the coalesced output not yet
   * handed to the socket (UTF-8 bytes). A non-zero answer makes a `drain` owed.
   */
  get bufferedBytes(): number {
    const out = this.#out;
    if (out.length !== this.#outCounted) {
      this.#outBytes += Buffer.byteLength(out.slice(this.#outCounted));
      this.#outCounted = out.length;
    }
    const socket = this.#socket;
    const n = socket.writableLength + this.#outBytes;
    if (n !== 0 && !this.#drainOwed && !this.#closed && !this.#ending) {
      this.#drainOwed = true;
      // Pending output is flushed with a write callback. Otherwise, unless the socket will emit
      // its own drain, an empty write's callback tells when what it holds now has left.
      if (out === '' && !socket.writableNeedDrain) socket.write(EMPTY, this.#onOwedWritten);
    }
    return n;
  }

  /**
   * Stops reading the socket (backpressure): nothing more is read until {@link resumeReading}
   * (the elements of a read being parsed when this is called still come), and the peer's TCP
   * window fills. Stays in force across a STARTTLS upgrade (the handshake itself still runs): the
   * TLS socket starts paused.
   */
  pauseReading(): void {
    this.#readingPaused = true;
    if (!this.#upgrading) this.#socket.pause();
  }

  /** Reads the (current) socket again after {@link pauseReading}. */
  resumeReading(): void {
    this.#readingPaused = false;
    // During a handshake the TLS socket has no data listener yet: flowing, it would drop data.
    if (!this.#upgrading) this.#socket.resume();
  }

  /** True once the socket is closed or closing. */
  get closed(): boolean {
    return this.#closed || this.#ending;
  }

  /** Starts a new parser: the next input is a new stream header (RFC 6120 §4.3.3). */
  restart(): void {
    const parser = new StreamParser(this.#limits);
    parser.on('start', (attrs) => this.#dispatch('start', attrs));
    parser.on('element', (el: TopLevel) => this.#dispatch('element', el));
    parser.on('end', () => this.#dispatch('end'));
    parser.on('error', (err: StreamError) => this.emit('streamError', err));
    this.#parser = parser;
  }

  /**
   * A listener's exception must not pass through the parser: saxes would stop mid-chunk and the
   * bug would be reported to the peer as its own malformed XML.
   */
  #dispatch(event: 'start' | 'element' | 'end', arg?: unknown): void {
    try {
      this.emit(event, arg);
    } catch (err) {
      this.emit('handlerError', err);
    }
  }

  /**
   * Writes serialized XML; ignored once closed. Writes of one event-loop turn are coalesced
   * (setImmediate) into one socket write.
   */
  write(xml: string): void {
    if (this.#closed || this.#ending) return;
    this.#out += xml;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flush);
    }
  }

  /** Sends a stream error then closes the stream (RFC 6120 §4.9.1.1). */
  fail(err: StreamError): void {
    if (this.#closed || this.#ending) return;
    this.#out += err.toXML();
    this.end();
  }

  /** Closes our side of the stream with `</stream:stream>`; the socket ends after it. */
  end(): void {
    if (this.#closed || this.#ending) return;
    this.#ending = true;
    this.#socket.end(Buffer.from(this.#takeOut() + STREAM_CLOSE));
    // A peer that never answers our close must not hold the socket forever.
    setTimeout(() => this.destroy(), this.#closeGraceMs).unref();
  }

  /** Drops the connection without a closing tag (no further events but `close`). */
  destroy(): void {
    this.#socket.destroy();
  }

  /**
   * Server-side STARTTLS (RFC 6120 §5.4.3.3): call right after writing `<proceed/>`. Resolves
   * once the handshake is done; rejects on a handshake failure (the socket is then destroyed).
   */
  upgradeServer(context: tls.SecureContext): Promise<void> {
    this.#flushNow();
    return this.#upgrade(
      (raw) => new tls.TLSSocket(raw, { isServer: true, secureContext: context }),
      'secure',
    );
  }

  /**
   * Client-side STARTTLS towards a server: call after receiving `<proceed/>`. Resolves once the
   * certificate is verified by `options` (servername, ca, rejectUnauthorized).
   */
  upgradeClient(options: tls.ConnectionOptions): Promise<void> {
    this.#flushNow();
    return this.#upgrade((raw) => tls.connect({ ...options, socket: raw }), 'secureConnect');
  }

  /** `<proceed/>`/`<starttls/>` must be on the wire, in clear, before the socket changes. */
  #flushNow(): void {
    if (this.#out !== '') this.#writeOut(this.#takeOut());
  }

  #takeOut(): string {
    const out = this.#out;
    this.#out = '';
    this.#outCounted = 0;
    this.#outBytes = 0;
    return out;
  }

  /** As a Buffer, so that `writableLength` counts bytes (for strings it counts UTF-16 units). */
  #writeOut(out: string): void {
    this.#socket.write(Buffer.from(out), this.#drainOwed ? this.#onOwedWritten : undefined);
  }

  readonly #onOwedWritten = (err?: Error | null): void => {
    if (err || !this.#drainOwed || this.#out !== '' || this.#socket.writableLength !== 0) return;
    this.#drainOwed = false;
    this.emit('drain');
  };

  readonly #onSocketDrain = (): void => {
    // Output still coalescing was owed a drain too: its flush's write callback emits it.
    if (this.#drainOwed && this.#out !== '') return;
    this.#drainOwed = false;
    this.emit('drain');
  };

  #upgrade(wrap: (raw: Socket) => tls.TLSSocket, readyEvent: string): Promise<void> {
    const raw = this.#socket;
    this.#detach(raw);
    this.#upgrading = true;
    const secure = wrap(raw);
    this.#socket = secure;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        secure.destroy();
        reject(err);
        this.#onSocketClose();
      };
      const onClose = (): void => onError(new Error('connection closed during TLS handshake'));
      secure.once('error', onError);
      secure.once('close', onClose);
      secure.once(readyEvent, () => {
        secure.off('error', onError);
        secure.off('close', onClose);
        this.restart();
        this.#attach(secure);
        resolve();
      });
    });
  }

  #attach(socket: Socket): void {
    // Bytes, decoded here: setEncoding('utf8') would turn invalid UTF-8 into U+FFFD unnoticed.
    this.#decoder = newDecoder();
    this.#decoderIdle = true;
    socket.on('data', this.#onData);
    socket.on('error', this.#onSocketError);
    socket.on('close', this.#onSocketClose);
    socket.on('drain', this.#onSocketDrain);
    this.#upgrading = false;
    if (this.#readingPaused) socket.pause();
  }

  #detach(socket: Socket): void {
    socket.off('data', this.#onData);
    socket.off('error', this.#onSocketError);
    socket.off('close', this.#onSocketClose);
    socket.off('drain', this.#onSocketDrain);
  }

  #onSocketError = (): void => {
    // 'close' follows; the owner learns of the loss there.
  };

  #onSocketClose = (): void => {
    if (this.#closed) return;
    this.#closed = true;
    this.emit('close');
  };
}
