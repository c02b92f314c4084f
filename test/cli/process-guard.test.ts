// src/process-guard.ts in real processes (fixtures/*.ts): exitOnSignals always ends the process
// (clean stop, failing stop, a stop that never ends, a second signal, a stdout nobody reads),
// and installCrashGuard logs a bug and keeps the process running.
import t from 'tap';
import { runTs } from './child.ts';

/** A "must end at all" guard, far above any expected run time. */
const MUST_EXIT_MS = 30_000;

function start(mode: string, deadlineMs?: number) {
  const child = runTs('test/cli/fixtures/signals.ts', deadlineMs === undefined ? [mode] : [mode, String(deadlineMs)]);
  const ready = new Promise<void>((resolve, reject) => {
    const poll = setInterval(() => {
      if (child.stderr().includes('ready\n')) {
        clearInterval(poll);
        resolve();
      }
    }, 20);
    child.proc.once('exit', () => {
      clearInterval(poll);
      reject(new Error(`exited before ready: ${child.stderr()}`));
    });
  });
  return { child, ready };
}

function messages(stdout: string): Array<{ level: number; msg: string; [k: string]: unknown }> {
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

t.test('a clean stop exits 0 and its last log lines are written out', async (t) => {
  const { child, ready } = start('ok');
  await ready;
  child.proc.kill('SIGTERM');
  t.same(await child.exited(MUST_EXIT_MS), { code: 0, signal: null });
  t.match(messages(child.stdout()).slice(-2), [{ msg: 'stopping', signal: 'SIGTERM' }, { msg: 'stopped' }]);
});

t.test('a stop that fails exits 1', async (t) => {
  const { child, ready } = start('throw');
  await ready;
  child.proc.kill('SIGINT');
  t.same(await child.exited(MUST_EXIT_MS), { code: 1, signal: null });
  t.match(messages(child.stdout()).at(-1), { level: 50, msg: 'error while stopping', err: { message: 'stop failed' } });
});

t.test('a stop that never ends: the deadline exits 1', async (t) => {
  const { child, ready } = start('hang', 300);
  await ready;
  child.proc.kill('SIGTERM');
  t.same(await child.exited(MUST_EXIT_MS), { code: 1, signal: null });
  t.match(messages(child.stdout()).at(-1), { level: 50, msg: 'not stopped within the deadline, exiting anyway' });
});

t.test('a second signal while stopping exits 1 at once', async (t) => {
  const { child, ready } = start('slow');
  await ready;
  child.proc.kill('SIGTERM');
  await child.waitForStdout(/"msg":"stopping"/, 10_000);
  child.proc.kill('SIGINT');
  t.same(await child.exited(MUST_EXIT_MS), { code: 1, signal: null });
  t.match(messages(child.stdout()).at(-1), { level: 40, msg: 'second signal, exiting without waiting', signal: 'SIGINT' });
  t.notOk(child.stdout().includes('"msg":"stopped"'), 'did not wait for stop()');
});

t.test('stdout whose reader is gone: the stop still exits 0', async (t) => {
  const { child, ready } = start('slow');
  await ready;
  child.proc.stdout.destroy();
  child.proc.kill('SIGTERM');
  t.same(await child.exited(MUST_EXIT_MS), { code: 0, signal: null });
  t.equal(child.stderr(), 'ready\n', 'nothing but the fixture\'s own line on stderr');
});

t.test('stdout whose reader is alive but stuck (never reads): the stop still exits 0', async (t) => {
  const { child, ready } = start('flood');
  // Stop reading: the pipe fills up with the ~4 MB of log lines and stays full.
  child.proc.stdout.pause();
  child.proc.stdout.removeAllListeners('data');
  await ready;
  child.proc.kill('SIGTERM');
  t.same(await child.exited(MUST_EXIT_MS), { code: 0, signal: null });
  t.equal(child.stderr(), 'ready\n');
});

t.test('the crash guard logs a bug at error level, with its stack, and the process runs on', async (t) => {
  const child = runTs('test/cli/fixtures/crash-guard.ts');
  t.same(await child.exited(MUST_EXIT_MS), { code: 0, signal: null }, 'ran to its natural end');
  const msgs = messages(child.stdout());
  const errors = msgs.filter((m) => m.level === 50);
  t.equal(errors.length, 2, 'two error lines');
  t.match(errors, [
    { msg: /unhandled promise rejection/, err: { type: 'Error', message: 'bug in a promise', stack: /bug in a promise\n\s+at / } },
    { msg: /uncaught exception/, err: { type: 'Error', message: 'bug in a timer', stack: /bug in a timer\n\s+at / }, origin: 'uncaughtException' },
  ]);
  t.match(msgs.at(-1), { level: 30, msg: 'still running' }, 'kept running after both');
  t.equal(child.stderr(), '', 'nothing on stderr (Node did not report a crash)');
});
