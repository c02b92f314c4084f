/**
 * Parsing speed of StreamParser alone (src/xml/stream-parser.ts): feeds one stream header and
 * N typical message stanzas (~300 bytes each, a few attributes, a body, one extension element)
 * in 16 KiB chunks, and prints µs per stanza. No sockets, no decoding: the parser's own cost.
 * Figures are CPU time of this process (user + system, `process.cpuUsage()`), so other load on
 * a shared machine disturbs them less than wall time; wall time is printed too.
 *
 *   npx tsx bench/parse.ts [stanzas=50000] [rounds=5] [parser module, default src/xml/stream-parser.ts]
 *
 * Each round uses a fresh parser; the first round warms the JIT and is not counted. Prints the
 * median and the best of the counted rounds.
 */
import { pathToFileURL } from 'node:url';
import type { StreamParser as Parser } from '../src/xml/stream-parser.ts';

const N = Number(process.argv[2] ?? 50_000);
const ROUNDS = Number(process.argv[3] ?? 5);
const CHUNK = 16 * 1024;
// Another copy of the parser (e.g. an older commit's, for a before/after comparison).
const { StreamParser } = (await import(process.argv[4] ? pathToFileURL(process.argv[4]).href : '../src/xml/stream-parser.ts')) as { StreamParser: typeof Parser };

const HEADER = `<?xml version='1.0'?><stream:stream to='proxy.test' version='1.0' xml:lang='en' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`;

function stanza(i: number): string {
  return `<message type='chat' to='user${i % 1000}@proxy.test/phone' id='m-${i}-a8f3c2d1'>` +
    `<body>Message number ${i}: the quick brown fox jumps over the lazy dog, twice &amp; more. ` +
    `Consectetur adipiscing elit.</body>` +
    `<active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/></message>`;
}

let text = HEADER;
for (let i = 0; i < N; i++) text += stanza(i);
const chunks: string[] = [];
for (let i = 0; i < text.length; i += CHUNK) chunks.push(text.slice(i, i + CHUNK));
const avg = (text.length - HEADER.length) / N;

const limits = { maxStanzaBytes: 256 * 1024, maxDepth: 32 };
const perStanza: number[] = [];
const wallPerStanza: number[] = [];
for (let round = 0; round <= ROUNDS; round++) {
  const p = new StreamParser(limits);
  let count = 0;
  p.on('element', () => count++);
  p.on('error', (e) => { throw e; });
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  for (const c of chunks) p.write(c);
  const cpu = process.cpuUsage(cpu0);
  const wall = Number(process.hrtime.bigint() - t0) / 1000;
  if (count !== N) throw new Error(`parsed ${count} of ${N}`);
  if (round > 0) {
    perStanza.push((cpu.user + cpu.system) / N);
    wallPerStanza.push(wall / N);
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
console.log(`${N} stanzas of ~${avg.toFixed(0)} bytes in ${CHUNK}-byte chunks, ${ROUNDS} rounds after 1 warm-up: ` +
  `CPU median ${median(perStanza).toFixed(3)} µs/stanza (best ${Math.min(...perStanza).toFixed(3)}), wall median ${median(wallPerStanza).toFixed(3)}`);
