import { Registry, collectDefaultMetrics, type Metric, type OpenMetricsContentType } from 'prom-client';
import type { RequestContext } from '../context';
import { CounterFamily, GaugeFamily, HistogramFamily, type CounterCell, type HistogramCell } from './fast-metrics';

/** Seconds; from half a millisecond (a cache hit) to 30 s (a slow upstream). */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

const STATUS_CLASS = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'];

/**
 * Status codes counted under their own `code` label; any other code is counted under its class
 * ("4xx"), so the label has at most these plus six values whatever the upstreams answer.
 */
export const COUNTED_CODES: readonly number[] = [
  101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409, 410, 412, 413, 414, 415, 416, 422,
  429, 431, 499, 500, 501, 502, 503, 504, 505,
];

/** `code` and `status_class` label values by slot; CODE_SLOT maps a status (0-999) to its slot. */
const SLOT_CODE: string[] = [...STATUS_CLASS, ...COUNTED_CODES.map(String)];
const SLOT_CLASS: string[] = [...STATUS_CLASS, ...COUNTED_CODES.map((c) => STATUS_CLASS[(c / 100) | 0])];
const CODE_SLOT = new Uint8Array(1000);
for (let s = 0; s < 1000; s++) {
  const i = COUNTED_CODES.indexOf(s);
  CODE_SLOT[s] = i >= 0 ? STATUS_CLASS.length + i : Math.min((s / 100) | 0, 5);
}

/** What a socket has read and written, as last accounted to a request (symbols: no clash with Node's fields). */
const READ_SEEN = Symbol('gateway.bytesReadSeen');
const WRITTEN_SEEN = Symbol('gateway.bytesWrittenSeen');
type CountedSocket = { bytesRead: number; bytesWritten: number | undefined; [READ_SEEN]?: number; [WRITTEN_SEEN]?: number };

/**
 * Per-route metric cells, resolved once so that recording a request costs no label hashing.
 * Request counters are cached per method and status slot as they appear.
 */
export class RouteMetrics {
  /** Request counters by method, then by status slot: no key string per request. */
  private readonly counters = new Map<string, (CounterCell | undefined)[]>();
  readonly total: HistogramCell;
  readonly upstream: HistogramCell;
  readonly added: HistogramCell;
  readonly bytesIn: CounterCell;
  readonly bytesOut: CounterCell;

  constructor(
    private readonly metrics: GatewayMetrics,
    readonly route: string,
  ) {
    this.total = metrics.requestDuration.child(route);
    this.upstream = metrics.upstreamDuration.child(route);
    this.added = metrics.gatewayDuration.child(route);
    this.bytesIn = metrics.requestBytes.child(route);
    this.bytesOut = metrics.responseBytes.child(route);
  }

  record(ctx: RequestContext, method: string, status: number, totalMs: number): void {
    const upstreamMs = ctx.upstreamMs;
    const socket: CountedSocket = ctx.socket;
    const slot = status >= 0 && status < 1000 ? CODE_SLOT[status] : 5;
    let bySlot = this.counters.get(method);
    if (bySlot === undefined) {
      bySlot = new Array<CounterCell | undefined>(SLOT_CODE.length).fill(undefined);
      this.counters.set(method, bySlot);
    }
    let c = bySlot[slot];
    if (c === undefined) {
      c = this.metrics.requests.child(this.route, method, SLOT_CODE[slot], SLOT_CLASS[slot]);
      bySlot[slot] = c;
    }
    c.inc();
    // Wire bytes (head and body) since the socket's previous request: exact per connection without
    // a listener per chunk. A pipelined request read ahead is counted with the response before it.
    const read = socket.bytesRead;
    // undefined on a socket whose write state is gone: nothing more is counted for it.
    const written = socket.bytesWritten ?? socket[WRITTEN_SEEN] ?? 0;
    ctx.bytesIn = read - (socket[READ_SEEN] ?? 0);
    ctx.bytesOut = written - (socket[WRITTEN_SEEN] ?? 0);
    this.bytesIn.inc(ctx.bytesIn);
    this.bytesOut.inc(ctx.bytesOut);
    socket[READ_SEEN] = read;
    socket[WRITTEN_SEEN] = written;
    // A sampled request is the exemplar of the latency buckets it lands in ('' otherwise: none).
    const traceId = ctx.trace !== null ? ctx.traceId : '';
    this.total.observe(totalMs / 1000, traceId);
    if (upstreamMs >= 0) {
      this.upstream.observe(upstreamMs / 1000, traceId);
      this.added.observe(Math.max(0, totalMs - upstreamMs) / 1000, traceId);
    } else {
      this.added.observe(totalMs / 1000, traceId);
    }
  }
}

/** One side of a split route: the route's metrics, and the side's answers by its upstream and status class. */
export class SplitSideMetrics extends RouteMetrics {
  private readonly byClass: CounterCell[];

  constructor(metrics: GatewayMetrics, route: string, upstream: string) {
    super(metrics, route);
    this.byClass = STATUS_CLASS.map((c) => metrics.splitResponses.child(route, upstream, c));
  }

  /** Answers of this side by status class since the gateway started (the metric's values). */
  responses(): Record<string, number> {
    const out: Record<string, number> = {};
    STATUS_CLASS.forEach((c, i) => (out[c] = this.byClass[i].value));
    return out;
  }

  override record(ctx: RequestContext, method: string, status: number, totalMs: number): void {
    super.record(ctx, method, status, totalMs);
    this.byClass[status >= 0 && status < 1000 ? Math.min((status / 100) | 0, 5) : 5].inc();
  }
}

/**
 * All metrics of one gateway instance, in a registry of its own (no global state). Hot-path
 * metrics use the label-resolved families of fast-metrics.ts; plugins create theirs through
 * counter(), gauge() and histogram() so every family lands in this registry.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests: CounterFamily;
  readonly requestDuration: HistogramFamily;
  readonly upstreamDuration: HistogramFamily;
  readonly gatewayDuration: HistogramFamily;
  readonly requestBytes: CounterFamily;
  readonly responseBytes: CounterFamily;
  readonly splitRequests: CounterFamily;
  readonly mirrorRequests: CounterFamily;
  readonly splitResponses: CounterFamily;

  constructor(opts: { processMetrics: boolean }) {
    this.requests = this.counter(
      'gateway_requests_total',
      'Requests answered, by route, method, status code (codes outside a fixed list folded into their class, as "4xx") and status class.',
      ['route', 'method', 'code', 'status_class'],
    );
    this.requestBytes = this.counter('gateway_request_bytes_total', 'Bytes received from clients (request heads and bodies, as read from the socket), by route.', ['route']);
    this.responseBytes = this.counter('gateway_response_bytes_total', 'Bytes sent to clients (response heads and bodies, as written to the socket), by route.', ['route']);
    this.splitRequests = this.counter(
      'gateway_split_requests_total',
      'Requests of split routes, by route, the upstream of the side they went to, and why (match, sticky or weight).',
      ['route', 'upstream', 'reason'],
    );
    this.splitResponses = this.counter(
      'gateway_split_responses_total',
      'Answers of split routes by route, the upstream of the side the request went to, and status class (a gateway error such as 502 or 503 counts against its side).',
      ['route', 'upstream', 'status_class'],
    );
    this.mirrorRequests = this.counter(
      'gateway_mirror_requests_total',
      'Sampled requests of mirroring routes, by route, shadow upstream and result: sent (2xx-5xx by the shadow\'s answer), failed (error), or not sent (dropped over maxConcurrent, body-too-large, body-incomplete, no-target).',
      ['route', 'upstream', 'result'],
    );
    this.requestDuration = this.histogram(
      'gateway_request_duration_seconds',
      'Total time from request arrival to the end of the response, by route.',
      ['route'],
    );
    this.upstreamDuration = this.histogram(
      'gateway_upstream_duration_seconds',
      'Time spent waiting on the upstream (request sent to last response byte), by route.',
      ['route'],
    );
    this.gatewayDuration = this.histogram(
      'gateway_added_duration_seconds',
      'Time the gateway itself added to a request (total minus upstream time), by route.',
      ['route'],
    );
    if (opts.processMetrics) {
      collectDefaultMetrics({ register: this.registry, prefix: '' });
      // Gauges named like counters fail `promtool check metrics`; each is the sum of its unsuffixed,
      // per-type twin (nodejs_active_handles etc.), which stays.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
        this.registry.removeSingleMetric(name);
      }
    }
  }

  counter(name: string, help: string, labelNames: readonly string[]): CounterFamily {
    return new CounterFamily(name, help, labelNames, this.registry);
  }

  gauge(name: string, help: string, labelNames: readonly string[]): GaugeFamily {
    return new GaugeFamily(name, help, labelNames, this.registry);
  }

  histogram(name: string, help: string, labelNames: readonly string[], buckets: readonly number[] = LATENCY_BUCKETS): HistogramFamily {
    return new HistogramFamily(name, help, labelNames, buckets, this.registry);
  }

  forRoute(route: string): RouteMetrics {
    return new RouteMetrics(this, route);
  }

  forSplitSide(route: string, upstream: string): RouteMetrics {
    return new SplitSideMetrics(this, route, upstream);
  }
}

/** What prom-client's registry reads of a metric. */
interface Collectable {
  name: string;
  help: string;
  type: string;
  get(): Promise<{ name: string }> | { name: string };
}

/**
 * `registry`'s metrics in the OpenMetrics text format, with the exemplars of the latency
 * histograms. prom-client writes the format its registry was made for, and renames counters
 * (without _total) in place when it writes OpenMetrics: a registry of its own, made per scrape,
 * holds views of the metrics, so the Prometheus text of `registry` stays as it is.
 */
export function openMetricsText(registry: Registry): Promise<string> {
  const view = new Registry<OpenMetricsContentType>();
  view.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  for (const metric of registry.getMetricsAsArray() as unknown as Collectable[]) {
    const name = metric.type === 'counter' ? metric.name.replace(/_total$/, '') : metric.name;
    const proxy: Collectable = {
      name,
      help: metric.help,
      type: metric.type,
      get: async () => ({ ...(await metric.get()), name }),
    };
    view.registerMetric(proxy as unknown as Metric);
  }
  return view.metrics();
}

/**
 * The scraper prefers OpenMetrics (`application/openmetrics-text` in Accept, with a q at least
 * that of text/plain), as Prometheus asks for it (RFC 9110 §12.5.1 weights).
 */
export function prefersOpenMetrics(accept: string | undefined): boolean {
  if (accept === undefined || !accept.includes('openmetrics')) return false;
  let open = 0;
  let text = 0;
  for (const range of accept.split(',')) {
    const [type, ...params] = range.split(';').map((p) => p.trim().toLowerCase());
    const q = params.find((p) => p.startsWith('q='));
    const weight = q === undefined ? 1 : Number(q.slice(2));
    if (!(weight >= 0)) continue;
    if (type === 'application/openmetrics-text') open = Math.max(open, weight);
    else if (type === 'text/plain' || type === 'text/*' || type === '*/*') text = Math.max(text, weight);
  }
  return open > 0 && open >= text;
}
