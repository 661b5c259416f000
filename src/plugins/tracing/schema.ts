import { Type } from '@sinclair/typebox';

const HEADER_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";

const Ratio = (description: string) => Type.Number({ description, minimum: 0, maximum: 1 });

export const TracingSchema = Type.Object(
  {
    enabled: Type.Boolean({ description: 'Export OpenTelemetry spans: a server span per request and a client span per upstream attempt.', default: false }),
    endpoint: Type.String({
      description: 'OTLP/HTTP (protobuf) endpoint spans are posted to, path included.',
      default: 'http://localhost:4318/v1/traces',
      pattern: '^https?://',
      expected: 'an http:// or https:// URL',
    }),
    headers: Type.Record(Type.String({ pattern: HEADER_NAME }), Type.String({ description: 'A header value.' }), {
      expectedKey: 'a header name',
      additionalProperties: false,
      description: 'Extra headers on every export request, such as an API key of the tracing backend (use ${ENV} substitution).',
      default: {},
    }),
    serviceName: Type.String({ description: 'The service.name resource attribute of every span.', default: 'api-gateway', minLength: 1 }),
    resourceAttributes: Type.Record(Type.String({ minLength: 1 }), Type.String({ description: 'An attribute value.' }), {
      description: 'More resource attributes (deployment.environment.name, service.version, ...); service.name here overrides serviceName.',
      default: {},
    }),
    sampleRatio: Type.Number({
      description:
        'Share of new traces recorded (0 to 1), decided on the trace id. Parent-based: a request whose incoming traceparent is sampled (or not) follows that decision whatever the ratio. The tracing.sampleRatio of a route overrides it for that route. Trace context is propagated to the upstream either way.',
      default: 1,
      minimum: 0,
      maximum: 1,
    }),
    export: Type.Object(
      {
        maxQueueSize: Type.Integer({ description: 'Finished spans held for export at most; beyond it spans are dropped (and counted), never waited for.', default: 2048, minimum: 1 }),
        maxExportBatchSize: Type.Integer({ description: 'Spans sent in one export request at most (no more than maxQueueSize).', default: 512, minimum: 1 }),
        scheduledDelayMs: Type.Integer({ description: 'Longest wait before a partial batch is sent (milliseconds).', default: 5000, minimum: 1 }),
        timeoutMs: Type.Integer({ description: 'Time one export may take, its retries included (429, 502, 503, 504 and network failures are retried with backoff), before its spans count as dropped (milliseconds).', default: 10000, minimum: 1 }),
      },
      { additionalProperties: false, description: 'Batching of the export. It runs beside the traffic: a slow or dead collector costs dropped spans, never request latency.', default: {} },
    ),
  },
  {
    additionalProperties: false,
    description:
      'OpenTelemetry tracing (W3C trace context in and out). Off by default. enabled and the sample ratios reload; the other fields take effect on restart. A route without tracing work costs nothing when it is off.',
    default: {},
  },
);

export const RouteTracingSchema = Type.Object(
  { sampleRatio: Type.Optional(Ratio('Share of new traces recorded on this route, instead of tracing.sampleRatio.')) },
  { additionalProperties: false, description: 'Tracing settings of this route.', default: {} },
);
