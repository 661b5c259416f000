import type { Step, StepResult } from '../../chain';
import type { RequestContext } from '../../context';
import type { CounterFamily } from '../../observability/fast-metrics';
import type { CompiledRoute } from '../../routes';
import type { GateStore } from '../../store/types';
import type { Plugin, PluginContext } from '../types';
import { BackgroundRelays } from '../../proxy/background';
import { CacheKeySpace } from './keys';
import { RouteCache, type BypassReason, type CacheCells } from './route-cache';

const RESULTS = ['hit', 'miss', 'stale', 'revalidated'] as const;
const BYPASS_REASONS: readonly BypassReason[] = ['client', 'store', 'credentials'];

/** The cache step of a route whose lookup does not ride with a rate limit: its own gate call, with no buckets. */
class CacheStep implements Step {
  readonly name = 'cache';
  constructor(private readonly cache: RouteCache) {}

  run(ctx: RequestContext): StepResult {
    const cr = this.cache.prepare(ctx);
    if (cr === null) return true;
    const store = this.cache.store;
    const req = { keys: [], specs: [], cache: cr.lookup };
    if (store.kind === 'memory') return this.cache.answer(ctx, cr, store.gate(req).cache, this);
    return store.gate(req).then((r) => this.cache.answer(ctx, cr, r === null ? null : r.cache, this));
  }
}

/**
 * Builds the response cache of every route with a `cache` section. When the route also has a rate
 * limit and hits count against it (the default), the rate-limit step carries the lookup in its own
 * gate call (`forRoute`), so a request costs one store round trip; otherwise the cache runs its own step.
 */
export class CachePlugin implements Plugin {
  readonly name = 'cache';
  private readonly results: CounterFamily;
  private readonly storesFamily: CounterFamily;
  private readonly built = new Map<string, RouteCache>();
  private readonly background: BackgroundRelays;
  private readonly space: CacheKeySpace;

  constructor(
    private readonly ctx: PluginContext,
    private readonly store: GateStore,
  ) {
    this.results = ctx.shared('cache.results', () =>
      ctx.metrics.counter(
        'gateway_cache_requests_total',
        'Response cache outcomes by route: hit, miss (went upstream), bypass (went upstream without the cache; reason: client = the request said no-store, store = the store did not answer, credentials = a shared cache met a request with credentials and a response not marked public or s-maxage), stale (answered from a stale entry), revalidated (the upstream answered a conditional request 304: answered from the refreshed entry). reason is empty except for bypass.',
        ['route', 'result', 'reason'],
      ),
    );
    // Refreshes may outlive a reload's runtime, not the gateway.
    this.background = ctx.shared('cache.background', () => {
      const b = new BackgroundRelays();
      ctx.addResource(b);
      return b;
    });
    this.space = new CacheKeySpace(ctx.config);
    this.storesFamily = ctx.shared('cache.stores', () => ctx.metrics.counter('gateway_cache_stores_total', 'Responses stored in the cache, by route.', ['route']));
  }

  /** The route's cache (built once per runtime), or null when the route has none. */
  forRoute(route: CompiledRoute): RouteCache | null {
    const cfg = route.config.cache;
    if (cfg === undefined) return null;
    let c = this.built.get(route.name);
    if (c === undefined) {
      const cells: CacheCells = {
        results: Object.fromEntries(RESULTS.map((r) => [r, this.results.child(route.name, r, '')])) as CacheCells['results'],
        bypass: Object.fromEntries(BYPASS_REASONS.map((r) => [r, this.results.child(route.name, 'bypass', r)])) as CacheCells['bypass'],
        stores: this.storesFamily.child(route.name),
      };
      c = new RouteCache(cfg, this.space.keys(route.name), this.space, this.store, this.ctx.config.auth.apiKeys.header.toLowerCase(), cells, this.background);
      this.built.set(route.name, c);
    }
    return c;
  }

  /** The lookup rides with the rate limit when there is one and hits count against it. */
  joinsRateLimit(route: CompiledRoute): boolean {
    return route.config.rateLimit !== undefined && route.config.cache?.countHits === true;
  }

  stepFor(route: CompiledRoute): Step | null {
    const c = this.forRoute(route);
    if (c === null || this.joinsRateLimit(route)) return null;
    return new CacheStep(c);
  }
}
