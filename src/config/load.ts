/**
 * Loading and validating the configuration (design.md §3: `cli.ts`, `config/`).
 *
 * Sources, later wins: {@link DEFAULTS} < config file ({@link readConfigFile}) < environment
 * ({@link envLayer}) < CLI flags (`cli.ts`). Each source is a *layer*: a partial object in the
 * shape of {@link Config}. {@link buildConfig} merges the layers and validates the result into
 * one frozen `Config`. Every problem is reported as a {@link ConfigError} that names the key.
 */
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { dirname, extname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { DEFAULTS, type Config, type ListenAddress, type UpstreamTlsMode } from './config.ts';

/**
 * A configuration problem. `key` is the dotted config path of the offending value
 * (`"sm.hibernationSeconds"`, `"listen.starttls[1]"`, `"domains"`; `"config"` for the file
 * itself), and the message always names it, e.g.
 * `config: sm.hibernationSeconds must be a non-negative integer (got "abc")`.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly key: string;
  constructor(key: string, message: string) {
    super(message);
    this.key = key;
  }
}

/** Name of the environment variable that may supply `tls.pkcs12Password`. */
export const PKCS12_PASSWORD_ENV = 'XMPP_SM_PROXY_PKCS12_PASSWORD';

/** pino's levels, the allowed values of `log.level`. */
export const LOG_LEVELS: readonly Config['log']['level'][] = [
  'fatal',
  'error',
  'warn',
  'info',
  'debug',
  'trace',
  'silent',
];

const UPSTREAM_TLS_MODES: readonly UpstreamTlsMode[] = ['auto', 'required', 'none'];

/**
 * Largest value allowed for a `...Seconds` key: Node timers overflow above 2^31-1 ms (about
 * 24.8 days) and then fire at once, which would turn a long hibernation into none at all.
 */
export const MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

// ---------------------------------------------------------------------------------------------
// Small helpers

/** A short, quoted rendering of a bad value for error messages. */
function show(value: unknown): string {
  let s: string;
  if (value === undefined) s = 'undefined';
  else {
    try {
      s = JSON.stringify(value) ?? String(value);
    } catch {
      s = String(value);
    }
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function fail(key: string, what: string, value: unknown): never {
  throw new ConfigError(key, `config: ${key} must be ${what} (got ${show(value)})`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function join(prefix: string, key: string): string {
  return prefix ? `${prefix}.${key}` : key;
}

// ---------------------------------------------------------------------------------------------
// Leaf validators. Each takes the merged value and its key and returns the normalized value
// or throws ConfigError.

type Validator<T> = (value: unknown, key: string) => T;

function integer(min: number, max: number, what: string): Validator<number> {
  return (value, key) => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) fail(key, what, value);
    if (value < min || value > max) fail(key, what, value);
    return value;
  };
}

const nonNegative = integer(0, Number.MAX_SAFE_INTEGER, 'a non-negative integer');
const seconds = (min: 0 | 1): Validator<number> =>
  integer(
    min,
    MAX_SECONDS,
    `a ${min === 0 ? 'non-negative' : 'positive'} integer (seconds, at most ${MAX_SECONDS})`,
  );
const atLeast = (min: number): Validator<number> =>
  integer(min, Number.MAX_SAFE_INTEGER, `an integer >= ${min}`);
const port = integer(1, 65535, 'a port number (integer 1..65535)');

const boolean: Validator<boolean> = (value, key) => {
  if (typeof value !== 'boolean') fail(key, 'true or false', value);
  return value;
};

function oneOf<T extends string>(allowed: readonly T[]): Validator<T> {
  return (value, key) => {
    if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
      fail(key, `one of ${allowed.join(', ')}`, value);
    }
    return value as T;
  };
}

const hostname: Validator<string> = (value, key) => {
  if (typeof value !== 'string' || value === '' || /\s/.test(value)) {
    fail(key, 'a host name or IP address', value);
  }
  return value;
};

/** A readable regular file; returns the path unchanged. */
const readableFile: Validator<string | undefined> = (value, key) => {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') fail(key, 'a file path', value);
  try {
    if (!statSync(value).isFile()) {
      throw new ConfigError(key, `config: ${key}: "${value}" is not a regular file`);
    }
    accessSync(value, fsConstants.R_OK);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code;
    throw new ConfigError(key, `config: ${key}: cannot read "${value}" (${why})`);
  }
  return value;
};

const optionalString: Validator<string | undefined> = (value, key) => {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') fail(key, 'a string', value);
  return value;
};

const DOMAIN_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const domains: Validator<string[]> = (value, key) => {
  if (!Array.isArray(value)) fail(key, 'a list of domain names', value);
  if (value.length === 0) {
    throw new ConfigError(key, 'config: domains is required (the XMPP domain the proxy serves)');
  }
  const seen = new Set<string>();
  return value.map((d, i) => {
    const k = `${key}[${i}]`;
    if (typeof d !== 'string') fail(k, 'a domain name', d);
    if (d !== d.toLowerCase()) fail(k, 'a lowercase domain name', d);
    const labels = d.split('.');
    if (d.length > 253 || !labels.every((l) => DOMAIN_LABEL.test(l))) {
      fail(k, 'a valid domain name (ASCII letters, digits, "-"; IDNs in xn-- form)', d);
    }
    if (seen.has(d)) fail(k, 'listed once only', d);
    seen.add(d);
    return d;
  });
};

const listenAddress = (value: unknown, key: string): ListenAddress | null => {
  if (typeof value === 'string') return parseListen(value, key);
  if (!isPlainObject(value)) fail(key, 'a "host:port" string or a {host, port} mapping', value);
  for (const k of Object.keys(value)) {
    if (k !== 'host' && k !== 'port') {
      throw new ConfigError(
        `${key}.${k}`,
        `config: unknown key "${key}.${k}" (known keys: host, port)`,
      );
    }
  }
  return { host: hostname(value.host, `${key}.host`), port: port(value.port, `${key}.port`) };
};

/** A list of listeners: an array of specs or mappings, or one spec string ("none" → []). */
const listenList: Validator<ListenAddress[]> = (value, key) => {
  const items = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(items)) fail(key, 'a list of "host:port" listen addresses', value);
  const out: ListenAddress[] = [];
  items.forEach((item, i) => {
    const k = typeof value === 'string' ? key : `${key}[${i}]`;
    const addr = listenAddress(item, k);
    if (addr === null) {
      if (items.length > 1) {
        throw new ConfigError(k, `config: ${k}: "none" cannot be combined with addresses`);
      }
    } else out.push(addr);
  });
  return out;
};

// ---------------------------------------------------------------------------------------------
// The schema: every known key with its validator. Its type is derived from Config, so adding a
// key to Config without adding it here is a type error.

type Schema<T> = {
  [K in keyof T]-?: NonNullable<T[K]> extends readonly unknown[]
    ? Validator<T[K]>
    : NonNullable<T[K]> extends object
      ? Schema<NonNullable<T[K]>>
      : Validator<T[K]>;
};

const SCHEMA: Schema<Config> = {
  domains,
  upstream: {
    host: hostname,
    port,
    tls: oneOf(UPSTREAM_TLS_MODES),
    caFile: readableFile,
    acceptSelfSigned: boolean,
    connectTimeoutSeconds: seconds(1),
    keepaliveSeconds: seconds(1),
    pingTimeoutSeconds: seconds(1),
    reconnectDelayMs: atLeast(1),
    reconnectMaxDelaySeconds: seconds(1),
    reconnectGiveUpSeconds: seconds(1),
    maxConcurrentLogins: atLeast(1),
    streamManagement: boolean,
    credentialCacheSeconds: seconds(0),
    duplicateWindow: nonNegative,
    maxCustodyBytes: atLeast(1024),
  },
  listen: {
    starttls: listenList,
    directTls: listenList,
  },
  tls: {
    certFile: readableFile,
    keyFile: readableFile,
    pkcs12File: readableFile,
    pkcs12Password: optionalString,
  },
  sm: {
    hibernationSeconds: seconds(0),
    maxUnackedStanzas: nonNegative,
    maxQueueSize: atLeast(1),
    maxAckDelaySeconds: seconds(0),
    maxOldSessions: nonNegative,
    maxHeldMessages: nonNegative,
    heldMessagesTtlSeconds: seconds(1),
    maxHeldBytes: nonNegative,
    maxQueueBytes: atLeast(1024),
  },
  limits: {
    maxStanzaBytes: atLeast(1024),
    maxDepth: atLeast(4),
    c2sTimeoutSeconds: seconds(1),
    maxUnauthenticated: atLeast(1),
    maxUnauthenticatedPerIp: atLeast(1),
    tcpKeepaliveSeconds: seconds(0),
    readTimeoutSeconds: seconds(1),
    maxSendBufferBytes: atLeast(1024),
    sendTimeoutSeconds: seconds(1),
    maxAuthFailures: atLeast(1),
    authFailurePeriodSeconds: seconds(0),
  },
  log: {
    level: oneOf(LOG_LEVELS),
  },
};

/** Config keys holding file paths (relative ones in a config file resolve against its folder). */
export const PATH_KEYS: readonly string[] = [
  'upstream.caFile',
  'tls.certFile',
  'tls.keyFile',
  'tls.pkcs12File',
];

type SchemaNode = Validator<unknown> | { [k: string]: SchemaNode };

function isBranch(node: SchemaNode): node is { [k: string]: SchemaNode } {
  return typeof node !== 'function';
}

/**
 * Throws ConfigError for the first key of `layer` that the schema does not know (or for a
 * section that is not a mapping). `where` is appended to messages (e.g. ` in /etc/x.yaml`).
 */
function checkKeys(layer: unknown, node: SchemaNode, prefix: string, where: string): void {
  if (!isBranch(node)) return;
  if (!isPlainObject(layer)) {
    if (prefix === '') {
      throw new ConfigError('config', `config: the configuration${where} must be a mapping (got ${show(layer)})`);
    }
    if (layer === null || layer === undefined) return;
    fail(prefix, `a mapping${where ? ` (${where.trim()})` : ''}`, layer);
  }
  for (const [k, v] of Object.entries(layer)) {
    const child = Object.hasOwn(node, k) ? node[k] : undefined;
    const key = join(prefix, k);
    if (child === undefined) {
      const known = Object.keys(node).join(', ');
      throw new ConfigError(
        key,
        `config: unknown key "${key}"${where} (known keys${prefix ? ` in ${prefix}` : ''}: ${known})`,
      );
    }
    checkKeys(v, child, key, where);
  }
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Reads a config file: JSON for `.json`, YAML for `.yaml`/`.yml` (decided by the extension).
 * The file holds a partial {@link Config} (same key names, e.g. `sm: { hibernationSeconds: 300 }`);
 * listen addresses may be `"host:port"` strings or `{host, port}` mappings.
 * Relative file paths inside it (`upstream.caFile`, `tls.*File`) are resolved against the
 * file's folder. A `null` value (YAML `key:` with nothing after it) resets that key to its default.
 *
 * Returns the parsed layer for {@link buildConfig}; values are not validated here, keys are.
 * @throws ConfigError (key `"config"`) if the file cannot be read or parsed or has another
 *   extension; (key = the dotted path) for an unknown key, e.g. `config: unknown key
 *   "sm.hibernationSecs" in /etc/p.yaml (known keys in sm: ...)`.
 */
export function readConfigFile(path: string): unknown {
  const ext = extname(path).toLowerCase();
  if (ext !== '.json' && ext !== '.yaml' && ext !== '.yml') {
    throw new ConfigError(
      'config',
      `config: config file "${path}" must end in .json, .yaml or .yml`,
    );
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new ConfigError('config', `config: cannot read config file "${path}" (${code})`);
  }
  let data: unknown;
  try {
    data = ext === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ConfigError('config', `config: cannot parse config file "${path}": ${msg}`);
  }
  // An empty YAML file is an empty layer.
  if (data === null || data === undefined) data = {};
  checkKeys(data, SCHEMA as unknown as SchemaNode, '', ` in ${path}`);
  const layer = data as Record<string, Record<string, unknown>>;
  const base = dirname(resolve(path));
  for (const key of PATH_KEYS) {
    const [section, name] = key.split('.') as [string, string];
    const sec = layer[section];
    if (isPlainObject(sec) && typeof sec[name] === 'string' && sec[name] !== '') {
      sec[name] = resolve(base, sec[name]);
    }
  }
  return layer;
}

/**
 * The environment's layer: `XMPP_SM_PROXY_PKCS12_PASSWORD` → `tls.pkcs12Password` (so the
 * password need not appear on the command line or in a file). Unset variables add nothing.
 */
export function envLayer(env: NodeJS.ProcessEnv = process.env): unknown {
  const pw = env[PKCS12_PASSWORD_ENV];
  return pw === undefined ? {} : { tls: { pkcs12Password: pw } };
}

/**
 * Merges `layers` over {@link DEFAULTS} and validates the result.
 *
 * Merge rules: later layers win; mappings merge key by key; arrays (and every other value)
 * replace; `undefined` means "not set here"; `null` resets the key to its default.
 * Validation: every key's type and range (ports 1..65535; `...Seconds` integers up to
 * {@link MAX_SECONDS}; `sm.maxQueueSize` >= 1; `limits.maxStanzaBytes` >= 1024;
 * `limits.maxDepth` >= 4; `domains` a non-empty list of lowercase domain names; listed files
 * must be readable), then: `tls.certFile` and `tls.keyFile` both or neither; `tls.pkcs12File`
 * excludes them; at least one listener; no address listed twice.
 *
 * Listen entries given as strings are parsed with {@link parseListen}.
 * Does not read the environment (pass {@link envLayer} as a layer) and does not modify DEFAULTS.
 * @returns a new, deeply frozen Config.
 * @throws ConfigError naming the first bad key.
 */
export function buildConfig(...layers: unknown[]): Config {
  const schema = SCHEMA as unknown as SchemaNode;
  let merged: unknown = DEFAULTS;
  for (const layer of layers) {
    if (layer === undefined || layer === null) continue;
    checkKeys(layer, schema, '', '');
    merged = merge(merged, layer, schema, '');
  }
  const config = validate(merged, schema, '') as Config;

  const { tls, listen } = config;
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    const missing = tls.certFile === undefined ? 'tls.certFile' : 'tls.keyFile';
    const given = tls.certFile === undefined ? 'tls.keyFile' : 'tls.certFile';
    throw new ConfigError(missing, `config: ${missing} is required when ${given} is set (both or neither)`);
  }
  if (tls.pkcs12File !== undefined && tls.certFile !== undefined) {
    throw new ConfigError(
      'tls.pkcs12File',
      'config: tls.pkcs12File and tls.certFile/tls.keyFile are exclusive (give a PKCS#12 keystore or PEM files, not both)',
    );
  }
  if (listen.starttls.length === 0 && listen.directTls.length === 0) {
    throw new ConfigError(
      'listen',
      'config: listen: no listeners (listen.starttls and listen.directTls are both empty)',
    );
  }
  const seen = new Map<string, string>();
  for (const name of ['starttls', 'directTls'] as const) {
    listen[name].forEach((a, i) => {
      const id = `${a.host}:${a.port}`;
      const key = `listen.${name}[${i}]`;
      const first = seen.get(id);
      if (first !== undefined) {
        throw new ConfigError(key, `config: ${key}: ${id} is already used by ${first}`);
      }
      seen.set(id, key);
    });
  }
  return deepFreeze(config);
}

function merge(base: unknown, layer: unknown, node: SchemaNode, prefix: string): unknown {
  if (!isBranch(node) || !isPlainObject(layer)) return layer;
  const out: Record<string, unknown> = isPlainObject(base) ? { ...base } : {};
  for (const [k, v] of Object.entries(layer)) {
    if (v === undefined) continue;
    const key = join(prefix, k);
    const child = node[k]!; // checkKeys ran first
    if (v === null) {
      // null resets to the default (or unsets an optional key).
      const def = defaultAt(key);
      if (def === undefined) delete out[k];
      else out[k] = structuredClone(def);
      continue;
    }
    out[k] = merge(out[k], v, child, key);
  }
  return out;
}

function defaultAt(key: string): unknown {
  let v: unknown = DEFAULTS;
  for (const part of key.split('.')) {
    v = isPlainObject(v) ? v[part] : undefined;
  }
  return v;
}

function validate(value: unknown, node: SchemaNode, prefix: string): unknown {
  if (!isBranch(node)) return node(value, prefix);
  if (!isPlainObject(value)) {
    if (value === undefined) value = {};
    else fail(prefix, 'a mapping', value);
  }
  const src = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [k, child] of Object.entries(node)) {
    const v = validate(src[k], child, join(prefix, k));
    if (v !== undefined) out[k] = v;
  }
  return out;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * Parses one listen address:
 * `"host:port"`, `"[::1]:5222"` (IPv6 in brackets), `":5222"` or `"5222"` (host `0.0.0.0`).
 * `""` and `"none"` mean "no listener" and return `null`.
 * `key` is the config key the spec belongs to (`listen.starttls`), used in error messages.
 * @throws ConfigError (with `key`) for anything else, e.g. a missing/out-of-range port or an
 *   IPv6 address without brackets.
 */
export function parseListen(spec: string, key: string): ListenAddress | null {
  const s = spec.trim();
  if (s === '' || s.toLowerCase() === 'none') return null;
  const bad = (why: string): never => {
    throw new ConfigError(
      key,
      `config: ${key}: invalid listen address ${show(spec)}: ${why} (expected host:port, [ipv6]:port, :port or port)`,
    );
  };
  let host: string;
  let portText: string;
  if (/^\d+$/.test(s)) {
    host = '0.0.0.0';
    portText = s;
  } else if (s.startsWith('[')) {
    const m = /^\[([^\]]*)\]:(.*)$/.exec(s);
    if (!m) bad('expected [ipv6]:port');
    host = m![1]!;
    portText = m![2]!;
    if (!isIPv6(host)) bad(`"${host}" is not an IPv6 address`);
  } else {
    const i = s.lastIndexOf(':');
    if (i < 0) bad('no port');
    host = s.slice(0, i);
    portText = s.slice(i + 1);
    if (host.includes(':')) bad('IPv6 addresses need brackets, e.g. [::1]:5222');
    if (host === '') host = '0.0.0.0';
    else if (!/^[A-Za-z0-9.-]+$/.test(host)) bad(`"${host}" is not a host name or IP address`);
  }
  if (!/^\d+$/.test(portText)) bad(`port "${portText}" is not a number`);
  const n = Number(portText);
  if (n < 1 || n > 65535) bad(`port ${n} is out of range 1..65535`);
  return { host, port: n };
}
