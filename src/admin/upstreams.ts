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
            manual: s.manual === 'drained' && s.inFlight > 0 ? 'draining' : s.manual,
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

export type TargetAction = 'drain' | 'eject' | 'restore';
const MANUAL = { drain: 'drained', eject: 'ejected', restore: null } as const;

/**
 * Takes a target out of the rotation by hand or puts it back. `target` is the target's URL or its
 * index in the upstream's list. Returns null when there is no such upstream or target.
 */
export function setTargetState(registry: UpstreamRegistry, upstream: string, target: string, action: TargetAction) {
  const up = [...registry.all()].find((u) => u.name === upstream);
  if (!up) return null;
  const t = /^\d+$/.test(target) ? up.targets[Number(target)] : up.targets.find((x) => x.url === target || x.url === `${target}/`);
  if (!t) return null;
  t.state.setManual(MANUAL[action]);
  return { upstream: up.name, target: t.url, manual: t.state.manual, routable: t.state.routable, inFlight: t.state.inFlight };
}
