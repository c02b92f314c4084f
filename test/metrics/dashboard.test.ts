// deploy/grafana-dashboard.json against the metrics the proxy really exports (a registry built by
// createMetrics, not a list kept by hand): every metric a panel queries exists, every one of the
// proxy's own metrics is on some panel, the datasource is the ${DS_PROMETHEUS} input, the layout
// fits Grafana's 24-column grid, and promtool parses every query.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMetrics, PREFIX } from '../../src/metrics/metrics.ts';
import { HeldMessages } from '../../src/session/held-messages.ts';
import type { StanzaHook } from '../../src/session/events.ts';

interface Target {
  expr?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}

const dashboard = JSON.parse(readFileSync(new URL('../../deploy/grafana-dashboard.json', import.meta.url), 'utf8'));
const panels: Panel[] = (dashboard.panels as Panel[]).flatMap((p) => [p, ...(p.panels ?? [])]);
const queryPanels = panels.filter((p) => p.type !== 'row');
const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((target) => target.expr ?? ''));
const variableQueries: string[] = dashboard.templating.list.map((v: { definition: string }) => v.definition);

// The metrics a real registry exports (sources are stand-ins: only the names matter here).
const manager = { events: new EventEmitter(), hooks: { fromClient: [] as StanzaHook[], fromUpstream: [] as StanzaHook[] }, counts: () => ({ attached: 0, hibernated: 0, reconnecting: 0 }) };
const metrics = createMetrics({ manager: manager as never, held: new HeldMessages(10), certificateNotAfter: () => new Date(), ready: () => true });
const exported = await metrics.registry.getMetricsAsJSON();
metrics.close();
const types = new Map(exported.map((m) => [m.name, String(m.type)]));

/** The exported metric a query's identifier refers to (a histogram's series name its metric). */
function metricOf(identifier: string): string {
  if (types.has(identifier)) return identifier;
  const base = identifier.replace(/_(bucket|sum|count)$/, '');
  return types.get(base) === 'histogram' ? base : identifier;
}
const usedIn = (queries: string[]) => new Set(queries.flatMap((q) => [...q.matchAll(/\b(?:xmpp_sm_proxy|process|nodejs)_\w+/g)].map((m) => metricOf(m[0]))));
const used = usedIn(exprs);

t.test('dashboard metadata: schema, datasource input, unique ids', async (t) => {
  t.ok(dashboard.schemaVersion >= 39, `schemaVersion ${dashboard.schemaVersion}`);
  t.match(dashboard.__inputs, [{ name: 'DS_PROMETHEUS', type: 'datasource', pluginId: 'prometheus' }]);
  for (const p of queryPanels) {
    t.same(p.datasource, { type: 'prometheus', uid: '${DS_PROMETHEUS}' }, `panel "${p.title}" uses the input`);
    t.ok((p.targets ?? []).length > 0 && p.targets!.every((target) => target.datasource?.uid === '${DS_PROMETHEUS}' && target.expr), `panel "${p.title}" has queries`);
  }
  const ids = panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
});

t.test('every metric a panel queries is exported by the proxy', async (t) => {
  t.ok(used.size > 20, `${used.size} metrics used`);
  for (const name of [...used, ...usedIn(variableQueries)]) t.ok(types.has(name), `${name} is exported`);
});

t.test("every one of the proxy's own metrics is on a panel", async (t) => {
  const own = exported.map((m) => m.name).filter((name) => name.startsWith(PREFIX));
  t.ok(own.length >= 25, `${own.length} own metrics`);
  t.same(own.filter((name) => !used.has(name)), [], 'none missing from the dashboard');
});

t.test('panels fit the 24-column grid without overlapping', async (t) => {
  const cells = new Map<string, string>();
  for (const p of panels) {
    const { x, y, w, h } = p.gridPos;
    t.ok(x >= 0 && w > 0 && x + w <= 24 && h > 0, `"${p.title}" within the grid`);
    for (let i = x; i < x + w; i++) {
      for (let j = y; j < y + h; j++) {
        const other = cells.get(`${i},${j}`);
        if (other) t.fail(`"${p.title}" overlaps "${other}"`);
        cells.set(`${i},${j}`, p.title);
      }
    }
  }
});

t.test('promtool parses every query', async (t) => {
  // Grafana's variables replaced by what it would put there; each query becomes a recording rule.
  const rules = exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr: expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*') }));
  const dir = mkdtempSync(join(tmpdir(), 'dashboard-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'rules.yml');
  // JSON is YAML: no YAML library needed for the rules file.
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
  const run = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
  if (run.error) throw new Error(`promtool not runnable (install the Debian package prometheus, see .ci/run): ${run.error.message}`);
  t.equal(run.status, 0, `promtool check rules: ${run.stdout}${run.stderr}`);
  t.match(run.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`));
});
