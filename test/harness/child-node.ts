/**
 * Helper for the harness tests: start a server through a harness in a separate Node process, so
 * a test can check that the server does not outlive that process.
 */
import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Run `script` (an ES module body; tsx is loaded, so it may import the .ts harnesses) in a
 * separate Node process. The script starts a server and prints one line of JSON starting with
 * '{'; then the child either exits with code 3 without stop() (`mode` 'exit': only the harness's
 * 'exit' handler can stop the server) or runs until it is killed (`mode` 'hang'). Resolves with
 * the child and the parsed line; rejects when the child exits before printing it. stderr is
 * copied to ours, so a failing start shows in the test output; destroy `child.stdout` and
 * `child.stderr` when done.
 */
export function runInChildNode<Report extends object>(script: string, mode: 'exit' | 'hang'): Promise<Report & { child: ChildProcess }> {
  const body = `${script}\nif (process.argv[1] === 'exit') process.exit(3); else setInterval(() => {}, 1000);\n`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', body, mode], {
      // stderr through a pipe of ours, not inherited: a server helper process that outlives the
      // child must not hold the test runner's stderr open (tap waits for its end).
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stderr!.on('data', (d: Buffer) => process.stderr.write(d));
    let out = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve({ child, ...(JSON.parse(line) as Report) });
    });
    child.once('exit', (code) => reject(new Error(`child exited (${code}) before reporting: ${out}`)));
  });
}
