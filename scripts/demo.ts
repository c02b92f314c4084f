/**
 * Demo: a throwaway Prosody 0.12 on loopback plays the legacy server (STARTTLS required like
 * Openfire, no XEP-0198), and the proxy runs in front of it in this process on 127.0.0.1:5222
 * (STARTTLS) and 127.0.0.1:5223 (direct TLS) with a generated self-signed certificate.
 * Two accounts, alice and bob, get random passwords that are printed. Ctrl-C stops both.
 * The proxy's log lines are human-readable (`[time] LEVEL: message key=value ...`,
 * scripts/pretty-log.ts), secrets redacted as in the JSON lines of the real command.
 *
 * Ctrl-C, SIGTERM or SIGHUP stop the proxy, then Prosody, and remove Prosody's temp dir
 * (printed in the banner), also when stdout is a pipe whose reader is gone (`| tee`, Ctrl-C);
 * within 10 s whatever happens (src/process-guard.ts). A second signal, a crash or that deadline
 * exit at once: the harness's 'exit' handler then kills Prosody and removes its dir.
 *
 * Usage: npx tsx scripts/demo.ts [--domain demo.test] [--port 5222] [--tls-port 5223]
 * (`bash scripts/demo.sh` installs what is missing first, then runs this.)
 */
import { randomInt, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { buildConfig, ConfigError } from '../src/config/load.ts';
import { createLogger, LineSink, stdoutSink } from '../src/log.ts';
import { exitOnSignals, installCrashGuard } from '../src/process-guard.ts';
import { startProxy, type Proxy } from '../src/proxy.ts';
import { generateSelfSigned } from '../src/tls/certificates.ts';
import { startProsody, type ProsodyInstance } from '../test/harness/prosody.ts';
import { prettyDestination } from './pretty-log.ts';

const USAGE = `Usage: bash scripts/demo.sh [options]   (or: npx tsx scripts/demo.ts [options])

Starts a demo Prosody (the "legacy" upstream, on a free loopback port) and the proxy in front of it.

Options:
  --domain <domain>   XMPP domain (default demo.test)
  --port <n>          proxy STARTTLS port on 127.0.0.1 (default 5222)
  --tls-port <n>      proxy direct TLS port on 127.0.0.1 (default 5223)
  -h, --help          show this help
`;

// Text for the user goes through the same never-blocking, never-throwing sinks as the log lines:
// with `| tee` and Ctrl-C, the reader of stdout (and maybe stderr) is gone while we still write.
const stdout = stdoutSink();
const stderr = new LineSink(process.stderr);
const out = (text: string): void => stdout.write(text);

function die(message: string): never {
  stderr.write(`demo: ${message}\n`);
  process.exit(2);
}

function parsePort(value: string, flag: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 65535) {
    die(`${flag} must be a port number 1..65535 (got ${JSON.stringify(value)})`);
  }
  return Number(value);
}

let args;
try {
  args = parseArgs({
    options: {
      domain: { type: 'string' },
      port: { type: 'string' },
      'tls-port': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
  }).values;
} catch (err) {
  die(`${(err as Error).message}\n\n${USAGE}`);
}
if (args.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const domain = args.domain ?? 'demo.test';
const port = parsePort(args.port ?? '5222', '--port');
const tlsPort = parsePort(args['tls-port'] ?? '5223', '--tls-port');
if (port === tlsPort) die('--port and --tls-port must differ');

/** Resolves to an error message when 127.0.0.1:port cannot be bound, undefined when it can. */
function checkPort(p: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    srv.listen(p, '127.0.0.1', () => srv.close(() => resolve(undefined)));
  });
}

/** A readable random password (no characters that need quoting in a shell or in JS). */
function password(): string {
  const alphabet = 'abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  let out = '';
  for (let i = 0; i < 12; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

// Validate the proxy config before starting anything (a bad --domain fails here).
try {
  // The upstream port and CA file are filled in once Prosody runs; this checks the rest.
  buildConfig({ domains: [domain], listen: { starttls: [`127.0.0.1:${port}`], directTls: [`127.0.0.1:${tlsPort}`] } });
} catch (err) {
  if (err instanceof ConfigError) die(err.message);
  throw err;
}

for (const [p, flag] of [
  [port, '--port'],
  [tlsPort, '--tls-port'],
] as const) {
  const problem = await checkPort(p);
  if (problem === 'EADDRINUSE') {
    die(
      `port ${p} on 127.0.0.1 is already in use (another XMPP server? Debian's prosody service: ` +
        `systemctl stop prosody). Stop it, or pick another port with ${flag} <n>.` +
        (p === 5222 || p === 5223 ? ` Example: bash scripts/demo.sh --port 15322 --tls-port 15323` : ''),
    );
  }
  if (problem !== undefined) die(`cannot listen on 127.0.0.1:${p} (${problem}); pick another port with ${flag} <n>`);
}

const accounts = [
  { user: 'alice', password: password() },
  { user: 'bob', password: password() },
];

// Log lines for a person reading a terminal (the installed command logs JSON lines).
const log = createLogger('info', prettyDestination(stdout));
installCrashGuard(log);

// Set before anything is started, so a signal during startup stops what has started so far
// (and the harness's 'exit' handler removes a Prosody still starting).
let prosody: ProsodyInstance | undefined;
let proxy: Proxy | undefined;
exitOnSignals({
  log,
  // SIGHUP: closing the terminal the demo runs in must clean up too.
  signals: ['SIGINT', 'SIGTERM', 'SIGHUP'],
  async stop(signal) {
    out(`\ndemo: ${signal}: stopping the proxy, then Prosody ...\n`);
    let code = 0;
    if (proxy !== undefined) {
      try {
        // proxy.close() ends the sessions and client streams itself; a client that does not
        // close its side is cut after a grace period. Prosody is stopped after at most 5 s anyway.
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          proxy.close().then(() => false),
          new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(true), 5000);
          }),
        ]);
        clearTimeout(timer);
        if (timedOut) stderr.write('demo: the proxy did not close within 5 s; going on\n');
      } catch (err) {
        stderr.write(`demo: error while stopping the proxy: ${(err as Error).message}\n`);
        code = 1;
      }
    }
    if (prosody !== undefined) {
      try {
        await prosody.stop(); // also removes its temp dir
      } catch (err) {
        stderr.write(`demo: error while stopping Prosody: ${(err as Error).message}\n`);
        code = 1;
      }
    }
    out('demo: stopped\n');
    return code;
  },
});

out(`demo: starting Prosody for ${domain} (the upstream) ...\n`);
try {
  prosody = await startProsody({ domain, tls: 'required', smacks: false, accounts });
} catch (err) {
  die(`could not start Prosody: ${(err as Error).message}`);
}

// The proxy's self-signed certificate, generated here and written to Prosody's temp dir (removed
// when the demo stops), so that the banner can name its file (a CA file for clients that want
// one) and its fingerprint (what clients show when asking to accept it).
const certFile = join(prosody.dir, 'proxy-cert.pem');
let fingerprint: string;
try {
  const { cert, key } = generateSelfSigned([domain]);
  writeFileSync(certFile, cert, { mode: 0o644 });
  writeFileSync(join(prosody.dir, 'proxy-key.pem'), key, { mode: 0o600 });
  fingerprint = new X509Certificate(cert).fingerprint256;
} catch (err) {
  await prosody.stop();
  die(`could not write the proxy's certificate: ${(err as Error).message}`);
}

try {
  const config = buildConfig({
    domains: [domain],
    tls: { certFile, keyFile: join(prosody.dir, 'proxy-key.pem') },
    upstream: { host: prosody.host, port: prosody.c2sPort, tls: 'required', caFile: prosody.caFile },
    listen: { starttls: [`127.0.0.1:${port}`], directTls: [`127.0.0.1:${tlsPort}`] },
    storage: { dataDir: join(prosody.dir, 'proxy-data') },
    metrics: { listen: 'none' },
    log: { level: 'info' },
  });
  proxy = await startProxy(config, log);
} catch (err) {
  await prosody.stop();
  die(`could not start the proxy: ${(err as Error).message}`);
}

const [alice, bob] = accounts as [(typeof accounts)[0], (typeof accounts)[0]];
/** A one-line @xmpp/client program for `user` (run from the repository root). */
function oneLiner(user: { user: string; password: string }, body: string): string {
  const opts = `{service:'xmpp://127.0.0.1:${port}',domain:'${domain}',username:'${user.user}',password:'${user.password}'}`;
  const code = `import {client,xml} from '@xmpp/client';const x=client(${opts});x.on('error',e=>console.error(String(e)));${body}x.start()`;
  return `NODE_TLS_REJECT_UNAUTHORIZED=0 node --no-warnings --input-type=module -e "${code}"`;
}
const bobListens = oneLiner(
  bob,
  `x.on('stanza',s=>{const b=s.is('message')&&s.getChildText('body');if(b)console.log(s.attrs.from+': '+b)});` +
    `x.on('online',j=>{console.log('online as '+j);x.send(xml('presence'))});`,
);
const aliceSends = oneLiner(
  alice,
  `x.on('online',async j=>{console.log('online as '+j);` +
    `await x.send(xml('message',{to:'bob@${domain}',type:'chat'},xml('body',{},'hello bob')));await x.stop()});`,
);

out(`
================================================================================
xmpp-sm-proxy demo is running (Ctrl-C stops the proxy and Prosody)

  XMPP domain        ${domain}
  proxy, STARTTLS    127.0.0.1:${port}
  proxy, direct TLS  127.0.0.1:${tlsPort}   (XEP-0368)
  upstream           Prosody 0.12 on 127.0.0.1:${prosody.c2sPort} (STARTTLS required, no XEP-0198)
  Prosody's files    ${prosody.dir}   (removed when the demo stops)
  certificate        ${certFile}   (self-signed; the CA file if a client asks for one)
  SHA-256            ${fingerprint}
  accounts           alice@${domain}   password ${alice.password}
                     bob@${domain}     password ${bob.password}

Any XMPP client: JID alice@${domain} (or bob), connect to host 127.0.0.1 port ${port}
(STARTTLS) or ${tlsPort} (direct TLS) -- ${domain} does not resolve, so set the host and
port by hand -- and accept the self-signed certificate (check its SHA-256 fingerprint above).

Or, from ${process.cwd()} in two more terminals (bob listens, alice sends him a message):
  ${bobListens}

  ${aliceSends}
================================================================================
`);
