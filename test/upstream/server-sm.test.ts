/**
 * Custody over the server's own XEP-0198 acks, against a scripted upstream (plain TCP, SASL
 * PLAIN, sm:3 offered) whose SM misbehaves the ways legacy servers do: it answers `<r/>`
 * correctly, goes quiet (Openfire past its queue limit), or resets its count. In each case
 * every stanza must end up confirmed exactly once, never before the server could have it.
 * The end-to-end proof against a real server is in test/e2e/faults.test.ts (Prosody with
 * mod_smacks); these are the protocol edge cases Prosody does not produce.
 */
import t from 'tap';
import * as net from 'node:net';
import { UpstreamLink } from '../../src/upstream/link.ts';
import { Custody } from '../../src/upstream/custody.ts';
import { isStanzaText } from '../../src/upstream/server-sm.ts';

/** `slow`: answers correctly and in order, but stalls once (a GC pause) past the custody timeout for `<r/>`. */
type SmBehaviour = 'correct' | 'quiet' | 'reset' | 'slow' | 'rejects';

/** A scripted server: logs anyone in, binds, offers and enables SM, then answers per `behaviour`. */
async function fakeUpstream(behaviour: SmBehaviour, offerSm = true) {
  const seen = { stanzas: 0, r: 0, pings: 0 };
  const server = net.createServer((socket) => {
    let buf = '';
    let handled = 0; // stanzas since <enable/>
    let enabled = false;
    let streams = 0;
    // Answers go out in order; while stalled they wait, then leave together.
    let stallUntil = 0;
    let queue = Promise.resolve();
    const answer = (xml: string) => {
      queue = queue.then(() => new Promise((r) => setTimeout(r, Math.max(0, stallUntil - Date.now())))).then(() => void socket.write(xml));
    };
    socket.on('data', (chunk) => {
      buf += chunk.toString();
      for (;;) {
        const open = buf.match(/^\s*(<\?xml[^>]*\?>)?\s*<stream:stream[^>]*>/);
        if (open) {
          buf = buf.slice(open[0].length);
          streams++;
          const features = streams === 1
            ? `<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>`
            : `<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>${offerSm ? `<sm xmlns='urn:xmpp:sm:3'/>` : ''}`;
          socket.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='fake.test' id='s${streams}' version='1.0'><stream:features>${features}</stream:features>`);
          continue;
        }
        // One top-level element (these are flat or shallow enough for a lazy match).
        const el = buf.match(/^\s*(<(\w+)[^>]*\/>|<(\w+)[^>]*>[\s\S]*?<\/\3>)/);
        if (!el) break;
        buf = buf.slice(el[0].length);
        const xml = el[1]!;
        if (xml.startsWith('<auth')) socket.write(`<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`);
        else if (xml.startsWith('<enable')) {
          enabled = true;
          socket.write(`<enabled xmlns='urn:xmpp:sm:3'/>`);
        } else if (xml.startsWith('<r')) {
          if (behaviour === 'slow' && seen.r === 0) stallUntil = Date.now() + 450;
          seen.r++;
          if (behaviour === 'correct' || behaviour === 'slow') answer(`<a xmlns='urn:xmpp:sm:3' h='${handled}'/>`);
          if (behaviour === 'rejects') {
            socket.end(`<stream:error><unsupported-stanza-type xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`);
          }
          if (behaviour === 'reset') socket.write(`<a xmlns='urn:xmpp:sm:3' h='0'/>`);
        } else if (isStanzaText(xml)) {
          if (enabled) handled++;
          const id = /\sid='([^']*)'/.exec(xml)?.[1];
          if (xml.includes('urn:ietf:params:xml:ns:xmpp-bind')) socket.write(`<iq type='result' id='${id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>u@fake.test/r</jid></bind></iq>`);
          else if (xml.includes('urn:xmpp:ping')) {
            seen.pings++;
            answer(`<iq type='result' id='${id}' from='fake.test'/>`);
          } else seen.stanzas++;
        }
      }
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { port, seen, close: () => new Promise((r) => server.close(r)) };
}

async function openLink(port: number): Promise<UpstreamLink> {
  const link = await UpstreamLink.open(
    { host: '127.0.0.1', port, domain: 'fake.test', tls: 'none', acceptSelfSigned: false, timeoutMs: 3000, keepaliveMs: 0, pingTimeoutMs: 1000, limits: { maxStanzaBytes: 1 << 20, maxDepth: 32 } },
    { username: 'u', password: 'p' },
  );
  await link.bind('r', 1000);
  return link;
}

const settle = (custody: Custody, n: number) =>
  new Promise<number>((resolve) => {
    let confirmed = 0;
    custody.on('confirmed', (k: number) => {
      confirmed += k;
      if (confirmed >= n) setTimeout(() => resolve(confirmed), 100); // let any excess show up
    });
  });

for (const behaviour of ['correct', 'slow', 'quiet', 'reset'] as const) {
  t.test(`server SM that is ${behaviour}: every stanza confirmed exactly once`, async (t) => {
    const upstream = await fakeUpstream(behaviour);
    t.teardown(upstream.close);
    const link = await openLink(upstream.port);
    t.teardown(() => link.destroy());
    const sm = link.enableSm();
    t.ok(sm, 'sm:3 offered, so it is enabled');
    const states: string[] = [];
    sm!.on('state', (s: string) => states.push(s));
    // A client's stanzas come a round trip after its bind, when <enabled/> is in.
    await new Promise((resolve) => sm!.once('state', resolve));
    const custody = new Custody(300);
    custody.attach(link);
    const done = settle(custody, 30);
    for (let i = 0; i < 20; i++) custody.push(`<message to='x@fake.test' id='m${i}'><body>${i}</body></message>`);
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 20; i < 30; i++) custody.push(`<message to='x@fake.test' id='m${i}'><body>${i}</body></message>`);
    t.equal(await done, 30, 'all 30 confirmed, none twice');
    t.equal(custody.pending, 0, 'nothing left in custody');
    t.equal(upstream.seen.stanzas, 30, 'the server got each once');
    if (behaviour === 'correct') {
      t.same(states, ['enabled'], 'SM trusted throughout');
      t.ok(upstream.seen.r >= 1, 'confirmed by <r/>');
      t.equal(upstream.seen.pings, 0, 'no ping barrier needed');
    } else if (behaviour === 'slow') {
      t.same(states, ['enabled'], 'a late but right <a/> is not taken for broken SM');
      t.ok(upstream.seen.pings >= 1, 'the timeout still sent a ping barrier');
    } else {
      t.same(states, ['enabled', 'broken'], 'SM found unreliable');
      t.ok(upstream.seen.pings >= 1, 'the ping barrier took over');
      t.equal(sm!.state, 'broken');
    }
  });
}

t.test('a server that rejects <r/> with a stream error: SM marked broken, the stanzas stay in custody', async (t) => {
  const upstream = await fakeUpstream('rejects');
  t.teardown(upstream.close);
  const link = await openLink(upstream.port);
  t.teardown(() => link.destroy());
  const sm = link.enableSm()!;
  await new Promise((resolve) => sm.once('state', resolve));
  const custody = new Custody(300);
  custody.attach(link);
  const closed = new Promise<string>((resolve) => link.once('close', resolve));
  for (let i = 0; i < 5; i++) custody.push(`<message to='x@fake.test' id='m${i}'><body>${i}</body></message>`);
  t.match(await closed, /unsupported-stanza-type/, 'the link closed on the stream error');
  t.equal(sm.state, 'broken', 'its SM is not trusted again');
  custody.detach();
  t.equal(custody.pending, 5, 'all five still held for the next link');
});

t.test('a server without sm:3: no <enable/>, custody by ping barriers alone', async (t) => {
  const upstream = await fakeUpstream('correct', false);
  t.teardown(upstream.close);
  const link = await openLink(upstream.port);
  t.teardown(() => link.destroy());
  t.equal(link.enableSm(), undefined, 'not offered, not enabled');
  const custody = new Custody(300);
  custody.attach(link);
  const done = settle(custody, 10);
  for (let i = 0; i < 10; i++) custody.push(`<message to='x@fake.test' id='m${i}'><body>${i}</body></message>`);
  t.equal(await done, 10, 'all confirmed once');
  t.equal(upstream.seen.r, 0, 'no <r/> sent');
  t.ok(upstream.seen.pings >= 1, 'confirmed by ping');
});

t.test('what XEP-0198 counts: stanzas, not nonzas', async (t) => {
  t.equal(isStanzaText(`<inactive xmlns='urn:xmpp:csi:0'/>`), false, 'CSI nonza');
  t.equal(isStanzaText(`<r xmlns='urn:xmpp:sm:3'/>`), false, '<r/>');
  t.equal(isStanzaText(`<iq type='get' id='1'/>`), true, 'iq');
  t.equal(isStanzaText(`<presence/>`), true, 'presence');
  t.equal(isStanzaText(`<message to='a@b'/>`), true, 'message');
});
