import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify';
import { RequestContext } from './context';
import { GatewayError, sendProblem } from './errors';
import type { AccessLog } from './observability/access-log';
import type { RouteMetrics } from './observability/metrics';
import { relay } from './proxy/relay';
import type { CompiledRoute } from './routes';
import { speaksHttp1, takeAbsoluteForm, versionError } from './net/strict-http';
import { adoptHttp2Request, http2BodyUnannounced, isHttp2Request } from './net/http2';
import { hasPathParameters, normalizePath } from './routing/normalize';
import { hostName, type RouteMatch, type Router } from './routing/router';
import type { Runtime } from './runtime';

/** A step answers `true` to let the request go on, or `false` once it has answered the client itself. */
export type StepResult = boolean | Promise<boolean>;

/** One stage of the request chain that a route opts into (auth, rate limit and cache, ...). */
export interface Step {
  readonly name: string;
  run(ctx: RequestContext): StepResult;
}

export interface ChainDeps {
  /** The configuration version new requests use; a request keeps the one it started with. */
  runtime(): Runtime;
  /** Metrics of requests that matched no route. */
  unrouted: RouteMetrics;
  accessLog: AccessLog | null;
  /** The gateway's logger (Fastify's own is off). */
  log: FastifyBaseLogger;
  isDraining(): boolean;
  /** The listener stopped: a request that still arrives on an open connection is refused. */
  isClosing(): boolean;
}

/**
 * A CORS preflight asks about another method (Access-Control-Request-Method): a route that takes
 * that method and answers preflights gets it, even when OPTIONS is not among its methods.
 */
function matchPreflight(router: Router<CompiledRoute>, req: IncomingMessage, path: string, host: string): RouteMatch<CompiledRoute> | null {
  const asked = req.headers['access-control-request-method'];
  if (asked === undefined || req.headers.origin === undefined) return null;
  const m = router.match(path, host, asked);
  return m.kind === 'route' && m.route.answersPreflight ? m : null;
}

/** Where a run of steps goes: every step let the request through, or one threw or rejected. */
export interface StepsOutcome {
  passed(ctx: RequestContext): void;
  failed(ctx: RequestContext, err: unknown): void;
}

/**
 * Runs the route's steps from `from` on, in order: a step that answered ends the run there, an async
 * step resumes it when it settles. Client requests and the gateway's own (background refreshes) share it.
 */
export function runSteps(ctx: RequestContext, from: number, outcome: StepsOutcome): void {
  const steps = ctx.route.steps;
  for (let i = from; i < steps.length; i++) {
    let result: StepResult;
    try {
      result = steps[i].run(ctx);
    } catch (err) {
      return outcome.failed(ctx, err);
    }
    if (result === true) continue;
    if (result === false) return;
    const next = i + 1;
    result.then(
      (go) => {
        if (go) runSteps(ctx, next, outcome);
      },
      (err: unknown) => outcome.failed(ctx, err),
    );
    return;
  }
  outcome.passed(ctx);
}

const PATH_PARAMETERS_REFUSED = 'The path has ";" parameters, which this route does not accept (match.allowPathParameters)';

/** Status logged for a client that went away before it got an answer (nginx's convention). */
const CLIENT_CLOSED = 499;

/**
 * The request chain, in order, in one place:
 *
 *   1. request id      (Fastify genReqId, see app.ts: kept when sane, generated otherwise)
 *   2. HTTP version    → 400 / 505 unless HTTP/1.0, HTTP/1.1 or HTTP/2 from an HTTP/2 listener
 *                        (pseudo-headers become Host, see net/http2.ts)
 *   3. normalise path  → 400 when it cannot be made safe
 *   4. route           → 400 for a repeated Host or credential header, 404 / 405 with Allow,
 *                        400 for ";" parameters the route does not accept
 *   5. client IP       (trusted proxies honoured)
 *   6. route steps     (IP rules, CORS, auth, rate limit + cache lookup, header rules, body limit:
 *                       see createPlugins)
 *   7. relay           (undici, streaming both ways; cache fill observes the response)
 *   8. metrics + access log, when the response closes
 */
export class RequestChain {
  private readonly outcome: StepsOutcome = {
    passed: (ctx) => {
      if (!ctx.res.destroyed) relay(ctx);
    },
    failed: (ctx, err) => this.reject(ctx, err),
  };

  constructor(private readonly deps: ChainDeps) {}

  readonly handle = (request: FastifyRequest, reply: FastifyReply): void => {
    reply.hijack();
    const req = request.raw;
    const res = reply.raw;
    const ctx = new RequestContext(req, res, request.id, this.deps.log, performance.now());
    const draining = this.deps.isDraining();
    if (draining) res.shouldKeepAlive = false;
    // 'close' comes once per response; `on` spares the once-wrapper per request.
    res.on('close', () => this.complete(ctx));
    if (draining && this.deps.isClosing()) return this.reject(ctx, new GatewayError('SHUTTING_DOWN', { headers: { 'retry-after': 1 } }));

    if (!speaksHttp1(req)) {
      // A genuine HTTP/2 request (from the h2 or h2c listener) is brought to HTTP/1.1's shape;
      // a request line naming another version is refused.
      const refused = isHttp2Request(req) ? adoptHttp2Request(req) : versionError(req);
      if (refused !== null) {
        res.shouldKeepAlive = false;
        return this.reject(ctx, refused);
      }
      ctx.bodyUnannounced = http2BodyUnannounced(req);
    }
    let url = req.url ?? '/';
    if (url.charCodeAt(0) !== 47 /* / */) url = takeAbsoluteForm(req) ?? url;
    const q = url.indexOf('?');
    const rawPath = q < 0 ? url : url.slice(0, q);
    const path = normalizePath(rawPath);
    if (path === null) return this.reject(ctx, new GatewayError('BAD_PATH'));
    ctx.path = path;
    ctx.query = q < 0 ? '' : url.slice(q);

    const runtime = this.deps.runtime();
    const host = runtime.router.usesHosts ? hostName(req.headers.host) : '';
    const method = req.method ?? 'GET';
    let m = runtime.router.match(path, host, method);
    if (m.kind === 'method-not-allowed' && method === 'OPTIONS') m = matchPreflight(runtime.router, req, path, host) ?? m;
    // A refusal names the route the path matched, in metrics and logs, also when the method did not.
    if (m.kind !== 'not-found') ctx.route = m.route;
    const repeated = runtime.singleHeaders.check(req.rawHeaders, req.httpVersionMinor === 1);
    if (repeated !== null) {
      // Proxies in front may have read the request differently: nothing more on this connection.
      res.shouldKeepAlive = false;
      return this.reject(ctx, repeated);
    }
    if (m.kind === 'not-found') return this.reject(ctx, new GatewayError('ROUTE_NOT_FOUND'));
    if (m.kind === 'method-not-allowed') {
      return this.reject(ctx, new GatewayError('METHOD_NOT_ALLOWED', { headers: { allow: m.allow } }));
    }
    if (!m.route.allowsPathParameters && hasPathParameters(path)) {
      return this.reject(ctx, new GatewayError('BAD_PATH', { detail: PATH_PARAMETERS_REFUSED }));
    }

    const { clientIp } = runtime;
    const peer = req.socket.remoteAddress ?? '';
    ctx.peer = peer;
    ctx.peerTrusted = clientIp.isTrusted(peer);
    ctx.clientIp = ctx.peerTrusted ? clientIp.resolve(peer, req.headers['x-forwarded-for']) : peer;

    runSteps(ctx, 0, this.outcome);
  };

  private reject(ctx: RequestContext, err: unknown): void {
    if (err instanceof GatewayError) {
      ctx.errorCode = err.code;
      sendProblem(ctx.res, ctx.id, err.code, { detail: err.message, headers: err.headers, extra: ctx.responseHeaders });
      return;
    }
    ctx.errorCode = 'INTERNAL';
    ctx.log.error({ err }, 'request chain failed');
    sendProblem(ctx.res, ctx.id, 'INTERNAL');
  }

  private complete(ctx: RequestContext): void {
    const totalMs = performance.now() - ctx.startedAt;
    const res = ctx.res;
    const status = res.headersSent ? res.statusCode : CLIENT_CLOSED;
    // An answer cut short, or given before the request body fully arrived (a 408 from the listener):
    // either way the upstream exchange cannot finish properly.
    if (ctx.exchange !== null && (!res.writableFinished || !ctx.req.complete)) ctx.exchange.abandon();
    const method = ctx.req.method ?? 'GET';
    (ctx.route ? ctx.route.metrics : this.deps.unrouted).record(ctx, method, status, totalMs);
    this.deps.accessLog?.write(ctx, method, status, totalMs, res.headersSent && !res.writableFinished);
  }
}
