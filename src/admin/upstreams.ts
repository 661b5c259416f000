import { createHash, timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { FastifyInstance } from 'fastify';
import { problemBody, PROBLEM_CONTENT_TYPE } from '../errors';
import type { UpstreamRegistry } from '../proxy/upstreams';

/** The state of every upstream target, as the relay sees it now. */
export function upstreamStatus(registry: UpstreamRegistry) {
  const now = performance.now();
  return {
    upstreams: [...registry.all()].map((up) => {
      const hc = up.config.healthCheck;
      return {
        name: up.name,
        available: up.targets.filter((t) => t.state.routable).length,
        retryBudget: { ratio: up.config.retries.budgetRatio, ...up.retry.budgetUse(now) },
        targets: up.targets.map((t) => {
          const s = t.state;
          const b = s.breaker;
          const pool = t.pool.stats;
          return {
            url: t.url,
            routable: s.routable,
            healthy: s.healthy,
            breaker: s.breakerState,
            breakerOpenForMs: b ? Math.round(b.msUntilProbe(now)) : 0,
            breakerTrips: b?.trips ?? 0,
            inFlight: s.inFlight,
            queued: s.queued,
            connections: { inUse: pool.connected - pool.free, idle: pool.free },
            healthCheck: hc.enabled
              ? {
                  path: hc.path,
                  passesInARow: s.checkPasses,
                  failuresInARow: s.checkFailures,
                  last: s.lastCheck && { at: new Date(s.lastCheck.at).toISOString(), ok: s.lastCheck.ok, detail: s.lastCheck.detail },
                }
              : null,
          };
        }),
      };
    }),
  };
}

const BEARER = /^bearer +(\S+) *$/i;

/**
 * GET /admin/upstreams on the admin listener: read-only target state. With `admin.token` set it
 * requires `Authorization: Bearer <token>` (compared in constant time on hashes).
 */
export function registerUpstreamStatus(admin: FastifyInstance, registry: UpstreamRegistry, token: string | undefined): void {
  const expected = token === undefined ? null : createHash('sha256').update(token).digest();
  admin.get('/admin/upstreams', async (request, reply) => {
    if (expected !== null) {
      const m = BEARER.exec(request.headers.authorization ?? '');
      const presented = createHash('sha256').update(m ? m[1] : '').digest();
      if (m === null || !timingSafeEqual(presented, expected)) {
        return reply
          .code(401)
          .header('www-authenticate', 'Bearer realm="admin"')
          .header('cache-control', 'no-store')
          .type(PROBLEM_CONTENT_TYPE)
          .send(problemBody('UNAUTHENTICATED', String(request.id), 'a valid admin token is required'));
      }
    }
    reply.header('cache-control', 'no-store');
    return upstreamStatus(registry);
  });
}
