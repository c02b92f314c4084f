/**
 * What the server harnesses (prosody.ts, ejabberd.ts) share: finding executables, running short
 * commands, free ports, the process 'exit' handler that makes sure no server (or temp dir)
 * outlives the tests, and {@link ServerInstance}: one server process spawned, waited for until
 * its log and a probe say it serves, signalled, restarted and stopped (SIGTERM, then SIGKILL).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { constants as fsConstants, readFileSync, rmSync } from 'node:fs';
import { access, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

/** Bytes of stdout/stderr kept per server process (see {@link ServerProcess.output}), for error messages. */
const OUTPUT_TAIL_BYTES = 64 * 1024;

/**
 * Processes started by the harnesses that have not exited yet. A test that crashes or forgets
 * stop() must not leave a server behind holding a port, so the 'exit' handler below kills them.
 */
const live = new Set<ChildProcess>();
/** Temp dirs of instances not stopped yet (the process may be gone): removed at exit too. */
const liveDirs = new Set<string>();
let exitHandlerInstalled = false;

function installExitHandler(): void {
  if (exitHandlerInstalled) return;
  exitHandlerInstalled = true;
  // 'exit' handlers must be synchronous: a plain SIGKILL is all we can do here. SIGKILL also
  // works on a SIGSTOPped process, which SIGTERM would not. Then the temp dirs registered with
  // removeDirAtExit() go, so a crash, process.exit() or a second Ctrl-C in the demo leaves no
  // /tmp/prosody-harness-* behind (a SIGKILL of this process still does: nothing runs then,
  // only pdeathsig stops the server).
  process.on('exit', () => {
    for (const child of live) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of liveDirs) {
      try {
        // maxRetries: a server just SIGKILLed may not be gone yet (ENOTEMPTY/EBUSY are retried).
        rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      } catch {
        // best effort: nothing can be done about it during exit
      }
    }
  });
}

/**
 * SIGKILL `child` when this Node process exits while it still runs. It is forgotten once it
 * exits (or fails to spawn).
 */
export function killAtExit(child: ChildProcess): void {
  live.add(child);
  installExitHandler();
  const forget = (): void => {
    live.delete(child);
  };
  child.once('exit', forget);
  child.once('error', forget);
}

/** Remove `dir` (recursively) when this Node process exits before {@link removeDir} did. */
export function removeDirAtExit(dir: string): void {
  liveDirs.add(dir);
  installExitHandler();
}

/** Remove `dir` (recursively, if it exists) now, and forget it for the 'exit' handler. */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
}

/** Lowest port freePort() hands out: below it live well-known services (epmd 4369, XMPP 5222/5269, …). */
const FREE_PORT_MIN = 10_000;
/** Random picks freePort() tries before it falls back to a kernel-chosen (ephemeral) port. */
const FREE_PORT_TRIES = 50;
/** Ports this process handed out (bounded by its use: a few per server started). */
const handedOut = new Set<number>();

/** First port of the kernel's ephemeral range (Linux: ip_local_port_range), 32768 if unreadable. */
function ephemeralLow(): number {
  try {
    const low = Number.parseInt(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0] ?? '', 10);
    return Number.isInteger(low) && low > 0 ? low : 32_768;
  } catch {
    return 32_768;
  }
}

/** Bind `port` (0: the kernel picks) on `host`, close, and return the port that was bound. */
function bindAndRelease(port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(port, host, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('freePort: unexpected server address'));
        return;
      }
      const bound = addr.port;
      srv.close((err) => (err ? reject(err) : resolve(bound)));
    });
  });
}

/**
 * A TCP port free on `host` (default 127.0.0.1) for a server the harness starts: a random port
 * between 10000 and the start of the kernel's ephemeral range that binds now. Not a port from
 * the ephemeral range (bind to port 0): between the pick and the server's own bind, any outgoing
 * connection of a parallel test may take that port as its local port (CI saw ejabberd fail with
 * eaddrinuse that way). Outside it, only another harness picking the same random port in the
 * same moment could collide. Falls back to a kernel-chosen port when no pick binds.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const low = ephemeralLow();
  if (low - FREE_PORT_MIN >= 1000) {
    for (let i = 0; i < FREE_PORT_TRIES; i++) {
      const port = randomInt(FREE_PORT_MIN, low);
      if (handedOut.has(port)) continue;
      const bound = await bindAndRelease(port, host).catch(() => undefined);
      if (bound === undefined) continue;
      handedOut.add(port);
      return port;
    }
  }
  return bindAndRelease(0, host);
}

/** Whether `file` exists and is executable (for a directory: searchable) by this process. */
export async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Find an executable on PATH (plus /usr/sbin, /usr/bin, where Debian puts the servers). */
export async function findExecutable(name: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/bin'];
  for (const dir of dirs) {
    if (dir && (await isExecutable(path.join(dir, name)))) return path.join(dir, name);
  }
  return undefined;
}

/**
 * Run a command, resolving with stdout; the error carries stdout and stderr because tools such
 * as prosodyctl report on either.
 */
export function run(file: string, args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(file)} ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`.trim()));
      else resolve(stdout);
    });
  });
}

/** Last n lines of a file, or a note saying it could not be read. */
async function tailFile(file: string, n: number): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.split('\n').slice(-n - 1).join('\n');
  } catch (err) {
    return `(cannot read ${file}: ${(err as Error).message})`;
  }
}

/** Size of a file, 0 when it does not exist yet. */
async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

/** File contents from a byte offset on ('' when missing). */
async function readFrom(file: string, offset: number): Promise<string> {
  try {
    return (await readFile(file)).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A server process started by {@link spawnServer}. */
interface ServerProcess {
  /** The spawned process (stdin ignored, stdout and stderr piped into {@link output}). */
  readonly child: ChildProcess;
  /** Resolves once the process has exited, or failed to spawn. */
  readonly exited: Promise<void>;
  /** How it ended (`code 1`, `signal SIGKILL`, `spawn error: ...`); undefined while it runs. */
  readonly exitInfo: string | undefined;
  /** The last {@link OUTPUT_TAIL_BYTES} of its stdout and stderr together. */
  readonly output: string;
}

/**
 * Spawn a server process that {@link killAtExit} covers, collect the tail of its output and note
 * how it ends. `onGone` runs once when it has exited or failed to spawn, before `exited` resolves.
 */
function spawnServer(file: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }, onGone: () => void): ServerProcess {
  const child = spawn(file, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  killAtExit(child);
  let exitInfo: string | undefined;
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_BYTES);
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<void>((resolve) => {
    const gone = (info: string): void => {
      if (exitInfo !== undefined) return;
      exitInfo = info;
      onGone();
      // Any process still holding the write ends (an orphaned helper) would keep the pipes,
      // and with them this Node process, alive: drop them once the last output had its chance.
      setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      }, 1000).unref();
      resolve();
    };
    child.once('exit', (code, signal) => gone(signal ? `signal ${signal}` : `code ${code}`));
    // spawn failures (ENOENT etc.) emit 'error' and may never emit 'exit'.
    child.once('error', (err) => gone(`spawn error: ${err.message}`));
  });
  return {
    child,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    get output() {
      return output;
    },
  };
}

/**
 * SIGTERM (then SIGCONT: a SIGSTOPped process only acts on SIGTERM once continued), SIGKILL
 * after `graceMs`; resolves once the process has exited.
 */
async function terminate(server: ServerProcess, graceMs: number): Promise<void> {
  const { child } = server;
  try {
    child.kill('SIGTERM');
    child.kill('SIGCONT');
  } catch {
    // exited meanwhile
  }
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    server.exited.then(() => false),
    new Promise<boolean>((r) => {
      timer = setTimeout(() => r(true), graceMs);
    }),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    try {
      child.kill('SIGKILL');
    } catch {
      // exited meanwhile
    }
    await server.exited;
  }
}

/** The last n lines of a text, trimmed. */
const lastLines = (text: string, n: number): string => text.split('\n').slice(-n).join('\n').trim();

/** Where a {@link ServerInstance} lives: its domain and c2s port, its temp dir and files there. */
export interface ServerPlace {
  /** The XMPP domain the server hosts. */
  domain: string;
  /** The c2s port on 127.0.0.1. */
  c2sPort: number;
  /** The instance's temp dir, removed by stop(). */
  dir: string;
  /** The generated server config. */
  configFile: string;
  /** The server's log file, which readiness is read from. */
  logFile: string;
}

/** How {@link ServerInstance.startServer} tells that a launch serves clients. */
export interface Readiness {
  /** What serving means, for the timeout message: e.g. `accept connections on 127.0.0.1:5222`. */
  serving: string;
  /** How long the launch may take. */
  timeoutMs: number;
  /** Pause between two checks. */
  pollMs: number;
  /** Whether the server serves, given what this launch wrote to the log (may also probe the port). */
  ready(log: string): Promise<boolean>;
  /** Whether what this launch logged says the c2s port could not be bound. */
  portTaken(log: string): boolean;
}

/**
 * What the harness instances (prosody.ts, ejabberd.ts) share: one server process at a time on
 * 127.0.0.1, restartable on the same port, in a temp dir that stop() removes. A subclass
 * implements launch() with {@link startServer}.
 */
export abstract class ServerInstance {
  /** The servers listen on loopback IPv4 only. */
  readonly host = '127.0.0.1' as const;
  /** See {@link ServerPlace}. */
  readonly domain: string;
  /** See {@link ServerPlace}. */
  readonly c2sPort: number;
  /** See {@link ServerPlace}. */
  readonly dir: string;
  /** See {@link ServerPlace}. */
  readonly configFile: string;
  /** See {@link ServerPlace}. */
  readonly logFile: string;
  /** The running server process; cleared when it exits. */
  private server: ServerProcess | undefined;
  private stopped = false;

  /**
   * `name` (e.g. 'prosody') goes into error messages; `stopGraceMs` is how long a stop waits
   * after SIGTERM before it SIGKILLs.
   */
  constructor(
    private readonly name: string,
    place: ServerPlace,
    private readonly stopGraceMs: number,
  ) {
    this.domain = place.domain;
    this.c2sPort = place.c2sPort;
    this.dir = place.dir;
    this.configFile = place.configFile;
    this.logFile = place.logFile;
  }

  /** PID of the running server process, undefined while it is not running. */
  get pid(): number | undefined {
    return this.server?.child.pid;
  }

  /** Start the server process and resolve once it serves clients. */
  abstract launch(): Promise<void>;

  /**
   * For launch(): spawn `file` (in the temp dir, with `env` or this process's environment) and
   * resolve once `readiness.ready` holds for what this launch logged. Throws when the process
   * exits first; stops it and throws when the log says the c2s port is taken or on timeout.
   */
  protected async startServer(file: string, args: string[], env: NodeJS.ProcessEnv | undefined, readiness: Readiness): Promise<void> {
    // restart() appends to the same log; readiness must only look at this launch's lines.
    const logOffset = await fileSize(this.logFile);
    const server = spawnServer(file, args, { cwd: this.dir, env }, () => {
      if (this.server === server) this.server = undefined;
    });
    this.server = server;
    const where = `127.0.0.1:${this.c2sPort}`;
    const deadline = Date.now() + readiness.timeoutMs;
    for (;;) {
      const log = await readFrom(this.logFile, logOffset);
      if (server.exitInfo !== undefined) {
        throw new Error(
          `${this.name} exited during startup (${server.exitInfo})` +
            (readiness.portTaken(log) ? ` (c2s port ${where} in use?)` : '') +
            `\n--- log of this launch (${this.logFile}):\n${lastLines(log, 40)}` +
            `\n--- stdout/stderr:\n${lastLines(server.output, 40)}`,
        );
      }
      if (readiness.portTaken(log)) {
        await this.terminate();
        throw new Error(`${this.name} could not listen on ${where} (port in use?)\n--- log of this launch (${this.logFile}):\n${log.trim()}`);
      }
      // Ready, unless it exited meanwhile: then the next round reports that.
      if ((await readiness.ready(log)) && server.exitInfo === undefined) return;
      if (Date.now() > deadline) {
        const tail = await tailFile(this.logFile, 40);
        await this.terminate();
        throw new Error(
          `${this.name} did not ${readiness.serving} within ${readiness.timeoutMs} ms\n` +
            `--- last log lines (${this.logFile}):\n${tail}\n--- stdout/stderr:\n${server.output.trim()}`,
        );
      }
      await sleep(readiness.pollMs);
    }
  }

  /** SIGTERM (+SIGCONT), SIGKILL after the grace period; resolves once the process has exited. */
  protected async terminate(): Promise<void> {
    if (this.server) await terminate(this.server, this.stopGraceMs);
  }

  /** Send a raw signal to the server process (e.g. SIGSTOP/SIGCONT/SIGKILL to simulate faults). */
  kill(signal: NodeJS.Signals): void {
    const pid = this.pid;
    if (pid === undefined) throw new Error(`${this.name} is not running (cannot send ${signal})`);
    process.kill(pid, signal);
  }

  /** Stop the process (keeping the temp dir and the server's data) and start it again on the same port. */
  async restart(): Promise<void> {
    if (this.stopped) throw new Error(`${this.name} instance was stopped; its dir is gone`);
    await this.terminate();
    await this.launch();
  }

  /** Stop the process (see terminate()), then remove the temp dir. Idempotent. */
  async stop(): Promise<void> {
    await this.terminate();
    if (this.stopped) return;
    this.stopped = true;
    await removeDir(this.dir);
  }
}
