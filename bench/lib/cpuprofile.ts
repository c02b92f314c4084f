/**
 * Summarizes a V8 `.cpuprofile` (from `node --cpu-prof`): self time per function, inclusive time
 * per function, and self time per module (a package under node_modules, a file of src/, a node
 * internal, or a V8 pseudo-node such as "(garbage collector)").
 *
 * Also runnable: `npx tsx bench/lib/cpuprofile.ts FILE.cpuprofile [top]`.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileRow {
  key: string;
  ms: number;
  /** Share of the non-idle time, in percent. */
  pct: number;
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  idleMs: number;
  busyMs: number;
  self: ProfileRow[];
  inclusive: ProfileRow[];
  modules: ProfileRow[];
}

function shortUrl(url: string): string {
  if (!url) return '';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return url.slice(nm + '/node_modules/'.length);
  const src = url.indexOf('/src/');
  if (src >= 0) return url.slice(src + 1);
  const bench = url.indexOf('/bench/');
  if (bench >= 0) return url.slice(bench + 1);
  return url.replace(/^file:\/\//, '');
}

function moduleOf(cf: CallFrame): string {
  const url = cf.url;
  if (!url) return cf.functionName.startsWith('(') ? cf.functionName : '(native)';
  if (url.startsWith('node:')) return url;
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  return shortUrl(url);
}

function fnKey(cf: CallFrame): string {
  const name = cf.functionName || '(anonymous)';
  if (!cf.url) return name;
  // tsx-transpiled sources report positions in generated code (line 1): the name is what counts.
  if (cf.url.endsWith('.ts') && cf.lineNumber === 0) return `${name} ${shortUrl(cf.url)}`;
  return `${name} ${shortUrl(cf.url)}:${cf.lineNumber + 1}`;
}

function top(map: Map<string, number>, busyMs: number, n: number): ProfileRow[] {
  return [...map.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([key, us]) => ({ key, ms: us / 1000, pct: (us / 1000 / busyMs) * 100 }));
}

export function summarizeProfile(file: string, n = 25): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of p.nodes) byId.set(node.id, node);
  for (const node of p.nodes) for (const c of node.children ?? []) parent.set(c, node.id);

  const selfByNode = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; attribute it to sample i (V8/DevTools convention).
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    selfByNode.set(id, (selfByNode.get(id) ?? 0) + Math.max(0, p.timeDeltas[i] ?? 0));
  }

  const self = new Map<string, number>();
  const modules = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let idleUs = 0;
  let totalUs = 0;
  for (const [id, us] of selfByNode) {
    const cf = byId.get(id)!.callFrame;
    totalUs += us;
    if (cf.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const k = fnKey(cf);
    self.set(k, (self.get(k) ?? 0) + us);
    const m = moduleOf(cf);
    modules.set(m, (modules.get(m) ?? 0) + us);
    // Inclusive: each distinct function on the stack gets the sample once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)!.callFrame;
      if (f.functionName === '(root)') break;
      const key = fnKey(f);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
  }
  const busyMs = (totalUs - idleUs) / 1000;
  return {
    file,
    totalMs: totalUs / 1000,
    idleMs: idleUs / 1000,
    busyMs,
    self: top(self, busyMs, n),
    inclusive: top(inclusive, busyMs, n),
    modules: top(modules, busyMs, n),
  };
}

export function formatSummary(s: ProfileSummary): string {
  const lines: string[] = [];
  lines.push(`CPU profile ${s.file}`);
  lines.push(`  sampled ${s.totalMs.toFixed(0)} ms, idle ${s.idleMs.toFixed(0)} ms, busy ${s.busyMs.toFixed(0)} ms (percentages are of busy time)`);
  const table = (title: string, rows: ProfileRow[]): void => {
    lines.push(`  ${title}`);
    for (const r of rows) lines.push(`    ${r.pct.toFixed(1).padStart(5)}%  ${r.ms.toFixed(0).padStart(7)} ms  ${r.key}`);
  };
  table('self time by module:', s.modules);
  table('self time by function:', s.self);
  table('inclusive time by function:', s.inclusive);
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: tsx bench/lib/cpuprofile.ts FILE.cpuprofile [top]\n');
    process.exit(2);
  }
  process.stdout.write(formatSummary(summarizeProfile(file, Number(process.argv[3] ?? 25))) + '\n');
}
