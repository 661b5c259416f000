import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import protobuf from 'protobufjs';

/**
 * The parts of OTLP's ExportTraceServiceRequest (opentelemetry/proto/collector/trace/v1) the tests
 * look at, with the official field numbers; protobuf skips the fields left out.
 */
const PROTO = `
syntax = "proto3";
package otlp;
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
message Resource { repeated KeyValue attributes = 1; }
message ScopeSpans { Scope scope = 1; repeated Span spans = 2; }
message Scope { string name = 1; }
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  string name = 5;
  int32 kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9;
  repeated Event events = 11;
  Status status = 15;
}
message Event { string name = 2; repeated KeyValue attributes = 3; }
message Status { string message = 2; int32 code = 3; }
message KeyValue { string key = 1; AnyValue value = 2; }
message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
  }
}
`;

const Request = protobuf.parse(PROTO).root.lookupType('otlp.ExportTraceServiceRequest');

/** Span kinds as OTLP numbers them. */
export const SPAN_KIND = { SERVER: 2, CLIENT: 3 } as const;
/** Status codes as OTLP numbers them. */
export const STATUS_CODE = { UNSET: 0, OK: 1, ERROR: 2 } as const;

export type AttributeValue = string | number | boolean;

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  traceState: string;
  name: string;
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: Record<string, AttributeValue>;
  status: { code: number; message: string };
  /** Attributes of the resource the span came with. */
  resource: Record<string, AttributeValue>;
}

export interface OtlpReceiver {
  /** The endpoint to configure (tracing.endpoint). */
  url: string;
  /** Every span received, in arrival order. */
  spans: ReceivedSpan[];
  /** Export requests received (also the ones answered with an error). */
  requests: { contentType: string | undefined; headers: Record<string, string | string[] | undefined> }[];
  /** Resolves once at least `n` spans have arrived; rejects after `timeoutMs`. */
  waitForSpans(n: number, timeoutMs?: number): Promise<ReceivedSpan[]>;
  close(): Promise<void>;
}

interface Decoded {
  resourceSpans?: {
    resource?: { attributes?: DecodedKeyValue[] };
    scopeSpans?: {
      spans?: {
        traceId: Uint8Array;
        spanId: Uint8Array;
        parentSpanId: Uint8Array;
        traceState: string;
        name: string;
        kind: number;
        startTimeUnixNano: { toString(): string };
        endTimeUnixNano: { toString(): string };
        attributes?: DecodedKeyValue[];
        status?: { code?: number; message?: string };
      }[];
    }[];
  }[];
}

interface DecodedKeyValue {
  key: string;
  value?: { stringValue?: string; boolValue?: boolean; intValue?: { toString(): string } | number; doubleValue?: number };
}

function attributes(list: DecodedKeyValue[] | undefined): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const kv of list ?? []) {
    const v = kv.value ?? {};
    if (v.stringValue !== undefined) out[kv.key] = v.stringValue;
    else if (v.boolValue !== undefined) out[kv.key] = v.boolValue;
    else if (v.intValue !== undefined) out[kv.key] = Number(v.intValue.toString());
    else if (v.doubleValue !== undefined) out[kv.key] = v.doubleValue;
  }
  return out;
}

const hex = (b: Uint8Array | undefined): string => Buffer.from(b ?? []).toString('hex');

/** An answer the receiver gives instead of taking the spans. */
export interface RefusalAnswer {
  status: number;
  headers?: Record<string, string>;
}

/**
 * A real OTLP/HTTP trace receiver on 127.0.0.1:0: it takes POST /v1/traces with a protobuf body,
 * decodes it and keeps the spans. `refusals` answers the first exports with these instead, in
 * order, and takes the ones after (a collector refusing spans, or one that recovers).
 */
export async function startOtlpReceiver(opts: { refusals?: RefusalAnswer[] } = {}): Promise<OtlpReceiver> {
  const refusals = [...(opts.refusals ?? [])];
  const spans: ReceivedSpan[] = [];
  const requests: OtlpReceiver['requests'] = [];
  const waiters: (() => void)[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({ contentType: req.headers['content-type'], headers: req.headers });
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      const refusal = refusals.shift();
      if (refusal !== undefined) {
        res.writeHead(refusal.status, refusal.headers).end('refused');
        return;
      }
      const msg = Request.toObject(Request.decode(Buffer.concat(chunks)), { longs: String, defaults: true }) as Decoded;
      for (const rs of msg.resourceSpans ?? []) {
        const resource = attributes(rs.resource?.attributes);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              traceId: hex(s.traceId),
              spanId: hex(s.spanId),
              parentSpanId: hex(s.parentSpanId),
              traceState: s.traceState,
              name: s.name,
              kind: s.kind,
              startNs: BigInt(s.startTimeUnixNano.toString()),
              endNs: BigInt(s.endTimeUnixNano.toString()),
              attributes: attributes(s.attributes),
              status: { code: s.status?.code ?? 0, message: s.status?.message ?? '' },
              resource,
            });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1/traces`,
    spans,
    requests,
    waitForSpans(n, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`expected ${n} spans, got ${spans.length} in ${timeoutMs} ms`)), timeoutMs);
        const check = (): void => {
          if (spans.length >= n) {
            clearTimeout(timer);
            resolve(spans);
          } else waiters.push(check);
        };
        check();
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
