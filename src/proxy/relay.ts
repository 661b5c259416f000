import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import type { RequestContext } from '../context';
import { sendProblem, type ErrorCode } from '../errors';
import { CONNECT, errorKind, kindName, statusKind } from './failures';
import { copyRequestHeaders, copyResponseHeaders, type ClientHeaderFacts } from './headers';
import { failedOnReusedConnection } from './retry';
import type { Ticket } from './target-state';
import { QueueTimeoutError, RequestTimeoutError, upstreamErrorCode } from './upstream-errors';
import type { Target } from './upstreams';

/**
 * Watches a relayed response as it streams, for steps that need the bytes (the cache fill).
 * Called only for final (non-1xx) responses.
 */
export interface ResponseObserver {
  onHeaders(status: number, headers: readonly string[]): void;
  onData(chunk: Buffer): void;
  onComplete(): void;
  onError(): void;
}

/**
 * The hot path: a minimal undici dispatch handler (legacy callback form, which undici calls without
 * wrapping) that streams the upstream response straight into the hijacked Node response.
 *
 * One handler serves every attempt of a request: a retry dispatches it again, to the target the
 * upstream picks, as long as nothing was sent to the client (see tryRetry).
 */
class RelayHandler implements Dispatcher.DispatchHandler, Ticket {
  private abortUpstream: ((err?: Error) => void) | null = null;
  private resumeUpstream: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private done = false;
  /** Set when the request must stop before undici handed us its abort function. */
  private pendingAbort: Error | null = null;
  /** The current attempt was let through a half-open breaker (Ticket). */
  probe = false;
  private target!: Target;
  /** What each attempt sends; only the path and Host change from one target to the next. */
  private opts!: Dispatcher.DispatchOptions;
  private upstreamPath = '';
  /** Index of the Host value in opts.headers, or -1 when the client's Host is preserved. */
  private hostAt = -1;
  private hasBody = false;
  private status = 0;
  /** The outcome of the current attempt reached the target's breaker. */
  private settled = false;
  private responseStarted = false;
  /** Counted in target.state.queued: waiting for a connection of a saturated pool. */
  private waiting = false;
  private queueTimer: NodeJS.Timeout | null = null;
  private retries = 0;
  private staleRetried = false;
  /** Where the retry decided on goes once the current attempt has ended. */
  private next: Target | null = null;

  constructor(private readonly ctx: RequestContext) {}

  start(timeoutMs: number): void {
    const remaining = timeoutMs - (performance.now() - this.ctx.startedAt);
    this.timer = setTimeout(() => this.onTimeout(timeoutMs), Math.max(1, remaining));
    this.ctx.cancel = () => this.onClientClose();
  }

  private onTimeout(timeoutMs: number): void {
    this.timer = null;
    this.cancel(new RequestTimeoutError(timeoutMs));
  }

  private onClientClose(): void {
    if (this.done) return;
    this.finish();
    if (!this.settled && this.next === null) {
      this.settled = true;
      this.target.state.release(this.probe);
    }
    this.ctx.observer?.onError();
    const err = new Error('client closed the connection');
    if (this.abortUpstream) this.abortUpstream(err);
    else this.pendingAbort = err;
  }

  private cancel(err: Error): void {
    if (this.done) return;
    if (this.abortUpstream) {
      this.abortUpstream(err);
    } else {
      // Still queued for a connection: answer now; onConnect aborts the dispatch when it comes.
      this.pendingAbort = err;
      this.fail(err);
    }
  }

  /** The first attempt; `opts.path` is filled in per target. */
  send(target: Target, opts: Dispatcher.DispatchOptions, upstreamPath: string, hostAt: number): void {
    this.opts = opts;
    this.upstreamPath = upstreamPath;
    this.hostAt = hostAt;
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
    if (state.inFlight >= state.capacity && !this.enqueue()) return;
    state.inFlight++;
    const opts = this.opts;
    opts.path = target.basePath + this.upstreamPath;
    if (this.hostAt >= 0) (opts.headers as string[])[this.hostAt] = target.host;
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
  private leaveQueue(): void {
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

  onConnect(abort: (err?: Error) => void): void {
    if (this.waiting) this.leaveQueue();
    if (this.pendingAbort) {
      abort(this.pendingAbort);
      return;
    }
    this.abortUpstream = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true;
    this.status = statusCode;
    if (statusCode >= 500 && this.retryAnswer(statusCode)) return false;
    const { ctx } = this;
    const res = ctx.res;
    this.resumeUpstream = resume;
    const headers: string[] = [];
    const hasDate = copyResponseHeaders(rawHeaders, headers);
    headers.push('x-request-id', ctx.id);
    if (ctx.responseHeaders !== null) for (const h of ctx.responseHeaders) headers.push(h);
    res.sendDate = !hasDate;
    try {
      res.writeHead(statusCode, headers);
    } catch {
      // Node refused what the upstream sent (invalid status or header bytes): not relayable.
      this.abortUpstream?.(Object.assign(new Error('unrelayable upstream response'), { code: 'UND_ERR_INFO' }));
      return false;
    }
    this.ctx.observer?.onHeaders(statusCode, headers);
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.ctx.observer?.onData(chunk);
    if (this.ctx.res.write(chunk)) return true;
    this.ctx.res.once('drain', this.resumeUpstream!);
    return false;
  }

  onComplete(): void {
    this.target.state.inFlight--;
    if (this.done) return;
    const now = this.finish();
    if (!this.settled) this.target.state.record(statusKind(this.status), this.probe, now);
    this.ctx.observer?.onComplete();
    this.ctx.res.end();
  }

  onError(err: Error): void {
    this.target.state.inFlight--;
    if (this.waiting) this.leaveQueue();
    if (this.done) return;
    if (this.next !== null) return this.scheduleRetry();
    this.fail(err);
  }

  /** A 5xx answer that may be retried: drop it (and its connection) before the client sees anything. */
  private retryAnswer(status: number): boolean {
    const kind = statusKind(status);
    this.settled = true;
    this.target.state.record(kind, this.probe, performance.now());
    if (!this.tryRetry(kind, false, null)) return false;
    this.abortUpstream!(Object.assign(new Error(`retrying a ${status} answer`), { code: 'UND_ERR_ABORTED' }));
    return true;
  }

  /**
   * Decides whether the failed attempt is tried again, and where (this.next). Only while nothing
   * reached the client, for requests without a body (a streamed body cannot be replayed), within
   * the route deadline; either the idle-socket race (once, any method) or a failure of a kind the
   * upstream retries, for a method it retries, within the count and the retry budget.
   */
  private tryRetry(kind: number, staleConnection: boolean, err: Error | null): boolean {
    const { ctx } = this;
    if (this.hasBody || ctx.res.headersSent || ctx.res.destroyed) return false;
    const upstream = ctx.route.upstream;
    const policy = upstream.retry;
    const stale = staleConnection && policy.staleConnection && !this.staleRetried;
    if (!stale && (this.retries >= policy.maxRetries || (kind & policy.onMask) === 0 || !policy.allowsMethod(ctx.req.method!))) return false;
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
  private scheduleRetry(): void {
    queueMicrotask(() => {
      const next = this.next!;
      this.next = null;
      if (this.done) next.state.release(this.probe);
      else this.dispatch(next);
    });
  }

  private fail(err: Error): void {
    const code = upstreamErrorCode(err);
    const kind = errorKind(code);
    const stale = !this.responseStarted && failedOnReusedConnection(err);
    if (!this.settled) {
      this.settled = true;
      // Neither a request that never reached the target (still waiting for a connection, or
      // refused by undici itself) nor the idle-socket race says anything about the target's health.
      if ((this.abortUpstream === null && kind !== CONNECT) || stale) this.target.state.release(this.probe);
      else this.target.state.record(kind, this.probe, performance.now());
    }
    const gatewayTimeout = err instanceof RequestTimeoutError || err instanceof QueueTimeoutError;
    if (!gatewayTimeout && this.tryRetry(kind, stale, err)) return this.scheduleRetry();
    this.finish();
    this.ctx.observer?.onError();
    const { ctx } = this;
    ctx.errorCode = code;
    if (!ctx.res.headersSent) ctx.log.warn({ err: { message: err.message, code: (err as { code?: string }).code }, target: ctx.target?.origin }, 'upstream request failed');
    // sendProblem cuts the connection when the response already started: a truncated body must
    // never look complete.
    sendProblem(ctx.res, ctx.id, code);
  }

  private finish(): number {
    this.done = true;
    if (this.timer !== null) clearTimeout(this.timer);
    const now = performance.now();
    this.ctx.upstreamMs = now - this.ctx.upstreamStartedAt;
    return now;
  }
}

function onQueueTimeout(handler: RelayHandler): void {
  handler.queueTimedOut();
}

/** A 503 made by the gateway itself (no target takes traffic, or the target's queue is full). */
function reject(ctx: RequestContext, code: ErrorCode, retryAfterS: number): void {
  ctx.errorCode = code;
  sendProblem(ctx.res, ctx.id, code, { headers: { 'retry-after': retryAfterS } });
}

/** Forwards the request of `ctx` to the next target of its route's upstream that takes traffic. */
export function relay(ctx: RequestContext): void {
  const route = ctx.route;
  const upstream = route.upstream;
  const handler = new RelayHandler(ctx);
  const target = upstream.pick(ctx.startedAt, null, handler);
  if (target === null) {
    upstream.events.rejected(upstream.name, 'unavailable');
    return reject(ctx, 'UPSTREAM_UNAVAILABLE', upstream.retryAfterSeconds(ctx.startedAt));
  }
  upstream.retry.countRequest(ctx.startedAt);
  const req = ctx.req;

  const facts: ClientHeaderFacts = {
    host: undefined,
    xForwardedFor: undefined,
    xForwardedProto: undefined,
    xForwardedHost: undefined,
    forwarded: undefined,
    hasBody: false,
  };
  const headers: string[] = [];
  copyRequestHeaders(req.rawHeaders, route.dropRequestHeaders, headers, facts);

  const peer = req.socket.remoteAddress ?? '';
  const trusted = ctx.peerTrusted;
  const proto = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  const hostAt = route.config.preserveHost && facts.host ? -1 : headers.length + 1;
  headers.push(
    'host',
    route.config.preserveHost && facts.host ? facts.host : target.host,
    'x-forwarded-for',
    trusted && facts.xForwardedFor ? `${facts.xForwardedFor}, ${peer}` : peer,
    'x-forwarded-proto',
    (trusted && facts.xForwardedProto) || proto,
    'x-forwarded-host',
    (trusted && facts.xForwardedHost) || facts.host || '',
    'x-request-id',
    ctx.id,
  );
  if (trusted && facts.forwarded) headers.push('forwarded', facts.forwarded);
  if (ctx.upstreamHeaders !== null) for (const h of ctx.upstreamHeaders) headers.push(h);

  handler.start(route.requestTimeoutMs);
  ctx.upstreamStartedAt = performance.now();
  handler.send(
    target,
    {
      path: '',
      method: req.method as Dispatcher.HttpMethod,
      headers,
      body: facts.hasBody ? req : null,
    },
    route.rewrite(ctx.path) + ctx.query,
    hostAt,
  );
}
