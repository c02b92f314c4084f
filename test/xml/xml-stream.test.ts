import t, { type Test } from 'tap';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { XmlStream } from '../../src/xml/xml-stream.ts';
import type { TopLevel } from '../../src/xml/top-level.ts';
import type { StreamError } from '../../src/xml/stream-error.ts';
import { generateSelfSigned } from '../../src/tls/certificates.ts';

const HEADER = `<?xml version='1.0'?><stream:stream to='a.test' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;
const LIMITS = { maxStanzaBytes: 64 * 1024, maxDepth: 8 };

/** An XmlStream over the accepted end of a loopback connection, and the raw peer socket. */
async function pair(t: Test): Promise<{ stream: XmlStream; peer: net.Socket; seen: Seen }> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const peer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  peer.setNoDelay(true);
  const [socket] = (await accepted) as [net.Socket];
  server.close();
  const stream = new XmlStream(socket, LIMITS);
  const seen = watch(stream);
  t.teardown(() => {
    peer.destroy();
    stream.destroy();
  });
  return { stream, peer, seen };
}

interface Seen {
  elements: TopLevel[];
  errors: StreamError[];
}

function watch(stream: XmlStream): Seen {
  const seen: Seen = { elements: [], errors: [] };
  stream.on('element', (el: TopLevel) => seen.elements.push(el));
  stream.on('streamError', (err: StreamError) => seen.errors.push(err));
  return seen;
}

/** Waits until `check()` holds (polled), at most `ms`. */
async function waitFor(check: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) return false;
    await sleep(5);
  }
  return true;
}

t.test('invalid UTF-8 is unsupported-encoding (RFC 6120 §4.9.3.22); nothing after it is emitted', async (t) => {
  const { peer, seen } = await pair(t);
  peer.write(HEADER + `<message><body>ok</body></message>`);
  t.ok(await waitFor(() => seen.elements.length === 1), 'the stanza before the bad bytes');
  peer.write(Buffer.concat([Buffer.from(`<message><body>`), Buffer.from([0xff, 0xfe]), Buffer.from(`</body></message><presence/>`)]));
  t.ok(await waitFor(() => seen.errors.length === 1));
  peer.write(`<iq type='get' id='1'/>`);
  await sleep(50);
  t.equal(seen.errors[0]!.condition, 'unsupported-encoding');
  t.equal(seen.errors.length, 1, 'reported once');
  t.same(seen.elements.map((el) => el.raw), [`<message><body>ok</body></message>`], 'nothing from the bad chunk or after it');
});

t.test('other invalid sequences: overlong, surrogate halves, a truncated character', async (t) => {
  const cases: Array<[string, number[]]> = [
    ['overlong', [0xc0, 0xbc]],
    ['UTF-16 surrogate encoded in UTF-8', [0xed, 0xa0, 0x80]],
    ['a lead byte followed by ASCII', [0xe2, 0x61]],
    ['a continuation byte alone', [0x80]],
  ];
  for (const [name, bytes] of cases) {
    const { peer, seen } = await pair(t);
    peer.write(Buffer.concat([Buffer.from(HEADER + `<message><body>`), Buffer.from(bytes), Buffer.from(`</body></message>`)]));
    t.ok(await waitFor(() => seen.errors.length === 1), name);
    t.equal(seen.errors[0]?.condition, 'unsupported-encoding', name);
    t.equal(seen.elements.length, 0, name);
  }
});

t.test('a multi-byte character split across two TCP chunks is decoded whole', async (t) => {
  const { peer, seen } = await pair(t);
  const body = Buffer.from(`<message><body>€😀</body></message>`);
  const cut1 = body.indexOf(Buffer.from('€')) + 1; // inside the 3-byte €
  const cut2 = body.indexOf(Buffer.from('😀')) + 2; // inside the 4-byte emoji
  peer.write(HEADER);
  for (const part of [body.subarray(0, cut1), body.subarray(cut1, cut2), body.subarray(cut2)]) {
    peer.write(part);
    await sleep(30); // separate reads
  }
  peer.write(`<presence/>`); // ASCII after a split character
  t.ok(await waitFor(() => seen.elements.length === 2));
  t.equal(seen.errors.length, 0);
  t.equal(seen.elements[0]!.element().getChildText('body'), '€😀');
  t.equal(seen.elements[1]!.raw, '<presence/>');
});

t.test('U+FEFF: skipped as a byte-order mark at the start, kept as content elsewhere', async (t) => {
  const bom = await pair(t);
  bom.peer.write('\uFEFF' + HEADER + `<presence/>`);
  t.ok(await waitFor(() => bom.seen.elements.length === 1));
  t.equal(bom.seen.errors.length, 0, 'a byte-order mark before the stream');
  const { peer, seen } = await pair(t);
  peer.write(HEADER + `<message><body>`);
  await sleep(30);
  peer.write(`\uFEFFé</body></message>`); // the first non-ASCII read, after ASCII ones
  t.ok(await waitFor(() => seen.elements.length === 1));
  t.equal(seen.errors.length, 0);
  t.equal(seen.elements[0]!.element().getChildText('body'), '\uFEFFé', 'U+FEFF in a body');
});

t.test('pauseReading stops elements until resumeReading', async (t) => {
  const { stream, peer, seen } = await pair(t);
  peer.write(HEADER + `<presence/>`);
  t.ok(await waitFor(() => seen.elements.length === 1));
  stream.pauseReading();
  peer.write(`<message><body>held</body></message>`);
  await sleep(100);
  t.equal(seen.elements.length, 1, 'nothing read while paused');
  stream.resumeReading();
  t.ok(await waitFor(() => seen.elements.length === 2), 'read after resume');
});

t.test('bufferedBytes counts bytes of UTF-8 (coalesced output and the socket buffer); drain follows', async (t) => {
  const { stream, peer } = await pair(t);
  t.equal(stream.bufferedBytes, 0);
  const small = `<message><body>${'é'.repeat(50)}</body></message>`;
  stream.write(small);
  t.equal(stream.bufferedBytes, Buffer.byteLength(small), 'not yet flushed: its bytes, not its characters');
  const drained = await Promise.race([once(stream, 'drain').then(() => true), sleep(2000).then(() => false)]);
  t.ok(drained, 'a drain follows a small write once bufferedBytes was read non-zero');
  t.equal(stream.bufferedBytes, 0);

  // The peer reads nothing: 8 M characters of CJK (24 MB of UTF-8) cannot all fit in the kernel.
  peer.pause();
  const chunk = `<message><body>${'漢'.repeat(1 << 20)}</body></message>`;
  for (let i = 0; i < 8; i++) stream.write(chunk);
  await sleep(100); // flushed
  const chars = chunk.length * 8;
  const buffered = stream.bufferedBytes;
  t.equal(buffered, stream.socket.writableLength, 'all of it in the socket by now');
  t.ok(buffered > chars, `in bytes (${buffered} > ${chars} characters)`);
  let received = 0;
  peer.on('data', (d: Buffer) => (received += d.length));
  const drain = once(stream, 'drain');
  peer.resume();
  await drain;
  t.equal(stream.bufferedBytes, 0, 'drain: everything went to the kernel');
  const total = Buffer.byteLength(small) + Buffer.byteLength(chunk) * 8;
  t.ok(await waitFor(() => received === total), 'the peer got every byte');
});

t.test('a drain follows bufferedBytes read non-zero when only the socket holds output, under its high-water mark', async (t) => {
  const { stream, peer } = await pair(t);
  peer.pause();
  const chunk = `<message><body>${'x'.repeat(12 * 1024)}</body></message>`; // under the 16 KiB mark
  const tick = () => new Promise((resolve) => setImmediate(resolve));
  let writes = 0;
  // Fill the kernel's buffers until a whole write stays in the socket.
  while (stream.socket.writableLength === 0 && writes < 20_000) {
    stream.write(chunk);
    writes++;
    await tick();
    await tick();
  }
  t.ok(stream.socket.writableLength > 0, `the socket holds output after ${writes} writes`);
  t.notOk(stream.socket.writableNeedDrain, 'and will emit no drain of its own');
  t.equal(stream.bufferedBytes, stream.socket.writableLength);
  const drained = Promise.race([once(stream, 'drain').then(() => true), sleep(3000).then(() => false)]);
  peer.resume();
  t.ok(await drained, 'drain');
  t.equal(stream.bufferedBytes, 0);
});

t.test('STARTTLS: a fresh decoder on the TLS socket; pause applies to it', async (t) => {
  const creds = generateSelfSigned(['a.test']);
  const context = tls.createSecureContext({ key: creds.key, cert: creds.cert });
  const { stream, peer, seen } = await pair(t);
  peer.write(HEADER + `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`);
  t.ok(await waitFor(() => seen.elements.length === 1));
  // Paused before the upgrade: the handshake still runs, the XML waits.
  stream.pauseReading();
  const upgraded = stream.upgradeServer(context);
  stream.resumeReading(); // toggled during the handshake: the last call holds once it is done
  stream.pauseReading();
  const secure = tls.connect({ socket: peer, rejectUnauthorized: false, servername: 'a.test' });
  await Promise.all([upgraded, once(secure, 'secureConnect')]);
  const body = Buffer.from(`<message><body>ü</body></message>`);
  const cut = body.indexOf(Buffer.from('ü')) + 1;
  secure.write(Buffer.concat([Buffer.from(HEADER), body.subarray(0, cut)]));
  await sleep(30);
  secure.write(body.subarray(cut));
  await sleep(100);
  t.equal(seen.elements.length, 1, 'nothing read while paused, after the upgrade too');
  stream.resumeReading();
  t.ok(await waitFor(() => seen.elements.length === 2));
  t.equal(seen.elements[1]!.element().getChildText('body'), 'ü', 'a character split across TLS records');
  secure.write(Buffer.from([0x3c, 0xc3, 0x28, 0x3e]));
  t.ok(await waitFor(() => seen.errors.length === 1));
  t.equal(seen.errors[0]!.condition, 'unsupported-encoding', 'invalid UTF-8 inside TLS');
  stream.write(`<message><body>${'ß'.repeat(100)}</body></message>`);
  t.ok(stream.bufferedBytes > 200);
  const drained = await Promise.race([once(stream, 'drain').then(() => true), sleep(2000).then(() => false)]);
  t.ok(drained, 'drain from the TLS socket');
  secure.destroy();
});

t.test('a peer that does not answer our close loses its socket after the close grace (limits.closeGraceSeconds)', async (t) => {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  // allowHalfOpen: the peer reads our close but never ends its side.
  const peer = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const [socket] = (await accepted) as [net.Socket];
  server.close();
  const stream = new XmlStream(socket, LIMITS, 300);
  t.teardown(() => {
    peer.destroy();
    stream.destroy();
  });
  peer.on('data', () => {});
  peer.write(HEADER);
  const closed = once(socket, 'close');
  const started = Date.now();
  stream.end();
  await closed;
  const took = Date.now() - started;
  // Closed at all (else tap's timeout), and not before the grace: a timer never fires early.
  t.ok(took >= 250, `socket destroyed after the 300 ms grace, not before (took ${took} ms)`);
});
