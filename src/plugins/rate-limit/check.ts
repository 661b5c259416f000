import type { ConfigProblem, GatewayConfig } from '../types';
import { burstOf, durationUs, intervalUs, limitSignature, MAX_FILL_US } from './limits';
import type { LimitConfig } from './schema';

function checkLimits(limits: readonly LimitConfig[], at: string, problems: ConfigProblem[]): void {
  const seen = new Map<string, number>();
  const names = new Map<string, number>();
  limits.forEach((l, j) => {
    const path = `${at}[${j}]`;
    if (durationUs(l.per) / l.rate < 1) {
      problems.push({ path: `${path}.rate`, message: `more than one token per microsecond (${l.rate} per ${l.per}) is not supported` });
    } else if (burstOf(l) * intervalUs(l) > MAX_FILL_US) {
      problems.push({ path: `${path}.burst`, message: 'the bucket would take more than 366 days to refill; lower burst or per' });
    }
    if (l.scope === 'consumer' && l.by === 'route') {
      problems.push({ path: `${path}.scope`, message: 'a quota across routes cannot be keyed by route; use by: consumer (or ip, apiKey, header:<name>)' });
    }
    const sig = limitSignature(l);
    const twin = seen.get(sig);
    if (twin !== undefined) problems.push({ path, message: `same limit as ${at}[${twin}]` });
    else seen.set(sig, j);
    if (l.name !== undefined) {
      const other = names.get(l.name);
      if (other !== undefined) problems.push({ path: `${path}.name`, message: `duplicate policy name "${l.name}" (also ${at}[${other}])` });
      else names.set(l.name, j);
    }
  });
}

/** Cross-field rules of rate limits and the store, called from the config loader's crossCheck. */
export function checkRateLimitConfig(cfg: GatewayConfig, problems: ConfigProblem[]): void {
  cfg.routes.forEach((r, i) => {
    if (r.rateLimit) checkLimits(r.rateLimit.limits, `routes[${i}].rateLimit.limits`, problems);
  });
  cfg.consumers.forEach((c, i) => checkLimits(c.rateLimits, `consumers[${i}].rateLimits`, problems));

  const store = cfg.store;
  if (store.type !== 'redis') return;
  const redis = store.redis;
  if (redis.mode === 'cluster') checkClusterQuotas(cfg, problems);
  if (redis.mode === 'standalone' && redis.url === undefined) {
    problems.push({ path: 'store.redis.url', message: 'is required when store.type is redis in standalone mode' });
  }
  if (redis.mode === 'cluster' && redis.nodes.length === 0) {
    problems.push({ path: 'store.redis.nodes', message: 'list at least one node in cluster mode' });
  }
  if (redis.mode === 'sentinel' && redis.sentinels.length === 0) {
    problems.push({ path: 'store.redis.sentinels', message: 'list at least one Sentinel in sentinel mode' });
  }
}

/**
 * On Redis Cluster one request's buckets must share a slot. A quota across routes cannot be tagged
 * with the route, so its route's keys are tagged with the caller alone: every limit applied there
 * must then be keyed the same way (see KeyLayout.callerTag in limits.ts).
 */
function checkClusterQuotas(cfg: GatewayConfig, problems: ConfigProblem[]): void {
  const consumerLimits = cfg.consumers.flatMap((c) => c.rateLimits);
  const consumerQuotas = consumerLimits.some((l) => l.scope === 'consumer');
  cfg.routes.forEach((r, i) => {
    const rl = r.rateLimit;
    if (rl === undefined && (r.auth === undefined || !consumerQuotas)) return;
    // Without rateLimit, a route with auth applies the consumers' quotas only.
    const applied = rl === undefined ? consumerLimits.filter((l) => l.scope === 'consumer') : [...rl.limits, ...(rl.consumerLimits ? consumerLimits : [])];
    if (!applied.some((l) => l.scope === 'consumer')) return;
    const bys = new Set(applied.map((l) => l.by));
    if (bys.size > 1) {
      problems.push({
        path: rl === undefined ? `routes[${i}]` : `routes[${i}].rateLimit`,
        message: `on Redis Cluster, every limit of a route that applies a quota across routes (scope consumer) must use the same \`by\` (here ${[...bys].join(', ')}), so that one request's buckets share a slot`,
      });
    }
  });
}
