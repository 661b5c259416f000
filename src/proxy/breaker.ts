import type { UpstreamConfig } from '../config/schema';
import { kindMask } from './failures';
import { RollingCounts } from './window';

export const CLOSED = 0;
const HALF_OPEN = 1;
export const OPEN = 2;
export type BreakerState = typeof CLOSED | typeof HALF_OPEN | typeof OPEN;

export const BREAKER_STATE_NAMES = ['closed', 'half-open', 'open'] as const;

/** Told of every state change (metrics, logs, the target's routable flag). */
export type BreakerListener = (from: BreakerState, to: BreakerState, now: number) => void;

/**
 * A circuit breaker for one target. Closed, it counts outcomes with plain counters and a ring of
 * buckets (no allocation per request) and opens after `consecutiveFailures` failures in a row or
 * when failures reach `failureRatio` of the rolling window. Open, it admits nothing until its open
 * time is over; that time grows by `backoffMultiplier` with every trip that follows a short
 * recovery, up to `maxOpenMs`. Half-open, it admits `halfOpenProbes` requests at a time and closes
 * once that many succeeded; one failure opens it again.
 */
export class CircuitBreaker {
  state: BreakerState = CLOSED;
  /** When an open breaker starts letting probes through (performance.now() time). */
  openUntil = 0;
  /** Trips in a row (a trip within maxOpenMs of the last recovery counts as repeated). */
  trips = 0;
  /** Failures counted by the breaker: a bit mask of failure kinds. */
  readonly failureMask: number;
  private consecutive = 0;
  private readonly window: RollingCounts;
  private closedAt = Number.NEGATIVE_INFINITY;
  private probesInFlight = 0;
  private probeSuccesses = 0;
  /** Probe slots are taken back after this, so a lost probe can never wedge the breaker half-open. */
  private probesExpireAt = 0;
  private readonly probeTimeoutMs: number;
  private readonly cfg: UpstreamConfig['breaker'];

  constructor(
    cfg: UpstreamConfig['breaker'],
    probeTimeoutMs: number,
    private readonly listener: BreakerListener,
  ) {
    this.cfg = cfg;
    this.failureMask = kindMask(cfg.failureOn);
    this.window = new RollingCounts(cfg.windowMs);
    this.probeTimeoutMs = probeTimeoutMs;
  }

  /** Whether a request may go to a breaker that is not closed; if so it is a probe and holds a slot. */
  tryProbe(now: number): boolean {
    if (this.state === CLOSED) return false;
    if (this.state === OPEN) {
      if (now < this.openUntil) return false;
      this.probesInFlight = 0;
      this.probeSuccesses = 0;
      this.transition(HALF_OPEN, now);
    }
    if (this.probesInFlight >= this.cfg.halfOpenProbes) {
      if (now < this.probesExpireAt) return false;
      this.probesInFlight = 0;
    }
    this.probesInFlight++;
    this.probesExpireAt = now + this.probeTimeoutMs;
    return true;
  }

  /** Whether tryProbe would let a request through now, without taking a slot (balancers look before they pick). */
  canProbe(now: number): boolean {
    if (this.state === CLOSED) return false;
    if (this.state === OPEN) return now >= this.openUntil;
    return this.probesInFlight < this.cfg.halfOpenProbes || now >= this.probesExpireAt;
  }

  /** Records the outcome of one exchange; `kind` is its failure bits (0 for a good answer). */
  record(kind: number, probe: boolean, now: number): void {
    const failed = (kind & this.failureMask) !== 0;
    if (probe) {
      if (this.probesInFlight > 0) this.probesInFlight--;
      if (this.state !== HALF_OPEN) return;
      if (failed) this.trip(now);
      else if (++this.probeSuccesses >= this.cfg.halfOpenProbes) this.close(now);
      return;
    }
    // Answers to requests sent before the breaker opened say nothing about the target now.
    if (this.state !== CLOSED) return;
    const w = this.window;
    w.addA(now);
    if (!failed) {
      this.consecutive = 0;
      return;
    }
    w.addB(now);
    const { consecutiveFailures, failureRatio, minRequests } = this.cfg;
    if (
      (consecutiveFailures > 0 && ++this.consecutive >= consecutiveFailures) ||
      (failureRatio > 0 && w.totalA >= minRequests && w.totalB >= failureRatio * w.totalA)
    ) {
      this.trip(now);
    }
  }

  /** A probe ended without a verdict (the client left, the request never reached the target). */
  release(probe: boolean): void {
    if (probe && this.probesInFlight > 0) this.probesInFlight--;
  }

  /** Lets probes through at once (an active health check just saw the target recover). */
  expireOpen(now: number): void {
    if (this.state === OPEN) this.openUntil = now;
  }

  /** Milliseconds until an open breaker lets a probe through. */
  msUntilProbe(now: number): number {
    return this.state === OPEN ? Math.max(0, this.openUntil - now) : 0;
  }

  private trip(now: number): void {
    const repeated = this.state === HALF_OPEN || now - this.closedAt < this.cfg.maxOpenMs;
    this.trips = repeated ? this.trips + 1 : 1;
    const openMs = Math.min(this.cfg.openMs * this.cfg.backoffMultiplier ** (this.trips - 1), this.cfg.maxOpenMs);
    this.openUntil = now + openMs;
    this.consecutive = 0;
    this.probesInFlight = 0;
    this.window.clear();
    this.transition(OPEN, now);
  }

  private close(now: number): void {
    this.closedAt = now;
    this.consecutive = 0;
    this.probesInFlight = 0;
    this.window.clear();
    this.transition(CLOSED, now);
  }

  private transition(to: BreakerState, now: number): void {
    const from = this.state;
    this.state = to;
    this.listener(from, to, now);
  }
}
