import { performance } from 'node:perf_hooks';
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
        balance: up.config.balance,
        panic: up.panicking,
        retryBudget: { ratio: up.config.retries.budgetRatio, ...up.retry.budgetUse(now) },
        targets: up.targets.map((t) => {
          const s = t.state;
          const b = s.breaker;
          const pool = t.pool.stats;
          return {
            url: t.url,
            weight: t.weight,
            source: t.source,
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
