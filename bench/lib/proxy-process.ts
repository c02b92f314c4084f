/**
 * Runs the proxy as a child process (`node --import tsx src/cli.ts …`: the sources, so that a
 * stale or missing dist/ does not matter) so that its CPU time can be read from /proc alone,
 * apart from the benchmark's clients. Settings without a flag (such as
 * `upstream.streamManagement`) go in a `--config` JSON file written to a temp dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface ProxyProcessOptions {
  /** Repository root (where src/cli.ts lives). */
  root: string;
  domain: string;
  upstreamHost: string;
  upstreamPort: number;
  upstreamTls: 'none' | 'auto';
  /** CA file for `--upstream-ca` (with upstreamTls 'auto'). */
  upstreamCa?: string;
  /** Certificate and key the proxy serves (else it generates a self-signed one). */
  cert?: string;
  key?: string;
  listenPort: number;
  listenTlsPort: number;
  /** Extra arguments for node before the script, e.g. `--cpu-prof`. */
  nodeArgs?: string[];
  logLevel?: string;
  /**
   * A config-file layer (a partial Config, the same keys as a `--config` file), e.g.
   * `{ upstream: { streamManagement: false } }`. The flags above override it.
   */
  config?: Record<string, unknown>;
}

export interface ProxyProcess {
  pid: number;
  /** The full command line used (for the report). */
  command: string[];
  /** The `--config` file's content (undefined without one); the file is removed by stop(). */
  config: Record<string, unknown> | undefined;
  /** Last lines the proxy wrote (its log at the chosen level). */
  output(): string;
  /** SIGTERM, wait for exit (SIGKILL after 15 s: a CPU profile may take a moment to write). */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const OUTPUT_TAIL = 4 * 1024 * 1024;

async function executable(file: string): Promise<boolean> {
  try {
    await access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function tryConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      s.removeAllListeners();
      s.on('error', () => {});
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

export async function startProxyProcess(o: ProxyProcessOptions): Promise<ProxyProcess> {
  const configDir = o.config ? await mkdtemp(path.join(os.tmpdir(), 'bench-proxy-config-')) : undefined;
  const configFile = configDir ? path.join(configDir, 'config.json') : undefined;
  if (configFile) await writeFile(configFile, JSON.stringify(o.config, null, 2) + '\n');
  // The proxy's store: its own, thrown away with it.
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'bench-proxy-data-'));
  const removeConfig = async (): Promise<void> => {
    if (configDir) await rm(configDir, { recursive: true, force: true });
    await rm(dataDir, { recursive: true, force: true });
  };
  const args = [
    ...(o.nodeArgs ?? []),
    '--import',
    'tsx',
    path.join(o.root, 'src', 'cli.ts'),
    ...(configFile ? ['--config', configFile] : []),
    '--domain', o.domain,
    '--upstream', `${o.upstreamHost}:${o.upstreamPort}`,
    '--upstream-tls', o.upstreamTls,
    ...(o.upstreamCa ? ['--upstream-ca', o.upstreamCa] : []),
    ...(o.cert && o.key ? ['--cert', o.cert, '--key', o.key] : []),
    '--listen', `127.0.0.1:${o.listenPort}`,
    '--listen-tls', `127.0.0.1:${o.listenTlsPort}`,
    '--log-level', o.logLevel ?? 'warn',
    '--data-dir', dataDir,
    '--metrics', 'none',
  ];
  // setpriv --pdeathsig: the kernel kills the proxy if the benchmark dies without cleaning up.
  // setpriv execs node, so the PID is the proxy's own.
  const setpriv = (await executable('/usr/bin/setpriv')) ? '/usr/bin/setpriv' : undefined;
  const [file, argv] = setpriv
    ? [setpriv, ['--pdeathsig', 'KILL', process.execPath, ...args]]
    : [process.execPath, args];
  const child: ChildProcess = spawn(file, argv, { cwd: o.root, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
    child.once('error', (err) => {
      output += `\nspawn error: ${err.message}`;
      exit = { code: null, signal: null };
      resolve(exit);
    });
  });
  const kill = (sig: NodeJS.Signals): void => {
    try {
      child.kill(sig);
    } catch {
      // gone
    }
  };
  process.once('exit', () => kill('SIGKILL'));

  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exit) {
      await removeConfig();
      throw new Error(`proxy exited during startup (code ${exit.code}, signal ${exit.signal}):\n${output}`);
    }
    if (await tryConnect(o.listenPort)) break;
    if (Date.now() > deadline) {
      kill('SIGKILL');
      await removeConfig();
      throw new Error(`proxy did not listen on 127.0.0.1:${o.listenPort} within 60 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    pid: child.pid!,
    command: [process.execPath, ...args],
    config: o.config,
    output: () => output,
    async stop() {
      let r = exit;
      if (!r) {
        kill('SIGTERM');
        const t = setTimeout(() => kill('SIGKILL'), 15_000);
        r = await exited;
        clearTimeout(t);
      }
      await removeConfig();
      return r;
    },
  };
}
