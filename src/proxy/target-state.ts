import { performance } from 'node:perf_hooks';
import type { UpstreamConfig } from '../config/schema';
import { BREAKER_STATE_NAMES, CLOSED, CircuitBreaker, OPEN, type BreakerState } from './breaker';

/** What the resilience machinery reports to (metrics and logs: observability/upstream-metrics.ts). */
export interface ResilienceEvents {
  breakerTransition(upstream: string, target: string, from: BreakerState, to: BreakerState, openMs: number): void;
  healthChanged(upstream: string, target: string, healthy: boolean, detail: string): void;
  healthChecked(upstream: string, target: string, ok: boolean): void;
  /** A request is sent again; `cause` is a failure kind or 'stale-connection'. */
  retried(upstream: string, cause: string): void;
  /** A retryable failure was not retried. */
  retrySkipped(upstream: string, reason: 'budget' | 'deadline' | 'no-target'): void;
  /** A request answered 503 without reaching the upstream. */
  rejected(upstream: string, reason: 'unavailable' | 'queue-full' | 'queue-timeout'): void;
  /** Panic mode starts or ends: too few targets take traffic, so all of them get it. */
  panicChanged(upstream: string, panic: boolean, routable: number, total: number): void;
  /** DNS discovery changed the targets of an upstream. */
  targetsChanged(upstream: string, added: readonly string[], removed: readonly string[]): void;
  /** A DNS resolution failed (the last good targets stay), or answered nothing; `streak` counts them in a row. */
  discoveryFailed(upstream: string, host: string, reason: string, streak: number): void;
}

export const NO_EVENTS: ResilienceEvents = {
  breakerTransition: () => undefined,
  healthChanged: () => undefined,
  healthChecked: () => undefined,
  retried: () => undefined,
  retrySkipped: () => undefined,
  rejected: () => undefined,
  panicChanged: () => undefined,
  targetsChanged: () => undefined,
  discoveryFailed: () => undefined,
};

/** Someone holding an admission: the relay marks probes so their outcome reaches the half-open breaker. */
export interface Ticket {
  probe: boolean;
}

/**
 * The one state of a target that passive checks (the breaker, fed by real traffic) and active
 * health checks both feed. `routable` is what the hot path reads: healthy and breaker closed.
 * A target out of the rotation always comes back: the breaker's open time runs out by itself, and
 * active probes keep running while a target is unhealthy.
 */
export class TargetState {
  routable = true;
  /** Verdict of the active health checks (always true when they are off). */
  healthy = true;
  readonly breaker: CircuitBreaker | null;
  /** Requests handed to the pool and not yet ended. */
  inFlight = 0;
  /** Of those, requests that found every connection busy and still wait for one. */
  queued = 0;
  /** Requests in flight beyond which a new one has to wait for a connection. */
  readonly capacity: number;
  readonly maxQueued: number;
  readonly queueTimeoutMs: number;
  /** Consecutive active probe results, for the thresholds. */
  checkPasses = 0;
  checkFailures = 0;
  lastCheck: { at: number; ok: boolean; detail: string } | null = null;
  /**
   * When the target last started taking traffic (performance.now() time), for slow start. Targets
   * there from the start count as always routable: ramping them all together would only slow the
   * start-up.
   */
  routableSince = Number.NEGATIVE_INFINITY;
  /** Taken out of the rotation by hand (admin API) until put back; health and breaker cannot undo it. */
  manual: 'drained' | 'ejected' | null = null;

  constructor(
    readonly upstream: string,
    readonly target: string,
    cfg: UpstreamConfig,
    private readonly events: ResilienceEvents,
  ) {
    this.capacity = cfg.pool.connections * cfg.pool.pipelining;
    this.maxQueued = cfg.queue.maxQueued;
    this.queueTimeoutMs = cfg.queue.timeoutMs;
    this.breaker = cfg.breaker.enabled
      ? new CircuitBreaker(cfg.breaker, cfg.timeouts.requestMs, (from, to, now) => {
          this.update();
          this.events.breakerTransition(upstream, target, from, to, to === OPEN ? this.breaker!.openUntil - now : 0);
        })
      : null;
  }

  /** Whether a request may go to this target; a request let through a half-open breaker is a probe. */
  admit(now: number, ticket: Ticket): boolean {
    if (this.routable) {
      ticket.probe = false;
      return true;
    }
    if (this.manual !== null || !this.healthy || this.breaker === null || !this.breaker.tryProbe(now)) return false;
    ticket.probe = true;
    return true;
  }

  /**
   * Whether a balancer may choose this target now: routable, or its breaker would let a probe
   * through. Unlike admit() it takes no probe slot.
   */
  usable(now: number): boolean {
    return this.routable || (this.manual === null && this.healthy && this.breaker !== null && this.breaker.canProbe(now));
  }

  /**
   * A target that joins a running upstream (found by DNS): with active checks on it waits out
   * healthyThreshold passing probes before traffic; either way its slow start begins now.
   */
  joining(awaitChecks: boolean): void {
    if (awaitChecks) this.healthy = false;
    this.update();
    this.routableSince = performance.now();
  }

  /** The outcome of one exchange with this target: failure bits, or 0 for a good answer. */
  record(kind: number, probe: boolean, now: number): void {
    this.breaker?.record(kind, probe, now);
  }

  /** An admitted request ended without a verdict on the target. */
  release(probe: boolean): void {
    this.breaker?.release(probe);
  }

  /** One active probe result; the thresholds decide when the verdict flips. */
  reportCheck(ok: boolean, detail: string, thresholds: { healthyThreshold: number; unhealthyThreshold: number }, now: number): void {
    this.lastCheck = { at: Date.now(), ok, detail };
    if (ok) {
      this.checkFailures = 0;
      this.checkPasses++;
      if (!this.healthy && this.checkPasses >= thresholds.healthyThreshold) {
        this.healthy = true;
        // The target answers its probes again: let real traffic confirm it rather than wait out the breaker.
        this.breaker?.expireOpen(now);
        this.update();
        this.events.healthChanged(this.upstream, this.target, true, detail);
      }
    } else {
      this.checkPasses = 0;
      this.checkFailures++;
      if (this.healthy && this.checkFailures >= thresholds.unhealthyThreshold) {
        this.healthy = false;
        this.update();
        this.events.healthChanged(this.upstream, this.target, false, detail);
      }
    }
  }

  /** Takes the target out of the rotation by hand, or (null) lets health and breaker decide again. */
  setManual(manual: 'drained' | 'ejected' | null): void {
    this.manual = manual;
    this.update();
  }

  /** Milliseconds until this target may take traffic again, as far as can be told now. */
  msUntilAvailable(now: number, healthIntervalMs: number): number {
    if (!this.healthy) return healthIntervalMs;
    return this.breaker?.msUntilProbe(now) ?? 0;
  }

  get breakerState(): (typeof BREAKER_STATE_NAMES)[number] {
    return BREAKER_STATE_NAMES[this.breaker?.state ?? CLOSED];
  }

  private update(): void {
    const was = this.routable;
    this.routable = this.manual === null && this.healthy && (this.breaker === null || this.breaker.state === CLOSED);
    if (this.routable && !was) this.routableSince = performance.now();
  }
}
