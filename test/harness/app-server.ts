/**
 * An XEP-0357 app server for the push tests: a real account on the harness Prosody, logged in
 * directly to Prosody (not through the proxy) with @xmpp/client. It records every pubsub publish
 * it gets (parsed) and answers it as the test says: result, an error, or nothing at all.
 *
 * Registrations must name its FULL JID ({@link AppServer.jid}): an iq to the bare JID would be
 * answered by the server on behalf of the account (PEP), never reaching this client.
 */
import { client as xmppClient, xml } from '@xmpp/client';
import type { Element } from 'ltx';
import { RawClient } from './raw-client.ts';

// Prosody serves a self-signed certificate; @xmpp/client has no per-connection CA option on STARTTLS.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

export const NS_PUBSUB = 'http://jabber.org/protocol/pubsub';
export const NS_PUSH = 'urn:xmpp:push:0';
export const NS_DATA = 'jabber:x:data';
const NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas';

/** The app server's account: add it to the accounts given to startProsody. */
export const APP_ACCOUNT = { user: 'push', password: 'push-pw' };

/** One pubsub publish the app server got. */
export interface Push {
  /** The iq's `from` (stamped by Prosody: the pushing user's full JID). */
  from: string;
  id: string;
  /** `<publish node>`. */
  node: string | undefined;
  /** The `urn:xmpp:push:summary` form's fields (var → first value); FORM_TYPE included. */
  summary: Record<string, string>;
  messageCount: string | undefined;
  body: string | undefined;
  sender: string | undefined;
  /** `<publish-options>`'s form fields (var → first value), undefined without publish-options. */
  publishOptions: Record<string, string> | undefined;
  /** How the app server answered it. */
  answered: 'result' | 'error' | 'silent';
  /** The whole iq, for asserts the parsed fields do not cover. */
  iq: Element;
}

export type AppServerMode = 'result' | 'error' | 'silent';

/** The fields of a data form (var → first value's text). */
export function formFields(x: Element | undefined): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const f of x?.getChildren('field') ?? []) {
    if (f.attrs.var !== undefined) fields[f.attrs.var as string] = f.getChildText('value') ?? '';
  }
  return fields;
}

function parsePush(iq: Element, answered: Push['answered']): Push {
  const pubsub = iq.getChild('pubsub', NS_PUBSUB);
  const publish = pubsub?.getChild('publish');
  const notification = publish?.getChild('item')?.getChild('notification', NS_PUSH);
  const summary = formFields(notification?.getChild('x', NS_DATA));
  const options = pubsub?.getChild('publish-options');
  return {
    from: iq.attrs.from as string,
    id: iq.attrs.id as string,
    node: publish?.attrs.node as string | undefined,
    summary,
    messageCount: summary['message-count'],
    body: summary['last-message-body'],
    sender: summary['last-message-sender'],
    publishOptions: options ? formFields(options.getChild('x', NS_DATA)) : undefined,
    answered,
    iq,
  };
}

export class AppServer {
  /** The JID to register (`<enable jid=…>`): the full JID of this client. */
  readonly jid: string;
  /** Every pubsub publish received, in order. */
  readonly pushes: Push[] = [];
  /** How the next publishes are answered. Default 'result'. */
  mode: AppServerMode = 'result';
  /** The error of mode 'error'. */
  error = { type: 'cancel', condition: 'item-not-found' };
  readonly #xmpp: ReturnType<typeof xmppClient>;
  /** Publishes left unanswered (mode 'silent'); released at stop. */
  readonly #silent: Array<() => void> = [];
  #waiters: Array<() => void> = [];

  private constructor(xmpp: ReturnType<typeof xmppClient>, jid: string) {
    this.#xmpp = xmpp;
    this.jid = jid;
    xmpp.iqCallee.set(NS_PUBSUB, 'pubsub', (ctx: { stanza: Element }) => {
      const mode = this.mode;
      this.pushes.push(parsePush(ctx.stanza, mode));
      for (const w of this.#waiters) w();
      if (mode === 'silent') return new Promise<undefined>((resolve) => this.#silent.push(() => resolve(undefined)));
      if (mode === 'error') return xml('error', { type: this.error.type }, xml(this.error.condition, { xmlns: NS_STANZAS }));
      return true;
    });
  }

  /**
   * Logs the app server's account in directly to Prosody (STARTTLS, its self-signed certificate
   * accepted), resource 'app' unless told.
   */
  static async start(
    server: { domain: string; c2sPort: number },
    account: { user: string; password: string; resource?: string } = APP_ACCOUNT,
  ): Promise<AppServer> {
    const resource = account.resource ?? 'app';
    const xmpp = xmppClient({
      service: `xmpp://127.0.0.1:${server.c2sPort}`,
      domain: server.domain,
      username: account.user,
      password: account.password,
      resource,
    });
    xmpp.on('error', () => {});
    const address = await xmpp.start();
    return new AppServer(xmpp, address.toString());
  }

  /** Pushes for registration `node`. */
  pushesFor(node: string): Push[] {
    return this.pushes.filter((p) => p.node === node);
  }

  /** Resolves with {@link pushes} once at least `n` were received (all nodes); rejects after `timeoutMs`. */
  waitForPushes(n: number, timeoutMs = 15_000, node?: string): Promise<Push[]> {
    const have = () => (node === undefined ? this.pushes : this.pushesFor(node));
    return new Promise((resolve, reject) => {
      const check = () => {
        if (have().length < n) return false;
        this.#waiters = this.#waiters.filter((w) => w !== check);
        clearTimeout(timer);
        resolve(have());
        return true;
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== check);
        reject(new Error(`timed out waiting for ${n} push(es)${node ? ` to ${node}` : ''}; got ${have().length}`));
      }, timeoutMs);
      if (!check()) this.#waiters.push(check);
    });
  }

  /** Disconnects (publishes still unanswered stay unanswered). */
  async stop(): Promise<void> {
    this.#silent.length = 0;
    this.#xmpp.reconnect.stop();
    await this.#xmpp.stop().catch(() => {});
  }
}

// ---- client side: what a phone sends to register (XEP-0357 §5–6), as raw XML ----

/** The secret the tests put into the publish-options form. */
export const SECRET = 's3cr3t';

/**
 * `<enable/>` (XEP-0357 §5) with a publish-options form carrying `secret` unless it is null;
 * `jid` undefined leaves the attribute out (a bad request).
 */
export function enableIq(id: string, jid: string | undefined, node: string, secret: string | null = SECRET): string {
  const form = secret === null ? '' :
    `<x xmlns='${NS_DATA}' type='submit'>` +
    `<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>` +
    `<field var='secret'><value>${secret}</value></field></x>`;
  const jidAttr = jid === undefined ? '' : ` jid='${jid}'`;
  return `<iq type='set' id='${id}'><enable xmlns='${NS_PUSH}'${jidAttr} node='${node}'>${form}</enable></iq>`;
}

/** `<disable/>` (XEP-0357 §6); without `node` it names every node of the app server. */
export function disableIq(id: string, jid: string, node?: string): string {
  return `<iq type='set' id='${id}'><disable xmlns='${NS_PUSH}' jid='${jid}'${node === undefined ? '' : ` node='${node}'`}/></iq>`;
}

/** A chat message with a body from `from`'s raw client. */
export function chat(to: string, body: string, id?: string): string {
  return `<message to='${to}' type='chat'${id ? ` id='${id}'` : ''}><body>${body}</body></message>`;
}

/** A chat message carrying only a chat state (XEP-0085): never worth a push. */
export function chatState(to: string, state = 'composing'): string {
  return `<message to='${to}' type='chat'><${state} xmlns='http://jabber.org/protocol/chatstates'/></message>`;
}

/** Sends an iq (raw XML with `id`) and resolves with the answer of that id. */
export async function iqAnswer(client: RawClient, iqXml: string, id: string): Promise<Element> {
  client.send(iqXml);
  return client.next((el) => el.name === 'iq' && el.attrs.id === id && (el.attrs.type === 'result' || el.attrs.type === 'error'));
}

/** The stanza error condition of an iq error ('' when none). */
export function errorCondition(iq: Element): string {
  const err = iq.getChild('error');
  return err?.getChildElements().find((c) => c.attrs.xmlns === 'urn:ietf:params:xml:ns:xmpp-stanzas')?.name ?? '';
}

/**
 * A phone through the proxy: raw login as `user` (password `${user}-pw` unless given), push
 * enabled for each of `registrations` (each answered result, else this throws), then XEP-0198
 * with resumption. Returns the client, its full JID and the resumption id.
 */
export async function phone(
  port: number,
  user: string,
  resource: string,
  registrations: Array<{ jid: string; node: string; secret?: string | null }>,
  password = `${user}-pw`,
): Promise<{ client: RawClient; jid: string; smId: string }> {
  const { client, jid } = await RawClient.login({ port, user, password, resource });
  let n = 0;
  for (const r of registrations) {
    const id = `push-enable-${++n}`;
    const answer = await iqAnswer(client, enableIq(id, r.jid, r.node, r.secret), id);
    if (answer.attrs.type !== 'result') throw new Error(`push enable refused: ${answer.toString()}`);
  }
  client.send(`<enable xmlns='urn:xmpp:sm:3' resume='true'/>`);
  const enabled = await client.next((el) => el.name === 'enabled' || el.name === 'failed');
  if (enabled.name !== 'enabled' || !enabled.attrs.id) throw new Error(`SM enable failed: ${enabled.toString()}`);
  return { client, jid, smId: enabled.attrs.id as string };
}

/** Resumes `smId` (acknowledging `h` stanzas) on a new raw connection; throws unless `<resumed/>`. */
export async function resume(port: number, user: string, smId: string, h = 0, password = `${user}-pw`): Promise<RawClient> {
  const c = await RawClient.authenticated({ port, user, password });
  c.send(`<resume xmlns='urn:xmpp:sm:3' previd='${smId}' h='${h}'/>`);
  const answer = await c.next((el) => el.name === 'resumed' || el.name === 'failed');
  if (answer.name !== 'resumed') {
    c.destroy();
    throw new Error(`resume failed: ${answer.toString()}`);
  }
  return c;
}
