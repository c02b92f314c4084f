import tap from 'tap';
const t = tap;
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULTS, type Config } from '../../src/config/config.ts';
import {
  buildConfig,
  ConfigError,
  ConfigLayer,
  configFileLayer,
  envConfigLayer,
  envLayer,
  MAX_SECONDS,
  parseListen,
  readConfigFile,
} from '../../src/config/load.ts';
import { formatConfig, parseArgs, parseCommandLine } from '../../src/cli.ts';

// The sources, through tsx: bin/xmpp-sm-proxy.js runs the build (dist/), which a checkout may
// not have or may have stale; test/cli/pack.test.ts runs the built command.
const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url));

/** Runs `fn`, expects a ConfigError and returns it. */
function configError(t: Pick<typeof tap, 'type' | 'fail'>, fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    t.type(err, ConfigError, 'throws ConfigError');
    return err as ConfigError;
  }
  t.fail('expected a ConfigError');
  return new ConfigError('', '');
}

/** Runs the CLI in a child process. */
function runCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('defaults: only domains given', async (t) => {
  const c = buildConfig({ domains: ['example.org'] });
  t.same(c, { ...DEFAULTS, domains: ['example.org'] }, 'every other key is the default');
  t.equal(c.sm.hibernationSeconds, 600);
  t.same(c.listen.starttls, [{ host: '0.0.0.0', port: 5222 }]);
  t.same(c.listen.directTls, [{ host: '0.0.0.0', port: 5223 }]);
  t.equal(c.upstream.port, 15222);
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.sm) && Object.isFrozen(c.listen.starttls[0]), 'deeply frozen');
  t.throws(() => {
    (c.sm as { hibernationSeconds: number }).hibernationSeconds = 1;
  }, TypeError);
  t.notOk(Object.isFrozen(DEFAULTS.sm), 'DEFAULTS itself is neither frozen nor shared');
  t.not(c.listen.starttls, DEFAULTS.listen.starttls);
  t.equal(DEFAULTS.domains.length, 0, 'DEFAULTS not modified');
});

t.test('merge: later layers win, mappings merge, arrays replace, null resets', async (t) => {
  const c = buildConfig(
    { domains: ['a.test', 'b.test'], sm: { hibernationSeconds: 300, maxQueueSize: 100 } },
    { domains: ['c.test'], sm: { hibernationSeconds: 60 }, upstream: { port: 5000 } },
    { sm: { maxQueueSize: undefined } },
  );
  t.same(c.domains, ['c.test'], 'array replaced, not concatenated');
  t.equal(c.sm.hibernationSeconds, 60, 'later layer wins');
  t.equal(c.sm.maxQueueSize, 100, 'earlier layer kept where the later one is silent/undefined');
  t.equal(c.sm.maxAckDelaySeconds, 30, 'default kept');
  t.equal(c.upstream.port, 5000);
  t.equal(c.upstream.host, '127.0.0.1', 'sibling default kept');
  const reset = buildConfig(
    { domains: ['a.test'], sm: { hibernationSeconds: 5 }, listen: { starttls: [] } },
    { sm: { hibernationSeconds: null }, listen: { starttls: null } },
  );
  t.equal(reset.sm.hibernationSeconds, 600, 'null resets to default');
  t.same(reset.listen.starttls, [{ host: '0.0.0.0', port: 5222 }]);
});

t.test('precedence: defaults < file < env < flags', async (t) => {
  const dir = t.testdir({
    'p.yaml': [
      'domains: [file.test]',
      'upstream:',
      '  host: xmpp.internal',
      '  port: 25222',
      'sm:',
      '  hibernationSeconds: 300',
      '  maxQueueSize: 100',
      'tls:',
      '  pkcs12File: store.p12',
      '  pkcs12Password: from-file',
      '',
    ].join('\n'),
    'store.p12': 'not parsed here',
  });
  const file = join(dir, 'p.yaml');
  const fromFile = parseArgs(['-c', file], {});
  t.same(fromFile.domains, ['file.test']);
  t.equal(fromFile.sm.hibernationSeconds, 300, 'file over default');
  t.equal(fromFile.upstream.host, 'xmpp.internal');
  t.equal(fromFile.sm.maxAckDelaySeconds, 30, 'default where the file is silent');
  t.equal(fromFile.tls.pkcs12File, join(dir, 'store.p12'), 'relative path resolved against the file');
  t.equal(fromFile.tls.pkcs12Password, 'from-file');

  const env = { XMPP_SM_PROXY_PKCS12_PASSWORD: 'from-env' };
  t.equal(parseArgs(['-c', file], env).tls.pkcs12Password, 'from-env', 'env over file');

  const c = parseArgs(
    ['-c', file, '-d', 'cli.test', '--hibernation', '120', '--upstream', '[::1]:5299', '--pkcs12-password', 'from-cli'],
    env,
  );
  t.same(c.domains, ['cli.test'], 'flag over file');
  t.equal(c.sm.hibernationSeconds, 120, 'flag over file');
  t.equal(c.sm.maxQueueSize, 100, 'file value kept where no flag');
  t.same([c.upstream.host, c.upstream.port], ['::1', 5299]);
  t.equal(c.tls.pkcs12Password, 'from-cli', 'flag over env');
});

t.test('every flag maps to its key', async (t) => {
  const dir = t.testdir({ 'ca.pem': 'x', 'c.pem': 'x', 'k.pem': 'x' });
  const c = parseArgs(
    [
      '-d', 'a.test', 'b.test',
      '--upstream', 'up.example:5333',
      '--upstream-tls', 'required',
      '--upstream-ca', join(dir, 'ca.pem'),
      '--upstream-accept-self-signed',
      '--listen', '127.0.0.1:6222', ':6333',
      '--listen-tls', 'none',
      '--cert', join(dir, 'c.pem'),
      '--key', join(dir, 'k.pem'),
      '--hibernation', '0',
      '--max-queue', '7',
      '--max-stanza-bytes', '1024',
      '--data-dir', join(dir, 'data'),
      '--metrics', '[::1]:9000',
      '--log-level', 'debug',
    ],
    {},
  );
  t.same(c, {
    domains: ['a.test', 'b.test'],
    upstream: {
      ...DEFAULTS.upstream,
      host: 'up.example',
      port: 5333,
      tls: 'required',
      caFile: join(dir, 'ca.pem'),
      acceptSelfSigned: true,
    },
    listen: {
      starttls: [
        { host: '127.0.0.1', port: 6222 },
        { host: '0.0.0.0', port: 6333 },
      ],
      directTls: [],
    },
    tls: { certFile: join(dir, 'c.pem'), keyFile: join(dir, 'k.pem') },
    sm: { ...DEFAULTS.sm, hibernationSeconds: 0, maxQueueSize: 7 },
    limits: { ...DEFAULTS.limits, maxStanzaBytes: 1024, maxDepth: 32 },
    storage: { dataDir: join(dir, 'data') },
    muc: DEFAULTS.muc,
    auth: DEFAULTS.auth,
    push: DEFAULTS.push,
    metrics: { listen: { host: '::1', port: 9000 } },
    shutdown: DEFAULTS.shutdown,
    log: { level: 'debug' },
  } satisfies Config);
});

t.test('JSON and YAML files', async (t) => {
  const dir = t.testdir({
    'c.json': JSON.stringify({
      domains: ['j.test'],
      listen: { starttls: ['127.0.0.1:7222'], directTls: [{ host: '::', port: 7223 }] },
      sm: { maxQueueSize: 42 },
    }),
    'c.yml': 'domains:\n  - y.test\nlisten:\n  directTls: none\nlog:\n  level: warn\n',
    'empty.yaml': '',
    'c.toml': 'domains = ["t.test"]',
    'broken.json': '{ "domains": [',
    'list.yaml': '- a\n- b\n',
  });
  const j = buildConfig(readConfigFile(join(dir, 'c.json')));
  t.same(j.domains, ['j.test']);
  t.same(j.listen.starttls, [{ host: '127.0.0.1', port: 7222 }], 'string listen spec in a file');
  t.same(j.listen.directTls, [{ host: '::', port: 7223 }], '{host, port} listen entry in a file');
  t.equal(j.sm.maxQueueSize, 42);

  const y = buildConfig(readConfigFile(join(dir, 'c.yml')));
  t.same(y.domains, ['y.test']);
  t.same(y.listen.directTls, [], '"none" disables');
  t.equal(y.log.level, 'warn');

  t.same(readConfigFile(join(dir, 'empty.yaml')), {}, 'empty YAML is an empty layer');

  for (const [name, re] of [
    ['c.toml', /must end in \.json, \.yaml or \.yml/],
    ['broken.json', /cannot parse config file/],
    ['missing.yaml', /cannot read config file .*missing\.yaml/],
    ['list.yaml', /must be a mapping/],
  ] as const) {
    const e = configError(t, () => readConfigFile(join(dir, name)));
    t.equal(e.key, 'config', `${name}: key`);
    t.match(e.message, re, `${name}: message`);
  }
});

t.test('unknown keys are errors naming the key', async (t) => {
  const dir = t.testdir({
    'typo.yaml': 'domains: [a.test]\nsm:\n  hibernationSecs: 30\n',
    'top.json': JSON.stringify({ domain: 'a.test' }),
    'listen.yaml': 'domains: [a.test]\nlisten:\n  starttls:\n    - { host: 0.0.0.0, prot: 5222 }\n',
  });
  let e = configError(t, () => readConfigFile(join(dir, 'typo.yaml')));
  t.equal(e.key, 'sm.hibernationSecs');
  t.match(e.message, 'unknown key "sm.hibernationSecs"');
  t.match(e.message, join(dir, 'typo.yaml'), 'names the file');
  t.match(e.message, 'hibernationSeconds', 'lists the known keys');

  e = configError(t, () => readConfigFile(join(dir, 'top.json')));
  t.equal(e.key, 'domain');

  e = configError(t, () => buildConfig(readConfigFile(join(dir, 'listen.yaml'))));
  t.equal(e.key, 'listen.starttls[0].prot');

  e = configError(t, () => buildConfig({ domains: ['a.test'], upstream: { tsl: 'none' } }));
  t.equal(e.key, 'upstream.tsl', 'buildConfig checks layers too');

  e = configError(t, () => buildConfig({ domains: ['a.test'], sm: 5 }));
  t.equal(e.key, 'sm');
  t.match(e.message, 'must be a mapping');
});

t.test('bad numbers name the key', async (t) => {
  const e = configError(t, () => buildConfig({ domains: ['a.test'], sm: { hibernationSeconds: 'abc' } }));
  t.equal(e.key, 'sm.hibernationSeconds');
  t.match(e.message, /^config: sm\.hibernationSeconds must be a non-negative integer .*\(got "abc"\)$/);

  const cases: [string, Record<string, unknown>][] = [
    ['sm.hibernationSeconds', { sm: { hibernationSeconds: -1 } }],
    ['sm.hibernationSeconds', { sm: { hibernationSeconds: 1.5 } }],
    ['sm.hibernationSeconds', { sm: { hibernationSeconds: MAX_SECONDS + 1 } }],
    ['sm.maxQueueSize', { sm: { maxQueueSize: 0 } }],
    ['sm.maxUnackedStanzas', { sm: { maxUnackedStanzas: -1 } }],
    ['sm.maxAckDelaySeconds', { sm: { maxAckDelaySeconds: '30' } }],
    ['sm.maxOldSessions', { sm: { maxOldSessions: Number.NaN } }],
    ['limits.maxStanzaBytes', { limits: { maxStanzaBytes: 1023 } }],
    ['limits.maxDepth', { limits: { maxDepth: 3 } }],
    ['upstream.port', { upstream: { port: 0 } }],
    ['upstream.port', { upstream: { port: 65536 } }],
    ['upstream.connectTimeoutSeconds', { upstream: { connectTimeoutSeconds: 0 } }],
    ['upstream.tls', { upstream: { tls: 'yes' } }],
    ['upstream.acceptSelfSigned', { upstream: { acceptSelfSigned: 'true' } }],
    ['upstream.host', { upstream: { host: '' } }],
    ['log.level', { log: { level: 'verbose' } }],
    ['tls.pkcs12Password', { tls: { pkcs12Password: 1234 } }],
  ];
  for (const [key, layer] of cases) {
    const err = configError(t, () => buildConfig({ domains: ['a.test'] }, layer));
    t.equal(err.key, key, `${JSON.stringify(layer)} → ${key}`);
    t.match(err.message, `config: ${key} `);
  }
  // Boundaries that are allowed.
  const ok = buildConfig({
    domains: ['a.test'],
    sm: { hibernationSeconds: 0, maxQueueSize: 1, maxUnackedStanzas: 0, maxOldSessions: 0 },
    limits: { maxStanzaBytes: 1024, maxDepth: 4 },
    upstream: { port: 65535 },
  });
  t.equal(ok.limits.maxDepth, 4);
});

t.test('domains', async (t) => {
  for (const layers of [[], [{}], [{ domains: [] }], [{ domains: ['a.test'] }, { domains: null }]]) {
    const e = configError(t, () => buildConfig(...layers));
    t.equal(e.key, 'domains');
    t.equal(e.message, 'config: domains is required (the XMPP domain the proxy serves)');
  }
  for (const [bad, key] of [
    [['Example.org'], 'domains[0]'],
    [['a.test', 'a..test'], 'domains[1]'],
    [['-a.test'], 'domains[0]'],
    [['a test'], 'domains[0]'],
    [['a.test', 'a.test'], 'domains[1]'],
    [[5], 'domains[0]'],
    ['a.test', 'domains'],
  ] as const) {
    const e = configError(t, () => buildConfig({ domains: bad }));
    t.equal(e.key, key, `${JSON.stringify(bad)} → ${key}`);
  }
  t.same(buildConfig({ domains: ['localhost', 'xn--mller-kva.example', 'a-b.c1'] }).domains.length, 3);
});

t.test('parseListen', async (t) => {
  const good: [string, { host: string; port: number } | null][] = [
    ['127.0.0.1:5222', { host: '127.0.0.1', port: 5222 }],
    ['xmpp.example.org:5223', { host: 'xmpp.example.org', port: 5223 }],
    ['[::1]:5222', { host: '::1', port: 5222 }],
    ['[::]:1', { host: '::', port: 1 }],
    [':5222', { host: '0.0.0.0', port: 5222 }],
    ['5222', { host: '0.0.0.0', port: 5222 }],
    ['65535', { host: '0.0.0.0', port: 65535 }],
    ['', null],
    ['none', null],
  ];
  for (const [spec, want] of good) t.same(parseListen(spec, 'listen.starttls'), want, JSON.stringify(spec));
  for (const spec of ['localhost', 'host:', 'host:0', 'host:65536', 'h:12abc', '::1:5222', '[::1]5222', '[nope]:5222', 'a b:5222', '-1']) {
    const e = configError(t, () => parseListen(spec, 'listen.directTls'));
    t.equal(e.key, 'listen.directTls', `${spec}: key`);
    t.match(e.message, `invalid listen address ${JSON.stringify(spec)}`);
  }
});

t.test('listeners in buildConfig', async (t) => {
  let e = configError(t, () => buildConfig({ domains: ['a.test'], listen: { starttls: ['none'], directTls: [] } }));
  t.equal(e.key, 'listen');
  t.match(e.message, 'no listeners');
  e = configError(t, () => buildConfig({ domains: ['a.test'], listen: { starttls: ['5222', 'none'] } }));
  t.equal(e.key, 'listen.starttls[1]');
  e = configError(t, () => buildConfig({ domains: ['a.test'], listen: { directTls: [':5222'] } }));
  t.equal(e.key, 'listen.directTls[0]', 'same address as the default STARTTLS listener');
  t.match(e.message, 'already used by listen.starttls[0]');
  e = configError(t, () => buildConfig({ domains: ['a.test'], listen: { starttls: ['x:99999'] } }));
  t.equal(e.key, 'listen.starttls[0]');
});

t.test('TLS files', async (t) => {
  const dir = t.testdir({ 'c.pem': 'c', 'k.pem': 'k', 's.p12': 'p', sub: {} });
  const f = (n: string) => join(dir, n);
  let e = configError(t, () => buildConfig({ domains: ['a.test'], tls: { certFile: f('c.pem') } }));
  t.equal(e.key, 'tls.keyFile');
  t.match(e.message, 'both or neither');
  e = configError(t, () => buildConfig({ domains: ['a.test'], tls: { keyFile: f('k.pem') } }));
  t.equal(e.key, 'tls.certFile');
  e = configError(t, () =>
    buildConfig({ domains: ['a.test'], tls: { certFile: f('c.pem'), keyFile: f('k.pem'), pkcs12File: f('s.p12') } }),
  );
  t.equal(e.key, 'tls.pkcs12File');
  t.match(e.message, 'exclusive');
  e = configError(t, () => buildConfig({ domains: ['a.test'], upstream: { caFile: f('nope.pem') } }));
  t.equal(e.key, 'upstream.caFile');
  t.match(e.message, `cannot read "${f('nope.pem')}" (no such file)`);
  e = configError(t, () => buildConfig({ domains: ['a.test'], tls: { pkcs12File: f('sub') } }));
  t.equal(e.key, 'tls.pkcs12File');
  t.match(e.message, 'not a regular file');

  // A keystore on the command line replaces PEM files from the config file (and vice versa).
  const cfg = join(dir, 'pem.json');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(cfg, JSON.stringify({ domains: ['a.test'], tls: { certFile: 'c.pem', keyFile: 'k.pem' } }));
  const c = parseArgs(['-c', cfg, '--pkcs12', f('s.p12')], {});
  t.same(c.tls, { pkcs12File: f('s.p12') });
  t.same(parseArgs(['-c', cfg], {}).tls, { certFile: f('c.pem'), keyFile: f('k.pem') });
});

t.test('envLayer', async (t) => {
  t.same(envLayer({}), {});
  t.same(envLayer({ XMPP_SM_PROXY_PKCS12_PASSWORD: 'pw' }), { tls: { pkcs12Password: 'pw' } });
  t.equal(buildConfig({ domains: ['a.test'] }, envLayer({ XMPP_SM_PROXY_PKCS12_PASSWORD: 'pw' })).tls.pkcs12Password, 'pw');
});

t.test('CLI numbers are parsed strictly and errors name the flag', async (t) => {
  t.equal(parseArgs(['-d', 'a.test', '--hibernation', '300'], {}).sm.hibernationSeconds, 300);
  for (const bad of ['12abc', '1e3', '0x10', '1.5', '', ' 5']) {
    const e = configError(t, () => parseArgs(['-d', 'a.test', '--max-queue', bad], {}));
    t.equal(e.key, 'sm.maxQueueSize', `${JSON.stringify(bad)} rejected`);
    t.match(e.message, '(from --max-queue)');
  }
  let e = configError(t, () => parseArgs(['-d', 'a.test', '--max-stanza-bytes', '100'], {}));
  t.equal(e.key, 'limits.maxStanzaBytes');
  t.match(e.message, '(from --max-stanza-bytes)');
  e = configError(t, () => parseArgs(['-d', 'a.test', '--upstream', 'nohost'], {}));
  t.equal(e.key, 'upstream.host');
  t.match(e.message, '--upstream');
  e = configError(t, () => parseArgs(['-d', 'a.test', '--listen', 'x:1', 'bad:port'], {}));
  t.equal(e.key, 'listen.starttls[1]');
  t.match(e.message, '(from --listen)');

  const dir = t.testdir({ 'c.yaml': 'domains: [a.test]\nsm:\n  maxQueueSize: 0\n' });
  e = configError(t, () => parseArgs(['-c', join(dir, 'c.yaml')], {}));
  t.equal(e.key, 'sm.maxQueueSize');
  t.match(e.message, ` in ${join(dir, 'c.yaml')}`, 'a value from the file names the file');
  t.notMatch(e.message, '--max-queue');
});

t.test('value errors name the layer the value came from', async (t) => {
  const dir = t.testdir({
    'p.yaml': 'domains: [a.test]\nshutdown:\n  timeoutSeconds: 0\nsm:\n  maxAckRequests: 5\n',
    'unknown.json': JSON.stringify({ domains: ['a.test'] }),
  });
  const file = join(dir, 'p.yaml');
  let e = configError(t, () => buildConfig(configFileLayer(file)));
  t.equal(e.key, 'shutdown.timeoutSeconds');
  t.equal(e.message, `config: shutdown.timeoutSeconds must be a positive integer (seconds, at most ${MAX_SECONDS}) (got 0) in ${file}`);
  e = configError(t, () => parseArgs(['-c', file], {}));
  t.match(e.message, ` in ${file}`, 'through the command line too');

  // A later layer's value is blamed on that layer, an earlier one's on its own.
  e = configError(t, () => buildConfig(configFileLayer(file), new ConfigLayer({ shutdown: { timeoutSeconds: 'x' } }, '(from the test)')));
  t.match(e.message, /\(got "x"\) \(from the test\)$/);
  e = configError(t, () =>
    buildConfig(configFileLayer(file), new ConfigLayer({ shutdown: { timeoutSeconds: 5 }, sm: { maxAckRequests: 0 } }, '(from the test)')),
  );
  t.equal(e.key, 'sm.maxAckRequests');
  t.equal(e.message, 'config: sm.maxAckRequests must be an integer >= 1 (got 0) (from the test)');
  // null resets: the default is nobody's fault, and a reset value is no longer the file's.
  t.equal(buildConfig(configFileLayer(file), { shutdown: { timeoutSeconds: null } }).shutdown.timeoutSeconds, 10);

  e = configError(t, () => buildConfig({ domains: ['a.test'] }, envConfigLayer({}), new ConfigLayer({ tls: { pkcs12Password: 5 } }, '(from the environment)')));
  t.equal(e.message, 'config: tls.pkcs12Password must be a string (got 5) (from the environment)');
  t.match(envConfigLayer({ XMPP_SM_PROXY_PKCS12_PASSWORD: 'x' }).source, 'XMPP_SM_PROXY_PKCS12_PASSWORD');

  e = configError(t, () => buildConfig(new ConfigLayer({ domains: ['a.test'], limits: { maxPipeline: 5 } }, '(from the test)')));
  t.equal(e.key, 'limits.maxPipeline');
  t.match(e.message, /^config: unknown key "limits\.maxPipeline" \(from the test\) \(known keys in limits: .*maxPipelined/);

  // Plain layers (the old call shape) still work, without a layer name.
  e = configError(t, () => buildConfig({ domains: ['a.test'], limits: { closeGraceSeconds: 0 } }));
  t.equal(e.message, `config: limits.closeGraceSeconds must be a positive integer (seconds, at most ${MAX_SECONDS}) (got 0)`);
});

t.test('new keys: defaults, bounds, cross-key checks', async (t) => {
  const c = buildConfig({ domains: ['a.test'] });
  t.same(c.storage, { dataDir: '/var/lib/xmpp-sm-proxy' });
  t.same(c.metrics, { listen: { host: '127.0.0.1', port: 9464 } }, 'metrics on loopback by default');
  t.same(c.shutdown, { timeoutSeconds: 10, ackWaitMs: 3000, closeGraceMs: 1000 });
  t.same([c.limits.maxAuthAttempts, c.limits.maxPipelined, c.limits.closeGraceSeconds], [3, 100, 5]);
  t.same([c.sm.maxAckRequests, c.sm.ackRequestWindowSeconds], [100, 10]);
  t.same([c.upstream.gapFillPageSize, c.upstream.gapFillMaxPasses], [100, 3]);

  t.equal(buildConfig({ domains: ['a.test'], metrics: { listen: 'none' } }).metrics.listen, null, '"none" disables');
  t.same(buildConfig({ domains: ['a.test'], metrics: { listen: { host: '::1', port: 1234 } } }).metrics.listen, { host: '::1', port: 1234 });
  t.same(buildConfig({ domains: ['a.test'], storage: { dataDir: 'relative/dir' } }).storage.dataDir, 'relative/dir', 'not checked, not resolved outside a file');

  const cases: [string, Record<string, unknown>][] = [
    ['limits.maxAuthAttempts', { limits: { maxAuthAttempts: 0 } }],
    ['limits.maxPipelined', { limits: { maxPipelined: 0 } }],
    ['limits.closeGraceSeconds', { limits: { closeGraceSeconds: MAX_SECONDS + 1 } }],
    ['sm.maxAckRequests', { sm: { maxAckRequests: 1.5 } }],
    ['sm.ackRequestWindowSeconds', { sm: { ackRequestWindowSeconds: 0 } }],
    ['upstream.gapFillPageSize', { upstream: { gapFillPageSize: 0 } }],
    ['upstream.gapFillMaxPasses', { upstream: { gapFillMaxPasses: '3' } }],
    ['shutdown.timeoutSeconds', { shutdown: { timeoutSeconds: -1 } }],
    ['shutdown.closeGraceMs', { shutdown: { closeGraceMs: -1 } }],
    ['storage.dataDir', { storage: { dataDir: '' } }],
    ['metrics.listen', { metrics: { listen: 'x:0' } }],
    ['metrics.listen', { metrics: { listen: 9464 } }],
  ];
  for (const [key, layer] of cases) {
    const err = configError(t, () => buildConfig({ domains: ['a.test'] }, layer));
    t.equal(err.key, key, `${JSON.stringify(layer)} → ${key}`);
    t.match(err.message, `config: ${key}`);
  }

  let e = configError(t, () => buildConfig({ domains: ['a.test'], metrics: { listen: ':5223' } }));
  t.equal(e.key, 'metrics.listen');
  t.match(e.message, 'already used by listen.directTls[0]');
  e = configError(t, () => buildConfig({ domains: ['a.test'], shutdown: { timeoutSeconds: 2, closeGraceMs: 2000 } }));
  t.equal(e.key, 'shutdown.closeGraceMs');
  t.match(e.message, 'must be less than shutdown.timeoutSeconds');
  e = configError(t, () => buildConfig({ domains: ['a.test'], shutdown: { timeoutSeconds: 4, ackWaitMs: 3000 } }));
  t.match(e.message, 'shutdown.ackWaitMs + shutdown.closeGraceMs (4000 ms) must be less than');
  t.equal(buildConfig({ domains: ['a.test'], shutdown: { timeoutSeconds: 2, ackWaitMs: 1000, closeGraceMs: 0 } }).shutdown.closeGraceMs, 0);

  // A relative dataDir in a config file is resolved against the file's folder, like the TLS files.
  const dir = t.testdir({ 'c.yaml': 'domains: [a.test]\nstorage:\n  dataDir: state\nmetrics:\n  listen: none\n' });
  const fromFile = parseArgs(['-c', join(dir, 'c.yaml')], {});
  t.equal(fromFile.storage.dataDir, join(dir, 'state'));
  t.equal(fromFile.metrics.listen, null);
});

t.test('--data-dir and --metrics', async (t) => {
  const c = parseArgs(['-d', 'a.test', '--data-dir', 'rel/store', '--metrics', '127.0.0.1:9999'], {});
  t.equal(c.storage.dataDir, join(process.cwd(), 'rel/store'), 'relative to the working directory');
  t.same(c.metrics.listen, { host: '127.0.0.1', port: 9999 });
  t.equal(parseArgs(['-d', 'a.test', '--metrics', 'none'], {}).metrics.listen, null);

  const dir = t.testdir({ 'c.yaml': 'domains: [a.test]\nmetrics:\n  listen: 127.0.0.1:1\nstorage:\n  dataDir: /from/file\n' });
  const over = parseArgs(['-c', join(dir, 'c.yaml'), '--metrics', '[::1]:9464', '--data-dir', '/from/flag'], {});
  t.same(over.metrics.listen, { host: '::1', port: 9464 }, 'flag over file');
  t.equal(over.storage.dataDir, '/from/flag');

  let e = configError(t, () => parseArgs(['-d', 'a.test', '--metrics', 'localhost'], {}));
  t.equal(e.key, 'metrics.listen');
  t.match(e.message, /^config: metrics\.listen: invalid listen address "localhost": no port .*\(from --metrics\)$/);
  e = configError(t, () => parseArgs(['-d', 'a.test', '--metrics', '0.0.0.0:5222'], {}));
  t.equal(e.key, 'metrics.listen');
  t.match(e.message, 'already used by listen.starttls[0] (from --metrics)');
});

t.test('formatConfig and parseCommandLine', async (t) => {
  const c = buildConfig({ domains: ['a.test'], tls: { pkcs12Password: 'hunter2' } });
  const text = formatConfig(c);
  t.notMatch(text, 'hunter2');
  t.equal(JSON.parse(text).tls.pkcs12Password, '***');
  t.equal(c.tls.pkcs12Password, 'hunter2', 'the config itself is untouched');
  t.notMatch(formatConfig(buildConfig({ domains: ['a.test'] })), '***', 'no password, no placeholder');
  t.equal(parseCommandLine(['-d', 'a.test', '--print-config'], {}).printConfig, true);
  t.equal(parseCommandLine(['-d', 'a.test'], {}).printConfig, false);
});

t.test('CLI subprocess: bad --hibernation exits 2 naming the key and flag', async (t) => {
  const r = runCli(['--domain', 'x.test', '--hibernation', 'abc']);
  t.equal(r.code, 2, 'exit code 2');
  t.match(r.stderr, /^xmpp-sm-proxy: config: sm\.hibernationSeconds must be a non-negative integer/);
  t.match(r.stderr, '--hibernation');
  t.equal(r.stdout, '', 'nothing on stdout');
});

t.test('CLI subprocess: missing domain and usage errors exit 2', async (t) => {
  let r = runCli([]);
  t.equal(r.code, 2);
  t.match(r.stderr, 'xmpp-sm-proxy: config: domains is required');
  r = runCli(['--domain', 'x.test', '--no-such-flag']);
  t.equal(r.code, 2);
  t.match(r.stderr, "unknown option '--no-such-flag'");
});

t.test('CLI subprocess: --print-config prints the config and hides the password', async (t) => {
  const dir = t.testdir({ 's.p12': 'p' });
  let r = runCli([
    '--domain', 'x.test', '--pkcs12', join(dir, 's.p12'), '--pkcs12-password', 'S3cr3t!', '--hibernation', '90', '--print-config',
  ]);
  t.equal(r.code, 0, r.stderr);
  t.notMatch(r.stdout, 'S3cr3t!', 'password not printed');
  const printed = JSON.parse(r.stdout);
  t.equal(printed.tls.pkcs12Password, '***');
  t.equal(printed.tls.pkcs12File, join(dir, 's.p12'));
  t.equal(printed.sm.hibernationSeconds, 90);
  t.same(printed.domains, ['x.test']);

  r = runCli(['--domain', 'x.test', '--print-config'], { XMPP_SM_PROXY_PKCS12_PASSWORD: 'EnvS3cret' });
  t.equal(r.code, 0, r.stderr);
  t.notMatch(r.stdout, 'EnvS3cret');
  t.equal(JSON.parse(r.stdout).tls.pkcs12Password, '***', 'password from the environment is hidden too');
});
