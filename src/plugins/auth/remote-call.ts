import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import { Pool, type Dispatcher } from 'undici';
import type { CounterCell, CounterFamily, HistogramCell, HistogramFamily } from '../../observability/fast-metrics';
import type { RequestContext } from '../../context';
import type { CallSpan } from '../../observability/tracing';
import { BREAKER_STATE_NAMES, CircuitBreaker, CLOSED } from '../../proxy/breaker';
import { Deadlines, type Timed } from '../../proxy/deadlines';
import { removeNamed } from '../../proxy/headers';
import { statusKind } from '../../proxy/failures';
import type { Resource } from '../types';
import type { AuthBreakerConfig } from './remote-schema';

/**
 * The trace of the request a call is made for: its spans when it is sampled, else the context it
 * passes on (see RequestContext). Introspection calls are shared between requests: the first one's.
 */
export type CallerTrace = Pick<RequestContext, 'trace' | 'traceId' | 'traceparent' | 'tracestate'>;

/** The remote services auth calls: the name is a metric label. */
export type RemoteServiceName = 'external' | 'introspection';

/** What the service answered (any status below 500). */
export interface RemoteAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The body was longer than the service's maxBytes and was not read. */
  tooLarge: boolean;
}

/** Why no answer could be used: the request is refused with 503 (or let through when the route fails open). */
export class RemoteDown extends Error {
  constructor(readonly reason: 'timeout' | 'error' | '5xx' | 'breaker_open') {
    super(
      reason === 'timeout'
        ? 'the authorization service did not answer within its time budget'
        : reason === 'breaker_open'
          ? 'the authorization service keeps failing; calls are paused'
          : 'the authorization service failed',
    );
    this.name = 'RemoteDown';
  }
}

/** The metric families of remote auth services; they outlive reloads (see authMetrics). */
export interface RemoteMetricFamilies {
  calls: CounterFamily;
  decisions: CounterFamily;
  cache: CounterFamily;
  latency: HistogramFamily;
}

export function remoteMetricFamilies(make: {
  counter(name: string, help: string, labels: readonly string[]): CounterFamily;
  histogram(name: string, help: string, labels: readonly string[]): HistogramFamily;
}): RemoteMetricFamilies {
  return {
    calls: make.counter(
      'gateway_auth_remote_calls_total',
      'Calls to the external authorizer and the introspection endpoint, by service and outcome (ok: an answer below 500, error, timeout, breaker_open: not made).',
      ['service', 'outcome'],
    ),
    decisions: make.counter(
      'gateway_auth_remote_decisions_total',
      'Decisions of the external authorizer and the introspection endpoint, cached or not, by service and result (allow, deny, unavailable, fail_open, stale: a cached active token used while the endpoint is down).',
      ['service', 'result'],
    ),
    cache: make.counter('gateway_auth_remote_cache_total', 'Decision cache lookups of remote auth services, by service and result (hit, miss).', ['service', 'result']),
    latency: make.histogram('gateway_auth_remote_call_duration_seconds', 'Duration of calls to remote auth services, answer body included, by service.', ['service']),
  };
}

/** The cells of one service: found once, so that counting is one increment. */
export class RemoteMetrics {
  readonly ok: CounterCell;
  readonly error: CounterCell;
  readonly timeout: CounterCell;
  readonly open: CounterCell;
  readonly allow: CounterCell;
  readonly deny: CounterCell;
  readonly unavailable: CounterCell;
  readonly failOpen: CounterCell;
  readonly stale: CounterCell;
  readonly hit: CounterCell;
  readonly miss: CounterCell;
  readonly latency: HistogramCell;

  constructor(f: RemoteMetricFamilies, service: RemoteServiceName) {
    this.ok = f.calls.child(service, 'ok');
    this.error = f.calls.child(service, 'error');
    this.timeout = f.calls.child(service, 'timeout');
    this.open = f.calls.child(service, 'breaker_open');
    this.allow = f.decisions.child(service, 'allow');
    this.deny = f.decisions.child(service, 'deny');
    this.unavailable = f.decisions.child(service, 'unavailable');
    this.failOpen = f.decisions.child(service, 'fail_open');
    this.stale = f.decisions.child(service, 'stale');
    this.hit = f.cache.child(service, 'hit');
    this.miss = f.cache.child(service, 'miss');
    this.latency = f.latency.child(service);
  }
}

/** One call in flight: its entry in the deadline wheel aborts it when the budget is spent. */
class PendingCall implements Timed {
  deadlineAt = 0;
  deadlineSlot = -1;
  deadlinePrev: Timed | null = null;
  deadlineNext: Timed | null = null;
  readonly controller = new AbortController();
  timedOut = false;

  deadlinePassed(): void {
    this.timedOut = true;
    this.controller.abort();
  }
}

export interface RemoteServiceOptions {
  name: RemoteServiceName;
  url: string;
  timeoutMs: number;
  connections: number;
  /** Longest answer body read; a longer one is reported as tooLarge. */
  maxBytes: number;
  breaker: AuthBreakerConfig;
  metrics: RemoteMetrics;
  log: FastifyBaseLogger;
}

/**
 * A remote auth service: its own connection pool, a time budget per call enforced by our own timer
 * (undici's timeouts are per phase and coarse), and a circuit breaker. Lives as long as the gateway
 * while the configuration keeps it.
 */
export class RemoteService implements Resource {
  readonly name: string;
  readonly url: URL;
  private readonly pool: Pool;
  private readonly deadlines = new Deadlines();
  private readonly breaker: CircuitBreaker | null;

  constructor(private readonly opts: RemoteServiceOptions) {
    this.name = `auth-${opts.name}`;
    this.url = new URL(opts.url);
    this.pool = new Pool(this.url.origin, {
      connections: opts.connections,
      connect: { timeout: opts.timeoutMs },
      // The budget below ends calls; these only keep undici from ever waiting longer.
      headersTimeout: opts.timeoutMs + 1000,
      bodyTimeout: opts.timeoutMs + 1000,
    });
    const b = opts.breaker;
    this.breaker = b.enabled
      ? new CircuitBreaker({ ...b, failureOn: ['connect', 'timeout', 'reset', 'bad-response', '5xx'] }, opts.timeoutMs * 2, (from, to) =>
          opts.log[to === CLOSED ? 'info' : 'warn']({ service: opts.name, from: BREAKER_STATE_NAMES[from], to: BREAKER_STATE_NAMES[to] }, 'auth service breaker changed state'),
        )
      : null;
  }

  /**
   * Calls the service. Resolves with any answer below 500; rejects with RemoteDown for a 5xx, a
   * failure to connect or read, a spent budget, or an open breaker.
   */
  async call(caller: CallerTrace, method: string, path: string, headers: string[], body: string | Buffer | null): Promise<RemoteAnswer> {
    const m = this.opts.metrics;
    const breaker = this.breaker;
    const startedAt = performance.now();
    let probe = false;
    if (breaker !== null && breaker.state !== CLOSED) {
      probe = breaker.tryProbe(startedAt);
      if (!probe) {
        m.open.inc();
        throw new RemoteDown('breaker_open');
      }
    }
    const span = passTraceContext(caller, `auth ${this.opts.name}`, this.url, headers);
    const pending = new PendingCall();
    this.deadlines.arm(pending, startedAt + this.opts.timeoutMs);
    let status = 0;
    try {
      const res = await this.pool.request({ path, method: method as Dispatcher.HttpMethod, headers, body, signal: pending.controller.signal });
      status = res.statusCode;
      const chunks: Buffer[] = [];
      let size = 0;
      let tooLarge = false;
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > this.opts.maxBytes) {
          tooLarge = true;
          res.body.destroy();
          break;
        }
        chunks.push(chunk);
      }
      this.deadlines.disarm(pending);
      const now = performance.now();
      m.latency.observe((now - startedAt) / 1000);
      breaker?.record(statusKind(status), probe, now);
      if (status >= 500) {
        m.error.inc();
        span?.done(status, String(status));
        throw new RemoteDown('5xx');
      }
      m.ok.inc();
      span?.done(status);
      return { status, headers: res.headers, body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks), tooLarge };
    } catch (err) {
      if (err instanceof RemoteDown) throw err;
      this.deadlines.disarm(pending);
      const now = performance.now();
      m.latency.observe((now - startedAt) / 1000);
      breaker?.record(breaker.failureMask, probe, now);
      const reason = pending.timedOut ? 'timeout' : 'error';
      (pending.timedOut ? m.timeout : m.error).inc();
      span?.done(status, reason);
      if (!pending.timedOut) this.opts.log.warn({ service: this.opts.name, err: { message: (err as Error).message } }, 'auth service call failed');
      throw new RemoteDown(reason);
    }
  }

  async close(): Promise<void> {
    this.deadlines.close();
    await this.pool.close();
  }
}

/** Cache-Control of an answer: how long it may be reused (ms), or null when it does not say. */
export function cacheControlTtl(value: string | string[] | undefined): number | null {
  if (value === undefined) return null;
  const text = Array.isArray(value) ? value.join(',') : value;
  let maxAge: number | null = null;
  let shared: number | null = null;
  for (const part of text.split(',')) {
    const d = part.trim().toLowerCase();
    // private is no bar: a decision is only ever reused for the same identity sources.
    if (d === 'no-store' || d === 'no-cache') return 0;
    const eq = d.indexOf('=');
    if (eq < 0) continue;
    const name = d.slice(0, eq).trim();
    const n = Number(d.slice(eq + 1).trim().replace(/^"|"$/g, ''));
    if (!Number.isInteger(n) || n < 0) continue;
    if (name === 's-maxage') shared = n;
    else if (name === 'max-age') maxAge = n;
  }
  // The gateway is a shared cache: s-maxage wins (RFC 9111 §5.2.2.10).
  const seconds = shared ?? maxAge;
  return seconds === null ? null : seconds * 1000;
}

const TRACE_CONTEXT: ReadonlySet<string> = new Set(['traceparent', 'tracestate']);

/**
 * While tracing is on, the service gets the gateway's trace context, never a client's (a forwarded
 * traceparent or tracestate is replaced): a sampled request's call has a span of its own, an
 * unsampled one passes on the request's context. With tracing off, forwarded headers go as they are.
 */
function passTraceContext(caller: CallerTrace, name: string, url: URL, headers: string[]): CallSpan | null {
  if (caller.traceId === '') return null;
  removeNamed(headers, TRACE_CONTEXT);
  if (caller.trace !== null) return caller.trace.callStarted(name, url, headers);
  headers.push('traceparent', caller.traceparent);
  if (caller.tracestate !== '') headers.push('tracestate', caller.tracestate);
  return null;
}
