import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { createServer as createHttpServer, METHODS, type RequestListener, type Server, type ServerOptions } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createSecureServer as createHttp2SecureServer, createServer as createH2cServer, type Http2Server, type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import pino from 'pino';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { registerCacheRoutes } from './admin/cache';
import { registerKeyRoutes } from './admin/keys';
import { buildAdminServer, type ReadinessCheck } from './admin/server';
import { setTargetState, upstreamStatus } from './admin/upstreams';
import { RequestChain } from './chain';
import { ConfigError, formatProblem, loadConfigFile } from './config/load';
import type { GatewayConfig } from './config/schema';
import { configWarnings } from './config/warnings';
import { GatewayError, sendProblem, type ErrorCode } from './errors';
import { AccessLog } from './observability/access-log';
import { GatewayInfo } from './observability/gateway-info';
import { GatewayMetrics } from './observability/metrics';
import { UpstreamMetrics } from './observability/upstream-metrics';
import { TargetDiscovery } from './proxy/discovery';
import { HealthChecker } from './proxy/health';
import { UpstreamRegistry } from './proxy/upstreams';
import { createPlugins } from './plugins';
import type { Plugin, PluginContext, Resource } from './plugins/types';
import { closeSilentConnections, serverLimitOptions } from './plugins/policies/server-limits';
import { speaksHttp1, versionError } from './net/strict-http';
import { Http2Sessions, isHttp2Request } from './net/http2';
import { ListenerCertificates, tlsFiles } from './net/tls';
import { keyStoreFor } from './plugins/auth';
import { RequestIds } from './request-ids';
import { Runtime } from './runtime';
import type { GateStore } from './store/types';
import { ConnectionDrain } from './lifecycle/drain';
import { diffRoutes, restartOnlyChanges, type ReloadResult } from './lifecycle/reload';
import { WebSockets } from './websocket/proxy';

export interface GatewayOptions {
  /** Use this pino-compatible logger instead of building one from config.log. */
  logger?: FastifyBaseLogger;
  /** Register Node process metrics (event loop, heap, GC). Default true. */
  processMetrics?: boolean;
  /** The configuration file reloads read from (SIGHUP, POST /admin/reload, reload.watch). */
  configFile?: string;
  /** Extra plugins that run before the configured ones (embedding, and tests that need an identity). */
  plugins?: (ctx: PluginContext) => Plugin[];
}

/**
 * Every method Node's parser accepts is proxied (M-SEARCH, LINK, QUERY, ...); Fastify only needs to
 * be told about the unusual ones. CONNECT never reaches a request handler (Node emits it apart).
 */
const PROXIED_METHODS = METHODS.filter((m) => m !== 'CONNECT');

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

/** The options Fastify hands a serverFactory, with its defaults applied. */
interface FastifyServerSettings {
  http: ServerOptions;
  keepAliveTimeout: number;
  requestTimeout: number;
  connectionTimeout: number;
  clientErrorHandler: (err: Error, socket: Socket) => void;
}

/**
 * An HTTP/2 server that also serves HTTP/1.1 (allowHTTP1) hands those connections to node:http's
 * connection handling, which reads its limits off the server object: the ones node:http's own
 * server takes from its options are set the same way here.
 */
function http1Settings(server: Http2SecureServer, o: FastifyServerSettings): Http2SecureServer {
  const s = server as unknown as Record<string, unknown>;
  s.maxHeaderSize = o.http.maxHeaderSize;
  s.headersTimeout = o.http.headersTimeout;
  s.requestTimeout = o.http.requestTimeout;
  s.connectionsCheckingInterval = o.http.connectionsCheckingInterval;
  s.requireHostHeader = o.http.requireHostHeader;
  return server;
}

/** Closes a resource a plugin registered; its failure is logged, never thrown at the caller. */
async function closeQuietly(r: Resource, log: FastifyBaseLogger): Promise<void> {
  try {
    await r.close();
  } catch (err) {
    log.warn({ err, resource: r.name }, 'closing a plugin resource failed');
  }
}

/**
 * One gateway instance built from a frozen config: the public listener, the admin listener, the
 * upstream pools and the metrics registry. Nothing is shared between instances; close() releases
 * everything the instance opened.
 */
export class Gateway {
  readonly server: FastifyInstance;
  /**
   * The node servers the gateway listens on, all sharing Fastify's request handler: the plain one
   * (unless listen.plain is false), then the TLS one (when listen.tls is set). Upgrade handlers
   * attach to each.
   */
  readonly servers: Server[] = [];
  /** Listeners Fastify does not listen with itself (TLS beside plain, h2c), with their ports. */
  private readonly extraListeners: { server: Server; port: number }[] = [];
  /** The TLS listener, when listen.tls is set. */
  private tlsServer: Server | null = null;
  /** The h2c (HTTP/2 with prior knowledge) listener, when listen.h2c is set. */
  private h2cServer: Server | null = null;
  private readonly http2Sessions = new Http2Sessions();
  private readonly certificates: ListenerCertificates | null;
  private readonly watchedTlsFiles = new Set<string>();
  readonly admin: FastifyInstance | null;
  readonly metrics: GatewayMetrics;
  readonly info: GatewayInfo;
  readonly log: FastifyBaseLogger;
  private runtime: Runtime;
  private upstreams: UpstreamRegistry;
  private readonly upstreamEvents: UpstreamMetrics;
  private readonly healthChecks: HealthChecker;
  private readonly discovery: TargetDiscovery;
  private readonly accessLog: AccessLog | null;
  private readonly websockets: WebSockets;
  private readonly requestIds = new RequestIds();
  private readonly readiness: ReadinessCheck[] = [];
  private readonly resources: Resource[] = [];
  /** Resources the current runtime owns (user plugins'): closed once a reload replaces it. */
  private runtimeResources: Resource[] = [];
  /** Resources registered but not yet initialised (init runs before they see traffic). */
  private pendingInit: Resource[] = [];
  private readonly shared = new Map<string, unknown>();
  private readonly configFile: string | null;
  private readonly extraPlugins: ((ctx: PluginContext) => Plugin[]) | undefined;
  private watching = false;
  private reloading: Promise<unknown> = Promise.resolve();
  private draining = false;
  /** The public listener stopped taking connections (close() began). */
  private closing = false;
  private readonly connections: ConnectionDrain;
  private closed: Promise<void> | null = null;
  /** The log level the process started with; PUT /admin/log-level changes it until the next reload. */
  private readonly startLogLevel: string;

  constructor(config: Readonly<GatewayConfig>, opts: GatewayOptions = {}) {
    this.configFile = opts.configFile ?? null;
    this.extraPlugins = opts.plugins;
    // Our own logger, not Fastify's: with a logger Fastify adds per-request work even when request
    // logging is off (a child logger, 'finish'/'error' listeners and their timestamps). The chain
    // logs for the request (access line; RequestContext.log binds the request id on first use).
    this.log = opts.logger ?? (pino({ level: config.log.level }) as unknown as FastifyBaseLogger);
    this.certificates = config.listen.tls ? new ListenerCertificates(config.listen.tls) : null;
    this.startLogLevel = this.log.level;
    this.server = Fastify({
      logger: false,
      requestIdHeader: false,
      genReqId: (req) => this.requestIds.for(req.headers['x-request-id']),
      // Header size and client timeouts, and problem+json for what Node answers on the socket.
      ...serverLimitOptions(config.policies.limits, () => this.log, this.requestIds.for),
      exposeHeadRoutes: false,
      // Malformed URLs are rejected by Fastify's router before the chain runs: answer them in our shape.
      frameworkErrors: (error, request, reply) => {
        const code: ErrorCode = error.code === 'FST_ERR_BAD_URL' ? 'BAD_PATH' : 'BAD_REQUEST';
        this.answerFastify(request, reply, new GatewayError(code));
      },
      // The chain answers requests that reach a closing listener itself (SHUTTING_DOWN, problem+json).
      return503OnClosing: false,
      routerOptions: { maxParamLength: 8192 },
      // One Fastify instance (one chain, one set of metrics) behind both listeners.
      serverFactory: (handler, fastifyOptions) => {
        const o = fastifyOptions as unknown as FastifyServerSettings;
        const http2Settings = { maxHeaderListSize: config.policies.limits.maxHeaderBytes };
        // The chain reads HTTP/2 requests through node:http2's compatibility API, shaped like node:http's.
        const http2Handler = handler as unknown as (req: Http2ServerRequest, res: Http2ServerResponse) => void;
        const configure = (server: Server): Server => {
          // What Fastify does to the server it makes itself.
          server.keepAliveTimeout = o.keepAliveTimeout;
          server.requestTimeout = o.requestTimeout;
          server.setTimeout(o.connectionTimeout);
          closeSilentConnections(server, config.policies.limits.firstByteTimeoutMs);
          this.servers.push(server);
          return server;
        };
        if (config.listen.plain) configure(createHttpServer(o.http, handler as RequestListener));
        const tlsCfg = config.listen.tls;
        if (this.certificates && tlsCfg) {
          const options = { ...o.http, ...this.certificates.serverOptions(tlsCfg.http2), handshakeTimeout: config.policies.limits.headersTimeoutMs };
          const tls = tlsCfg.http2
            ? http1Settings(createHttp2SecureServer({ ...options, allowHTTP1: true, settings: http2Settings }, http2Handler), o)
            : createHttpsServer(options, handler as RequestListener);
          this.certificates.attach(tls);
          tls.on('tlsClientError', (err: Error & { code?: string }) => this.log.debug({ err: { message: err.message, code: err.code } }, 'TLS handshake failed'));
          configure(tls as unknown as Server);
          if (tlsCfg.http2) this.http2Sessions.attach(tls as Http2SecureServer, o.keepAliveTimeout);
          this.tlsServer = tls as unknown as Server;
          // Fastify handles client errors on the server it listens with; the other gets the same handler.
          if (this.servers.length === 2) {
            this.extraListeners.push({ server: this.tlsServer, port: tlsCfg.port });
            tls.on('clientError', o.clientErrorHandler);
          }
        }
        if (config.listen.h2c) {
          const h2c = createH2cServer({ settings: http2Settings }, http2Handler) as unknown as Server;
          closeSilentConnections(h2c, config.policies.limits.firstByteTimeoutMs);
          this.http2Sessions.attach(h2c as unknown as Http2Server, o.keepAliveTimeout);
          this.servers.push(h2c);
          this.h2cServer = h2c;
          this.extraListeners.push({ server: h2c, port: config.listen.h2c.port });
        }
        return this.servers[0];
      },
    });
    this.metrics = new GatewayMetrics({ processMetrics: opts.processMetrics ?? true });
    this.info = new GatewayInfo(this.metrics, config, () => Promise.resolve(this.connections.open));
    this.upstreamEvents = new UpstreamMetrics(this.metrics.registry, this.log, () => this.upstreams.all());
    this.upstreams = new UpstreamRegistry(config.upstreams, this.upstreamEvents);
    this.discovery = new TargetDiscovery(this.upstreams, this.upstreamEvents, this.log);
    this.resources.push(this.discovery);
    this.pendingInit.push(this.discovery);
    this.healthChecks = new HealthChecker(this.upstreams, this.upstreamEvents, this.log);
    this.resources.push(this.healthChecks);
    this.pendingInit.push(this.healthChecks);
    this.runtime = new Runtime(config, this.upstreams, this.metrics, this.plugins(this.pluginContext(config, this.runtimeResources)));
    this.warn(config);
    this.accessLog = config.log.access && (this.log as unknown as pino.Logger).isLevelEnabled('info') ? new AccessLog(this.log, config.log) : null;
    const chain = new RequestChain({
      runtime: () => this.runtime,
      unrouted: this.metrics.forRoute('_unrouted'),
      accessLog: this.accessLog,
      log: this.log,
      isDraining: () => this.draining,
      isClosing: () => this.closing,
    });
    this.connections = new ConnectionDrain(this.servers, this.http2Sessions);
    this.websockets = new WebSockets({ runtime: () => this.runtime, requestId: this.requestIds.for, metrics: this.metrics, accessLog: this.accessLog, log: this.log });
    for (const server of this.servers) this.websockets.attach(server);

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
      if (code === 'INTERNAL') this.log.error({ reqId: request.id, err: error }, 'unhandled error');
      this.answerFastify(request, reply, new GatewayError(code, { detail: code === 'INTERNAL' ? undefined : error.message }));
    });

    this.readiness.push({ name: 'config', ready: () => true });
    this.admin = config.admin.enabled
      ? buildAdminServer({
          logger: this.log,
          registry: this.metrics.registry,
          checks: () => this.readiness,
          isDraining: () => this.draining,
          config: () => this.config,
          upstreams: () => upstreamStatus(this.upstreams),
          reload: (actor) => this.reloadFromSource(actor),
          info: () => this.info.describe(),
          logLevel: () => this.log.level,
          setLogLevel: (level) => (this.log.level = level),
          targetAction: (upstream, target, action) => setTargetState(this.upstreams, upstream, target, action),
        })
      : null;
    if (this.admin) registerKeyRoutes(this.admin, { config: () => this.config, store: () => keyStoreFor(this.pluginContext(this.config)) });
    if (this.admin) registerCacheRoutes(this.admin, { config: () => this.config, store: () => (this.shared.get('store') as GateStore | undefined) ?? null });
  }

  /** The plugins of one runtime in chain order: the embedder's first, then the configured ones. */
  private plugins(ctx: PluginContext): Plugin[] {
    return [...(this.extraPlugins?.(ctx) ?? []), ...createPlugins(ctx)];
  }

  /** What plugins see while a runtime is built; `owned` collects the resources that runtime owns. */
  private pluginContext(config: Readonly<GatewayConfig>, owned: Resource[] = []): PluginContext {
    const local = new Map<string, unknown>();
    return {
      config,
      metrics: this.metrics,
      log: this.log,
      shared: <T>(key: string, create: () => T): T => {
        if (!this.shared.has(key)) this.shared.set(key, create());
        return this.shared.get(key) as T;
      },
      local: <T>(key: string, create: () => T): T => {
        if (!local.has(key)) local.set(key, create());
        return local.get(key) as T;
      },
      addResource: (r) => {
        this.resources.push(r);
        this.pendingInit.push(r);
      },
      addRuntimeResource: (r) => {
        owned.push(r);
        this.pendingInit.push(r);
      },
      addReadinessCheck: (c) => this.readiness.push(c),
    };
  }

  /** Logs what the configuration does that is likely not what was meant (see config/warnings.ts). */
  private warn(config: Readonly<GatewayConfig>): void {
    for (const w of configWarnings(config)) this.log.warn({ path: w.path }, `configuration warning: ${w.message}`);
  }

  private async initPending(): Promise<void> {
    const pending = this.pendingInit;
    this.pendingInit = [];
    for (const r of pending) await r.init?.();
  }

  /** The configuration currently serving new requests. */
  get config(): Readonly<GatewayConfig> {
    return this.runtime.config;
  }

  /**
   * Swaps in a new, already validated configuration. Requests in flight finish on the old one; new
   * requests see the new one as soon as this resolves. Pools of unchanged upstreams are kept (no
   * reconnect storm), pools of removed or changed ones drain and close. Reloads run one at a time.
   */
  reload(next: Readonly<GatewayConfig>, actor = 'unknown'): Promise<ReloadResult> {
    const run = this.reloading.then(() => this.applyReload(next, actor));
    this.reloading = run.catch(() => undefined);
    return run;
  }

  /** Reads the configuration file again and reloads it. Throws ConfigError when the new file is invalid. */
  reloadFromSource(actor: string): Promise<ReloadResult> {
    if (!this.configFile) return Promise.reject(new Error('this gateway was not started from a configuration file'));
    let next: Readonly<GatewayConfig>;
    try {
      next = loadConfigFile(this.configFile);
    } catch (err) {
      const errors = err instanceof ConfigError ? err.problems.map(formatProblem) : [(err as Error).message];
      this.info.reloaded('rejected');
      this.log.warn({ audit: true, actor, action: 'reload', result: 'rejected', errors }, 'reload rejected; the old configuration keeps serving');
      return Promise.reject(err);
    }
    return this.reload(next, actor);
  }

  private watchConfigFile(): void {
    if (!this.configFile || !this.config.reload.watch || this.watching) return;
    this.watching = true;
    watchFile(this.configFile, { interval: this.config.reload.watchIntervalMs, persistent: false }, (cur, prev) => {
      if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size) return;
      this.reloadFromSource('file-watch').catch(() => undefined);
    });
    this.watchTlsFiles();
  }

  /**
   * Certificate rotation (cert-manager swaps a Secret's files behind symlinks) changes no config
   * file: the certificate and key files are watched too, and a change reloads. watchFile follows
   * symlinks, so a swap shows as a new inode.
   */
  private watchTlsFiles(): void {
    if (!this.watching) return;
    const wanted = new Set(tlsFiles(this.config));
    for (const f of this.watchedTlsFiles) {
      if (!wanted.has(f)) {
        unwatchFile(f, this.onTlsFileChange);
        this.watchedTlsFiles.delete(f);
      }
    }
    for (const f of wanted) {
      if (this.watchedTlsFiles.has(f)) continue;
      watchFile(f, { interval: this.config.reload.watchIntervalMs, persistent: false }, this.onTlsFileChange);
      this.watchedTlsFiles.add(f);
    }
  }

  private readonly onTlsFileChange = (cur: Stats, prev: Stats): void => {
    if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
    this.reloadFromSource('certificate-watch').catch(() => undefined);
  };

  private async applyReload(next: Readonly<GatewayConfig>, actor: string): Promise<ReloadResult> {
    if (this.closed) throw new Error('the gateway is shutting down');
    const previous = this.runtime;
    const upstreams = new UpstreamRegistry(next.upstreams, this.upstreamEvents, this.upstreams);
    let runtime: Runtime;
    let certificates: ReturnType<ListenerCertificates['prepare']> | null;
    const owned: Resource[] = [];
    try {
      runtime = new Runtime(next, upstreams, this.metrics, this.plugins(this.pluginContext(next, owned)));
      // Certificate files are read again on every reload; a bad one fails the reload, naming its path.
      certificates = this.certificates && next.listen.tls ? this.certificates.prepare(next.listen.tls) : null;
      await this.initPending();
    } catch (err) {
      // Whatever the failed runtime opened goes with it; gateway-lifetime resources stay registered.
      this.pendingInit = this.pendingInit.filter((r) => !owned.includes(r));
      await Promise.all([...upstreams.changes.created.map((name) => upstreams.get(name).close()), ...owned.map((r) => closeQuietly(r, this.log))]);
      this.info.reloaded('failed');
      this.log.error({ audit: true, actor, action: 'reload', result: 'failed', err }, 'reload failed; the old configuration keeps serving');
      throw err;
    }
    // New upstreams that discover their targets get them before the first request reaches them.
    await this.discovery.sync(upstreams);
    this.runtime = runtime;
    this.upstreams = upstreams;
    certificates?.commit();
    this.info.loaded(next);
    this.info.reloaded('applied');
    // A level set through the admin API lasts until the next reload.
    if (this.log.level !== this.startLogLevel) {
      this.log.level = this.startLogLevel;
      if (this.admin) this.admin.log.level = this.startLogLevel;
    }
    const replaced = this.runtimeResources;
    this.runtimeResources = owned;
    for (const r of replaced) void closeQuietly(r, this.log);
    this.warn(next);
    await this.healthChecks.sync(upstreams);
    for (const up of upstreams.changes.retired) {
      up.close().catch((err: unknown) => this.log.warn({ err, upstream: up.name }, 'closing a retired upstream failed'));
    }
    const result: ReloadResult = {
      routes: diffRoutes(previous.config.routes, next.routes),
      upstreams: { kept: upstreams.changes.kept, created: upstreams.changes.created, closed: upstreams.changes.retired.map((u) => u.name) },
      restartRequired: restartOnlyChanges(previous.config, next),
      certificates: certificates?.changed ? 'reloaded' : 'unchanged',
    };
    this.watchTlsFiles();
    this.log.info({ audit: true, actor, action: 'reload', result: 'applied', changes: result }, 'configuration reloaded');
    return result;
  }

  private answerFastify(request: FastifyRequest, reply: FastifyReply, err: GatewayError): void {
    reply.hijack();
    if (!speaksHttp1(request.raw) && !isHttp2Request(request.raw)) {
      reply.raw.shouldKeepAlive = false;
      err = versionError(request.raw);
    }
    sendProblem(reply.raw, request.id, err.code, { detail: err.message, headers: err.headers });
  }

  /** Writes out buffered access lines now (they are otherwise batched for up to 200 ms). */
  flushLogs(): void {
    this.accessLog?.flush();
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /** Client connections of the public listener still open. */
  get openConnections(): number {
    return this.connections.open;
  }

  /** Starts both listeners; resolves with the ports actually bound (useful with port 0). */
  async listen(opts: { beforeListen?: () => void } = {}): Promise<{ port: number; tlsPort: number | null; h2cPort: number | null; adminPort: number | null }> {
    await this.initPending();
    // Everything is built and connected: the last moment before traffic (see lifecycle/startup-gc.ts).
    opts.beforeListen?.();
    const { host, port, plain, tls } = this.config.listen;
    await this.server.listen({ host, port: plain ? port : tls!.port });
    for (const { server, port: extraPort } of this.extraListeners) {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port: extraPort }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    }
    let adminPort: number | null = null;
    if (this.admin) {
      await this.admin.listen({ host: this.config.admin.host, port: this.config.admin.port });
      adminPort = (this.admin.server.address() as AddressInfo).port;
    }
    this.watchConfigFile();
    const portOf = (server: Server | null): number | null => (server ? (server.address() as AddressInfo).port : null);
    return { port: (this.server.server.address() as AddressInfo).port, tlsPort: portOf(this.tlsServer), h2cPort: portOf(this.h2cServer), adminPort };
  }

  /**
   * Graceful drain: readiness fails at once, the listener keeps serving for drainDelayMs so load
   * balancers notice, then new connections stop, in-flight requests finish and everything closes.
   */
  async shutdown(): Promise<void> {
    if (!this.draining) {
      this.draining = true;
      this.connections.start();
      this.log.info({ drainDelayMs: this.config.shutdown.drainDelayMs }, 'draining');
      await new Promise((r) => setTimeout(r, this.config.shutdown.drainDelayMs));
    }
    await this.close();
  }

  /** Closes listeners (waiting for in-flight requests), pools and clients. Idempotent. */
  close(): Promise<void> {
    this.draining = true;
    this.closed ??= (async () => {
      if (this.watching && this.configFile) unwatchFile(this.configFile);
      for (const f of this.watchedTlsFiles) unwatchFile(f, this.onTlsFileChange);
      this.closing = true;
      this.connections.start();
      // Upgraded sockets would keep the listener from closing: they get 1001 Going Away first.
      await this.websockets.closeAll();
      const extra = this.extraListeners.filter((l) => l.server.listening).map((l) => new Promise((r) => l.server.close(r)));
      await Promise.all([this.server.close(), ...extra]);
      await this.reloading;
      await Promise.all([this.upstreams.close(), this.admin?.close(), ...this.resources.map((r) => r.close()), ...this.runtimeResources.map((r) => closeQuietly(r, this.log))]);
      this.accessLog?.close();
    })();
    return this.closed;
  }
}
