import { randomFillSync } from 'node:crypto';
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  createNoopMeter,
  trace,
  type Attributes,
  type Context,
  type Meter,
  type MeterProvider,
  type Span,
  type Tracer,
} from '@opentelemetry/api';
import { TraceState } from '@opentelemetry/core';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, type BufferConfig, type IdGenerator } from '@opentelemetry/sdk-trace-base';
import type { Step } from '../chain';
import type { GatewayConfig } from '../config/schema';
import type { RequestContext } from '../context';
import { upstreamErrorCode } from '../proxy/upstream-errors';
import type { Target } from '../proxy/upstreams';
import type { CompiledRoute } from '../routes';
import type { CounterCell, CounterFamily } from './fast-metrics';
import type { GatewayMetrics } from './metrics';
import { createOtlpExporter } from './otlp-exporter';

export type TracingConfig = GatewayConfig['tracing'];

/** Status logged for a client that went away before it got an answer (as in chain.ts). */
const CLIENT_CLOSED = 499;

/** Random bytes of one record: a trace id (16) and a span id (8). */
const RECORD_BYTES = 24;
/** Characters of one record's text: `00-<32 hex>-<16 hex>-00` and a separator. */
const RECORD_CHARS = 56;
/** Records drawn from the system at a time: one native call and one text per 170 new traces. */
const RECORDS = 170;

/**
 * Trace and span ids, made from random bytes drawn RECORDS records at a time: an unsampled request
 * needs ids without the SDK. Each record is written once as the text of an unsampled traceparent
 * (`00-<trace id>-<parent id>-00`, all records in one string), and ids and traceparents are slices
 * of that text: V8 shares the characters, so a request allocates no new text and the upstream
 * header needs no concatenation. The SDK takes its ids here too, so that a root span the step
 * decided to sample gets the trace id the decision was made on.
 */
export class TraceIds implements IdGenerator {
  private readonly pool = Buffer.allocUnsafe(RECORD_BYTES * RECORDS);
  private text = '';
  private record = RECORDS;
  /** The text offset of the record of the last trace id newTraceId made. */
  private last = 0;
  /** 32 random bits of the last trace id newTraceId made (its last four bytes), for the sampling decision. */
  word = 0;
  /** The trace id the next root span of the SDK gets instead of a new one (set just before it starts). */
  next = '';

  /** A fresh trace id (32 lowercase hex digits, never all zeros). */
  newTraceId(): string {
    const r = this.take();
    this.word = this.pool.readUInt32BE(r * RECORD_BYTES + 12);
    const at = r * RECORD_CHARS;
    this.last = at;
    return this.text.slice(at + 3, at + 35);
  }

  /** The unsampled traceparent of the trace newTraceId made last, under a fresh parent id. */
  lastTraceparent(): string {
    return this.text.slice(this.last, this.last + 55);
  }

  /** A fresh span id (16 lowercase hex digits, never all zeros). */
  newSpanId(): string {
    const at = this.take() * RECORD_CHARS;
    return this.text.slice(at + 36, at + 52);
  }

  generateTraceId(): string {
    const id = this.next;
    if (id === '') return this.newTraceId();
    this.next = '';
    return id;
  }

  generateSpanId(): string {
    return this.newSpanId();
  }

  /** The index of an unused record. */
  private take(): number {
    if (this.record === RECORDS) this.refill();
    return this.record++;
  }

  private refill(): void {
    const pool = this.pool;
    randomFillSync(pool);
    // Ids are whole 8-byte words: with no word of zeros, no id is all zeros (W3C: such an id is invalid).
    for (let w = 0; w < pool.length; w += 8) if (pool.readUInt32BE(w) === 0 && pool.readUInt32BE(w + 4) === 0) pool[w + 7] = 1;
    const hex = pool.toString('hex');
    const records = new Array<string>(RECORDS);
    for (let r = 0; r < RECORDS; r++) {
      const h = r * RECORD_BYTES * 2;
      records[r] = `00-${hex.slice(h, h + 32)}-${hex.slice(h + 32, h + 48)}-00\n`;
    }
    // join makes one flat string: slices of it are flat too (a regular expression, a socket write
    // and a comparison read them without copying them first).
    this.text = records.join('');
    this.record = 0;
  }
}

const HEX = new Uint8Array(128).fill(255);
for (let i = 0; i < 16; i++) HEX['0123456789abcdef'.charCodeAt(i)] = i;

/** The value of the lowercase hex digit at `i` of `s`, or 255 if it is none. */
function hexDigit(s: string, i: number): number {
  const c = s.charCodeAt(i);
  return c < 128 ? HEX[c] : 255;
}

/** The two lowercase hex digits at `i` of `s` as a byte, or -1. */
function hexByte(s: string, i: number): number {
  const hi = hexDigit(s, i);
  const lo = hexDigit(s, i + 1);
  return hi === 255 || lo === 255 ? -1 : hi * 16 + lo;
}

/** `s` from `from` to `to` is lowercase hex digits, not all zero. */
function isHexId(s: string, from: number, to: number): boolean {
  let nonZero = false;
  for (let i = from; i < to; i++) {
    const d = hexDigit(s, i);
    if (d === 255) return false;
    if (d !== 0) nonZero = true;
  }
  return nonZero;
}

/**
 * The trace flags of a valid W3C traceparent (0 to 255), or -1 if it is not one (W3C Trace
 * Context §3.2: version 00 is exactly 55 characters; a later version may append fields after a
 * dash; version ff, an all-zero trace id or parent id are invalid). The trace id is characters 3 to 35.
 */
export function traceparentFlags(tp: string): number {
  const n = tp.length;
  if (n < 55 || tp.charCodeAt(2) !== 45 || tp.charCodeAt(35) !== 45 || tp.charCodeAt(52) !== 45) return -1;
  const version = hexByte(tp, 0);
  if (version < 0 || version === 255 || (version === 0 ? n !== 55 : n > 55 && tp.charCodeAt(55) !== 45)) return -1;
  if (!isHexId(tp, 3, 35) || !isHexId(tp, 36, 52)) return -1;
  return hexByte(tp, 53);
}

/**
 * The context of a caller's valid, sampled traceparent (`flags` from traceparentFlags), with its
 * tracestate (repeated headers joined, W3C §3.3.1.1; an invalid list is dropped by TraceState).
 */
function remoteParent(tp: string, flags: number, tracestate: string | string[] | undefined): Context {
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: tp.slice(3, 35),
    spanId: tp.slice(36, 52),
    traceFlags: flags,
    isRemote: true,
    traceState: tracestate === undefined ? undefined : new TraceState(typeof tracestate === 'string' ? tracestate : tracestate.join(',')),
  });
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

/** Sets `key` in a request's header list, replacing the value a previous attempt put there. */
function setHeader(headers: string[], key: string, value: string): void {
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i] === key) {
      headers[i + 1] = value;
      return;
    }
  }
  headers.push(key, value);
}

/**
 * Puts `span`'s W3C trace context into a request's header list: its traceparent, and the trace's
 * tracestate when there is one. Written here rather than by the propagator, which builds a context
 * object and checks ids the SDK made a moment ago.
 */
function injectSpan(span: Span, headers: string[]): void {
  const sc = span.spanContext();
  const flags = sc.traceFlags & 0xff;
  setHeader(headers, 'traceparent', `00-${sc.traceId}-${sc.spanId}-${flags < 16 ? '0' : ''}${flags.toString(16)}`);
  if (sc.traceState !== undefined) {
    const ts = sc.traceState.serialize();
    if (ts !== '') setHeader(headers, 'tracestate', ts);
  }
}

/**
 * OpenTelemetry tracing of one gateway instance: its own tracer provider (never registered
 * globally) and a batching OTLP/HTTP exporter with a bounded queue. W3C trace context is read and
 * written by the steps themselves. Closing it flushes what is queued.
 */
export class Tracing {
  readonly name = 'tracing';
  readonly tracer: Tracer;
  readonly ids = new TraceIds();
  private readonly provider: BasicTracerProvider;
  /** Attributes of a target's client spans, made once per target. */
  private readonly targets = new WeakMap<Target, Attributes>();

  constructor(cfg: TracingConfig, metrics: GatewayMetrics) {
    const exporter = createOtlpExporter({ url: cfg.endpoint, headers: cfg.headers, timeoutMs: cfg.export.timeoutMs });
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
      // The steps decide what is sampled before they call the SDK: a span it is asked for is wanted
      // (a root the ratio picked, or the child of a sampled caller).
      sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
      idGenerator: this.ids,
      spanProcessors: [new BatchSpanProcessor(exporter, buffer as BufferConfig)],
    });
    this.tracer = this.provider.getTracer('api-gateway');
  }

  /** The step that opens the server span of every request on `route`; `ratio` is the configuration's default. */
  stepFor(route: CompiledRoute, ratio: number): Step {
    return new TracingStep(this, route, route.config.tracing.sampleRatio ?? ratio);
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

/**
 * Opens the trace of each request. The sampling decision is made here, without the SDK
 * (parent-based: a valid incoming traceparent's sampled flag, else the route's ratio on the new
 * trace id): at low ratios most requests are not sampled, and they get no SDK object at all, only
 * their trace context for the upstream and the access line.
 */
class TracingStep implements Step {
  readonly name = 'tracing';
  /** A new trace is sampled when 32 random bits of its id are below this (ratio × 2³²). */
  private readonly threshold: number;

  constructor(
    readonly tracing: Tracing,
    readonly route: CompiledRoute,
    ratio: number,
  ) {
    this.threshold = ratio * 2 ** 32;
    // The upstream gets the gateway's trace context: the client's own is replaced.
    route.dropRequestHeaders.add('traceparent').add('tracestate');
  }

  run(ctx: RequestContext): boolean {
    const headers = ctx.req.headers;
    const tp = headers.traceparent;
    // Node joins a repeated traceparent into one invalid value: a new trace starts (W3C §3.2).
    const flags = typeof tp === 'string' ? traceparentFlags(tp) : -1;
    const ids = this.tracing.ids;
    if (flags < 0) {
      const traceId = ids.newTraceId();
      if (ids.word < this.threshold) {
        ids.next = traceId;
        ctx.trace = new RequestTrace(this, ctx, ROOT_CONTEXT);
        ids.next = '';
        return true;
      }
      // Unsampled: the upstream continues the trace under a parent id of the gateway's, not sampled
      // either (W3C Trace Context §3.2.2.3).
      ctx.traceId = traceId;
      ctx.traceparent = ids.lastTraceparent();
      ctx.addUpstreamHeader('traceparent', ctx.traceparent);
      return true;
    }
    if ((flags & 1) === 1) {
      ctx.trace = new RequestTrace(this, ctx, remoteParent(tp as string, flags, headers.tracestate));
      return true;
    }
    // The caller's unsampled trace goes on the same way, with its tracestate (§3.3: it travels with
    // a valid traceparent only).
    ctx.traceId = (tp as string).slice(3, 35);
    ctx.traceparent = `00-${ctx.traceId}-${ids.newSpanId()}-00`;
    ctx.addUpstreamHeader('traceparent', ctx.traceparent);
    const ts = headers.tracestate;
    if (ts !== undefined) {
      ctx.tracestate = typeof ts === 'string' ? ts : ts.join(',');
      ctx.addUpstreamHeader('tracestate', ctx.tracestate);
    }
    return true;
  }
}

/** The client span of a call made for the request; ended once. */
export interface CallSpan {
  done(status: number, error?: string): void;
}

/** The spans of one sampled request: its server span, and the client span of the upstream attempt under way. */
export class RequestTrace {
  readonly span: Span;
  private readonly serverContext: Context;
  private client: Span | null = null;
  private attempts = 0;
  private ended = false;

  constructor(
    private readonly step: TracingStep,
    private readonly ctx: RequestContext,
    parent: Context,
  ) {
    const { req } = ctx;
    const { tracing, route } = step;
    this.span = tracing.tracer.startSpan(route.name, { kind: SpanKind.SERVER, startTime: ctx.startedAt }, parent);
    // The sampler records every span the step asks for; should the SDK still hand out a
    // non-recording one, it is not filled in.
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
    injectSpan(span, headers);
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
    injectSpan(span, headers);
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

  /** The response closed: the outcome as the client saw it. */
  private readonly end = (): void => {
    const res = this.ctx.res;
    this.finish(res.headersSent ? res.statusCode : CLIENT_CLOSED);
  };

  /**
   * The request was answered with `status`: the outcome, who asked, and what the rate limit and
   * cache decided. Once: a WebSocket upgrade reports its answer (101 included), which its
   * ServerResponse does not know, before the response closes.
   */
  finish(status: number): void {
    const { ctx, span } = this;
    if (this.ended) return;
    this.ended = true;
    if (!span.isRecording()) return;
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
  }
}

/** The host of a Host header, without its port. */
function serverAddress(host: string): string {
  if (host.charCodeAt(0) === 91) return host.slice(1, host.indexOf(']'));
  const colon = host.indexOf(':');
  return colon < 0 ? host : host.slice(0, colon);
}
