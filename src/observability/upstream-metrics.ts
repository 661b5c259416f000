import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import { Counter, Gauge, type Aggregator, type Registry } from 'prom-client';
import { effectiveWeight } from '../proxy/balance';
import { BREAKER_STATE_NAMES, OPEN, type BreakerState } from '../proxy/breaker';
import type { ResilienceEvents } from '../proxy/target-state';
import type { Target, Upstream } from '../proxy/upstreams';

/**
 * Metrics and logs of the upstream resilience machinery. Counters move on events (breaker
 * transitions, retries, rejections: none on the success path); gauges are read from the targets
 * when Prometheus scrapes, so they cost nothing per request.
 */
export class UpstreamMetrics implements ResilienceEvents {
  private readonly transitions: Counter<string>;
  private readonly checks: Counter<string>;
  private readonly retries: Counter<string>;
  private readonly retriesSkipped: Counter<string>;
  private readonly rejections: Counter<string>;
  private readonly discoveryFailures: Counter<string>;

  constructor(
    registry: Registry,
    private readonly log: FastifyBaseLogger,
    upstreams: () => Iterable<Upstream>,
  ) {
    const registers = [registry];
    // `aggregator`: how the main thread of several workers merges the workers' values (each has its own pools and verdicts).
    const targetGauge = (name: string, help: string, value: (t: Target) => number, aggregator: Aggregator = 'sum') =>
      new Gauge({
        name,
        help,
        labelNames: ['upstream', 'target'],
        registers,
        aggregator,
        collect() {
          // Targets come and go with DNS discovery: a removed one must not linger with its last value.
          this.reset();
          for (const up of upstreams()) for (const t of up.targets) this.set({ upstream: up.name, target: t.url }, value(t));
        },
      });
    targetGauge('gateway_upstream_breaker_state', 'Circuit breaker state per target: 0 closed, 1 half-open, 2 open.', (t) => t.state.breaker?.state ?? 0, 'max');
    targetGauge(
      'gateway_upstream_target_healthy',
      'Active health verdict per target: 1 healthy, 0 unhealthy (always 1 without active checks).',
      (t) => (t.state.healthy ? 1 : 0),
      'min',
    );
    targetGauge('gateway_upstream_in_flight_requests', 'Requests handed to the target and not yet ended, waiting ones included.', (t) => t.state.inFlight);
    targetGauge(
      'gateway_upstream_queued_requests',
      'Requests waiting for a connection because every connection of the target is busy.',
      (t) => t.state.queued,
    );
    new Gauge({
      name: 'gateway_upstream_connections',
      help: 'Open connections of the target pool, in use or idle.',
      labelNames: ['upstream', 'target', 'state'],
      registers,
      collect() {
        for (const up of upstreams()) {
          for (const t of up.targets) {
            const s = t.pool.stats;
            this.set({ upstream: up.name, target: t.url, state: 'in_use' }, s.connected - s.free);
            this.set({ upstream: up.name, target: t.url, state: 'idle' }, s.free);
          }
        }
      },
    });
    targetGauge('gateway_upstream_target_weight', 'Configured (or SRV) weight per target.', (t) => t.weight, 'first');
    new Gauge({
      name: 'gateway_upstream_target_effective_weight',
      help: 'Weight the balancer gives each target now: the configured one, lowered while slow start ramps a target that joined or recovered.',
      labelNames: ['upstream', 'target'],
      registers,
      // Each worker ramps its own view of a target: the lowest is the one still holding back.
      aggregator: 'min',
      collect() {
        this.reset();
        const now = performance.now();
        for (const up of upstreams()) for (const t of up.targets) this.set({ upstream: up.name, target: t.url }, effectiveWeight(up.config, t, now));
      },
    });
    new Gauge({
      name: 'gateway_upstream_targets',
      help: 'Targets per upstream, by where they come from (static: the configuration, dns: DNS discovery).',
      labelNames: ['upstream', 'source'],
      registers,
      aggregator: 'first',
      collect() {
        this.reset();
        for (const up of upstreams()) {
          let dns = 0;
          for (const t of up.targets) if (t.source === 'dns') dns++;
          this.set({ upstream: up.name, source: 'static' }, up.targets.length - dns);
          this.set({ upstream: up.name, source: 'dns' }, dns);
        }
      },
    });
    new Gauge({
      name: 'gateway_upstream_panic',
      help: 'Panic mode per upstream: 1 while fewer than minHealthyPercent of its targets are routable and all of them take traffic.',
      labelNames: ['upstream'],
      registers,
      aggregator: 'max',
      collect() {
        for (const up of upstreams()) this.set({ upstream: up.name }, up.panicking ? 1 : 0);
      },
    });
    this.discoveryFailures = new Counter({
      name: 'gateway_upstream_discovery_failures_total',
      help: 'DNS resolutions of upstream targets that failed (the last good targets stay) or answered no address, by reason.',
      labelNames: ['upstream', 'reason'],
      registers,
    });
    this.transitions = new Counter({
      name: 'gateway_upstream_breaker_transitions_total',
      help: 'Circuit breaker state changes per target, by the state entered.',
      labelNames: ['upstream', 'target', 'to'],
      registers,
    });
    this.checks = new Counter({
      name: 'gateway_upstream_health_checks_total',
      help: 'Active health probes per target, by result.',
      labelNames: ['upstream', 'target', 'result'],
      registers,
    });
    this.retries = new Counter({
      name: 'gateway_upstream_retries_total',
      help: 'Requests sent again after a failed attempt, by the failure kind (or stale-connection).',
      labelNames: ['upstream', 'cause'],
      registers,
    });
    this.retriesSkipped = new Counter({
      name: 'gateway_upstream_retries_skipped_total',
      help: 'Retryable failures that were not retried: retry budget spent, deadline passed, or no target left.',
      labelNames: ['upstream', 'reason'],
      registers,
    });
    this.rejections = new Counter({
      name: 'gateway_upstream_rejected_total',
      help: 'Requests answered 503 without reaching the upstream: no target available, queue full, or queue wait over.',
      labelNames: ['upstream', 'reason'],
      registers,
    });
  }

  breakerTransition(upstream: string, target: string, from: BreakerState, to: BreakerState, openMs: number): void {
    this.transitions.inc({ upstream, target, to: BREAKER_STATE_NAMES[to] });
    const fields = { upstream, target, from: BREAKER_STATE_NAMES[from], to: BREAKER_STATE_NAMES[to] };
    if (to === OPEN) this.log.warn({ ...fields, openMs: Math.round(openMs) }, 'circuit breaker opened');
    else this.log.info(fields, 'circuit breaker changed state');
  }

  healthChanged(upstream: string, target: string, healthy: boolean, detail: string): void {
    if (healthy) this.log.info({ upstream, target, detail }, 'upstream target healthy again');
    else this.log.warn({ upstream, target, detail }, 'upstream target unhealthy: out of the rotation');
  }

  healthChecked(upstream: string, target: string, ok: boolean): void {
    this.checks.inc({ upstream, target, result: ok ? 'success' : 'failure' });
  }

  retried(upstream: string, cause: string): void {
    this.retries.inc({ upstream, cause });
  }

  retrySkipped(upstream: string, reason: string): void {
    this.retriesSkipped.inc({ upstream, reason });
  }

  rejected(upstream: string, reason: string): void {
    this.rejections.inc({ upstream, reason });
  }

  panicChanged(upstream: string, panic: boolean, routable: number, total: number): void {
    if (panic) this.log.warn({ upstream, routable, total }, 'panic mode: too few targets take traffic, sending to all of them');
    else this.log.info({ upstream, routable, total }, 'panic mode over');
  }

  targetsChanged(upstream: string, added: readonly string[], removed: readonly string[]): void {
    this.log.info({ upstream, added, removed }, 'upstream targets changed by discovery');
  }

  discoveryFailed(upstream: string, host: string, reason: string, streak: number): void {
    this.discoveryFailures.inc({ upstream, reason: reason === 'empty' ? 'empty' : 'error' });
    // Every failure is counted; a DNS outage is logged when it starts, not every second it lasts.
    if (streak === 1) this.log.warn({ upstream, host, reason }, reason === 'empty' ? 'DNS name resolved to no address' : 'DNS resolution failed; keeping the last known targets');
  }
}
