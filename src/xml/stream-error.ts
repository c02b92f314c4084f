import { escapeXML } from 'ltx';

/** RFC 6120 §4.9.3 stream error conditions used by the proxy. */
export type StreamErrorCondition =
  | 'bad-format'
  | 'bad-namespace-prefix'
  | 'conflict'
  | 'connection-timeout'
  | 'host-unknown'
  | 'internal-server-error'
  | 'invalid-from'
  | 'invalid-namespace'
  | 'invalid-xml'
  | 'not-authorized'
  | 'not-well-formed'
  | 'policy-violation'
  | 'remote-connection-failed'
  | 'reset'
  | 'resource-constraint'
  | 'restricted-xml'
  | 'see-other-host'
  | 'system-shutdown'
  | 'undefined-condition'
  | 'unsupported-encoding'
  | 'unsupported-stanza-type'
  | 'unsupported-version';

const NS_STREAMS = 'urn:ietf:params:xml:ns:xmpp-streams';

/**
 * A condition that ends a stream (RFC 6120 §4.9). `text` goes to the peer and the log: it never
 * carries secrets. `appCondition` is an application-specific child such as XEP-0198's
 * `<handled-count-too-high xmlns='urn:xmpp:sm:3'/>` (given as serialized XML).
 */
export class StreamError extends Error {
  constructor(
    readonly condition: StreamErrorCondition,
    readonly text?: string,
    readonly appCondition?: string,
  ) {
    super(text ? `${condition}: ${text}` : condition);
    this.name = 'StreamError';
  }

  /** The `<stream:error>` element, serialized. */
  toXML(): string {
    const text = this.text ? `<text xmlns='${NS_STREAMS}'>${escapeXML(this.text)}</text>` : '';
    return `<stream:error><${this.condition} xmlns='${NS_STREAMS}'/>${text}${this.appCondition ?? ''}</stream:error>`;
  }
}
