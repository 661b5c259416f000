import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  createContextKey,
  createNoopMeter,
  defaultTextMapGetter,
  trace,
  type Attributes,
  type Context,
  type Meter,
  type MeterProvider,
  type Span,
  type TextMapSetter,
  type Tracer,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type BufferConfig,
  type Sampler,
  type SamplingResult,
} from '@opentelemetry/sdk-trace-base';
import type { Step } from '../chain';
import type { GatewayConfig } from '../config/schema';
import type { RequestContext } from '../context';
import { upstreamErrorCode } from '../proxy/upstream-errors';
import type { Target } from '../proxy/upstreams';
import type { CompiledRoute } from '../routes';
import type { CounterCell, CounterFamily } from './fast-metrics';
import type { GatewayMetrics } from './metrics';

export type TracingConfig = GatewayConfig['tracing'];

/** Status logged for a client that went away before it got an answer (as in chain.ts). */
const CLIENT_CLOSED = 499;

/** Where the route's sampler rides in the parent context, for the one sampler the provider knows. */
const ROUTE_SAMPLER = createContextKey('gateway route sampler');

/**
 * The provider has one sampler; routes have their own ratio. The route's sampler is put into the
 * context a server span starts from; client spans start from their server span's context, which
 * does not carry it, and follow their parent through the default (parent-based) one.
 */
class RouteSampler implements Sampler {
  constructor(private readonly fallback: Sampler) {}

  shouldSample(context: Context, ...rest: Parameters<Sampler['shouldSample']> extends [Context, ...infer R] ? R : never): SamplingResult {
    const own = context.getValue(ROUTE_SAMPLER) as Sampler | undefined;
    return (own ?? this.fallback).shouldSample(context, ...rest);
  }

  toString(): string {
    return `RouteSampler{${this.fallback.toString()}}`;
  }
}

export function ratioSampler(ratio: number): Sampler {
  return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
}

/**
 * Counts what the batch processor reports about the spans it handles (its self-observability
 * counter otel.sdk.processor.span.processed, experimental in the SDK): spans dropped because the
 * queue was full (error.type queue_full), spans an export failed to deliver (error.type of the
 * export error: collector down, refused, timed out) and spans delivered. Everything else the
 * processor may record goes to a no-op meter.
 */
function dropCounter(dropped: CounterFamily, exported: CounterCell): MeterProvider {
  const queueFull = dropped.child('queue_full');
  const exportFailed = dropped.child('export_failed');
  const noop = createNoopMeter();
  const meter: Meter = Object.assign(Object.create(noop) as Meter, {
    createCounter: () => ({
      add(count: number, attrs?: Attributes) {
        const error = attrs?.['error.type'];
        if (error === undefined) exported.inc(count);
        else (error === 'queue_full' ? queueFull : exportFailed).inc(count);
      },
    }),
  });
  return { getMeter: () => meter };
}

/** Writes the propagator's fields into the upstream request's header list, replacing a previous attempt's. */
const HEADER_SETTER: TextMapSetter<string[]> = {
  set(headers, key, value) {
    for (let i = headers.length - 2; i >= 0; i -= 2) {
      if (headers[i] === key) {
        headers[i + 1] = value;
        return;
      }
    }
    headers.push(key, value);
  },
};

/**
 * OpenTelemetry tracing of one gateway instance: its own tracer provider (never registered
 * globally), a batching OTLP/HTTP exporter with a bounded queue, and the W3C propagator used by
 * hand. Closing it flushes what is queued.
 */
export class Tracing {
  readonly name = 'tracing';
  readonly tracer: Tracer;
  readonly propagator = new W3CTraceContextPropagator();
  private readonly provider: BasicTracerProvider;
  /** Attributes of a target's client spans, made once per target. */
  private readonly targets = new WeakMap<Target, Attributes>();

  constructor(cfg: TracingConfig, metrics: GatewayMetrics) {
    const exporter = new OTLPTraceExporter({ url: cfg.endpoint, headers: { ...cfg.headers }, timeoutMillis: cfg.export.timeoutMs });
    const dropped = metrics.counter(
      'gateway_tracing_spans_dropped_total',
      'Sampled spans that never reached the collector: reason queue_full (the export queue was full), export_failed (the export request failed or timed out).',
      ['reason'],
    );
    const exported = metrics.counter('gateway_tracing_spans_exported_total', 'Spans the collector accepted.', []).child();
    const buffer = {
      maxQueueSize: cfg.export.maxQueueSize,
      maxExportBatchSize: Math.min(cfg.export.maxExportBatchSize, cfg.export.maxQueueSize),
      scheduledDelayMillis: cfg.export.scheduledDelayMs,
      exportTimeoutMillis: cfg.export.timeoutMs,
      selfObsMeterProvider: dropCounter(dropped, exported),
    };
    this.provider = new BasicTracerProvider({
      resource: defaultResource().merge(resourceFromAttributes({ 'service.name': cfg.serviceName, ...cfg.resourceAttributes })),
      sampler: new RouteSampler(ratioSampler(cfg.sampleRatio)),
      spanProcessors: [new BatchSpanProcessor(exporter, buffer as BufferConfig)],
    });
    this.tracer = this.provider.getTracer('api-gateway');
  }

  /** The step that opens the server span of every request on `route`; `ratio` is the configuration's default. */
  stepFor(route: CompiledRoute, ratio: number): Step {
    return new TracingStep(this, route, ratioSampler(route.config.tracing.sampleRatio ?? ratio));
  }

  targetAttributes(target: Target): Attributes {
    let attrs = this.targets.get(target);
    if (attrs === undefined) {
      const u = new URL(target.origin);
      attrs = {
        'server.address': u.hostname,
        'server.port': Number(u.port || (u.protocol === 'https:' ? 443 : 80)),
        'url.scheme': u.protocol.slice(0, -1),
      };
      this.targets.set(target, attrs);
    }
    return attrs;
  }

  /** Flushes the queued spans (within export.timeoutMs); spans a failing collector does not take are already counted. */
  async close(): Promise<void> {
    await this.provider.shutdown().catch(() => undefined);
  }
}

class TracingStep implements Step {
  readonly name = 'tracing';

  constructor(
    readonly tracing: Tracing,
    readonly route: CompiledRoute,
    readonly sampler: Sampler,
  ) {
    // The upstream gets our client span as its parent: the client's own trace context is replaced.
    route.dropRequestHeaders.add('traceparent').add('tracestate');
  }

  run(ctx: RequestContext): boolean {
    ctx.trace = new RequestTrace(this, ctx);
    return true;
  }
}

/** The client span of a call made for the request; ended once. */
export interface CallSpan {
  done(status: number, error?: string): void;
}

/** The spans of one request: its server span, and the client span of the upstream attempt under way. */
export class RequestTrace {
  readonly span: Span;
  private readonly serverContext: Context;
  private client: Span | null = null;
  private attempts = 0;

  constructor(
    private readonly step: TracingStep,
    private readonly ctx: RequestContext,
  ) {
    const { req } = ctx;
    const { tracing, route } = step;
    const parent = tracing.propagator.extract(ROOT_CONTEXT, req.headers, defaultTextMapGetter).setValue(ROUTE_SAMPLER, step.sampler);
    this.span = tracing.tracer.startSpan(route.name, { kind: SpanKind.SERVER, startTime: ctx.startedAt }, parent);
    // Most traces are not sampled at low ratios: their spans record nothing, so nothing is built for them.
    if (this.span.isRecording()) {
      const host = req.headers.host;
      this.span.setAttributes({
        'http.request.method': req.method,
        'url.path': ctx.path,
        'url.scheme': (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http',
        'http.route': route.config.match.prefix,
        'network.protocol.version': req.httpVersion,
        'client.address': ctx.clientIp,
        'network.peer.address': ctx.peer,
        'gateway.route': route.name,
        'gateway.request.id': ctx.id,
      });
      if (host !== undefined) this.span.setAttribute('server.address', serverAddress(host));
      if (req.headers['user-agent'] !== undefined) this.span.setAttribute('user_agent.original', req.headers['user-agent']);
    }
    this.serverContext = trace.setSpan(ROOT_CONTEXT, this.span);
    ctx.traceId = this.span.spanContext().traceId;
    ctx.res.on('close', this.end);
  }

  /**
   * A call the gateway makes on the request's behalf before the upstream (an external authorizer, a
   * token introspection): a client span under the server span, whose context the callee gets in
   * `headers`. `done` ends it with the callee's status (0: no answer) and, on failure, its reason.
   */
  callStarted(name: string, url: URL, headers: string[]): CallSpan {
    const { tracing } = this.step;
    const span = tracing.tracer.startSpan(name, { kind: SpanKind.CLIENT }, this.serverContext);
    if (span.isRecording()) {
      span.setAttributes({
        'server.address': url.hostname,
        'server.port': Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
        'url.scheme': url.protocol.slice(0, -1),
      });
    }
    tracing.propagator.inject(trace.setSpan(ROOT_CONTEXT, span), headers, HEADER_SETTER);
    return {
      done(status: number, error?: string) {
        if (!span.isRecording()) return;
        if (status > 0) span.setAttribute('http.response.status_code', status);
        if (error !== undefined) {
          span.setAttribute('error.type', error);
          span.setStatus({ code: SpanStatusCode.ERROR });
        }
        span.end();
      },
    };
  }

  /** An upstream attempt starts: its client span, whose context the upstream gets in `headers`. */
  attemptStarted(target: Target, headers: string[]): void {
    const { tracing } = this.step;
    const method = this.ctx.req.method!;
    const span = tracing.tracer.startSpan(method, { kind: SpanKind.CLIENT }, this.serverContext);
    if (span.isRecording()) {
      span.setAttributes(tracing.targetAttributes(target));
      span.setAttribute('http.request.method', method);
      span.setAttribute('gateway.upstream', this.ctx.route.upstream.name);
      if (this.attempts > 0) span.setAttribute('http.request.resend_count', this.attempts);
    }
    this.attempts++;
    this.client = span;
    tracing.propagator.inject(trace.setSpan(ROOT_CONTEXT, span), headers, HEADER_SETTER);
  }

  /** The attempt is over: `status` is what the upstream answered (0: nothing), `err` why it failed. */
  attemptEnded(status: number, err: Error | undefined): void {
    const span = this.client;
    if (span === null) return;
    this.client = null;
    if (!span.isRecording()) return;
    if (status > 0) span.setAttribute('http.response.status_code', status);
    if (err !== undefined) {
      span.setAttribute('error.type', upstreamErrorCode(err));
      span.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
    } else if (status >= 400) {
      span.setAttribute('error.type', String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  }

  /** The response closed: the outcome, who asked, and what the rate limit and cache decided. */
  private readonly end = (): void => {
    const { ctx, span } = this;
    if (!span.isRecording()) return;
    const res = ctx.res;
    const status = res.headersSent ? res.statusCode : CLIENT_CLOSED;
    span.setAttribute('http.response.status_code', status);
    if (ctx.identity !== null) span.setAttribute('enduser.id', ctx.identity.consumerId);
    if (ctx.errorCode !== null) span.setAttribute('gateway.error.code', ctx.errorCode);
    // The decisions as the rate-limit and cache steps recorded them (the access line shows the same).
    if (ctx.rateLimitResult !== null) span.setAttribute('gateway.rate_limit.decision', ctx.rateLimitResult);
    if (ctx.cacheResult !== null) span.setAttribute('gateway.cache.result', ctx.cacheResult);
    if (status >= 500) {
      span.setAttribute('error.type', ctx.errorCode ?? String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  };
}

/** The host of a Host header, without its port. */
function serverAddress(host: string): string {
  if (host.charCodeAt(0) === 91) return host.slice(1, host.indexOf(']'));
  const colon = host.indexOf(':');
  return colon < 0 ? host : host.slice(0, colon);
}
