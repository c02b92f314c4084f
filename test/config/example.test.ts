// deploy/config.example.yaml is what operators copy: it must load, show the defaults it claims
// to show, and list every key of the schema (commented out or not), so it cannot drift.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { buildConfig, configFileLayer, configKeys, readConfigFile } from '../../src/config/load.ts';

const EXAMPLE = fileURLToPath(new URL('../../deploy/config.example.yaml', import.meta.url));

t.test('the example config validates and shows the defaults', async (t) => {
  const config = buildConfig(configFileLayer(EXAMPLE));
  t.same(config.domains, ['example.org']);
  // The header says "the values shown are the defaults unless marked"; only domains is marked.
  t.same(config, buildConfig({ domains: ['example.org'] }), 'every value shown is the default');
  t.same(buildConfig(readConfigFile(EXAMPLE)), config, 'the plain layer gives the same');
});

t.test('every key of the schema appears in the example config', async (t) => {
  const keys = configKeys();
  const names = new Set(keys.flatMap((k) => k.key.split('.')));
  // Uncomment the lines that set a key ("  # caFile: ...") and read the file as YAML again.
  const text = readFileSync(EXAMPLE, 'utf8').replace(/^(\s*)# ?([A-Za-z]\w*):(?=\s|$)/gm, (line, indent: string, name: string) =>
    names.has(name) ? `${indent}${name}:` : line,
  );
  const all = parseYaml(text) as Record<string, Record<string, unknown>>;
  for (const { key } of keys) {
    const [section, name] = key.split('.') as [string, string | undefined];
    const present = name === undefined ? Object.hasOwn(all, section) : all[section] !== null && typeof all[section] === 'object' && Object.hasOwn(all[section], name);
    t.ok(present, `${key} is in deploy/config.example.yaml`);
  }
});

t.test('every key is documented in the schema', async (t) => {
  for (const { key, description } of configKeys()) {
    t.ok(description !== undefined && description.length > 20, `${key} has a description`);
  }
});
