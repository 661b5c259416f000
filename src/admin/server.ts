import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';

/** Something readiness depends on (config loaded, Redis reachable, ...). */
export interface ReadinessCheck {
  readonly name: string;
  ready(): boolean | Promise<boolean>;
}

export interface AdminDeps {
  logger: FastifyBaseLogger;
  registry: Registry;
  checks: () => readonly ReadinessCheck[];
  isDraining(): boolean;
}

/**
 * The admin listener: liveness, readiness and metrics. Liveness never depends on a backing store:
 * a Redis outage must not get healthy replicas restarted.
 */
export function buildAdminServer(deps: AdminDeps): FastifyInstance {
  const admin = Fastify({ loggerInstance: deps.logger.child({ listener: 'admin' }), logController: new LogController({ disableRequestLogging: true }) });

  admin.get('/healthz', async () => ({ status: 'ok' }));

  admin.get('/readyz', async (_req, reply) => {
    const checks: Record<string, boolean> = {};
    let ok = !deps.isDraining();
    checks.draining = deps.isDraining();
    for (const c of deps.checks()) {
      let up: boolean;
      try {
        up = await c.ready();
      } catch {
        up = false;
      }
      checks[c.name] = up;
      ok &&= up;
    }
    reply.code(ok ? 200 : 503);
    return { status: ok ? 'ready' : 'not ready', checks };
  });

  admin.get('/metrics', async (_req, reply) => {
    reply.header('content-type', deps.registry.contentType);
    return deps.registry.metrics();
  });

  return admin;
}
