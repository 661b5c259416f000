import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { RequestContext } from '../context';
import { sendProblem, type ErrorCode } from '../errors';
import { CONNECT, errorKind, kindName, statusKind } from './failures';
import { failedOnReusedConnection } from './retry';
import type { Ticket } from './target-state';
import { QueueTimeoutError, RequestTimeoutError } from './upstream-errors';
import type { Target } from './upstreams';

/**
 * The resilient half of the relay handler (RelayHandler in relay.ts extends it): sends each
 * attempt of a request to a target, keeps the target's load and breaker bookkeeping exact, waits
 * for a saturated pool within bounds, and decides retries. One handler serves every attempt: a
 * retry dispatches it again to the target the upstream picks, as long as nothing was sent to the
 * client. All of it is plain fields and counters: nothing is allocated on the success path.
 */
export abstract class AttemptHandler implements Ticket {
  protected done = false;
  protected abortUpstream: ((err?: Error) => void) | null = null;
  /** The current attempt was let through a half-open breaker (Ticket). */
  probe = false;
  protected target!: Target;
  /** What each attempt sends; only the path changes from one target to the next (undici writes each target's Host). */
  private opts!: Dispatcher.DispatchOptions;
  private upstreamPath = '';
  private hasBody = false;
  protected status = 0;
  /** The outcome of the current attempt reached the target's breaker. */
  protected settled = false;
  private responseStarted = false;
  /** Counted in target.state.queued: waiting for a connection of a saturated pool. */
  protected waiting = false;
  private queueTimer: NodeJS.Timeout | null = null;
  /** A response head was taken for the client (the observer saw it): the request is not retried. */
  protected relayed = false;
  private retries = 0;
  /** Attempts moved to another target because theirs could not be reached (tryOtherTarget). */
  private failovers = 0;
  private staleRetried = false;
  /** Where the retry decided on goes once the current attempt has ended. */
  protected next: Target | null = null;

  constructor(readonly ctx: RequestContext) {}

  /** Ends the request for the client side (timer, upstream time); returns performance.now(). */
  protected abstract finish(): number;
  /** Stops the request with `err` whatever state it is in. */
  protected abstract cancel(err: Error): void;

  /** The first attempt; `opts.path` is filled in per target. */
  send(target: Target, opts: Dispatcher.DispatchOptions, upstreamPath: string): void {
    this.opts = opts;
    this.upstreamPath = upstreamPath;
    this.hasBody = opts.body !== null;
    this.dispatch(target);
  }

  /** Sends the request to `target`: the first attempt or a retry. */
  private dispatch(target: Target): void {
    const state = target.state;
    this.target = target;
    this.ctx.target = target;
    this.abortUpstream = null;
    this.settled = false;
    this.responseStarted = false;
    this.status = 0;
    if (state.inFlight >= state.capacity && !this.enqueue()) return;
    state.inFlight++;
    const opts = this.opts;
    opts.path = target.basePath + this.upstreamPath;
    if (this.ctx.trace !== null) this.ctx.trace.attemptStarted(target, opts.headers as string[]);
    target.pool.dispatch(opts, this);
  }

  /** Every connection of the target is busy: wait for one, within bounds, or answer 503 now. */
  private enqueue(): boolean {
    const state = this.target.state;
    if (state.queued >= state.maxQueued) {
      this.settled = true;
      state.release(this.probe);
      this.finish();
      this.ctx.route.upstream.events.rejected(this.ctx.route.upstream.name, 'queue-full');
      reject(this.ctx, 'UPSTREAM_QUEUE_FULL', 1);
      return false;
    }
    state.queued++;
    this.waiting = true;
    this.queueTimer = setTimeout(onQueueTimeout, state.queueTimeoutMs, this);
    return true;
  }

  /** The wait for a connection is over (connected, or the attempt ended while waiting). */
  protected leaveQueue(): void {
    this.waiting = false;
    this.target.state.queued--;
    if (this.queueTimer !== null) clearTimeout(this.queueTimer);
    this.queueTimer = null;
  }

  queueTimedOut(): void {
    this.queueTimer = null;
    if (this.done) return;
    this.ctx.route.upstream.events.rejected(this.ctx.route.upstream.name, 'queue-timeout');
    this.cancel(new QueueTimeoutError(this.target.state.queueTimeoutMs));
  }

  onResponseStarted(): void {
    this.responseStarted = true;
  }

  /** undici is done with the current attempt (it called onComplete, or onError with `err`). */
  protected attemptEnded(err?: Error): void {
    this.target.state.inFlight--;
    if (this.waiting) this.leaveQueue();
    if (this.ctx.trace !== null) this.ctx.trace.attemptEnded(this.status, err);
  }

  /** The attempt delivered a whole answer: its status is the breaker's verdict. */
  protected settleAnswer(now: number): void {
    if (!this.settled) this.target.state.record(statusKind(this.status), this.probe, now);
  }

  /** The client left: an attempt without a verdict gives back its probe slot. */
  protected releaseUnsettled(): void {
    if (!this.settled && this.next === null) {
      this.settled = true;
      this.target.state.release(this.probe);
    }
  }

  /** A 5xx answer that may be retried: drop it (and its connection) before the client sees anything. */
  protected retryAnswer(status: number): boolean {
    const kind = statusKind(status);
    this.settled = true;
    this.target.state.record(kind, this.probe, performance.now());
    if (!this.tryRetry(kind, false, null)) return false;
    this.abortUpstream!(Object.assign(new Error(`retrying a ${status} answer`), { code: 'UND_ERR_ABORTED' }));
    return true;
  }

  /**
   * Gives the breaker its verdict on a failed attempt, then retries it if it may be; true when a
   * retry is under way (the caller must not answer the client).
   */
  protected retryFailure(err: Error, code: ErrorCode): boolean {
    const kind = errorKind(code);
    const stale = !this.responseStarted && failedOnReusedConnection(err);
    if (!this.settled) {
      this.settled = true;
      // A failure that is not the upstream's (the client's body over its limit), a request that never
      // reached the target (still waiting for a connection, or refused by undici itself) and the
      // idle-socket race say nothing about the target's health.
      if (kind === 0 || (this.abortUpstream === null && kind !== CONNECT) || stale) this.target.state.release(this.probe);
      else this.target.state.record(kind, this.probe, performance.now());
    }
    if (err instanceof RequestTimeoutError || err instanceof QueueTimeoutError) return false;
    // undici calls onConnect when it starts writing the request: before that nothing was sent.
    const unsent = kind === CONNECT && this.abortUpstream === null && this.bodyUntouched();
    if (!((unsent && this.tryOtherTarget(err)) || this.tryRetry(kind, stale, err))) return false;
    this.scheduleRetry();
    return true;
  }

  /** No byte of the request body was read yet (undici reads it only once connected), or there is none. */
  private bodyUntouched(): boolean {
    const body = this.opts.body as Readable | null;
    return body === null || (!body.readableDidRead && !body.destroyed);
  }

  /**
   * The attempt never reached its target (refused, or the connection timed out) and nothing of the
   * request was consumed: whatever its method or body, it goes to another target, outside the
   * retry count and budget (nginx's next-upstream on error), at most once per other target and
   * within the deadline. The refused target's breaker still counts the failure.
   */
  private tryOtherTarget(err: Error): boolean {
    const { ctx } = this;
    const upstream = ctx.route.upstream;
    if (this.failovers >= upstream.targets.length - 1 || ctx.res.headersSent || ctx.res.destroyed) return false;
    const now = performance.now();
    if (now - ctx.startedAt >= ctx.route.requestTimeoutMs) {
      upstream.events.retrySkipped(upstream.name, 'deadline');
      return false;
    }
    const next = upstream.pick(now, this.target, this);
    if (next === null || next === this.target) {
      if (next !== null) next.state.release(this.probe);
      return false;
    }
    this.failovers++;
    upstream.events.retried(upstream.name, 'connect');
    ctx.log.info({ target: this.target.url, next: next.url, cause: 'connect', err: err.message }, 'retrying upstream request on another target');
    this.next = next;
    return true;
  }

  /**
   * Decides whether the failed attempt is tried again, and where (this.next). Only while nothing
   * reached the client, for requests without a body (a streamed body cannot be replayed) and with
   * a method the upstream retries, within the route deadline; either the idle-socket race (once)
   * or a failure of a kind the upstream retries, within the count and the retry budget.
   */
  private tryRetry(kind: number, staleConnection: boolean, err: Error | null): boolean {
    const { ctx } = this;
    if (this.hasBody || this.relayed || ctx.res.headersSent || ctx.res.destroyed) return false;
    const upstream = ctx.route.upstream;
    const policy = upstream.retry;
    // A request the upstream may have received is sent again only with a method declared safe to
    // repeat: the idle-socket race looks the same as an upstream that read the request and died.
    if (!policy.allowsMethod(ctx.req.method!)) return false;
    const stale = staleConnection && policy.staleConnection && !this.staleRetried;
    if (!stale && (this.retries >= policy.maxRetries || (kind & policy.onMask) === 0)) return false;
    const now = performance.now();
    if (now - ctx.startedAt >= ctx.route.requestTimeoutMs) {
      upstream.events.retrySkipped(upstream.name, 'deadline');
      return false;
    }
    if (!stale && !policy.hasBudget(now)) {
      upstream.events.retrySkipped(upstream.name, 'budget');
      return false;
    }
    const next = upstream.pick(now, stale ? null : this.target, this);
    if (next === null) {
      upstream.events.retrySkipped(upstream.name, 'no-target');
      return false;
    }
    if (stale) this.staleRetried = true;
    else {
      this.retries++;
      policy.spendBudget(now);
    }
    const cause = stale ? 'stale-connection' : kindName(kind);
    upstream.events.retried(upstream.name, cause);
    ctx.log.info({ target: this.target.url, next: next.url, cause, status: this.status || undefined, err: err?.message }, 'retrying upstream request');
    this.next = next;
    return true;
  }

  /** Dispatches the decided retry once undici is done with the failed attempt. */
  protected scheduleRetry(): void {
    queueMicrotask(() => {
      const next = this.next!;
      this.next = null;
      if (this.done) next.state.release(this.probe);
      else this.dispatch(next);
    });
  }
}

function onQueueTimeout(handler: AttemptHandler): void {
  handler.queueTimedOut();
}

/** A 503 made by the gateway itself (no target takes traffic, or the target's queue is full). */
export function reject(ctx: RequestContext, code: ErrorCode, retryAfterS: number): void {
  ctx.errorCode = code;
  sendProblem(ctx.res, ctx.id, code, { headers: { 'retry-after': retryAfterS }, extra: ctx.responseHeaders });
}
