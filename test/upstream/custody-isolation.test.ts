/**
 * Custody's isolation of suspects (issue 10 §2a): after the server closed a link while stanzas
 * were in flight, the next link gets them one at a time, each after the one before it is
 * confirmed, so the one the server will not take is singled out (reject()) and the others go
 * through, in order, with whatever the client sent meanwhile behind them.
 */
import t from 'tap';
import { Custody } from '../../src/upstream/custody.ts';
import { fakeLink } from './fake-link.ts';

const msg = (id: string): string => `<message id='${id}'><body>${id}</body></message>`;

t.test('suspects go out one at a time; later stanzas wait behind them, in order', async (t) => {
  const custody = new Custody(1000);
  const confirmed: number[] = [];
  custody.on('confirmed', (n: number) => confirmed.push(n));
  const first = fakeLink();
  custody.attach(first.link);
  custody.push(msg('a'));
  custody.push(msg('b'));
  custody.push(msg('c'));
  t.equal(custody.inFlight, 3);
  // The server closed the link with all three in flight.
  custody.isolate(custody.inFlight);
  custody.detach();
  t.ok(custody.isolating);
  custody.push(msg('d')); // sent while down

  const second = fakeLink();
  custody.attach(second.link);
  t.same(second.sent, [msg('a')], 'only the first suspect goes out');
  custody.push(msg('e'));
  t.same(second.sent, [msg('a')], 'a new stanza waits behind the suspects');
  await second.answer();
  t.same(second.sent, [msg('a'), msg('b')], 'the next suspect once the first is confirmed');
  await second.answer();
  t.same(second.sent, [msg('a'), msg('b'), msg('c')]);
  await second.answer();
  t.notOk(custody.isolating, 'all suspects cleared');
  t.same(second.sent, [msg('a'), msg('b'), msg('c'), msg('d'), msg('e')], 'the rest together, in order');
  await second.answer();
  t.same(confirmed, [1, 1, 1, 2]);
  t.equal(custody.pending, 0);
});

t.test('reject() drops the suspect that was in flight alone, counted as handled; the rest go on', async (t) => {
  const custody = new Custody(1000);
  const counted: number[] = [];
  custody.on('confirmed', (_n: number, c: number) => counted.push(c));
  const first = fakeLink();
  custody.attach(first.link);
  custody.push(msg('a'));
  custody.push(msg('bad'));
  custody.push(msg('c'));
  custody.isolate(custody.inFlight);
  custody.detach();

  const second = fakeLink();
  custody.attach(second.link);
  await second.answer(); // a confirmed
  t.same(second.sent, [msg('a'), msg('bad')]);
  t.equal(custody.inFlight, 1, 'bad alone in flight');
  custody.detach(); // the server closed the link over it
  t.equal(custody.reject(), msg('bad'));
  t.same(counted, [1, 1], 'a and the rejected one both count in h');
  t.ok(custody.isolating, 'c is still a suspect');

  const third = fakeLink();
  custody.attach(third.link);
  t.same(third.sent, [msg('c')], 'the rejected stanza is never sent again');
  await third.answer();
  t.equal(custody.pending, 0);
  t.notOk(custody.isolating);
});

t.test('reject() needs the link gone and something held', async (t) => {
  const custody = new Custody(1000);
  const { link } = fakeLink();
  custody.attach(link);
  custody.push(msg('a'));
  t.equal(custody.reject(), undefined, 'not while linked');
  custody.detach();
  t.equal(custody.reject(), msg('a'));
  t.equal(custody.reject(), undefined, 'nothing left');
});
