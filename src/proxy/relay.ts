import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import type { RequestContext, UpstreamExchange } from '../context';
import { GatewayError, sendProblem } from '../errors';
import { relayGrpc } from '../grpc/relay';
import { AttemptHandler, reject } from './attempts';
import type { Timed } from './deadlines';
import { copyRequestHeaders, copyResponseHeaders, type ClientHeaderFacts, type ResponseHeaderFacts } from './headers';
import { PhaseTimeoutError, RequestTimeoutError, upstreamErrorCode } from './upstream-errors';

/** What the wheel entry of a request times (besides the request deadline, always). */
const PHASE_NONE = 0;
/** From the request fully sent to the response head: timeouts.headersMs. */
const PHASE_HEADERS = 1;
/** From one body chunk to the next: timeouts.bodyMs. */
const PHASE_BODY = 2;

/**
 * Watches a relayed response as it streams, for steps that need the bytes (the cache fill).
 * Called only for final (non-1xx) responses. It sees what the client gets: headers and body after
 * the route's response transform (header rules, envelope).
 */
export interface ResponseObserver {
  /** Called just before the head is written: the observer may still change the values of the gateway's own headers (X-Cache). */
  onHeaders(status: number, headers: string[]): void;
  onData(chunk: Buffer): void;
  onComplete(): void;
  onError(): void;
  /**
   * The upstream failed (error, timeout, 5xx) before anything reached the client: true when the
   * observer answered the client itself instead (the cache's stale-if-error).
   */
  takeOver?(): boolean;
  /**
   * A 304 arrived (called before anything reaches the client): true when the observer answered the
   * client itself, which it does when the 304 answers its own conditional request (cache revalidation).
   */
  notModified?(rawHeaders: Buffer[]): boolean;
}

/**
 * Rewrites a relayed response on its way to the client (route policies: header rules, envelope).
 * It edits the upstream's header list in place, before the gateway adds its own, and returns how to
 * wrap the body, or null to relay the body as it comes.
 */
export type ResponseTransform = (ctx: RequestContext, status: number, headers: string[]) => BodyWrap | null;

/** Bytes written around the upstream body; `whenEmpty` stands in for a body that turns out empty. */
export interface BodyWrap {
  readonly head: Buffer;
  readonly tail: Buffer;
  readonly whenEmpty: Buffer;
}

/**
 * The hot path: a minimal undici dispatch handler (legacy callback form, which undici calls without
 * wrapping) that streams the upstream response straight into the hijacked Node response.
 * Targets, breakers, queueing and retries are the AttemptHandler's (attempts.ts).
 */
class RelayHandler extends AttemptHandler implements Dispatcher.DispatchHandler, UpstreamExchange, ResponseHeaderFacts, Timed {
  private resumeUpstream: (() => void) | null = null;
  deadlineAt = 0;
  deadlineSlot = -1;
  deadlinePrev: Timed | null = null;
  deadlineNext: Timed | null = null;
  /** performance.now() at which the route's overall deadline passes. */
  private requestDeadlineAt = 0;
  /** What the armed deadline times, when it is sooner than the request deadline (PHASE_*). */
  private phase = PHASE_NONE;
  /** Re-arms the body timeout and resumes the upstream once a slow client caught up (made on first use). */
  private onDrain: (() => void) | null = null;
  /** Set when the request must stop before undici handed us its abort function. */
  private pendingAbort: Error | null = null;
  private wrap: BodyWrap | null = null;
  /** The response head, ready but not written yet (see onHeaders). */
  private head: string[] | null = null;
  private bodySeen = false;
  hasDate = false;
  contentLength = -1;
  /** Body bytes still to come of an announced Content-Length (-1: unknown length, or wrapped). */
  private bodyLeft = -1;

  /** Arms the route's overall deadline (counted from the request's arrival) and the client-close hook. */
  start(): void {
    const route = this.ctx.route;
    this.requestDeadlineAt = this.ctx.startedAt + route.requestTimeoutMs;
    route.upstream.deadlines.arm(this, this.requestDeadlineAt);
    this.ctx.exchange = this;
  }

  deadlinePassed(): void {
    const upstream = this.ctx.route.upstream;
    switch (this.phase) {
      case PHASE_HEADERS:
        return this.cancel(new PhaseTimeoutError('UND_ERR_HEADERS_TIMEOUT', `no response headers within ${upstream.headersMs} ms`));
      case PHASE_BODY:
        return this.cancel(new PhaseTimeoutError('UND_ERR_BODY_TIMEOUT', `the response body paused for more than ${upstream.bodyMs} ms`));
    }
    this.cancel(new RequestTimeoutError(this.ctx.route.requestTimeoutMs));
  }

  /**
   * Times `phase` for `ms` from now on the one wheel entry of the request, or only the request
   * deadline when that comes first (or for PHASE_NONE).
   */
  private time(phase: number, ms: number): void {
    const wheel = this.ctx.route.upstream.deadlines;
    wheel.disarm(this);
    const at = phase === PHASE_NONE ? this.requestDeadlineAt : performance.now() + ms;
    if (at < this.requestDeadlineAt) {
      this.phase = phase;
      wheel.arm(this, at);
    } else {
      this.phase = PHASE_NONE;
      wheel.arm(this, this.requestDeadlineAt);
    }
  }

  /** undici wrote the whole request: the wait for the response head starts. */
  onRequestSent(): void {
    if (!this.done && this.status === 0) this.time(PHASE_HEADERS, this.ctx.route.upstream.headersMs);
  }

  abandon(): void {
    if (this.done) return;
    this.finish();
    this.releaseUnsettled();
    this.ctx.observer?.onError();
    const err = new Error('client closed the connection');
    if (this.abortUpstream) this.abortUpstream(err);
    else this.pendingAbort = err;
  }

  protected cancel(err: Error): void {
    if (this.done) return;
    if (this.abortUpstream) {
      this.abortUpstream(err);
    } else {
      // Still queued for a connection: answer now; onConnect aborts the dispatch when it comes.
      this.pendingAbort = err;
      this.fail(err);
    }
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
    if (statusCode < 200) {
      if (statusCode === 103 || statusCode === 102) this.interim(statusCode, rawHeaders);
      return true;
    }
    this.status = statusCode;
    if (statusCode >= 500 && this.retryAnswer(statusCode)) return false;
    const { ctx } = this;
    if (statusCode >= 500 && ctx.observer?.takeOver?.() === true) {
      this.finish();
      this.abortUpstream?.(Object.assign(new Error('answered from cache'), { code: 'UND_ERR_ABORTED' }));
      return false;
    }
    if (statusCode === 304 && ctx.observer?.notModified?.(rawHeaders) === true) {
      // A 304 has no body: the exchange completes by itself and the connection stays reusable.
      this.settleAnswer(this.finish());
      return true;
    }
    const res = ctx.res;
    this.resumeUpstream = resume;
    const headers: string[] = [];
    copyResponseHeaders(rawHeaders, headers, this.target.headerStrings, this);
    const transform = ctx.route.responseTransform;
    if (transform !== null) this.wrap = transform(ctx, statusCode, headers);
    headers.push('x-request-id', ctx.id);
    if (ctx.responseHeaders !== null) for (const h of ctx.responseHeaders) headers.push(h);
    res.sendDate = !this.hasDate;
    this.bodyLeft = this.wrap === null ? this.contentLength : -1;
    // The head goes out with the first body bytes (or the end): until then a response whose framing
    // breaks (a bad chunk size in the first packet) can still be answered 502.
    this.head = headers;
    this.relayed = true;
    this.ctx.observer?.onHeaders(statusCode, headers);
    this.time(PHASE_BODY, ctx.route.upstream.bodyMs);
    return true;
  }

  /** Writes the response head (and a wrap's opening bytes); false when Node refused the upstream's head. */
  private flushHead(): boolean {
    const headers = this.head!;
    this.head = null;
    try {
      this.ctx.res.writeHead(this.status, headers);
    } catch {
      // Invalid status or header bytes from the upstream: not relayable.
      return false;
    }
    if (this.wrap !== null) this.write(this.wrap.head);
    return true;
  }

  /**
   * Forwards an interim response (RFC 9110 §15.2) to an HTTP/1.1 client before the final one: 103
   * Early Hints with its headers (Node writes it only when it carries a valid Link), 102 Processing.
   * undici hands over every 1xx but 100 (it drops the connection on an unsolicited 100 Continue; the
   * client's own Expect: 100-continue is answered by Node and never forwarded). Other 1xx are dropped.
   */
  private interim(statusCode: number, rawHeaders: Buffer[]): void {
    const res = this.ctx.res;
    if (res.headersSent || this.ctx.req.httpVersionMinor < 1 || this.ctx.req.httpVersionMajor !== 1) return;
    if (statusCode === 102) {
      res.writeProcessing();
      return;
    }
    const list: string[] = [];
    copyResponseHeaders(rawHeaders, list, this.target.headerStrings);
    const hints: Record<string, string | string[]> = {};
    const links: string[] = [];
    for (let i = 0; i < list.length; i += 2) {
      const name = list[i].toLowerCase();
      // Node takes one link per element: a field value may list several.
      if (name === 'link') for (const l of list[i + 1].split(/,\s*(?=<)/)) links.push(l);
      else hints[name] = hints[name] === undefined ? list[i + 1] : `${hints[name] as string}, ${list[i + 1]}`;
    }
    hints.link = links;
    try {
      res.writeEarlyHints(hints);
    } catch {
      // A Link Node will not write: the hint is only a hint.
    }
  }

  /** Writes gateway-made body bytes (a wrap); they are small, so backpressure is left to the next chunk. */
  private write(bytes: Buffer): void {
    this.ctx.observer?.onData(bytes);
    this.ctx.res.write(bytes);
  }

  onData(chunk: Buffer): boolean {
    if (this.head !== null && !this.flushHead()) {
      this.abortUpstream?.(unrelayable());
      return false;
    }
    if (this.wrap !== null) this.bodySeen = true;
    this.ctx.observer?.onData(chunk);
    if (this.bodyLeft > 0 && (this.bodyLeft -= chunk.length) === 0) {
      // The last bytes the upstream announced: the response ends with them, in one write. undici
      // reports the exchange complete right after, in the same parse.
      this.ctx.res.end(chunk);
      return true;
    }
    if (this.ctx.res.write(chunk)) {
      this.time(PHASE_BODY, this.ctx.route.upstream.bodyMs);
      return true;
    }
    // The upstream is paused for the client: no body timeout until the client caught up.
    this.time(PHASE_NONE, 0);
    this.ctx.res.once('drain', (this.onDrain ??= () => {
      if (this.done) return;
      this.time(PHASE_BODY, this.ctx.route.upstream.bodyMs);
      this.resumeUpstream!();
    }));
    return false;
  }

  onComplete(): void {
    this.attemptEnded();
    if (this.done) return;
    if (this.head !== null && !this.flushHead()) return this.fail(unrelayable());
    const now = this.finish();
    const wrap = this.wrap;
    if (wrap !== null) {
      if (!this.bodySeen) this.write(wrap.whenEmpty);
      this.write(wrap.tail);
    }
    this.settleAnswer(now);
    this.ctx.observer?.onComplete();
    if (!this.ctx.res.writableEnded) this.ctx.res.end();
  }

  onError(err: Error): void {
    this.attemptEnded(err);
    if (this.done) return;
    // The attempt's headers or body timeout ends with it (a retry times its own).
    if (this.phase !== PHASE_NONE) this.time(PHASE_NONE, 0);
    if (this.next !== null) return this.scheduleRetry();
    this.fail(err);
  }

  private fail(err: Error): void {
    const code = upstreamErrorCode(err);
    if (this.retryFailure(err, code)) return;
    this.finish();
    if (this.ctx.observer?.takeOver?.() === true) return;
    this.ctx.observer?.onError();
    const { ctx } = this;
    ctx.errorCode = code;
    if (!ctx.res.headersSent && !(err instanceof GatewayError)) ctx.log.warn(failureFields(err, ctx.target?.origin), 'upstream request failed');
    // sendProblem cuts the connection when the response already started: a truncated body must
    // never look complete.
    sendProblem(ctx.res, ctx.id, code, { detail: err instanceof GatewayError ? err.message : undefined, extra: ctx.responseHeaders });
  }

  protected finish(): number {
    this.done = true;
    this.ctx.route.upstream.deadlines.disarm(this);
    const now = performance.now();
    this.ctx.upstreamMs = now - this.ctx.upstreamStartedAt;
    return now;
  }
}

/**
 * The fields of the failure log line: the error, and the TLS alert behind a closed socket when the
 * upstream refused our certificate (see watchSocket in retry.ts).
 */
function failureFields(err: Error, target: string | undefined): Record<string, unknown> {
  const fields: Record<string, unknown> = { err: { message: err.message, code: (err as { code?: string }).code }, target };
  const cause = err.cause as { message?: unknown; code?: unknown } | undefined;
  if (typeof cause?.code === 'string' && cause.code.startsWith('ERR_SSL_')) {
    fields.tlsAlert = cause.code;
    fields.hint = 'the upstream refused the TLS client certificate (missing, unknown CA or rejected); check upstreams.<name>.tls.certFile';
  }
  return fields;
}

function unrelayable(): Error {
  return Object.assign(new Error('unrelayable upstream response'), { code: 'UND_ERR_INFO' });
}

/** Forwards the request of `ctx` to the next target of its route's upstream that takes traffic. */
export function relay(ctx: RequestContext): void {
  // The side of a split is chosen last, so that match rules and sticky keys see the authenticated consumer.
  if (ctx.route.split !== null) ctx.route = ctx.route.split.pick(ctx);
  const route = ctx.route;
  if (route.grpc) return relayGrpc(ctx);
  const upstream = route.upstream;
  const handler = new RelayHandler(ctx);
  const target = upstream.pick(ctx.startedAt, null, handler);
  if (target === null) {
    upstream.events.rejected(upstream.name, 'unavailable');
    if (ctx.observer?.takeOver?.() === true) return;
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
  if (ctx.bodyUnannounced) facts.hasBody = true;

  const peer = ctx.peer;
  const trusted = ctx.peerTrusted;
  const proto = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  // Without a Host of ours, undici writes its pool's own (the target's host), made once per pool:
  // one header less to validate per request, and a retry on another target gets that target's.
  if (route.config.preserveHost && facts.host) headers.push('host', facts.host);
  headers.push(
    'x-forwarded-for',
    trusted && facts.xForwardedFor ? `${facts.xForwardedFor}, ${peer}` : peer,
    'x-forwarded-proto',
    (trusted && facts.xForwardedProto) || proto,
    'x-request-id',
    ctx.id,
  );
  // An HTTP/1.0 request may come without a Host (or with an empty one): then there is no host to
  // pass on, and an empty X-Forwarded-Host would make upstreams build URLs for a host named "".
  const forwardedHost = (trusted && facts.xForwardedHost) || facts.host;
  if (forwardedHost) headers.push('x-forwarded-host', forwardedHost);
  if (trusted && facts.forwarded) headers.push('forwarded', facts.forwarded);
  if (ctx.upstreamHeaders !== null) for (const h of ctx.upstreamHeaders) headers.push(h);

  handler.start();
  ctx.upstreamStartedAt = performance.now();
  const path = route.rewrite(ctx.path) + ctx.query;
  const mirror = route.mirror;
  let body = facts.hasBody ? (ctx.body ?? req) : null;
  if (mirror !== null && body !== null) body = mirror.tee(ctx, headers, path, body);
  handler.send(
    target,
    {
      path: '',
      method: req.method as Dispatcher.HttpMethod,
      headers,
      body,
    },
    path,
  );
  if (mirror !== null && body === null) mirror.send(ctx, headers, path);
}
