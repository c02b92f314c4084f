/**
 * The push itself (XEP-0357 §7): the pubsub publish the proxy sends to a registration's app
 * server on behalf of a sleeping client, and the client's publish-options form taken from its
 * `<enable/>` (§5) to be copied into every publish.
 *
 * Built with ltx Elements, which escape attributes and text; the client's form is parsed and
 * serialized again, never pasted as text, so nothing but one `<x/>` element gets into the iq.
 */
import { Element, parse } from 'ltx';

const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
const NS_PUSH = 'urn:xmpp:push:0';
const NS_DATA = 'jabber:x:data';
const PUSH_SUMMARY = 'urn:xmpp:push:summary';
const PUBLISH_OPTIONS = 'http://jabber.org/protocol/pubsub#publish-options';

/** What {@link notificationIq} publishes, and where (XEP-0357 §7). */
export interface NotificationOptions {
  /** The iq id (unique, unguessable: the caller generates it). */
  id: string;
  /** The app server's JID (the registration's `jid`). */
  to: string;
  /** The registration's pubsub node (may be '' : then no node attribute). */
  node: string;
  /** `message-count` of the urn:xmpp:push:summary form: a non-negative integer. */
  count: number;
  /** `last-message-sender` (a JID), only when configured (push.withSender). */
  sender?: string;
  /** `last-message-body`: the body (push.withBody) or the placeholder for important stanzas. */
  body?: string;
  /** The client's publish-options data form, the `<x xmlns='jabber:x:data'>` element as XML text, copied into `<publish-options>`. */
  publishOptions?: string;
}

/**
 * The push as an iq set to the app server (XEP-0357 §7, example 10): a publish to the
 * registration's node of one item holding `<notification xmlns='urn:xmpp:push:0'>` with a
 * `urn:xmpp:push:summary` form (message-count, and last-message-sender and last-message-body only
 * when given), then the client's publish-options. No `from`: the server stamps the account's JID.
 * @returns the iq as XML text.
 * @throws RangeError when `count` is not a non-negative integer.
 * @throws TypeError when `publishOptions` is not well-formed XML or its root is not an `x` in
 *   jabber:x:data (text after the root element is dropped: ltx stops at its end).
 */
export function notificationIq(options: NotificationOptions): string {
  const { count } = options;
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`push: message-count ${count} is not a count`);
  const form = options.publishOptions === undefined ? undefined : parseForm(options.publishOptions);
  const iq = new Element('iq', { type: 'set', id: options.id, to: options.to });
  const pubsub = iq.c('pubsub', { xmlns: NS_PUBSUB });
  const x = pubsub
    .c('publish', options.node === '' ? {} : { node: options.node })
    .c('item')
    .c('notification', { xmlns: NS_PUSH })
    .c('x', { xmlns: NS_DATA, type: 'submit' });
  field(x, 'FORM_TYPE', PUSH_SUMMARY);
  field(x, 'message-count', String(count));
  if (options.sender !== undefined) field(x, 'last-message-sender', options.sender);
  if (options.body !== undefined) field(x, 'last-message-body', options.body);
  if (form) pubsub.c('publish-options').cnode(form);
  return iq.toString();
}

/**
 * The publish-options form of an `<enable xmlns='urn:xmpp:push:0'>` (XEP-0357 §5): its
 * `<x xmlns='jabber:x:data'>` child as XML text (with its xmlns, to stand alone), for the
 * registration's `form`; undefined when the client sent none.
 * @throws RangeError('push: publish-options is not a pubsub#publish-options form') when the form
 *   has a FORM_TYPE other than `http://jabber.org/protocol/pubsub#publish-options` (XEP-0004
 *   §3.4; the caller answers `bad-request`). A form without FORM_TYPE is taken as it is.
 */
export function publishOptionsOf(enable: Element): string | undefined {
  const x = enable.getChildElements().find((c) => c.name === 'x' && c.getNS() === NS_DATA);
  if (!x) return undefined;
  const formType = x.getChildElements().find((c) => c.name === 'field' && c.attrs.var === 'FORM_TYPE');
  if (formType && formType.getChildText('value') !== PUBLISH_OPTIONS) {
    throw new RangeError('push: publish-options is not a pubsub#publish-options form');
  }
  if (x.attrs.xmlns === NS_DATA) return x.toString();
  // The namespace came from an ancestor: declared on a copy, the text parses on its own.
  const own = parse(x.toString()) as Element;
  own.attrs.xmlns = NS_DATA;
  return own.toString();
}

/** Parses a stored publish-options form; see {@link notificationIq}. */
function parseForm(xml: string): Element {
  let form: Element;
  try {
    form = parse(xml) as Element;
  } catch (cause) {
    throw new TypeError('push: publish-options is not well-formed XML', { cause });
  }
  if (form.name !== 'x' || form.attrs.xmlns !== NS_DATA) {
    throw new TypeError("push: publish-options is not an <x xmlns='jabber:x:data'/> form");
  }
  return form;
}

/** Appends `<field var><value>text</value></field>` to a data form (XEP-0004 §3.2). */
function field(x: Element, name: string, value: string): void {
  x.c('field', { var: name }).c('value').t(value);
}
