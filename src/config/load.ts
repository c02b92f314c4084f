/**
 * Loading and validating the configuration (design.md §3: `cli.ts`, `config/`).
 *
 * Sources, later wins: {@link DEFAULTS} < config file ({@link readConfigFile}) < environment
 * ({@link envLayer}) < CLI flags (`cli.ts`). Each source is a *layer*: a partial object in the
 * shape of {@link Config}, optionally wrapped in a {@link ConfigLayer} that says where it came
 * from. {@link buildConfig} merges the layers and validates the result with the zod
 * {@link ConfigSchema} into one frozen `Config`. Every problem is reported as a
 * {@link ConfigError} that names the key and, when known, the layer that set it.
 */
import { readFileSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigSchema, DEFAULTS, listenSpec, type Config, type ListenAddress } from './config.ts';

export { LOG_LEVELS, MAX_SECONDS } from './config.ts';

/**
 * A configuration problem. `key` is the dotted config path of the offending value
 * (`"sm.hibernationSeconds"`, `"listen.starttls[1]"`, `"domains"`; `"config"` for the file
 * itself), and the message always names it, plus the layer the value came from when known, e.g.
 * `config: sm.hibernationSeconds must be a non-negative integer (seconds, at most 2147483) (got "abc") in /etc/x.yaml`.
 */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly key: string;
  constructor(key: string, message: string) {
    super(message);
    this.key = key;
  }
}

/**
 * A layer for {@link buildConfig} with its origin. `source` is appended to the messages of the
 * errors about keys this layer set: a text (`"in /etc/x.yaml"`, `"(from the environment)"`) or a
 * function of the dotted key without list indices (`"listen.starttls"` → `"(from --listen)"`).
 */
export class ConfigLayer {
  constructor(
    readonly values: unknown,
    readonly source: string | ((key: string) => string),
  ) {}
}

/** Name of the environment variable that may supply `tls.pkcs12Password`. */
export const PKCS12_PASSWORD_ENV = 'XMPP_SM_PROXY_PKCS12_PASSWORD';

// ---------------------------------------------------------------------------------------------
// Walking the schema (for the merge, unknown-key messages and the key list)

/** The schema under wrappers that do not change a value's shape (defaults, optional, pipes). */
function unwrap(schema: z.core.$ZodType): z.core.$ZodType {
  for (;;) {
    if (schema instanceof z.ZodDefault || schema instanceof z.ZodPrefault || schema instanceof z.ZodOptional || schema instanceof z.ZodNullable) {
      schema = schema.def.innerType;
    } else if (schema instanceof z.ZodPipe) {
      // preprocess: transform → schema; .transform: schema → transform.
      schema = schema.def.in instanceof z.ZodTransform ? schema.def.out : schema.def.in;
    } else return schema;
  }
}

/** The schema at `path` (string keys and list indices), or undefined past the known keys. */
function schemaAt(path: readonly PropertyKey[]): z.core.$ZodType | undefined {
  let node: z.core.$ZodType | undefined = ConfigSchema;
  for (const part of path) {
    const s: z.core.$ZodType | undefined = node === undefined ? undefined : unwrap(node);
    if (s instanceof z.ZodObject && typeof part === 'string') node = Object.hasOwn(s.shape, part) ? s.shape[part] : undefined;
    else if (s instanceof z.ZodArray && typeof part === 'number') node = s.element;
    else return undefined;
  }
  return node;
}

function shapeOf(schema: z.core.$ZodType | undefined): Record<string, z.core.$ZodType> | undefined {
  const s = schema === undefined ? undefined : unwrap(schema);
  return s instanceof z.ZodObject ? s.shape : undefined;
}

/** One key of the schema, for docs and tests. */
export interface ConfigKey {
  /** Dotted path, e.g. `"sm.hibernationSeconds"`. */
  key: string;
  /** The key's documentation (with its unit). */
  description: string | undefined;
  /** Its default (undefined for optional keys and `domains`). */
  default: unknown;
  /** A file or folder path, resolved against the config file's folder when relative. */
  path: boolean;
}

/** Every key of the configuration (sections expanded), in declaration order. */
export function configKeys(): ConfigKey[] {
  const out: ConfigKey[] = [];
  const walk = (shape: Record<string, z.core.$ZodType>, prefix: string): void => {
    for (const [name, schema] of Object.entries(shape)) {
      const key = prefix ? `${prefix}.${name}` : name;
      const sub = shapeOf(schema);
      // A section (its fields are the keys); a {host, port} value is a leaf.
      if (sub !== undefined && prefix === '') {
        walk(sub, key);
        continue;
      }
      const meta = z.globalRegistry.get(schema);
      const parts = key.split('.');
      const def = parts.reduce<unknown>((v, p) => (v as Record<string, unknown> | undefined)?.[p], DEFAULTS);
      out.push({ key, description: meta?.description, default: key === 'domains' ? undefined : def, path: meta?.path === true });
    }
  };
  walk(ConfigSchema.shape, '');
  return out;
}

/** Config keys holding file or folder paths (relative ones in a config file resolve against its folder). */
export const PATH_KEYS: readonly string[] = configKeys()
  .filter((k) => k.path)
  .map((k) => k.key);

// ---------------------------------------------------------------------------------------------
// Merging

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

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

type Source = ConfigLayer['source'];

/**
 * Merges `layer` into `into` (a fresh object): sections (mappings in the schema) key by key, every
 * other value replaces; `undefined` is skipped; `null` removes the key, so the schema's default
 * applies. Records in `origins` which source set each key (dotted, no list indices). Unknown keys
 * are copied as they are: the schema rejects them, naming this layer.
 */
function mergeInto(
  into: Record<string, unknown>,
  layer: Record<string, unknown>,
  prefix: string,
  origins: Map<string, Source | undefined>,
  source: Source | undefined,
): void {
  const shape = shapeOf(schemaAt(prefix === '' ? [] : prefix.split('.')));
  for (const [k, v] of Object.entries(layer)) {
    if (v === undefined) continue;
    const key = prefix ? `${prefix}.${k}` : k;
    const isSection = prefix === '' && shape !== undefined && Object.hasOwn(shape, k) && shapeOf(shape[k]) !== undefined;
    if (isSection && isPlainObject(v)) {
      const sec = isPlainObject(into[k]) ? { ...into[k] } : {};
      origins.delete(key); // an earlier non-mapping value of the section is gone
      into[k] = sec;
      mergeInto(sec, v, key, origins, source);
      continue;
    }
    // Replaced or reset: what earlier layers set here (and under it) is gone.
    for (const o of [...origins.keys()]) if (o === key || o.startsWith(`${key}.`)) origins.delete(o);
    if (v === null) delete into[k];
    else {
      into[k] = v;
      origins.set(key, source);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Errors

function originText(source: Source | undefined, key: string): string {
  if (source === undefined) return '';
  return ` ${typeof source === 'string' ? source : source(key)}`;
}

/** The layer that set `path` (its deepest recorded prefix), as message text ("" if none did). */
function originOf(path: readonly PropertyKey[], origins: Map<string, Source | undefined>): string {
  let found = '';
  let key = '';
  for (const part of path) {
    if (typeof part !== 'string') break;
    key = key ? `${key}.${part}` : part;
    if (origins.has(key)) found = originText(origins.get(key), key);
  }
  return found;
}

/**
 * The dotted key and raw value at `path` in the merged layers. A list given as one string
 * ("none", "host:port") is reported under the list's key, not as its item 0.
 */
function locate(path: readonly PropertyKey[], merged: unknown): { key: string; value: unknown } {
  let key = '';
  let value: unknown = merged;
  for (const part of path) {
    if (typeof part === 'number') {
      if (!Array.isArray(value)) continue;
      key += `[${part}]`;
      value = value[part];
    } else {
      key = key ? `${key}.${String(part)}` : String(part);
      value = isPlainObject(value) ? value[String(part)] : undefined;
    }
  }
  return { key, value };
}

function issueToError(issue: z.core.$ZodIssue, merged: unknown, origins: Map<string, Source | undefined>, where?: string): ConfigError {
  const { key, value } = locate(issue.path, merged);
  if (issue.code === 'unrecognized_keys') {
    const name = issue.keys[0]!;
    const full = key ? `${key}.${name}` : name;
    const known = Object.keys(shapeOf(schemaAt(issue.path)) ?? {}).join(', ');
    const from = where ?? originOf([...issue.path, name], origins);
    return new ConfigError(full, `config: unknown key "${full}"${from} (known keys${key ? ` in ${key}` : ''}: ${known})`);
  }
  const blame = issue.code === 'custom' && typeof issue.params?.blame === 'string' ? issue.params.blame.split('.') : issue.path;
  const from = where ?? originOf(blame, origins);
  const m = issue.message;
  const text = m.startsWith('config: ') ? m : m.startsWith('must be ') ? `config: ${key} ${m} (got ${show(value)})` : `config: ${key}: ${m}`;
  return new ConfigError(key || 'config', `${text}${from}`);
}

/** The issue reported: an unknown key first (a typo explains the other issues), else the first. */
function firstIssue(issues: readonly z.core.$ZodIssue[]): z.core.$ZodIssue {
  return issues.find((i) => i.code === 'unrecognized_keys') ?? issues[0]!;
}

// ---------------------------------------------------------------------------------------------
// Public API

/**
 * Reads a config file: JSON for `.json`, YAML for `.yaml`/`.yml` (decided by the extension).
 * The file holds a partial {@link Config} (same key names, e.g. `sm: { hibernationSeconds: 300 }`);
 * listen addresses may be `"host:port"` strings or `{host, port}` mappings.
 * Relative paths inside it ({@link PATH_KEYS}: `upstream.caFile`, `tls.*File`,
 * `storage.dataDir`) are resolved against the file's folder. A `null` value (YAML `key:` with
 * nothing after it) resets that key to its default.
 *
 * Returns the parsed layer for {@link buildConfig} (wrap it in a {@link ConfigLayer} so value
 * errors name the file, as {@link configFileLayer} does); values are not validated here, keys are.
 * @throws ConfigError (key `"config"`) if the file cannot be read or parsed, is not a mapping or
 *   has another extension; (key = the dotted path) for an unknown key, e.g. `config: unknown key
 *   "sm.hibernationSecs" in /etc/p.yaml (known keys in sm: ...)`.
 */
export function readConfigFile(path: string): Record<string, unknown> {
  const ext = extname(path).toLowerCase();
  if (ext !== '.json' && ext !== '.yaml' && ext !== '.yml') {
    throw new ConfigError('config', `config: config file "${path}" must end in .json, .yaml or .yml`);
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
  if (!isPlainObject(data)) {
    throw new ConfigError('config', `config: the configuration in ${path} must be a mapping (got ${show(data)})`);
  }
  // Unknown keys now, naming the file; value errors wait for buildConfig (a later layer may fix them).
  const merged: Record<string, unknown> = {};
  mergeInto(merged, data, '', new Map(), undefined);
  const parsed = ConfigSchema.safeParse(merged);
  const unknown = parsed.success ? undefined : parsed.error.issues.find((i) => i.code === 'unrecognized_keys');
  if (unknown !== undefined) throw issueToError(unknown, merged, new Map(), ` in ${path}`);

  const base = dirname(resolve(path));
  for (const key of PATH_KEYS) {
    const [section, name] = key.split('.') as [string, string];
    const sec = data[section];
    if (isPlainObject(sec) && typeof sec[name] === 'string' && sec[name] !== '') {
      sec[name] = resolve(base, sec[name]);
    }
  }
  return data;
}

/** {@link readConfigFile} as a layer whose errors end in `in <path>`. */
export function configFileLayer(path: string): ConfigLayer {
  return new ConfigLayer(readConfigFile(path), `in ${path}`);
}

/**
 * The environment's layer: `XMPP_SM_PROXY_PKCS12_PASSWORD` → `tls.pkcs12Password` (so the
 * password need not appear on the command line or in a file). Unset variables add nothing.
 * Plain values; {@link envConfigLayer} is the same as a named layer.
 */
export function envLayer(env: NodeJS.ProcessEnv = process.env): Record<string, unknown> {
  const pw = env[PKCS12_PASSWORD_ENV];
  return pw === undefined ? {} : { tls: { pkcs12Password: pw } };
}

/** {@link envLayer} as a layer whose errors end in `(from the environment: VARIABLE)`. */
export function envConfigLayer(env: NodeJS.ProcessEnv = process.env): ConfigLayer {
  return new ConfigLayer(envLayer(env), `(from the environment: ${PKCS12_PASSWORD_ENV})`);
}

/**
 * Merges `layers` over {@link DEFAULTS} and validates the result with {@link ConfigSchema}.
 * A layer is a plain partial Config or a {@link ConfigLayer} (values plus where they came from);
 * undefined and null layers are skipped.
 *
 * Merge rules: later layers win; sections merge key by key; lists (and every other value)
 * replace; `undefined` means "not set here"; `null` resets the key (or section) to its default.
 * Validation: every key's type and range as declared in the schema (e.g. ports 1..65535;
 * `...Seconds` integers up to {@link MAX_SECONDS}; `domains` a non-empty list of lowercase
 * domain names; listed files must be readable files), unknown keys rejected, then: `tls.certFile`
 * and `tls.keyFile` both or neither; `tls.pkcs12File` excludes them; at least one client
 * listener; no address listed twice (metrics included); `shutdown.closeGraceMs` under
 * `shutdown.timeoutSeconds`.
 *
 * Listen entries given as strings are parsed as by {@link parseListen}.
 * Does not read the environment (pass {@link envLayer} as a layer) and does not modify DEFAULTS.
 * @returns a new, deeply frozen Config.
 * @throws ConfigError naming the first bad key (an unknown key before any other problem) and,
 *   for a ConfigLayer's key, its source: `config: sm.maxQueueSize must be an integer >= 1 (got 0) in /etc/p.yaml`.
 */
export function buildConfig(...layers: unknown[]): Config {
  const merged: Record<string, unknown> = {};
  const origins = new Map<string, Source | undefined>();
  for (const layer of layers) {
    const [values, source] = layer instanceof ConfigLayer ? [layer.values, layer.source] : [layer, undefined];
    if (values === undefined || values === null) continue;
    if (!isPlainObject(values)) {
      throw new ConfigError('config', `config: the configuration must be a mapping (got ${show(values)})${originText(source, '')}`);
    }
    mergeInto(merged, values, '', origins, source);
  }
  const result = ConfigSchema.safeParse(merged);
  if (!result.success) throw issueToError(firstIssue(result.error.issues), merged, origins);
  return deepFreeze(result.data);
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
  const parsed = listenSpec(spec);
  if ('error' in parsed) throw new ConfigError(key, `config: ${key}: ${parsed.error}`);
  return parsed.address;
}
