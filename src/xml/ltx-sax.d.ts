// ltx's SAX parser module (ltx publishes types for the package root only).
declare module 'ltx/src/parsers/ltx.js' {
  import { EventEmitter } from 'node:events';
  export default class SaxLtx extends EventEmitter {
    write(data: string): void;
    end(data?: string): void;
  }
}
