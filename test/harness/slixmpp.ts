/**
 * slixmpp (Debian python3-slixmpp) as a second, third-party client library in the end-to-end
 * tests: test/e2e/slixmpp_client.py driven over stdin/stdout (JSON lines).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { waitFor } from './proxy.ts';

const PYTHON = '/usr/bin/python3';
const SCRIPT = fileURLToPath(new URL('../e2e/slixmpp_client.py', import.meta.url));
// No skip: a missing slixmpp must fail the suite, not hide it.
const probe = spawnSync(PYTHON, ['-c', 'import slixmpp, slixmpp.plugins.xep_0198; print(slixmpp.__version__)'], { encoding: 'utf8' });
if (probe.error || probe.status !== 0) {
  throw new Error(
    `slixmpp is not importable by ${PYTHON} (${probe.error?.message ?? probe.stderr.trim()}): apt-get install python3-slixmpp`,
  );
}
export const slixmppVersion = probe.stdout.trim();

export type PyEvent = { event: string; [k: string]: unknown };

/** The slixmpp client process: its JSON events, its stderr, and a way to send commands. */
export class Slixmpp {
  readonly child: ChildProcess;
  readonly events: PyEvent[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(jid: string, password: string, port: number) {
    this.child = spawn(PYTHON, [SCRIPT, jid, password, '127.0.0.1', String(port)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
    });
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      try {
        this.events.push(JSON.parse(line) as PyEvent);
      } catch {
        this.events.push({ event: 'unparsable', line });
      }
    });
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString('utf8')).slice(-256 * 1024);
    });
  }

  command(line: string): void {
    this.child.stdin!.write(line + '\n');
  }

  of(name: string): PyEvent[] {
    return this.events.filter((e) => e.event === name);
  }

  /** Waits for the n-th (1-based) event called `name`, failing early if the script reports an error. */
  async waitEvent(name: string, n = 1, timeoutMs = 10_000): Promise<PyEvent> {
    try {
      await waitFor(() => this.of(name).length >= n || this.child.exitCode !== null, `slixmpp event ${name} #${n}`, timeoutMs);
    } catch (err) {
      throw new Error(`${(err as Error).message}; events so far: ${JSON.stringify(this.events)}\nstderr tail:\n${this.stderr.slice(-4000)}`);
    }
    const ev = this.of(name)[n - 1];
    if (!ev) throw new Error(`slixmpp exited (${this.child.exitCode}) before ${name} #${n}; events: ${JSON.stringify(this.events)}\nstderr:\n${this.stderr.slice(-4000)}`);
    return ev;
  }
}

