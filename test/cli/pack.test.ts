// The npm package works as installed: `npm pack` (its prepack script builds dist/), then
// `npm install -g` of the tarball into a temp prefix, then the installed command: --version,
// --help, the proxy started for real and stopped by SIGTERM, the package's entry points. Nothing
// installed may be TypeScript tooling (tsx, typescript, esbuild) or a .ts source that runs.
// Real commands: needs npm and the npm registry (or a warm npm cache) for the dependencies.
import t from 'tap';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../harness/prosody.ts';
import { ROOT } from './child.ts';

// Installing builds native dependencies from source when no prebuilt binary can be fetched
// (better-sqlite3: 1.5-2 min on this 2-core machine under load): far beyond .taprc's 240 s.
t.setTimeout(20 * 60_000);

const PKG = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
/** Packages that would mean TypeScript is compiled at run time (or was installed for it). */
const BUILD_TOOLS = ['tsx', 'typescript', 'esbuild'];

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * The environment for npm and the installed command: the test's own, minus what `npm test`
 * sets for its script (its prefix and package), which must not leak into a global install.
 */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    if (/^npm_(lifecycle_|package_|command$|config_(prefix|global_prefix|local_prefix|call)$)/i.test(key)) delete env[key];
  }
  delete env.NODE_OPTIONS; // tap's --import=tsx must not reach the installed command
  // The `#!/usr/bin/env node` of the installed command finds this node first.
  env.PATH = `${path.dirname(process.execPath)}${path.delimiter}${env.PATH ?? ''}`;
  return env;
}

/** Runs `cmd args` to its end (SIGKILLed after `timeoutMs`); resolves with its output and duration. */
function run(cmd: string, args: string[], opts: { cwd: string; timeoutMs: number }): Promise<Run> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - start });
    });
  });
}

/** Every file below `dir` (relative paths), skipping node_modules. */
function ownFiles(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).filter(
    (f) => !f.split(path.sep).includes('node_modules'),
  );
}

/** Every installed package directory below `dir`'s node_modules, at any depth (names, e.g. `@scope/x`). */
function installedPackages(dir: string): string[] {
  const names: string[] = [];
  const walk = (nm: string): void => {
    if (!existsSync(nm)) return;
    for (const entry of readdirSync(nm)) {
      if (entry.startsWith('.')) continue;
      const dirs = entry.startsWith('@') ? readdirSync(path.join(nm, entry)).map((e) => `${entry}/${e}`) : [entry];
      for (const name of dirs) {
        names.push(name);
        walk(path.join(nm, name, 'node_modules'));
      }
    }
  };
  walk(path.join(dir, 'node_modules'));
  return names;
}

/** The project's compiled better-sqlite3 (`npm ci` built it), when the registry would install the same version. */
function addonToReuse(): { version: string; build: string } | undefined {
  const dir = path.join(ROOT, 'node_modules', 'better-sqlite3');
  const build = path.join(dir, 'build', 'Release', 'better_sqlite3.node');
  if (!existsSync(build)) return undefined;
  const version = (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  return { version, build: path.join(dir, 'build') };
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'pack-test-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
const prefix = path.join(tmp, 'prefix');
const installed = path.join(prefix, 'lib', 'node_modules', PKG.name);
const command = path.join(prefix, 'bin', PKG.name);

t.test('npm pack builds dist/ and ships it without sources or TypeScript tooling', async (t) => {
  const packDir = path.join(tmp, 'pack');
  mkdirSync(packDir);
  const r = await run('npm', ['pack', '--pack-destination', packDir, '--no-audit', '--no-fund'], { cwd: ROOT, timeoutMs: 5 * 60_000 });
  t.comment(`npm pack (with its build): ${(r.ms / 1000).toFixed(1)} s`);
  t.equal(r.code, 0, 'npm pack exits 0', { stderr: r.stderr });
  const tarballs = existsSync(packDir) ? readdirSync(packDir).filter((f) => f.endsWith('.tgz')) : [];
  t.same(tarballs, [`${PKG.name}-${PKG.version}.tgz`], 'one tarball');
  if (tarballs.length !== 1) return; // nothing to install

  // better-sqlite3 compiles from source here (no prebuilt binary offline): 1.5-2 min of CI time
  // spent again on what `npm ci` just built from the same source. So the install skips install
  // scripts and gets the project's compiled addon, when the versions match; else it builds.
  const reuse = addonToReuse();
  const i = await run(
    'npm',
    ['install', '--global', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', ...(reuse ? ['--ignore-scripts'] : []), path.join(packDir, tarballs[0]!)],
    { cwd: tmp, timeoutMs: 15 * 60_000 },
  );
  t.comment(`npm install -g of the tarball${reuse ? ' (the compiled SQLite addon reused)' : ''}: ${(i.ms / 1000).toFixed(1)} s`);
  t.equal(i.code, 0, 'npm install -g exits 0', { stderr: i.stderr });
  if (i.code !== 0) return;
  if (reuse) {
    const target = path.join(installed, 'node_modules', 'better-sqlite3');
    const version = (JSON.parse(readFileSync(path.join(target, 'package.json'), 'utf8')) as { version: string }).version;
    if (version === reuse.version) {
      cpSync(reuse.build, path.join(target, 'build'), { recursive: true });
    } else {
      // The registry has a newer release than the lockfile: build that one, as a user's install would.
      const b = await run('npm', ['rebuild', 'better-sqlite3'], { cwd: installed, timeoutMs: 15 * 60_000 });
      t.equal(b.code, 0, `better-sqlite3 ${version} built`, { stderr: b.stderr });
    }
  }

  const files = ownFiles(installed);
  t.ok(files.includes(path.join('dist', 'cli.js')), 'dist/cli.js is installed');
  t.ok(files.includes(path.join('dist', 'proxy.d.ts')), 'with its declarations');
  t.notOk(existsSync(path.join(installed, 'src')), 'no src/');
  t.same(files.filter((f) => /\.[cm]?ts$/.test(f) && !/\.d\.[cm]?ts$/.test(f)), [], 'no .ts file other than declarations');
  t.match(readFileSync(path.join(installed, 'bin', `${PKG.name}.js`), 'utf8'), /\.\.\/dist\/cli\.js/, 'the command runs dist/cli.js');
  const packages = installedPackages(installed);
  t.ok(packages.includes('pino') && packages.includes('commander'), 'the runtime dependencies are installed');
  t.same(packages.filter((p) => BUILD_TOOLS.includes(p)), [], `none of ${BUILD_TOOLS.join(', ')} is installed`);
});

t.test('the installed command: --version and --help', async (t) => {
  const v = await run(command, ['--version'], { cwd: tmp, timeoutMs: 60_000 });
  t.equal(v.code, 0, '--version exits 0', { stderr: v.stderr });
  t.equal(v.stdout.trim(), PKG.version, "prints package.json's version (read from dist/../package.json)");
  const h = await run(command, ['--help'], { cwd: tmp, timeoutMs: 60_000 });
  t.equal(h.code, 0, '--help exits 0', { stderr: h.stderr });
  t.match(h.stdout, /^Usage: xmpp-sm-proxy \[options\]/, 'usage');
  t.match(h.stdout, /--domain <domain\.\.\.>/, 'lists the flags');
  t.equal(h.stderr, '', 'nothing on stderr');
});

t.test('the installed command runs the proxy: its store, its metrics, JSON log lines, SIGTERM stops it with exit code 0', async (t) => {
  const port = await freePort();
  const metricsPort = await freePort();
  const config = path.join(tmp, 'config.yaml');
  // Port 1 on loopback: no client logs in, so the upstream is never dialled.
  writeFileSync(config, ['domains: [pack.test]', 'upstream: { host: 127.0.0.1, port: 1 }', `listen: { starttls: ["127.0.0.1:${port}"], directTls: none }`, ''].join('\n'));
  const dataDir = path.join(tmp, 'data');
  const args = ['--config', config, '--data-dir', dataDir, '--metrics', `127.0.0.1:${metricsPort}`];
  const child = spawn(command, args, { cwd: tmp, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const listening = await new Promise<boolean>((resolve) => {
    const deadline = Date.now() + 60_000;
    const poll = (): void => {
      if (stdout.includes('"msg":"proxy listening"')) resolve(true);
      else if (child.exitCode !== null || Date.now() > deadline) resolve(false);
      else setTimeout(poll, 50);
    };
    poll();
  });
  t.ok(listening, 'the proxy logs that it listens', { stdout, stderr });
  t.ok(existsSync(path.join(dataDir, 'xmpp-sm-proxy.sqlite')), 'its SQLite store (the native addon works once installed)');
  const scrape = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  t.equal(scrape.status, 200, 'its metrics endpoint answers');
  t.match(await scrape.text(), /^xmpp_sm_proxy_build_info\{version="[^"]+"\} 1$/m, 'with its metrics');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const result = await exited;
  clearTimeout(timer);
  t.same(result, { code: 0, signal: null }, 'SIGTERM: exit code 0');
  const lines = stdout.split('\n').filter(Boolean);
  t.ok(lines.length > 0 && lines.every((l) => typeof JSON.parse(l).msg === 'string'), 'every stdout line is a JSON log line');
  t.equal(stderr, '', 'nothing on stderr');
});

t.test("the package's entry points import without TypeScript", async (t) => {
  const code = [
    `const proxy = await import('${PKG.name}');`,
    `const config = await import('${PKG.name}/config');`,
    `const log = await import('${PKG.name}/log');`,
    `console.log(JSON.stringify([typeof proxy.startProxy, typeof config.buildConfig, typeof log.createLogger]));`,
  ].join('\n');
  // From <prefix>/lib, the bare name resolves to the globally installed package.
  const r = await run(process.execPath, ['--input-type=module', '-e', code], { cwd: path.join(prefix, 'lib'), timeoutMs: 60_000 });
  t.equal(r.code, 0, 'imports', { stderr: r.stderr });
  t.same(JSON.parse(r.stdout), ['function', 'function', 'function'], 'startProxy, buildConfig, createLogger');
});
