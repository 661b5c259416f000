import { constants, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { performance } from 'node:perf_hooks';
import type { RequestContext, UpstreamExchange } from '../context';
import { ERRORS, sendProblem, type ErrorCode } from '../errors';
import type { Timed } from '../proxy/deadlines';
import { errorKind, statusKind } from '../proxy/failures';
import { HOP_BY_HOP, REQUEST_DROP, connectionTokens } from '../proxy/headers';
import { upstreamErrorCode } from '../proxy/upstream-errors';
import type { Target } from '../proxy/upstreams';
import { encodeGrpcMessage, endTrailersOnly, grpcStatusOf } from './status';

/** grpc-timeout units (gRPC over HTTP/2 spec) in milliseconds. */
const UNIT_MS: Record<string, number> = { H: 3600000, M: 60000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * The deadline a grpc-timeout header asks for, in milliseconds: at most 8 digits and a unit. -1
 * without the header, NaN for a malformed one.
 */
export function parseGrpcTimeout(value: string | string[] | undefined): number {
  if (value === undefined) return -1;
  const m = typeof value === 'string' ? /^(\d{1,8})([HMSmun])$/.exec(value) : null;
  return m === null ? Number.NaN : Number(m[1]) * UNIT_MS[m[2]];
}

/** Headers the client's request never carries upstream: HTTP/1.1's hop-by-hop ones, those the gateway sets, and the deadline it recomputes. */
const DROP = new Set([...REQUEST_DROP, 'grpc-timeout']);
/** Response headers and trailers kept from the upstream: all but connection-specific ones (RFC 9113 §8.2.2) and the gateway's request id. */
const RESPONSE_DROP = new Set([...HOP_BY_HOP, 'x-request-id']);

/**
 * One gRPC call relayed over HTTP/2: request headers and body stream to the target, the response
 * head, messages and trailers stream back. The call's deadline (the route's, or the client's
 * grpc-timeout when sooner) sits on the upstream's deadline wheel, like HTTP requests' deadlines.
 */
class GrpcCall implements Timed, UpstreamExchange {
  probe = false;
  deadlineAt = 0;
  deadlineSlot = -1;
  deadlinePrev: Timed | null = null;
  deadlineNext: Timed | null = null;
  private stream: ClientHttp2Stream | null = null;
  private target: Target | null = null;
  private done = false;
  private status = 0;

  constructor(readonly ctx: RequestContext) {}

  deadlinePassed(): void {
    this.fail('UPSTREAM_TIMEOUT', 'the call exceeded its deadline');
  }

  abandon(): void {
    if (this.done) return;
    this.end(null);
    this.stream?.close(constants.NGHTTP2_CANCEL);
  }

  start(target: Target, deadlineAt: number): void {
    const { ctx } = this;
    const route = ctx.route;
    const req = ctx.req;
    this.target = target;
    ctx.target = target;
    target.state.inFlight++;
    route.upstream.deadlines.arm(this, deadlineAt);
    ctx.exchange = this;
    ctx.upstreamStartedAt = performance.now();

    const url = new URL(target.origin);
    const headers: OutgoingHttpHeaders = {
      ':method': req.method ?? 'POST',
      ':scheme': url.protocol === 'https:' ? 'https' : 'http',
      ':path': target.basePath + route.rewrite(ctx.path) + ctx.query,
      ':authority': route.config.preserveHost && req.headers.host ? req.headers.host : url.host,
    };
    const raw = req.rawHeaders;
    let named: string[] | null = null;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toLowerCase();
      if (name === 'connection') named = connectionTokens(raw[i + 1]);
      if (DROP.has(name)) continue;
      const prev = headers[name];
      headers[name] = prev === undefined ? raw[i + 1] : Array.isArray(prev) ? [...prev, raw[i + 1]] : [String(prev), raw[i + 1]];
    }
    if (named !== null) for (const n of named) delete headers[n];
    // gRPC servers require it: it says the client reads trailers.
    headers.te = 'trailers';
    const proto = (req.socket as { encrypted?: boolean } | null)?.encrypted ? 'https' : 'http';
    const xff = req.headers['x-forwarded-for'];
    headers['x-forwarded-for'] = ctx.peerTrusted && typeof xff === 'string' ? `${xff}, ${ctx.peer}` : ctx.peer;
    headers['x-forwarded-proto'] = proto;
    headers['x-request-id'] = ctx.id;
    // What is left of the deadline, so that the upstream gives up when the gateway does.
    headers['grpc-timeout'] = `${Math.max(1, Math.ceil(deadlineAt - performance.now()))}m`;
    const extra = ctx.upstreamHeaders;
    if (extra !== null) for (let i = 0; i < extra.length; i += 2) headers[extra[i].toLowerCase()] = extra[i + 1];

    let stream: ClientHttp2Stream;
    try {
      stream = target.h2().get().request(headers);
    } catch (err) {
      return this.failWith(err);
    }
    this.stream = stream;
    stream.on('response', (h, flags) => this.onResponse(h, flags));
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('trailers', (t) => this.onTrailers(t));
    stream.on('end', () => this.onEnd());
    stream.on('error', (err) => this.failWith(err));
    stream.on('close', () => {
      if (!this.done) this.fail('UPSTREAM_RESET', `the upstream closed the stream (code ${stream.rstCode ?? 0})`);
    });
    const body = ctx.body ?? req;
    body.on('error', () => stream.close(constants.NGHTTP2_CANCEL));
    body.pipe(stream);
  }

  private onResponse(h: IncomingHttpHeaders, flags: number): void {
    if (this.done) return;
    this.status = Number(h[':status']);
    const res = this.ctx.res;
    const list = responseList(h);
    list.push('x-request-id', this.ctx.id);
    const extra = this.ctx.responseHeaders;
    if (extra !== null) for (const v of extra) list.push(v);
    if (h['grpc-status'] !== undefined) this.ctx.grpcStatus = String(h['grpc-status']);
    try {
      // Trailers-only (the head ended the upstream's stream): the client's ends with the head too.
      if ((flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0) {
        this.end(statusKind(this.status));
        endTrailersOnly(res, this.status, list);
      } else res.writeHead(this.status, list);
    } catch {
      return this.fail('UPSTREAM_BAD_RESPONSE', 'the upstream response head cannot be relayed');
    }
  }

  private onData(chunk: Buffer): void {
    if (this.done || this.ctx.res.destroyed) return;
    const res = this.ctx.res;
    if (!res.write(chunk)) {
      const stream = this.stream!;
      stream.pause();
      res.once('drain', () => stream.resume());
    }
  }

  private onTrailers(t: IncomingHttpHeaders): void {
    if (this.done) return;
    const list = responseList(t);
    const trailers: Record<string, string> = {};
    for (let i = 0; i < list.length; i += 2) trailers[list[i]] = trailers[list[i]] === undefined ? list[i + 1] : `${trailers[list[i]]}, ${list[i + 1]}`;
    if (t['grpc-status'] !== undefined) this.ctx.grpcStatus = String(t['grpc-status']);
    this.ctx.res.addTrailers(trailers);
  }

  private onEnd(): void {
    if (this.done) return;
    this.end(statusKind(this.status));
    this.ctx.res.end();
  }

  private failWith(failure: unknown): void {
    if (this.done) return;
    // A stream on a session that failed (refused, TLS, reset) is cancelled with the session's error as cause.
    const e = failure as { code?: string; cause?: unknown };
    const err = e.code === 'ERR_HTTP2_STREAM_CANCEL' && e.cause !== undefined ? e.cause : failure;
    const code: ErrorCode = (err as { code?: string }).code?.startsWith('ERR_HTTP2_') ? 'UPSTREAM_RESET' : upstreamErrorCode(err);
    this.ctx.log.warn({ err: { message: (err as Error).message, code: (err as { code?: string }).code }, target: this.target?.origin }, 'gRPC upstream call failed');
    this.fail(code, ERRORS[code].title);
  }

  /** Ends the call with a gateway error: trailers-only when nothing went out, else the status in the trailers. */
  private fail(code: ErrorCode, message: string): void {
    if (this.done) return;
    this.end(errorKind(code));
    this.stream?.close(constants.NGHTTP2_CANCEL);
    const { ctx } = this;
    ctx.errorCode = code;
    const res = ctx.res;
    if (!res.headersSent) return sendProblem(res, ctx.id, code, { detail: message, extra: ctx.responseHeaders });
    const status = String(grpcStatusOf(code));
    ctx.grpcStatus = status;
    if (res.destroyed || res.writableEnded) return;
    if (ctx.req.httpVersionMajor !== 2) {
      res.destroy();
      return;
    }
    res.addTrailers({ 'grpc-status': status, 'grpc-message': encodeGrpcMessage(message) });
    res.end();
  }

  /** The call is over for the gateway: deadline off, target load and breaker settled (null: no verdict). */
  private end(kind: number | null): void {
    this.done = true;
    const { ctx } = this;
    ctx.route.upstream.deadlines.disarm(this);
    ctx.upstreamMs = performance.now() - ctx.upstreamStartedAt;
    const target = this.target;
    if (target === null) return;
    target.state.inFlight--;
    if (kind === null) target.state.release(this.probe);
    else target.state.record(kind, this.probe, performance.now());
  }
}

/** Upstream response headers or trailers as a list the client response takes, without pseudo- and connection-specific headers. */
function responseList(h: IncomingHttpHeaders): string[] {
  const list: string[] = [];
  for (const name of Object.keys(h)) {
    if (name.charCodeAt(0) === 58 /* : */ || RESPONSE_DROP.has(name)) continue;
    const v = h[name];
    if (Array.isArray(v)) for (const x of v) list.push(name, x);
    else if (v !== undefined) list.push(name, String(v));
  }
  return list;
}

/**
 * Relays the gRPC call of `ctx` to a target of its route's upstream over HTTP/2. A malformed
 * grpc-timeout is INVALID_ARGUMENT; no target taking traffic is UNAVAILABLE; the deadline is the
 * sooner of the route's and the client's.
 */
export function relayGrpc(ctx: RequestContext): void {
  const route = ctx.route;
  const upstream = route.upstream;
  const asked = parseGrpcTimeout(ctx.req.headers['grpc-timeout']);
  if (Number.isNaN(asked)) {
    ctx.errorCode = 'BAD_REQUEST';
    return sendProblem(ctx.res, ctx.id, 'BAD_REQUEST', { detail: 'grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u, n)', extra: ctx.responseHeaders });
  }
  const call = new GrpcCall(ctx);
  const target = upstream.pick(ctx.startedAt, null, call);
  if (target === null) {
    upstream.events.rejected(upstream.name, 'unavailable');
    ctx.errorCode = 'UPSTREAM_UNAVAILABLE';
    return sendProblem(ctx.res, ctx.id, 'UPSTREAM_UNAVAILABLE', { headers: { 'retry-after': upstream.retryAfterSeconds(ctx.startedAt) }, extra: ctx.responseHeaders });
  }
  const routeDeadline = ctx.startedAt + route.requestTimeoutMs;
  call.start(target, asked >= 0 ? Math.min(routeDeadline, ctx.startedAt + asked) : routeDeadline);
}
