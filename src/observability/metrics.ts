import { Registry, collectDefaultMetrics } from 'prom-client';
import { CounterFamily, GaugeFamily, HistogramFamily, type CounterCell, type HistogramCell } from './fast-metrics';

/** Seconds; from half a millisecond (a cache hit) to 30 s (a slow upstream). */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

const STATUS_CLASS = ['0xx', '1xx', '2xx', '3xx', '4xx', '5xx'];

/**
 * Per-route metric cells, resolved once so that recording a request costs no label hashing.
 * Request counters are cached per method and status class as they appear.
 */
export class RouteMetrics {
  /** Request counters by method, then by status class index: no key string per request. */
  private readonly counters = new Map<string, (CounterCell | undefined)[]>();
  readonly total: HistogramCell;
  readonly upstream: HistogramCell;
  readonly added: HistogramCell;

  constructor(
    private readonly metrics: GatewayMetrics,
    readonly route: string,
  ) {
    this.total = metrics.requestDuration.child(route);
    this.upstream = metrics.upstreamDuration.child(route);
    this.added = metrics.gatewayDuration.child(route);
  }

  record(method: string, status: number, totalMs: number, upstreamMs: number): void {
    let cls = (status / 100) | 0;
    if (!(cls >= 0 && cls < STATUS_CLASS.length)) cls = 5;
    let byClass = this.counters.get(method);
    if (byClass === undefined) {
      byClass = [];
      this.counters.set(method, byClass);
    }
    let c = byClass[cls];
    if (c === undefined) {
      c = this.metrics.requests.child(this.route, method, STATUS_CLASS[cls]);
      byClass[cls] = c;
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

  constructor(opts: { processMetrics: boolean }) {
    this.requests = this.counter('gateway_requests_total', 'Requests answered, by route, method and status class.', ['route', 'method', 'status_class']);
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
}
