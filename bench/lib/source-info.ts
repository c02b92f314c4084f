/**
 * Which proxy code a benchmark ran: the checked-out commit (read from .git, no git command) and
 * a hash of src/ as the proxy child loads it (the working tree, committed or not).
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The commit HEAD points at, or 'unknown' outside a git checkout. */
export function gitCommit(): string {
  try {
    const head = readFileSync(path.join(ROOT, '.git', 'HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return head;
    const ref = head.slice(5);
    const loose = path.join(ROOT, '.git', ref);
    if (existsSync(loose)) return readFileSync(loose, 'utf8').trim();
    const packed = readFileSync(path.join(ROOT, '.git', 'packed-refs'), 'utf8');
    return packed.split('\n').find((l) => l.endsWith(` ${ref}`))?.split(' ')[0] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** First 16 hex digits of a SHA-256 over src/ (paths and contents, in sorted order). */
export function srcSha256(): string {
  const hash = createHash('sha256');
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) hash.update(path.relative(ROOT, p)).update('\0').update(readFileSync(p)).update('\0');
    }
  };
  walk(path.join(ROOT, 'src'));
  return hash.digest('hex').slice(0, 16);
}
