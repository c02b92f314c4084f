/**
 * Helpers for the tests in test/cli: run a TypeScript entry point of this repository in a child
 * Node (`node --import tsx`), read its stdout line by line, and wait for it to exit.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The repository root (cwd of the children, so tsx and node_modules resolve). */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** A running child with its output collected. */
export interface Child {
  proc: ChildProcessWithoutNullStreams;
  /** stdout so far (until the test destroys the read end). */
  stdout(): string;
  /** stderr so far. */
  stderr(): string;
  /** Resolves on the first stdout text matching `re` (its match); rejects after `timeoutMs` or at exit. */
  waitForStdout(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /**
   * Resolves with the exit code and signal, or with `undefined` when the child has not exited
   * after `timeoutMs` (a "must end at all" guard, not a timing assertion); the child is then
   * SIGKILLed so the test run does not hang.
   */
  exited(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined>;
}

/** Starts `node --import tsx <script> ...args` in the repository root with piped stdio. */
export function runTs(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Child {
  const childEnv = { ...process.env, ...env };
  // Tests that talk TLS to a child set this for themselves; the child must not inherit it.
  delete childEnv.NODE_TLS_REJECT_UNAUTHORIZED;
  const proc = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: ROOT,
    env: childEnv,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  proc.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  // Destroying the read end of stdout on purpose must not fail the test.
  proc.stdout.on('error', () => {});
  proc.stdin.on('error', () => {});
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    waitForStdout(re, timeoutMs) {
      return new Promise((resolve, reject) => {
        const deadline = Date.now() + timeoutMs;
        const poll = (): void => {
          const m = re.exec(out);
          if (m) resolve(m);
          else if (exitInfo) reject(new Error(`exited (${JSON.stringify(exitInfo)}) before ${re}; stdout:\n${out}\nstderr:\n${err}`));
          else if (Date.now() > deadline) reject(new Error(`no ${re} within ${timeoutMs} ms; stdout:\n${out}\nstderr:\n${err}`));
          else setTimeout(poll, 20);
        };
        poll();
      });
    },
    async exited(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const result = await Promise.race([
        exit,
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (result === undefined) proc.kill('SIGKILL');
      return result;
    },
  };
}

/** Whether process `pid` is gone (no such process, or a zombie waiting to be reaped). */
export function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    // "pid (comm) S ..." where S is the state; comm may contain spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** Polls `cond` every 50 ms; resolves true once it holds, false after `timeoutMs`. */
export async function eventually(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (cond()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
