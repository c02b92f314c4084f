#!/usr/bin/env node
// The `xmpp-sm-proxy` command: runs the compiled CLI (dist/cli.js, built by `npm run build` and
// shipped in the npm package); no TypeScript at run time. Exit codes: see src/cli.ts.
// From a checkout without a build, `npm start -- <flags>` runs the sources through tsx.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write(
    'xmpp-sm-proxy: dist/cli.js is missing: run `npm run build` first (or `npm start -- <flags>` to run the sources)\n',
  );
  process.exit(1);
}
const { main } = await import(cli.href);
await main(process.argv);
