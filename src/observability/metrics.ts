import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

const STATUS_CLASS = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'];

/**
 * Per-route metric children, resolved once so that recording a request costs no label hashing.
 * Request counters are cached per method and status class as they appear.
 */
export class RouteMetrics {
  private readonly counters = new Map<string, Counter.Internal>();
  readonly total: Histogram.Internal<string>;
  readonly upstream: Histogram.Internal<string>;
  readonly added: Histogram.Internal<string>;

  constructor(
    private readonly metrics: GatewayMetrics,
    readonly route: string,
  ) {
    this.total = metrics.requestDuration.labels(route);
    this.upstream = metrics.upstreamDuration.labels(route);
    this.added = metrics.gatewayDuration.labels(route);
  }

  record(method: string, status: number, totalMs: number, upstreamMs: number): void {
    const cls = STATUS_CLASS[(status / 100) | 0] ?? '5xx';
    const key = method + cls;
    let c = this.counters.get(key);
    if (c === undefined) {
      c = this.metrics.requests.labels(this.route, method, cls);
      this.counters.set(key, c);
    }
    c.inc();
    this.total.observe(totalMs / 1000);
    if (upstreamMs >= 0) {
      this.upstream.observe(upstreamMs / 1000);
      this.added.observe(Math.max(0, totalMs - upstreamMs) / 1000);
    } else {
      this.added.observe(totalMs / 1000);
    }
  }
}

/** All metrics of one gateway instance, in a registry of its own (no global state). */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<string>;
  readonly requestDuration: Histogram<string>;
  readonly upstreamDuration: Histogram<string>;
  readonly gatewayDuration: Histogram<string>;

  constructor(opts: { processMetrics: boolean }) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'gateway_requests_total',
      help: 'Requests answered, by route, method and status class.',
      labelNames: ['route', 'method', 'status_class'],
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'gateway_request_duration_seconds',
      help: 'Total time from request arrival to the end of the response, by route.',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.upstreamDuration = new Histogram({
      name: 'gateway_upstream_duration_seconds',
      help: 'Time spent waiting on the upstream (request sent to last response byte), by route.',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.gatewayDuration = new Histogram({
      name: 'gateway_added_duration_seconds',
      help: 'Time the gateway itself added to a request (total minus upstream time), by route.',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: '' });
  }

  forRoute(route: string): RouteMetrics {
    return new RouteMetrics(this, route);
  }
}
