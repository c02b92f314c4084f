// Loose types for the xmpp.js packages the tests drive (they publish none for 0.14).
declare module '@xmpp/client' {
  import type { Element } from 'ltx';
  export const xml: (name: string, attrs?: Record<string, unknown> | null, ...children: unknown[]) => Element;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  export function client(options: Record<string, unknown>): any;
}
declare module '@xmpp/xml' {
  import type { EventEmitter } from 'node:events';
  export class Parser extends EventEmitter {
    write(data: string): void;
  }
}
