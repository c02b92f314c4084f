/**
 * The push iq (XEP-0357 §7) and the publish-options form of an `<enable/>` (§5): the output is
 * parsed back with ltx and checked element by element.
 */
import t from 'tap';
import { parse, type Element } from 'ltx';
import { notificationIq, publishOptionsOf, type NotificationOptions } from '../../src/push/notification.ts';

const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const OPTIONS_FORM =
  "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>" +
  "<field var='secret'><value>eruio234vzxc2kla-91&lt;</value></field><field var='endpoint'><value>https://push.example/a?b=1&amp;c=2</value></field></x>";

const base: NotificationOptions = { id: 'push-1', to: 'push.example', node: 'yxs32uqsflafdk3iuqo', count: 3 };

/** The iq parsed, with its parts and the summary form's fields as var → values. */
function push(options: Partial<NotificationOptions> = {}) {
  const iq = parse(notificationIq({ ...base, ...options })) as Element;
  const pubsub = iq.getChild('pubsub', NS_PUBSUB)!;
  const publish = pubsub.getChild('publish')!;
  const x = publish.getChild('item')?.getChild('notification', 'urn:xmpp:push:0')?.getChild('x', 'jabber:x:data');
  const fields = new Map(x?.getChildren('field').map((f) => [String(f.attrs.var), f.getChildren('value').map((v) => v.getText())]));
  return { iq, pubsub, publish, x, fields };
}

t.test('the publish: iq set to the app server, the node, one item, the summary form', async (t) => {
  const { iq, pubsub, publish, x, fields } = push();
  t.match(iq.attrs, { type: 'set', id: 'push-1', to: 'push.example' });
  t.notOk('from' in iq.attrs, 'no from: the server stamps it');
  t.equal(iq.getNS(), undefined, 'no xmlns on the iq: the stream has jabber:client');
  t.same(pubsub.getChildElements().map((c) => c.name), ['publish'], 'no publish-options without a form');
  t.equal(publish.attrs.node, 'yxs32uqsflafdk3iuqo');
  t.equal(publish.getChildren('item').length, 1);
  t.same(publish.getChild('item')!.attrs, {}, 'an item without id: the service assigns it');
  t.equal(x?.attrs.type, 'submit');
  t.same([...fields.keys()], ['FORM_TYPE', 'message-count'], 'no sender or body fields unless given');
  t.same(fields.get('FORM_TYPE'), ['urn:xmpp:push:summary']);
  t.same(fields.get('message-count'), ['3']);
});

t.test('sender and body, in that order', async (t) => {
  const { fields } = push({ sender: 'juliet@capulet.example/balcony', body: 'Wherefore art thou, Romeo?' });
  t.same([...fields.keys()], ['FORM_TYPE', 'message-count', 'last-message-sender', 'last-message-body']);
  t.same(fields.get('last-message-sender'), ['juliet@capulet.example/balcony']);
  t.same(fields.get('last-message-body'), ['Wherefore art thou, Romeo?']);
  t.same([...push({ body: 'New message' }).fields.keys()], ['FORM_TYPE', 'message-count', 'last-message-body'], 'a body without sender');
  t.same(push({ body: '' }).fields.get('last-message-body'), [''], 'an empty body is still a field');
});

t.test('escaping: < & and quotes in body, sender, node, id, to', async (t) => {
  const nasty = `a<b>&c"d'e]]>`;
  const xml = notificationIq({ ...base, id: nasty, to: nasty, node: nasty, sender: nasty, body: `${nasty}</value></field><field var='x'>` });
  t.notMatch(xml, "<field var='x'>", 'no element injected');
  const { iq, publish, fields } = push({ id: nasty, to: nasty, node: nasty, sender: nasty, body: `${nasty}</value></field><field var='x'>` });
  t.equal(iq.attrs.id, nasty);
  t.equal(iq.attrs.to, nasty);
  t.equal(publish.attrs.node, nasty);
  t.same(fields.get('last-message-sender'), [nasty]);
  t.same(fields.get('last-message-body'), [`${nasty}</value></field><field var='x'>`]);
  t.equal(fields.size, 4);
});

t.test('an empty node: no node attribute', async (t) => {
  const { publish } = push({ node: '' });
  t.notOk('node' in publish.attrs);
});

t.test('the count must be a non-negative integer', async (t) => {
  t.same(push({ count: 0 }).fields.get('message-count'), ['0']);
  for (const count of [-1, 1.5, NaN, Infinity]) t.throws(() => notificationIq({ ...base, count }), RangeError, String(count));
});

t.test('the publish-options form is copied intact after the publish', async (t) => {
  const { pubsub } = push({ publishOptions: OPTIONS_FORM });
  t.same(pubsub.getChildElements().map((c) => c.name), ['publish', 'publish-options']);
  const form = pubsub.getChild('publish-options')!.getChild('x', 'jabber:x:data')!;
  t.equal(form.toString(), (parse(OPTIONS_FORM) as Element).toString(), 'the same element, attributes and text');
  const secret = form.getChildByAttr('var', 'secret')!;
  t.equal(secret.getChildText('value'), 'eruio234vzxc2kla-91<');
  t.equal(form.getChildByAttr('var', 'endpoint')!.getChildText('value'), 'https://push.example/a?b=1&c=2');
});

t.test('a publish-options that is not a data form is refused (TypeError)', async (t) => {
  t.throws(() => notificationIq({ ...base, publishOptions: "<x xmlns='jabber:x:data'>" }), TypeError, 'not well-formed');
  t.throws(() => notificationIq({ ...base, publishOptions: '' }), TypeError, 'empty');
  t.throws(() => notificationIq({ ...base, publishOptions: "<y xmlns='jabber:x:data'/>" }), TypeError, 'not an x');
  t.throws(() => notificationIq({ ...base, publishOptions: "<x xmlns='jabber:x:oob'/>" }), TypeError, 'another namespace');
  t.throws(() => notificationIq({ ...base, publishOptions: '<x/>' }), TypeError, 'no namespace');
  const { pubsub } = push({ publishOptions: "<x xmlns='jabber:x:data' type='submit'/><iq type='set'/>" });
  t.equal(pubsub.getChild('publish-options')!.children.length, 1, 'what follows the form is not copied');
});

t.test('publishOptionsOf', async (t) => {
  const enable = (inner: string) => parse(`<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n1'>${inner}</enable>`) as Element;
  t.equal(publishOptionsOf(enable('')), undefined, 'no form');
  t.equal(publishOptionsOf(enable("<x xmlns='jabber:x:oob'/>")), undefined, 'an x of another namespace is no form');
  const text = publishOptionsOf(enable(OPTIONS_FORM));
  t.equal(text, (parse(OPTIONS_FORM) as Element).toString(), 'the form as XML text');
  t.equal(parse(text!).getChildByAttr('var', 'secret')?.getChildText('value'), 'eruio234vzxc2kla-91<');
  const untyped = publishOptionsOf(enable("<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>s</value></field></x>"));
  t.ok(untyped, 'a form without FORM_TYPE is taken');
  t.throws(
    () => publishOptionsOf(enable("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field></x>")),
    new RangeError('push: publish-options is not a pubsub#publish-options form'),
  );
  t.throws(() => publishOptionsOf(enable("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'/></x>")), RangeError, 'a FORM_TYPE without value');
  const inherited = parse("<p:enable xmlns:p='urn:xmpp:push:0' xmlns='jabber:x:data'><x type='submit'/></p:enable>") as Element;
  t.equal(parse(publishOptionsOf(inherited)!).attrs.xmlns, 'jabber:x:data', 'a namespace declared on an ancestor is declared on the text');
  const roundTrip = push({ publishOptions: text }).pubsub.getChild('publish-options')!.getChild('x', 'jabber:x:data')!;
  t.equal(roundTrip.toString(), text, 'what publishOptionsOf gives, notificationIq takes');
});
