import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Gauge, type Registry } from 'prom-client';
import { ConfigError } from '../config/problem';
import type { GatewayConfig } from '../config/schema';
import { ERRORS, problemBody, PROBLEM_CONTENT_TYPE, type ErrorCode } from '../errors';
import type { ReloadResult } from '../lifecycle/reload';
import { AdminGuard } from './guard';
import { redact } from './redact';

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
  isDraining(): boolean;
  config(): Readonly<GatewayConfig>;
  /** Upstreams with the live state of every target (health, breaker, in-flight, queued, pool). */
  upstreams(): unknown;
  reload(actor: string): Promise<ReloadResult>;
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
  const admin = Fastify({
    loggerInstance: deps.logger.child({ listener: 'admin' }),
    logController: new LogController({ disableRequestLogging: true }),
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

  const readiness = async (): Promise<Readiness> => {
    const draining = deps.isDraining();
    const checks: Record<string, CheckState> = { draining };
    const degraded: string[] = [];
    let ok = !draining;
    const config = deps.config();
    for (const c of deps.checks()) {
      let state: CheckState;
      try {
        state = await c.ready();
      } catch {
        state = false;
      }
      checks[c.name] = state;
      dependencyUp.set({ check: c.name }, state === true ? 1 : 0);
      if (state === true) continue;
      if (state === false && c.required?.(config) === false) degraded.push(c.name);
      else ok = false;
    }
    return { ok, checks, degraded };
  };

  admin.addHook('onRequest', async (request, reply) => {
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

  admin.get('/metrics', async (_req, reply) => {
    // The dependency gauge shows the state now, not as of the last probe.
    await readiness();
    reply.header('content-type', deps.registry.contentType);
    return deps.registry.metrics();
  });

  admin.get('/admin/config', async () => redact(deps.config()));

  admin.get('/admin/routes', async () =>
    deps.config().routes.map((r) => ({ name: r.name, match: r.match, upstream: r.upstream, rewrite: r.rewrite, preserveHost: r.preserveHost })),
  );

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
  admin.setNotFoundHandler((request, reply) => problem(reply, request, 'ROUTE_NOT_FOUND'));
  return admin;
}
