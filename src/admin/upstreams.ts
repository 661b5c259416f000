import { performance } from 'node:perf_hooks';
import { effectiveWeight } from '../proxy/balance';
import type { UpstreamRegistry } from '../proxy/upstreams';
import type { CompiledRoute } from '../routes';

/** The state of every upstream target, as the relay sees it now. */
export function upstreamStatus(registry: UpstreamRegistry) {
  const now = performance.now();
  return {
    upstreams: [...registry.all()].map((up) => {
      const hc = up.config.healthCheck;
      const dns = up.targets.filter((t) => t.source === 'dns').length;
      // Consistent hashing keeps each key's target whatever the ramp: slow start applies to the other balancers.
      const slowStartMs = up.config.balance === 'hash' ? 0 : up.config.slowStartMs;
      return {
        name: up.name,
        available: up.targets.filter((t) => t.state.routable).length,
        targetsByOrigin: { static: up.targets.length - dns, dns },
        discovery: up.config.discovery.type,
        balance: up.config.balance,
        ...(up.config.balance === 'hash' ? { hash: up.config.hash } : {}),
        slowStartMs,
        panic: up.panicking,
        minHealthyPercent: up.config.minHealthyPercent,
        retryBudget: { ratio: up.config.retries.budgetRatio, ...up.retry.budgetUse(now) },
        targets: up.targets.map((t) => {
          const s = t.state;
          const b = s.breaker;
          const pool = t.pool.stats;
          return {
            url: t.url,
            weight: t.weight,
            effectiveWeight: Math.round(effectiveWeight(up.config, t, now) * 1000) / 1000,
            slowStartLeftMs: slowStartMs === 0 ? 0 : Math.max(0, Math.round(s.routableSince + slowStartMs - now)),
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

/**
 * The traffic controls of each route as they act now: the sides of a split (weights, share, rules,
 * requests by reason, each side's upstream availability) and the mirror (shadow upstream, sample
 * share, copies in flight and results). Null on routes without them.
 */
export function routeTraffic(routes: readonly CompiledRoute[]): Map<string, { split: unknown; mirror: unknown }> {
  return new Map(
    routes.map((r) => {
      const m = r.mirror;
      const mirror = m && {
        upstream: m.upstream.name,
        sampleRatio: m.sampleRatio,
        maxConcurrent: m.maxConcurrent,
        maxBodyBytes: m.maxBodyBytes,
        ...m.status(),
      };
      return [r.name, { split: r.split?.status() ?? null, mirror }];
    }),
  );
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
