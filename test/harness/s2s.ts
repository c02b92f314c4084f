/**
 * Test harness: two real Prosody servers federated over s2s, each with its own MUC component,
 * for the MUC-reliability tests (design §4.6): rooms on the remote server are reached by the
 * local server's users over s2s, and the remote can be crashed or restarted under them.
 *
 * - local:  `proxy.test` (the proxy's upstream), c2s STARTTLS required, accounts
 *           {@link LOCAL_ACCOUNTS}, MUC `conference.proxy.test`, s2s on 127.0.0.1.
 * - remote: `remote.test`, accounts {@link REMOTE_ACCOUNTS}, MUC `conference.remote.test` with
 *           the persistent room {@link LOBBY}, s2s on 127.0.0.3.
 *
 * Both serve c2s on 127.0.0.1 (like every harness server, so RawClient, @xmpp/client and
 * startTestProxy work unchanged); only s2s listens on a loopback address of its own. The servers
 * never resolve a domain: mod_s2s_fixed_routes (prosody-modules/) routes each one's domains to
 * the other's s2s listener and refuses every other host, so no DNS query leaves loopback.
 */
import { readFile, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { lua, startProsody, type ProsodyInstance, type ProsodyOptions } from './prosody.ts';
import { ACCOUNTS } from './proxy.ts';
import { RawClient } from './raw-client.ts';
import { configureRoom, discoFeatures, joinRoom, leaveRoom, mucStatuses, stanzaError } from './muc.ts';
import { freePort, sleep } from './server-process.ts';

/** Accounts of the local server: the proxy tests' {@link ACCOUNTS} (alice, bob) plus carol. */
export const LOCAL_ACCOUNTS = [...ACCOUNTS, { user: 'carol', password: 'carol-pw' }];
/** Accounts of the remote server: rita (a remote occupant of the lobby) and ron (the lobby's owner). */
export const REMOTE_ACCOUNTS = [
  { user: 'rita', password: 'rita-pw' },
  { user: 'ron', password: 'ron-pw' },
];
/** The persistent room on the remote MUC service; it survives restarts and crashes of the remote. */
export const LOBBY = 'lobby@conference.remote.test';

/** Where the s2s listeners bind: one loopback address per server, as if on two machines. */
const LOCAL_S2S_HOST = '127.0.0.1';
const REMOTE_S2S_HOST = '127.0.0.3';
const S2S_READY_TIMEOUT_MS = 15_000;
const MODULES_DIR = fileURLToPath(new URL('./prosody-modules', import.meta.url));

/** One server of a {@link Federation}: a {@link ProsodyInstance} with s2s and a MUC component. */
export interface FederatedServer extends ProsodyInstance {
  /** Its MUC component, `conference.<domain>`. */
  readonly mucDomain: string;
  /** Address the s2s listener binds (127.0.0.1 for local, 127.0.0.3 for remote). c2s is on {@link host}. */
  readonly s2sHost: string;
  /** The s2s port (on {@link s2sHost}). */
  readonly s2sPort: number;
  /**
   * SIGTERM, wait for exit, start again on the same ports with the same data, and resolve once
   * both c2s and s2s listen. On a graceful stop Prosody saves every live room (temporary ones
   * too) with its occupants and history, so occupants on the other server stay joined (see the
   * observations in s2s.test.ts). Also what starts a server again after {@link crash}.
   */
  restart(): Promise<void>;
  /**
   * SIGKILL and resolve once the process is gone (the kernel has closed its sockets, so the
   * other server's s2s link to it is down). Rooms live on only if persistent; their occupants do not.
   */
  crash(): Promise<void>;
}

/** What {@link startFederation} returns. */
export interface Federation {
  /** `proxy.test`: the upstream of the proxy under test (`startTestProxy(federation.local)`). */
  local: FederatedServer;
  /** `remote.test`: reached from local only over s2s. */
  remote: FederatedServer;
  /** Stop both servers and remove their temp dirs (also done at the end of the test). Idempotent. */
  stop(): Promise<void>;
}

/** Per-server options of {@link FederationOptions}. */
export interface FederatedServerOptions {
  /** Extra Lua lines for the global section (after the generated ones, before the Component). */
  config?: string;
  /** Extra modules for the VirtualHost (see ProsodyOptions.modules). */
  modules?: string[];
  /** Prosody's log level (default 'info'; 'debug' shows each s2s connection attempt). */
  logLevel?: ProsodyOptions['logLevel'];
  /** XEP-0198 in the server itself (default false, as the proxy under test supplies it). */
  smacks?: boolean;
  /** mod_mam on the VirtualHost. */
  mam?: boolean;
}

/** Options for {@link startFederation}. */
export interface FederationOptions {
  local?: FederatedServerOptions;
  remote?: FederatedServerOptions;
  /** Persistent rooms (node names) created on the remote's MUC service at start. Default `['lobby']`. */
  remoteRooms?: string[];
}

/** Size of a file, 0 when it does not exist yet. */
async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

/** The Lua config shared by both servers; `routes` maps the other server's domains to its s2s listener. */
function federationConfig(o: {
  s2sHost: string;
  s2sPort: number;
  routes: Record<string, { host: string; port: number }>;
  mucDomain: string;
  extra: string;
}): string {
  const routes = Object.entries(o.routes)
    .map(([domain, r]) => `[${lua(domain)}] = { ${lua(r.host)}, ${r.port} }`)
    .join('; ');
  return [
    `plugin_paths = { ${lua(MODULES_DIR)} }`,
    // prosody.ts turns s2s off (s2s_ports = {}); here it listens on this server's own address.
    `s2s_ports = { ${o.s2sPort} }`,
    `s2s_interfaces = { ${lua(o.s2sHost)} }`,
    // Self-signed certificates on both sides: dialback authenticates the servers, TLS is optional.
    's2s_secure_auth = false',
    's2s_require_encryption = false',
    `s2s_fixed_routes = { ${routes} }`,
    // A room created by a join is usable at once (otherwise locked until its owner configures it).
    'muc_room_locking = false',
    o.extra,
    // Last: the lines after a Component line belong to it, and the VirtualHost follows.
    `Component ${lua(o.mucDomain)} "muc"`,
  ].join('\n');
}

/** A ProsodyInstance with s2s and MUC; restart() and crash() also wait for the s2s listener. */
class FederatedProsody implements FederatedServer {
  readonly host = '127.0.0.1' as const;
  constructor(
    private readonly inner: ProsodyInstance,
    readonly mucDomain: string,
    readonly s2sHost: string,
    readonly s2sPort: number,
  ) {}

  get domain(): string {
    return this.inner.domain;
  }
  get c2sPort(): number {
    return this.inner.c2sPort;
  }
  get dir(): string {
    return this.inner.dir;
  }
  get configFile(): string {
    return this.inner.configFile;
  }
  get caFile(): string | undefined {
    return this.inner.caFile;
  }
  get logFile(): string {
    return this.inner.logFile;
  }
  get pid(): number | undefined {
    return this.inner.pid;
  }

  register(user: string, password: string): Promise<void> {
    return this.inner.register(user, password);
  }

  stop(): Promise<void> {
    return this.inner.stop();
  }

  kill(signal: NodeJS.Signals): void {
    this.inner.kill(signal);
  }

  async restart(): Promise<void> {
    const offset = await fileSize(this.logFile);
    await this.inner.restart();
    await this.s2sListening(offset);
  }

  async crash(): Promise<void> {
    this.inner.kill('SIGKILL');
    const deadline = Date.now() + 5000;
    while (this.inner.pid !== undefined) {
      if (Date.now() > deadline) throw new Error(`prosody ${this.domain} still running 5 s after SIGKILL`);
      await sleep(10);
    }
  }

  /**
   * Resolve once the launch whose log starts at `offset` has activated s2s on its port. The c2s
   * readiness of prosody.ts does not cover it: s2s is another listener, activated separately.
   */
  async s2sListening(offset: number): Promise<void> {
    const want = `Activated service 's2s' on [${this.s2sHost}]:${this.s2sPort}`;
    const deadline = Date.now() + S2S_READY_TIMEOUT_MS;
    for (;;) {
      const log = (await readFile(this.logFile)).subarray(offset).toString('utf8');
      if (log.includes(want)) return;
      if (/Activated service 's2s' on no ports|Failed to open server port/.test(log)) {
        throw new Error(`prosody ${this.domain} could not listen for s2s on ${this.s2sHost}:${this.s2sPort}\n${log.trim()}`);
      }
      if (Date.now() > deadline) throw new Error(`prosody ${this.domain}: no s2s listener on ${this.s2sHost}:${this.s2sPort} within ${S2S_READY_TIMEOUT_MS} ms\n${log.trim()}`);
      await sleep(20);
    }
  }
}

/**
 * Create persistent rooms on `server`'s MUC service the way a user does: ron joins (and so
 * creates and owns) each room, submits the owner config form with persistence on, checks that
 * the room now says `muc_persistent`, and leaves. Nothing re-creates them on a restart, so a
 * room that is there afterwards was really restored from the server's storage.
 */
async function createPersistentRooms(server: FederatedServer, owner: { user: string; password: string }, nodes: string[]): Promise<void> {
  if (nodes.length === 0) return;
  const { client } = await RawClient.login({ port: server.c2sPort, domain: server.domain, user: owner.user, password: owner.password, resource: 'setup' });
  try {
    for (const node of nodes) {
      const room = `${node}@${server.mucDomain}`;
      const self = await joinRoom(client, `${room}/${owner.user}`, { maxstanzas: 0 });
      if (self.attrs.type === 'error' || !mucStatuses(self).includes('201')) {
        throw new Error(`creating ${room} failed (it must be new, status 201): ${self.toString()}`);
      }
      const answer = await configureRoom(client, room, { persistentroom: '1', roomname: node });
      if (answer.attrs.type !== 'result') throw new Error(`configuring ${room} failed: ${JSON.stringify(stanzaError(answer))}`);
      const features = await discoFeatures(client, room);
      if (!features.includes('muc_persistent')) throw new Error(`${room} is not persistent after configuration: ${features.join(' ')}`);
      await leaveRoom(client, `${room}/${owner.user}`);
    }
    client.send('</stream:stream>');
  } finally {
    client.destroy();
  }
}

/**
 * Start the local (`proxy.test`) and the remote (`remote.test`) Prosody, federated over s2s on
 * loopback with fixed routes (no DNS), each with a MUC component (`conference.<domain>`,
 * `muc_room_locking = false`, history on), and create the persistent {@link LOBBY} on the remote.
 * Both servers start in parallel; everything is stopped and removed at the end of test `t`.
 *
 * Throws (never skips) when Prosody is missing or a server cannot start.
 */
export async function startFederation(t: { teardown(fn: () => unknown): void }, opts: FederationOptions = {}): Promise<Federation> {
  const [localS2sPort, remoteS2sPort] = await Promise.all([freePort(LOCAL_S2S_HOST), freePort(REMOTE_S2S_HOST)]);
  const local = { domain: 'proxy.test', mucDomain: 'conference.proxy.test', s2sHost: LOCAL_S2S_HOST, s2sPort: localS2sPort };
  const remote = { domain: 'remote.test', mucDomain: 'conference.remote.test', s2sHost: REMOTE_S2S_HOST, s2sPort: remoteS2sPort };
  // Each server reaches the other's host and its component at the other's s2s listener (a
  // component's s2s traffic goes through its parent server's s2s port); nothing else is routed.
  const routesTo = (to: typeof local) => ({
    [to.domain]: { host: to.s2sHost, port: to.s2sPort },
    [to.mucDomain]: { host: to.s2sHost, port: to.s2sPort },
  });

  const start = async (
    me: typeof local,
    other: typeof local,
    accounts: Array<{ user: string; password: string }>,
    o: FederatedServerOptions = {},
  ): Promise<FederatedProsody> => {
    const inner = await startProsody({
      domain: me.domain,
      tls: 'required',
      accounts,
      smacks: o.smacks ?? false,
      mam: o.mam ?? false,
      logLevel: o.logLevel ?? 'info',
      modules: ['s2s', 'dialback', 's2s_fixed_routes', ...(o.modules ?? [])],
      config: federationConfig({ s2sHost: me.s2sHost, s2sPort: me.s2sPort, routes: routesTo(other), mucDomain: me.mucDomain, extra: o.config ?? '' }),
    });
    const server = new FederatedProsody(inner, me.mucDomain, me.s2sHost, me.s2sPort);
    try {
      await server.s2sListening(0);
    } catch (err) {
      await server.stop();
      throw err;
    }
    return server;
  };

  const started = await Promise.allSettled([
    start(local, remote, LOCAL_ACCOUNTS, opts.local),
    start(remote, local, REMOTE_ACCOUNTS, opts.remote),
  ]);
  const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const stop = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()));
  };
  t.teardown(stop);
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await stop();
    throw failed.reason;
  }
  const [localServer, remoteServer] = servers as [FederatedProsody, FederatedProsody];
  try {
    await createPersistentRooms(remoteServer, REMOTE_ACCOUNTS[1]!, opts.remoteRooms ?? ['lobby']);
  } catch (err) {
    await stop();
    throw err;
  }
  return { local: localServer, remote: remoteServer, stop };
}
