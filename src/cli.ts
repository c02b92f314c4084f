/**
 * The `xmpp-sm-proxy` command (design.md §3: `cli.ts`, `config/`).
 *
 * Every flag maps to one config key; precedence is defaults < `--config` file < environment
 * (`XMPP_SM_PROXY_PKCS12_PASSWORD`) < flags. {@link parseArgs} does all of the option→config
 * mapping and validation and is what tests use; {@link main} only adds I/O: error output, exit
 * codes, the logger, starting the proxy and stopping it on SIGINT/SIGTERM.
 *
 * Exit codes: 0 (ran and stopped on a signal, `--print-config`, `--help`, `--version`);
 * 2 (configuration or usage error); 1 (the proxy failed to start, or to close within
 * `shutdown.timeoutSeconds` (10 s) of the signal, or a second signal came first).
 */
import { readFileSync, realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError } from 'commander';
import { DEFAULTS, type Config } from './config/config.ts';
import {
  buildConfig,
  ConfigError,
  ConfigLayer,
  configFileLayer,
  envConfigLayer,
  PKCS12_PASSWORD_ENV,
} from './config/load.ts';
import { createLogger, type Logger } from './log.ts';
import type { Proxy } from './proxy.ts';
import { exitOnSignals, installCrashGuard } from './process-guard.ts';

/** Which flag sets which config key (used to name the flag in error messages). */
export const FLAG_FOR_KEY: Readonly<Record<string, string>> = {
  domains: '--domain',
  'upstream.host': '--upstream',
  'upstream.port': '--upstream',
  'upstream.tls': '--upstream-tls',
  'upstream.caFile': '--upstream-ca',
  'upstream.acceptSelfSigned': '--upstream-accept-self-signed',
  'listen.starttls': '--listen',
  'listen.directTls': '--listen-tls',
  'tls.certFile': '--cert',
  'tls.keyFile': '--key',
  'tls.pkcs12File': '--pkcs12',
  'tls.pkcs12Password': '--pkcs12-password',
  'sm.hibernationSeconds': '--hibernation',
  'sm.maxQueueSize': '--max-queue',
  'limits.maxStanzaBytes': '--max-stanza-bytes',
  'storage.dataDir': '--data-dir',
  'metrics.listen': '--metrics',
  'log.level': '--log-level',
};

/** The result of reading the command line. */
export interface CommandLine {
  /** The validated, frozen configuration. */
  config: Config;
  /** `--print-config` was given: print {@link formatConfig}(config) and exit 0. */
  printConfig: boolean;
}

interface Options {
  config?: string;
  domain?: string[];
  upstream?: string;
  upstreamTls?: string;
  upstreamCa?: string;
  upstreamAcceptSelfSigned?: boolean;
  listen?: string[];
  listenTls?: string[];
  cert?: string;
  key?: string;
  pkcs12?: string;
  pkcs12Password?: string;
  hibernation?: number | string;
  maxQueue?: number | string;
  maxStanzaBytes?: number | string;
  dataDir?: string;
  metrics?: string;
  logLevel?: string;
  printConfig?: boolean;
}

/**
 * Strict integer parsing for numeric flags: only `-?[0-9]+` becomes a number. Anything else
 * ("12abc", "1e3", "0x10", "") stays a string, which buildConfig then rejects with an error
 * naming the key, so there is one source of range/type messages.
 */
function integerArg(value: string): number | string {
  return /^-?\d+$/.test(value) ? Number(value) : value;
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    return String(pkg.version);
  } catch {
    return 'unknown';
  }
}

const D = DEFAULTS;

function addresses(list: readonly { host: string; port: number }[]): string {
  return list.length === 0 ? 'none' : list.map((a) => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`)).join(' ');
}

function program(): Command {
  return new Command('xmpp-sm-proxy')
    .description(
      'XMPP reverse proxy adding XEP-0198 Stream Management, TLS termination and transparent upstream reconnects in front of a legacy server.',
    )
    .version(version(), '-V, --version')
    .option('-c, --config <file>', 'config file (.json, .yaml, .yml); flags override it')
    .option('-d, --domain <domain...>', 'XMPP domain(s) served (domains; required)')
    .option('--upstream <host:port>', `the legacy server's c2s address (default ${D.upstream.host}:${D.upstream.port})`)
    .option('--upstream-tls <auto|required|none>', `STARTTLS towards the upstream (default ${D.upstream.tls})`)
    .option('--upstream-ca <file>', 'PEM CA file trusted for the upstream certificate')
    .option('--upstream-accept-self-signed', 'accept any upstream certificate')
    .option('--listen <host:port...>', `STARTTLS listeners, "none" disables (default ${addresses(D.listen.starttls)})`)
    .option('--listen-tls <host:port...>', `direct TLS listeners, "none" disables (default ${addresses(D.listen.directTls)})`)
    .option('--cert <file>', 'PEM certificate (chain) file; needs --key')
    .option('--key <file>', 'PEM private key file; needs --cert')
    .option('--pkcs12 <file>', 'PKCS#12 keystore (instead of --cert/--key)')
    .option(
      '--pkcs12-password <pw>',
      `PKCS#12 password (visible in the process list: prefer ${PKCS12_PASSWORD_ENV})`,
    )
    .option('--hibernation <seconds>', `keep a vanished client's session this long (default ${D.sm.hibernationSeconds})`, integerArg)
    .option('--max-queue <n>', `unacked stanzas per session before it is unresumable (default ${D.sm.maxQueueSize})`, integerArg)
    .option('--max-stanza-bytes <n>', `largest stanza accepted from a client (default ${D.limits.maxStanzaBytes})`, integerArg)
    .option('--data-dir <dir>', `folder of the durable store (default ${D.storage.dataDir})`)
    .option(
      '--metrics <host:port|none>',
      `metrics and health endpoint, no authentication: keep it on loopback (default ${addresses(D.metrics.listen ? [D.metrics.listen] : [])})`,
    )
    .option('--log-level <level>', `fatal, error, warn, info, debug, trace or silent (default ${D.log.level})`)
    .option('--print-config', 'print the effective configuration as JSON and exit')
    .exitOverride()
    .allowExcessArguments(false);
}

/**
 * Parses `--upstream`: `host:port` or `[ipv6]:port`. The port is only checked to be digits here;
 * its range is checked (and reported with its key) by buildConfig.
 */
function parseUpstream(spec: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(spec) ?? /^([^:\s]+):(\d+)$/.exec(spec);
  if (!m) {
    throw new ConfigError(
      'upstream.host',
      `config: upstream.host/upstream.port: invalid --upstream address ${JSON.stringify(spec)} (expected host:port or [ipv6]:port)`,
    );
  }
  return { host: m[1]!, port: Number(m[2]) };
}

/** The CLI layer for buildConfig: only keys whose flags were given (undefined = not set). */
function cliLayer(o: Options): Record<string, unknown> {
  const file = (p: string | undefined) => (p === undefined ? undefined : resolve(p));
  const upstream = o.upstream === undefined ? undefined : parseUpstream(o.upstream);
  // The TLS identity is one unit: a PEM pair on the command line replaces a keystore from the
  // file and vice versa (null resets a key), instead of failing as "both given".
  const pem = o.cert !== undefined || o.key !== undefined;
  const p12 = o.pkcs12 !== undefined;
  return {
    domains: o.domain,
    upstream: {
      host: upstream?.host,
      port: upstream?.port,
      tls: o.upstreamTls,
      caFile: file(o.upstreamCa),
      acceptSelfSigned: o.upstreamAcceptSelfSigned,
    },
    // Strings ("host:port", "none") are parsed by buildConfig with parseListen.
    listen: { starttls: o.listen, directTls: o.listenTls },
    tls: {
      certFile: pem ? file(o.cert) : p12 ? null : undefined,
      keyFile: pem ? file(o.key) : p12 ? null : undefined,
      pkcs12File: p12 ? file(o.pkcs12) : pem ? null : undefined,
      pkcs12Password: o.pkcs12Password,
    },
    sm: { hibernationSeconds: o.hibernation, maxQueueSize: o.maxQueue },
    limits: { maxStanzaBytes: o.maxStanzaBytes },
    storage: { dataDir: file(o.dataDir) },
    // A string ("host:port", "none") parsed by buildConfig like a listen address.
    metrics: { listen: o.metrics },
    log: { level: o.logLevel },
  };
}

/**
 * Reads the command line into a validated Config. `args` are the user's arguments only
 * (`process.argv.slice(2)`), e.g. `['-d', 'example.org', '--hibernation', '300']`.
 * Reads the `--config` file and `XMPP_SM_PROXY_PKCS12_PASSWORD` from `env`.
 * @throws ConfigError for a bad value; the message names the key and where its value came from:
 *   `config: sm.hibernationSeconds must be a non-negative ... (got "abc") (from --hibernation)`,
 *   `... in /etc/xmpp-sm-proxy/config.yaml`, `... (from the environment: XMPP_SM_PROXY_PKCS12_PASSWORD)`.
 * @throws CommanderError for usage errors (unknown option, missing option argument; commander
 *   has already written its message to stderr) and for `--help`/`--version` (exitCode 0).
 */
export function parseCommandLine(args: string[], env: NodeJS.ProcessEnv = process.env): CommandLine {
  const cmd = program();
  cmd.parse(args, { from: 'user' });
  const o = cmd.opts<Options>();
  const file = o.config === undefined ? undefined : configFileLayer(o.config);
  const cli = new ConfigLayer(cliLayer(o), (key) => `(from ${FLAG_FOR_KEY[key] ?? 'the command line'})`);
  return { config: buildConfig(file, envConfigLayer(env), cli), printConfig: o.printConfig === true };
}

/** {@link parseCommandLine}, returning only the Config. `args` exclude node and the script. */
export function parseArgs(args: string[], env: NodeJS.ProcessEnv = process.env): Config {
  return parseCommandLine(args, env).config;
}

/** The config as pretty JSON for `--print-config`, with `tls.pkcs12Password` shown as "***". */
export function formatConfig(config: Config): string {
  const shown =
    config.tls.pkcs12Password === undefined
      ? config
      : { ...config, tls: { ...config.tls, pkcs12Password: '***' } };
  return JSON.stringify(shown, null, 2);
}

/**
 * Runs the command. `argv` is `process.argv` (node, script, then the arguments).
 * Sets `process.exitCode` (2 on a configuration or usage error, after printing
 * `xmpp-sm-proxy: <message>` to stderr) instead of exiting, except after a signal: then it closes
 * the proxy and exits 0 (1 if closing failed or took longer than `shutdown.timeoutSeconds`, 10 s;
 * a second signal exits 1 at once). SIGHUP reloads the TLS certificate (see reloadOnHangup).
 * Once the proxy runs, an uncaught exception or unhandled rejection is logged and does not end
 * the process (see installCrashGuard).
 */
export async function main(argv: string[]): Promise<void> {
  let cl: CommandLine;
  try {
    cl = parseCommandLine(argv.slice(2));
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`xmpp-sm-proxy: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    throw err;
  }
  if (cl.printConfig) {
    process.stdout.write(`${formatConfig(cl.config)}\n`);
    return;
  }
  const log = createLogger(cl.config.log.level);
  installCrashGuard(log);
  let proxy: Pick<Proxy, 'close' | 'reloadTls'>;
  try {
    const { startProxy } = await import('./proxy.ts');
    proxy = await startProxy(cl.config, log);
  } catch (err) {
    // A port in use, an unusable certificate or store: the message names it (the store's, its file).
    const message = err instanceof Error ? err.message : String(err);
    log.fatal({ err }, `failed to start: ${message}`);
    process.stderr.write(`xmpp-sm-proxy: ${message}\n`);
    process.exitCode = 1;
    return;
  }
  reloadOnHangup(argv, proxy, log);
  // Exits within shutdown.timeoutSeconds whatever state the sessions and stdout are in.
  exitOnSignals({
    log,
    deadlineMs: cl.config.shutdown.timeoutSeconds * 1000,
    stop: async () => {
      await proxy.close();
      log.info('stopped');
      return 0;
    },
  });
}

/**
 * SIGHUP: the certificate is renewed without a restart. The command line and the config file are
 * read again for their `tls` section (other changes need a restart); a config that no longer
 * parses keeps the running certificate settings. Every failure is logged, none ends the process.
 */
function reloadOnHangup(argv: string[], proxy: Pick<Proxy, 'reloadTls'>, log: Logger): void {
  let reloading = Promise.resolve();
  const reload = async (): Promise<void> => {
    let tls: Config['tls'] | undefined;
    try {
      tls = parseCommandLine(argv.slice(2)).config.tls;
    } catch (err) {
      log.error({ err }, `SIGHUP: cannot read the configuration again, reloading the certificate files already configured: ${(err as Error).message}`);
    }
    await proxy.reloadTls(tls);
  };
  process.on('SIGHUP', () => {
    log.info({ signal: 'SIGHUP' }, 'reloading the TLS certificate');
    // One reload at a time, in order; the chain owns each reload's failure.
    reloading = reloading.then(reload).catch((err: unknown) => log.error({ err }, 'TLS reload failed'));
  });
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  let path = script;
  try {
    path = realpathSync(script);
  } catch {
    // keep the path as given
  }
  return import.meta.url === pathToFileURL(path).href || import.meta.url === pathToFileURL(script).href;
}

if (isEntryPoint()) await main(process.argv);
