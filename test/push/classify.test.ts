/**
 * pushKind (XEP-0357 §7, mod_cloud_notify's is_important plus the project's rules): one check per
 * rule, on stanzas as a server sends them to a client.
 */
import t from 'tap';
import { parse, type Element } from 'ltx';
import { pushKind } from '../../src/push/classify.ts';

const kind = (xml: string) => pushKind(parse(xml) as Element);
const msg = (inner: string, type = 'chat') =>
  `<message xmlns='jabber:client' from='b@x/r' to='a@x/r' type='${type}' id='m1'>${inner}</message>`;
const carbon = (dir: 'sent' | 'received', inner: string, type = 'chat') =>
  msg(`<${dir} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>${msg(inner, type)}</forwarded></${dir}>`);
const CHAT_STATE = "<active xmlns='http://jabber.org/protocol/chatstates'/>";

t.test('important', async (t) => {
  t.equal(kind(msg('<body>hi</body>')), 'important', 'a body');
  t.equal(kind(msg('<body>hi</body>', 'normal')), 'important', 'a body, type normal');
  t.equal(kind("<message from='b@x' to='a@x'><body>hi</body></message>"), 'important', 'no type, no xmlns');
  t.equal(kind(msg(`<body>hi</body>${CHAT_STATE}`)), 'important', 'a chat state with a body');
  t.equal(kind(msg("<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'/></encrypted>")), 'important', 'OMEMO 0.3');
  t.equal(kind(msg("<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted>")), 'important', 'OMEMO urn:xmpp:omemo:2');
  t.equal(kind(msg("<openpgp xmlns='urn:xmpp:openpgp:0'>b64</openpgp>")), 'important', 'OX');
  t.equal(kind(msg("<x xmlns='jabber:x:encrypted'>b64</x>")), 'important', 'legacy OpenPGP');
  t.equal(kind(msg("<propose xmlns='urn:xmpp:jingle-message:0' id='c1'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>")), 'important', 'JMI propose :0');
  t.equal(kind(msg("<propose xmlns='urn:xmpp:jingle-message:1' id='c1'/>")), 'important', 'JMI propose :1');
  t.equal(kind(msg('<subject>topic</subject><body>hello room</body>', 'groupchat')), 'important', 'groupchat subject with a body');
  t.equal(kind(msg('<body>hello room</body>', 'groupchat')), 'important', 'groupchat body');
  t.equal(kind(carbon('received', '<body>hi</body>')), 'important', 'received carbon with a body');
  t.equal(kind(msg('<x:body xmlns:x="jabber:client">hi</x:body>')), 'important', 'a prefixed body');
});

t.test('unimportant', async (t) => {
  t.equal(kind(msg("<received xmlns='urn:xmpp:receipts' id='m0'/>")), 'unimportant', 'a receipt alone');
  t.equal(kind(msg("<displayed xmlns='urn:xmpp:chat-markers:0' id='m0'/><store xmlns='urn:xmpp:hints'/>")), 'unimportant', 'a chat marker');
  t.equal(kind(msg("<reactions xmlns='urn:xmpp:reactions:0' id='m0'><reaction>👍</reaction></reactions>")), 'unimportant', 'a reaction');
  t.equal(kind(msg("<x xmlns='jabber:x:conference' jid='room@muc.x'/>", 'normal')), 'unimportant', 'a direct MUC invitation without body');
  t.equal(kind(msg(`<received xmlns='urn:xmpp:receipts' id='m0'/>${CHAT_STATE}`)), 'unimportant', 'a receipt with a chat state');
  t.equal(kind(msg("<retract xmlns='urn:xmpp:jingle-message:0' id='c1'/>")), 'unimportant', 'a JMI retract is no call');
  t.equal(kind(carbon('received', "<received xmlns='urn:xmpp:receipts' id='m0'/>")), 'unimportant', 'received carbon of a receipt');
  t.equal(kind("<iq xmlns='jabber:client' type='set' id='i1'><query xmlns='jabber:iq:roster'/></iq>"), 'unimportant', 'iq set');
  t.equal(kind("<iq xmlns='jabber:client' type='get' id='i1'><ping xmlns='urn:xmpp:ping'/></iq>"), 'unimportant', 'iq get');
});

t.test('none', async (t) => {
  t.equal(kind("<presence xmlns='jabber:client' from='b@x/r'/>"), 'none', 'presence');
  t.equal(kind("<presence xmlns='jabber:client' from='b@x' type='subscribe'/>"), 'none', 'a subscription request (presence)');
  t.equal(kind("<iq xmlns='jabber:client' type='result' id='i1'/>"), 'none', 'iq result');
  t.equal(kind("<iq xmlns='jabber:client' type='error' id='i1'><error type='cancel'/></iq>"), 'none', 'iq error');
  t.equal(kind(msg("<body>hi</body><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>", 'error')), 'none', 'an error message, body included');
  t.equal(kind(msg('<body>news</body>', 'headline')), 'none', 'headline with a body');
  t.equal(kind(carbon('sent', '<body>hi</body>')), 'none', 'sent carbon with a body');
  t.equal(kind(carbon('received', CHAT_STATE)), 'none', 'received carbon of a chat state');
  t.equal(kind(carbon('received', '<body>news</body>', 'headline')), 'none', "a received carbon: the inner message's type counts");
  t.equal(kind(msg("<received xmlns='urn:xmpp:carbons:2'/>")), 'none', 'a received carbon without its message');
  t.equal(kind(msg(CHAT_STATE)), 'none', 'a chat state alone');
  t.equal(
    kind(msg("<composing xmlns='http://jabber.org/protocol/chatstates'/><thread>t1</thread><delay xmlns='urn:xmpp:delay' stamp='2024-01-01T00:00:00Z'/><origin-id xmlns='urn:xmpp:sid:0' id='o1'/><stanza-id xmlns='urn:xmpp:sid:0' id='s1' by='a@x'/><no-store xmlns='urn:xmpp:hints'/>")),
    'none',
    'a chat state with metadata',
  );
  t.equal(kind(msg('<subject>new topic</subject>', 'groupchat')), 'none', 'a subject change');
  t.equal(kind(msg('<subject>new topic</subject><body> </body>', 'groupchat')), 'none', 'a subject change with an empty body');
  t.equal(
    kind(msg("<result xmlns='urn:xmpp:mam:2' queryid='q1' id='a1'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'><body>old</body></message></forwarded></result>", 'normal')),
    'none',
    'a MAM result (mam:2)',
  );
  t.equal(kind(msg("<result xmlns='urn:xmpp:mam:1' queryid='q1' id='a1'/>", 'normal')), 'none', 'a MAM result (mam:1)');
  t.equal(kind(msg('')), 'none', 'an empty message');
  t.equal(kind(msg("<thread>t1</thread><stanza-id xmlns='urn:xmpp:sid:0' id='s1' by='a@x'/>")), 'none', 'metadata only');
  t.equal(kind(msg('<body> \n\t</body>')), 'none', 'a whitespace body');
  t.equal(kind(msg('<body></body>')), 'none', 'an empty body');
  t.equal(kind("<r xmlns='urn:xmpp:sm:3'/>"), 'none', 'a nonza');
});
