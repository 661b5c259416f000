import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type pino from 'pino';
import { Gauge, Registry } from 'prom-client';
import { ConfigError } from '../config/problem';
import type { GatewayConfig } from '../config/schema';
import { ERRORS, problemBody, PROBLEM_CONTENT_TYPE, type ErrorCode } from '../errors';
import type { ReloadResult } from '../lifecycle/reload';
import { openMetricsText, prefersOpenMetrics } from '../observability/metrics';
import { RequestIds } from '../request-ids';
import { AdminGuard } from './guard';
import { redact } from './redact';
import type { TargetAction } from './upstreams';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
/** Methods the admin API answers to; a path known for some of them gets 405 with Allow for the others. */
const ADMIN_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH'] as const;

/**
 * A check's state: up, down, or 'warming' (connected but not yet answering within its budget: the
 * replica is not ready yet, whether or not it could serve without the dependency).
 */
export type CheckState = boolean | 'warming';

/** Something readiness depends on (config loaded, Redis reachable, ...). */
export interface ReadinessCheck {
  readonly name: string;
  ready(): CheckState | Promise<CheckState>;
  /**
   * Whether the replica cannot serve without it under `config` (default: it cannot). A check that
   * is not required and down leaves the replica ready, reported as degraded.
   */
  required?(config: Readonly<GatewayConfig>): boolean;
}

/** A check's state now, and whether the configuration serving cannot do without it. */
export interface CheckReport {
  name: string;
  state: CheckState;
  required: boolean;
}

/** Evaluates checks now; one that throws is down. */
export function checkReports(checks: readonly ReadinessCheck[], config: Readonly<GatewayConfig>): Promise<CheckReport[]> {
  return Promise.all(
    checks.map(async (c): Promise<CheckReport> => {
      let state: CheckState;
      try {
        state = await c.ready();
      } catch {
        state = false;
      }
      return { name: c.name, state, required: c.required?.(config) ?? true };
    }),
  );
}

/** What /readyz answers and the dependency gauge shows. */
interface Readiness {
  ok: boolean;
  checks: Record<string, CheckState>;
  degraded: string[];
}

/** The part of the gateway the admin listener may see and drive. */
export interface AdminDeps {
  logger: FastifyBaseLogger;
  registry: Registry;
  checks: () => readonly ReadinessCheck[];
  /** Replaces evaluating `checks` (the main thread of several workers merges what every worker reports). */
  readinessStates?: () => Promise<CheckReport[]>;
  /** Replaces `registry.metrics()` for /metrics (the main thread of several workers merges every worker's registry). */
  scrape?: () => Promise<string>;
  isDraining(): boolean;
  config(): Readonly<GatewayConfig>;
  /** Upstreams with the live state of every target (health, breaker, in-flight, queued, pool). */
  upstreams(): unknown;
  /** The live split and mirror of each route by name (admin/upstreams.ts routeTraffic). */
  routeTraffic(): Map<string, { split: unknown; mirror: unknown }> | Promise<Map<string, { split: unknown; mirror: unknown }>>;
  reload(actor: string): Promise<ReloadResult>;
  /** Version, uptime, configuration hash (GET /admin). */
  info(): Record<string, unknown> | Promise<Record<string, unknown>>;
  logLevel(): string;
  /** Changes the log level until the next reload or restart. */
  setLogLevel(level: string): void;
  /** Drains, ejects or restores a target; null when the upstream or target does not exist. */
  targetAction(upstream: string, target: string, action: TargetAction): unknown;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Id of the admin token that authenticated the request. */
    adminActor?: string;
  }
}

export function problem(reply: FastifyReply, request: FastifyRequest, code: ErrorCode, detail?: string, extra?: Record<string, unknown>): FastifyReply {
  const body = JSON.parse(problemBody(code, request.id, detail)) as Record<string, unknown>;
  return reply
    .code(ERRORS[code].status)
    .header('content-type', PROBLEM_CONTENT_TYPE)
    .send({ ...body, ...extra });
}

/**
 * The admin listener: probes, metrics and the admin API. Liveness never depends on a backing store
 * (a Redis outage must not get healthy replicas restarted). Everything under /admin/ needs an admin
 * token; without any token configured the admin API is off and only the probes and metrics answer.
 */
export function buildAdminServer(deps: AdminDeps): FastifyInstance {
  const ids = new RequestIds();
  const admin = Fastify({
    loggerInstance: deps.logger.child({ listener: 'admin' }),
    logController: new LogController({ disableRequestLogging: true }),
    // Request ids like the public listener's: the caller's when sane, a UUID otherwise.
    requestIdHeader: false,
    genReqId: (req) => ids.for(req.headers['x-request-id']),
  });
  const cfg = deps.config();
  const guard = new AdminGuard([...(cfg.admin.token ? [{ id: 'admin', token: cfg.admin.token }] : []), ...cfg.admin.tokens]);
  const metricsNeedToken = !cfg.admin.metricsPublic;
  const dependencyUp = new Gauge({
    name: 'gateway_dependency_up',
    help: 'Readiness checks of the gateway (config, redis, ...): 1 up, 0 down or still warming up. A dependency down while every route using it fails open leaves the replica ready (degraded, see /readyz).',
    labelNames: ['check'],
    registers: [deps.registry],
  });

  const states = deps.readinessStates ?? (() => checkReports(deps.checks(), deps.config()));

  const readiness = async (): Promise<Readiness> => {
    const draining = deps.isDraining();
    const checks: Record<string, CheckState> = { draining };
    const degraded: string[] = [];
    let ok = !draining;
    for (const { name, state, required } of await states()) {
      checks[name] = state;
      dependencyUp.set({ check: name }, state === true ? 1 : 0);
      if (state === true) continue;
      if (state === false && !required) degraded.push(name);
      else ok = false;
    }
    return { ok, checks, degraded };
  };

  admin.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    const path = request.url;
    const isApi = path.startsWith('/admin/') || path === '/admin';
    if (!isApi && !(metricsNeedToken && path.startsWith('/metrics'))) return;
    if (!guard.enabled) return problem(reply, request, 'ROUTE_NOT_FOUND', 'the admin API is off: no admin token is configured');
    const actor = guard.identify(request.headers.authorization);
    if (actor === null) {
      reply.header('www-authenticate', 'Bearer realm="gateway-admin"');
      return problem(reply, request, 'UNAUTHENTICATED', 'a valid admin bearer token is required');
    }
    request.adminActor = actor;
  });

  admin.get('/healthz', async () => ({ status: 'ok' }));

  admin.get('/readyz', async (_req, reply) => {
    const { ok, checks, degraded } = await readiness();
    reply.code(ok ? 200 : 503);
    return { status: ok ? (degraded.length > 0 ? 'degraded' : 'ready') : 'not ready', checks, degraded };
  });

  admin.get('/metrics', async (req, reply) => {
    // The dependency gauge shows the state now, not as of the last probe.
    await readiness();
    reply.header('vary', 'accept');
    if (prefersOpenMetrics(req.headers.accept)) {
      reply.header('content-type', Registry.OPENMETRICS_CONTENT_TYPE);
      return openMetricsText(deps.registry);
    }
    reply.header('content-type', deps.registry.contentType);
    return deps.scrape ? deps.scrape() : deps.registry.metrics();
  });

  admin.get('/admin', async () => ({ ...(await deps.info()), logLevel: deps.logLevel(), draining: deps.isDraining() }));

  admin.get('/admin/config', async () => redact(deps.config()));

  // Each route with the policies it applies (auth, rate limits, cache, ...: every field a plugin adds), secrets redacted.
  admin.get('/admin/routes', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    const traffic = await deps.routeTraffic();
    return deps.config().routes.map((r) => {
      const { name, match, upstream, rewrite, preserveHost, split: _split, mirror: _mirror, ...policies } = r;
      const live = traffic.get(name);
      return { name, match, upstream, rewrite, preserveHost, split: live?.split ?? null, mirror: live?.mirror ?? null, policies: redact(policies) };
    });
  });

  admin.put('/admin/log-level', async (request, reply) => {
    const level = (request.body as { level?: unknown } | undefined)?.level;
    if (typeof level !== 'string' || !LOG_LEVELS.includes(level)) {
      return problem(reply, request, 'BAD_REQUEST', `body.level must be one of ${LOG_LEVELS.join(', ')}`);
    }
    const from = deps.logLevel();
    const audit = () => deps.logger.warn({ audit: true, actor: request.adminActor, action: 'log-level', from, to: level }, 'log level changed until the next reload');
    // The audit line is written at whichever of the two levels lets it through.
    const before = (deps.logger as unknown as pino.Logger).isLevelEnabled('warn');
    if (before) audit();
    deps.setLogLevel(level);
    admin.log.level = level;
    if (!before) audit();
    return { level, revertsOn: 'reload' };
  });

  admin.post('/admin/upstreams/:upstream/targets/:target/:action', async (request, reply) => {
    const { upstream, target, action } = request.params as { upstream: string; target: string; action: string };
    if (action !== 'drain' && action !== 'eject' && action !== 'restore') {
      return problem(reply, request, 'ROUTE_NOT_FOUND', 'the action is drain, eject or restore');
    }
    const result = await deps.targetAction(upstream, target, action);
    if (result === null) return problem(reply, request, 'ROUTE_NOT_FOUND', `no target ${target} in upstream ${upstream} (a target URL or index)`);
    deps.logger.warn({ audit: true, actor: request.adminActor, action: `target-${action}`, upstream, target }, 'upstream target changed by hand');
    return result;
  });

  admin.get('/admin/upstreams', async (_req, reply) => {
    reply.header('cache-control', 'no-store');
    return deps.upstreams();
  });

  admin.get('/admin/consumers', async () =>
    deps.config().consumers.map((c) => ({ id: c.id, roles: c.roles, scopes: c.scopes, routes: c.routes ?? null })),
  );

  admin.post('/admin/reload', async (request, reply) => {
    try {
      return { status: 'reloaded', ...(await deps.reload(request.adminActor ?? 'unknown')) };
    } catch (err) {
      if (err instanceof ConfigError) {
        return problem(reply, request, 'BAD_REQUEST', 'the new configuration is invalid; the old one keeps serving', {
          errors: err.problems.map((p) => ({ path: p.path, message: p.message })),
        });
      }
      return problem(reply, request, 'INTERNAL', `reload failed; the old configuration keeps serving: ${(err as Error).message}`);
    }
  });

  // `curl -X POST -H 'content-type: application/json'` with no body is a normal way to call an
  // admin action without options: an empty body is no body, not an error.
  admin.removeContentTypeParser('application/json');
  admin.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    if (body === '') return done(null, undefined);
    try {
      done(null, JSON.parse(body as string));
    } catch {
      done(Object.assign(new Error('the body is not valid JSON'), { statusCode: 400 }));
    }
  });
  admin.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
    if (err.statusCode !== undefined && err.statusCode < 500) return problem(reply, request, 'BAD_REQUEST', err.message);
    request.log.error({ err }, 'admin request failed');
    return problem(reply, request, 'INTERNAL');
  });
  admin.setNotFoundHandler((request, reply) => {
    const url = request.url.split('?')[0];
    const allow = ADMIN_METHODS.filter((method) => admin.findRoute({ method, url }) !== null);
    if (allow.length > 0) {
      reply.header('allow', allow.join(', '));
      return problem(reply, request, 'METHOD_NOT_ALLOWED', `${request.method} is not allowed here`);
    }
    return problem(reply, request, 'ROUTE_NOT_FOUND');
  });
  return admin;
}
