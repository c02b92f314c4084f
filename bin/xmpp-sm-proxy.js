#!/usr/bin/env node
// Launcher for the `xmpp-sm-proxy` command: registers tsx so Node can load the TypeScript
// sources, then runs the CLI (src/cli.ts). Exit codes: see src/cli.ts.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli.ts');
await main(process.argv);
