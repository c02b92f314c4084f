// Push (issue 13) with other real components: slixmpp as the phone (its own XEP-0198 resume) and
// ejabberd as the upstream; the app server is a real ejabberd account logged in directly to it.
// slixmpp enables push through the proxy, drops; a message gives one push carrying the
// publish-options secret and no body text; slixmpp resumes and gets the message once.
import t from 'tap';
import { startEjabberd } from '../harness/ejabberd.ts';
import { ACCOUNTS, startTestProxy, waitFor } from '../harness/proxy.ts';
import { RawClient } from '../harness/raw-client.ts';
import { Slixmpp, slixmppVersion } from '../harness/slixmpp.ts';
import { AppServer, APP_ACCOUNT } from '../harness/app-server.ts';
import { sessionOf } from '../harness/chat.ts';

const server = await startEjabberd({ tls: 'required', accounts: [...ACCOUNTS, APP_ACCOUNT] });
t.teardown(() => server.stop());
const tp = await startTestProxy(server, { push: { batchSeconds: 1 } });
t.teardown(() => tp.close());
const app = await AppServer.start(server);
t.teardown(() => app.stop());

t.test(`ejabberd upstream, slixmpp ${slixmppVersion} phone: enable, drop, one push with the secret, resume gets the message`, async (t) => {
  const alice = new Slixmpp(`alice@${server.domain}/slix`, 'alice-pw', tp.port);
  t.teardown(() => {
    if (alice.child.exitCode === null && alice.child.signalCode === null) alice.child.kill('SIGKILL');
  });
  await alice.waitEvent('session_start');
  await alice.waitEvent('sm_enabled');
  alice.command(`push ${app.jid} slix-node slix-secret`);
  t.equal((await alice.waitEvent('push_enabled')).type, 'result', 'enable answered by the proxy');
  t.same(tp.proxy.push!.registrations.list(`alice@${server.domain}`).map((r) => r.node), ['slix-node']);

  const session = sessionOf(tp, `alice@${server.domain}/slix`);
  const hibernating = new Promise((resolve) => session.once('hibernating', resolve));
  alice.command('drop');
  await hibernating;

  const { client: bob } = await RawClient.login({ port: server.c2sPort, user: 'bob', password: 'bob-pw', resource: 'pc', domain: server.domain });
  t.teardown(() => bob.destroy());
  bob.send(`<message to='alice@${server.domain}/slix' type='chat' id='m1'><body>secret plans</body></message>`);
  await app.waitForPushes(1, 20_000);
  const [push] = app.pushes;
  t.equal(push!.node, 'slix-node');
  t.equal(push!.publishOptions?.secret, 'slix-secret', 'publish-options passed through');
  t.equal(push!.body, 'New Message!', 'the placeholder');
  t.notMatch(push!.iq.toString(), /secret plans|bob@/, 'neither the body nor the sender in the push');
  t.match(push!.from, new RegExp(`^alice@${server.domain}/slix$`), "sent over the user's own upstream session");

  alice.command('reconnect');
  await alice.waitEvent('session_resumed');
  const message = await alice.waitEvent('message');
  t.equal(message.body, 'secret plans');
  await new Promise((r) => setTimeout(r, 2500)); // any second push would have gone by now
  t.equal(app.pushes.length, 1, 'one push, none for the resume');
  t.equal(alice.of('message').length, 1, 'the message once');
  await waitFor(() => tp.proxy.push!.stats.pending === 0, 'the app server answered');
});
