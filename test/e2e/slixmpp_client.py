#!/usr/bin/python3
"""
A slixmpp client with XEP-0198 (resumption on) driven line by line from stdin, for the
end-to-end test test/e2e/slixmpp-resume.test.ts.

Usage: /usr/bin/python3 slixmpp_client.py JID PASSWORD HOST PORT

Connects with STARTTLS to HOST:PORT, accepting any certificate (the proxy under test serves a
self-signed one). Prints one JSON object per line on stdout, flushed at once:
  {"event": "session_start", "jid": FULL_JID}
  {"event": "sm_enabled", "id": SM_ID, "resume": true|false}
  {"event": "resumed", "h": H, "previd": ID}   (the server's <resumed/>, as received)
  {"event": "session_resumed"}                  (xep_0198 finished resuming)
  {"event": "message", "from": JID, "body": BODY, "delay": true|false}
  {"event": "disconnected"}
  {"event": "error", ...}          (sm_failed, session_end, failed_auth, stream_error, ...)
  {"event": "ack", "h": H}         (every <a/> from the server)
Commands, one per line on stdin:
  drop                  abort the TCP connection without closing the stream (no reconnect)
  reconnect             connect again to HOST:PORT; xep_0198 resumes the previous SM id
  send TO BODY          send a chat message (BODY may contain spaces)
  push JID NODE SECRET  enable XEP-0357 push (publish-options with SECRET); emits push_enabled
  quit                  close the stream cleanly and exit 0 once disconnected
Set SLIXMPP_DEBUG=1 to get slixmpp's debug log (every SEND/RECV) on stderr.
"""
import asyncio
import json
import logging
import os
import ssl
import sys

import xml.etree.ElementTree as ET

try:
    import slixmpp
except ImportError as exc:  # pragma: no cover - environment check
    sys.stderr.write(f'slixmpp is not importable by {sys.executable}: {exc}; apt-get install python3-slixmpp\n')
    sys.exit(3)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password)
        self.target = (host, port)
        self.quitting = False
        self.done = asyncio.get_event_loop().create_future()

        self.register_plugin('xep_0198')
        self.register_plugin('xep_0045')  # group chats (test/e2e/muc-clients.test.ts)
        sm = self.plugin['xep_0198']
        sm.allow_resume = True

        # The proxy's certificate is self-signed: accept it (get_ssl_context keeps verify_mode
        # as long as ca_certs is None).
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        # No whitespace pings: the test reads the stream closely.
        self.whitespace_keepalive = False

        self.add_event_handler('session_start', self.on_session_start)
        self.add_event_handler('sm_enabled', self.on_sm_enabled)
        self.add_event_handler('session_resumed', lambda _: emit({'event': 'session_resumed'}))
        self.add_event_handler('message', self.on_message)
        self.add_event_handler('groupchat_message', lambda msg: emit({'event': 'groupchat', 'from': str(msg['from']), 'body': msg['body']}))
        self.add_event_handler('groupchat_presence', self.on_muc_presence)
        self.add_event_handler('disconnected', self.on_disconnected)
        self.add_event_handler('sm_failed', lambda st: emit({'event': 'error', 'what': 'sm_failed', 'xml': str(st)}))
        self.add_event_handler('session_end', lambda _: emit({'event': 'error', 'what': 'session_end'}))
        self.add_event_handler('failed_auth', lambda _: emit({'event': 'error', 'what': 'failed_auth'}))
        self.add_event_handler('stream_error', lambda st: emit({'event': 'error', 'what': 'stream_error', 'xml': str(st)}))
        self.add_event_handler('connection_failed', lambda e: emit({'event': 'error', 'what': 'connection_failed', 'detail': str(e)}))
        self.add_event_handler('reconnect_delay', lambda d: emit({'event': 'error', 'what': 'reconnect_delay', 'detail': str(d)}))
        self.register_handler(slixmpp.xmlstream.handler.Callback(
            'test: every ack',
            slixmpp.xmlstream.matcher.MatchXPath(sm.stanza.Ack.tag_name()),
            lambda ack: emit({'event': 'ack', 'h': ack['h']}),
            instream=True))
        self.register_handler(slixmpp.xmlstream.handler.Callback(
            'test: resumed',
            slixmpp.xmlstream.matcher.MatchXPath(sm.stanza.Resumed.tag_name()),
            lambda r: emit({'event': 'resumed', 'h': r['h'], 'previd': r['previd']}),
            instream=True))

    def on_session_start(self, _event):
        emit({'event': 'session_start', 'jid': self.boundjid.full})
        self.send_presence()

    def on_sm_enabled(self, enabled):
        emit({'event': 'sm_enabled', 'id': enabled['id'] or None, 'resume': bool(enabled['resume'])})

    def on_message(self, msg):
        if msg['type'] not in ('chat', 'normal'):
            return
        delay = msg.xml.find('{urn:xmpp:delay}delay') is not None
        emit({'event': 'message', 'from': str(msg['from']), 'body': msg['body'], 'delay': delay})

    def on_muc_presence(self, presence):
        x = presence.xml.find('{http://jabber.org/protocol/muc#user}x')
        codes = [s.get('code') for s in x.findall('{http://jabber.org/protocol/muc#user}status')] if x is not None else []
        emit({'event': 'muc_presence', 'from': str(presence['from']), 'type': presence['type'], 'statuses': codes})

    def on_disconnected(self, _reason):
        emit({'event': 'disconnected'})
        if self.quitting and not self.done.done():
            self.done.set_result(0)

    # ---- commands ---------------------------------------------------------------------------

    def drop(self):
        if self.transport is None:
            emit({'event': 'error', 'what': 'drop while not connected'})
            return
        if self.end_session_on_disconnect:
            # xep_0198 clears this on <enabled/>; if it were still set, a drop would end the
            # SM session (session_end) and the reconnect would bind afresh instead of resuming.
            emit({'event': 'error', 'what': 'end_session_on_disconnect still set'})
            self.end_session_on_disconnect = False
        # Abort the (TLS) transport: no </stream:stream>, no close_notify; the socket just goes.
        self.transport.abort()

    def reconnect_now(self):
        self.connect(self.target)

    def send_chat(self, to, body):
        self.send_message(mto=to, mbody=body, mtype='chat')

    async def enable_push(self, jid, node, secret):
        # slixmpp 1.8 has no XEP-0357 plugin: a counted iq stanza with the <enable/> payload.
        iq = self.make_iq_set()
        iq.xml.append(ET.fromstring(
            f"<enable xmlns='urn:xmpp:push:0' jid='{jid}' node='{node}'>"
            "<x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            f"<field var='secret'><value>{secret}</value></field></x></enable>"))
        try:
            result = await iq.send(timeout=10)
            emit({'event': 'push_enabled', 'type': result['type']})
        except Exception as exc:
            emit({'event': 'push_enabled', 'type': 'error', 'detail': repr(exc)})

    def quit(self):
        self.quitting = True
        if self.transport is None:
            self.done.set_result(0)
        else:
            self.disconnect(wait=5)


async def read_commands(client):
    loop = asyncio.get_event_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            # stdin closed: the test is gone; leave without ceremony.
            if not client.done.done():
                client.done.set_result(4)
            return
        cmd = line.decode('utf-8').rstrip('\n')
        try:
            if cmd == 'drop':
                client.drop()
            elif cmd == 'reconnect':
                client.reconnect_now()
            elif cmd.startswith('join '):
                _, room, nick = cmd.split(' ', 2)
                client.plugin['xep_0045'].join_muc(room, nick)
            elif cmd.startswith('say '):
                parts = cmd.split(' ', 2)
                client.send_message(mto=parts[1], mbody=parts[2], mtype='groupchat')
            elif cmd.startswith('send '):
                parts = cmd.split(' ', 2)
                client.send_chat(parts[1], parts[2] if len(parts) > 2 else '')
            elif cmd.startswith('push '):
                _, jid, node, secret = cmd.split(' ', 3)
                asyncio.ensure_future(client.enable_push(jid, node, secret))
            elif cmd == 'quit':
                client.quit()
                return
            elif cmd.strip() == '':
                continue
            else:
                emit({'event': 'error', 'what': 'unknown command', 'detail': cmd})
        except Exception as exc:  # report, keep going: the test decides
            emit({'event': 'error', 'what': 'command failed', 'detail': f'{cmd}: {exc!r}'})


async def main():
    if len(sys.argv) != 5:
        sys.stderr.write('usage: slixmpp_client.py JID PASSWORD HOST PORT\n')
        return 2
    jid, password, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if os.environ.get('SLIXMPP_DEBUG'):
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format='%(asctime)s %(name)s %(message)s')
    else:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    client = Client(jid, password, host, port)
    client.connect(client.target)
    commands = asyncio.ensure_future(read_commands(client))
    code = await client.done
    commands.cancel()
    return code


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))
