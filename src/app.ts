import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { buildAdminServer, type ReadinessCheck } from './admin/server';
import { registerUpstreamStatus } from './admin/upstreams';
import { RequestChain } from './chain';
import type { GatewayConfig } from './config/schema';
import { GatewayError, sendProblem, type ErrorCode } from './errors';
import { ClientIpResolver } from './net/client-ip';
import { GatewayMetrics } from './observability/metrics';
import { UpstreamMetrics } from './observability/upstream-metrics';
import { HealthChecker } from './proxy/health';
import { UpstreamRegistry } from './proxy/upstreams';
import { createPlugins, type PluginContext, type Resource } from './plugins';
import { CompiledRoute } from './routes';
import { Router } from './routing/router';

export interface GatewayOptions {
  /** Use this pino-compatible logger instead of building one from config.log. */
  logger?: FastifyBaseLogger;
  /** Register Node process metrics (event loop, heap, GC). Default true. */
  processMetrics?: boolean;
}

const SANE_REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Every method Node's parser accepts is proxied; Fastify only needs to be told about the unusual ones. */
const PROXIED_METHODS = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS', 'TRACE', 'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'SEARCH', 'REPORT', 'PURGE'];

function fastifyErrorCode(status: number): ErrorCode {
  switch (status) {
    case 413:
      return 'PAYLOAD_TOO_LARGE';
    case 431:
      return 'HEADERS_TOO_LARGE';
    case 404:
      return 'ROUTE_NOT_FOUND';
    default:
      return status >= 400 && status < 500 ? 'BAD_REQUEST' : 'INTERNAL';
  }
}

/**
 * One gateway instance built from a frozen config: the public listener, the admin listener, the
 * upstream pools and the metrics registry. Nothing is shared between instances; close() releases
 * everything the instance opened.
 */
export class Gateway {
  readonly config: Readonly<GatewayConfig>;
  readonly server: FastifyInstance;
  readonly admin: FastifyInstance | null;
  readonly metrics: GatewayMetrics;
  readonly upstreams: UpstreamRegistry;
  readonly log: FastifyBaseLogger;
  private readonly readiness: ReadinessCheck[] = [];
  private readonly resources: Resource[] = [];
  private draining = false;
  private closed: Promise<void> | null = null;

  constructor(config: Readonly<GatewayConfig>, opts: GatewayOptions = {}) {
    this.config = config;
    this.server = Fastify({
      ...(opts.logger ? { loggerInstance: opts.logger } : { logger: { level: config.log.level } }),
      // The chain writes its own access line (hijacked replies skip Fastify's).
      logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'reqId' }),
      requestIdHeader: false,
      genReqId: (req) => {
        const incoming = req.headers['x-request-id'];
        return typeof incoming === 'string' && SANE_REQUEST_ID.test(incoming) ? incoming : randomUUID();
      },
      exposeHeadRoutes: false,
      // Malformed URLs are rejected by Fastify's router before the chain runs: answer them in our shape.
      frameworkErrors: (error, request, reply) => {
        const code: ErrorCode = error.code === 'FST_ERR_BAD_URL' ? 'BAD_PATH' : 'BAD_REQUEST';
        this.answerFastify(request, reply, new GatewayError(code));
      },
      return503OnClosing: true,
      routerOptions: { maxParamLength: 8192 },
    });
    this.log = this.server.log;
    this.metrics = new GatewayMetrics({ processMetrics: opts.processMetrics ?? true });
    const upstreamEvents = new UpstreamMetrics(this.metrics.registry, this.log, () => this.upstreams.all());
    this.upstreams = new UpstreamRegistry(config.upstreams, upstreamEvents);
    this.resources.push(new HealthChecker(this.upstreams, upstreamEvents, this.log));

    const pluginContext: PluginContext = {
      config,
      metrics: this.metrics,
      log: this.log,
      addResource: (r) => this.resources.push(r),
      addReadinessCheck: (c) => this.readiness.push(c),
    };
    const plugins = createPlugins(pluginContext);
    const routes = config.routes.map((r) => {
      const route = new CompiledRoute(r, this.upstreams.get(r.upstream), this.metrics.forRoute(r.name));
      for (const p of plugins) {
        const step = p.stepFor(route);
        if (step) route.steps.push(step);
      }
      return route;
    });
    const chain = new RequestChain({
      router: new Router(routes),
      clientIp: new ClientIpResolver(config.trustedProxies),
      unrouted: this.metrics.forRoute('_unrouted'),
      accessLog: config.log.access,
      isDraining: () => this.draining,
    });

    for (const m of PROXIED_METHODS) {
      if (!this.server.supportedMethods.includes(m)) this.server.addHttpMethod(m, { hasBody: true });
    }
    // Bodies are streamed to the upstream untouched: no parsing, no buffering.
    this.server.removeAllContentTypeParsers();
    this.server.addContentTypeParser('*', (_req, _payload, done) => done(null));
    this.server.route({ method: PROXIED_METHODS, url: '/', handler: chain.handle });
    this.server.route({ method: PROXIED_METHODS, url: '/*', handler: chain.handle });
    this.server.setNotFoundHandler((request, reply) => this.answerFastify(request, reply, new GatewayError('ROUTE_NOT_FOUND')));
    this.server.setErrorHandler((error: { statusCode?: number; message: string }, request, reply) => {
      const status = error.statusCode ?? 500;
      const code = fastifyErrorCode(status);
      if (code === 'INTERNAL') request.log.error({ err: error }, 'unhandled error');
      this.answerFastify(request, reply, new GatewayError(code, { detail: code === 'INTERNAL' ? undefined : error.message }));
    });

    this.readiness.push({ name: 'config', ready: () => true });
    this.admin = config.admin.enabled
      ? buildAdminServer({
          logger: this.log,
          registry: this.metrics.registry,
          checks: () => this.readiness,
          isDraining: () => this.draining,
        })
      : null;
    if (this.admin) registerUpstreamStatus(this.admin, this.upstreams, config.admin.token);
  }

  private answerFastify(request: FastifyRequest, reply: FastifyReply, err: GatewayError): void {
    reply.hijack();
    sendProblem(reply.raw, request.id, err.code, { detail: err.message, headers: err.headers });
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** Starts both listeners; resolves with the ports actually bound (useful with port 0). */
  async listen(): Promise<{ port: number; adminPort: number | null }> {
    for (const r of this.resources) await r.init?.();
    await this.server.listen({ host: this.config.listen.host, port: this.config.listen.port });
    let adminPort: number | null = null;
    if (this.admin) {
      await this.admin.listen({ host: this.config.admin.host, port: this.config.admin.port });
      adminPort = (this.admin.server.address() as AddressInfo).port;
    }
    return { port: (this.server.server.address() as AddressInfo).port, adminPort };
  }

  /**
   * Graceful drain: readiness fails at once, the listener keeps serving for drainDelayMs so load
   * balancers notice, then new connections stop, in-flight requests finish and everything closes.
   */
  async shutdown(): Promise<void> {
    if (!this.draining) {
      this.draining = true;
      this.log.info({ drainDelayMs: this.config.shutdown.drainDelayMs }, 'draining');
      await new Promise((r) => setTimeout(r, this.config.shutdown.drainDelayMs));
    }
    await this.close();
  }

  /** Closes listeners (waiting for in-flight requests), pools and clients. Idempotent. */
  close(): Promise<void> {
    this.draining = true;
    this.closed ??= (async () => {
      await this.server.close();
      await Promise.all([this.upstreams.close(), this.admin?.close(), ...this.resources.map((r) => r.close())]);
    })();
    return this.closed;
  }
}
