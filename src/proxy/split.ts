import type { RouteSplitConfig } from '../config/schema';
import type { RequestContext } from '../context';
import type { CounterCell, CounterFamily } from '../observability/fast-metrics';
import { SplitSideMetrics } from '../observability/metrics';
import type { CompiledRoute } from '../routes';
import { hash32 } from '../hash';
import { keyReader, type KeyReader } from './balance';

/** One side of a split: the route as it forwards to that side's upstream, and its counters by reason. */
interface Side {
  readonly route: CompiledRoute;
  readonly weight: number;
  readonly byMatch: CounterCell;
  readonly bySticky: CounterCell;
  readonly byWeight: CounterCell;
}

/** A match rule, compiled: the side whose rule the request's header or cookie value satisfies. */
interface Rule {
  readonly read: KeyReader;
  readonly value: string;
  readonly side: Side;
}

/**
 * Chooses the side of a split route for each request: the first side whose match rule the request
 * satisfies, else by the sticky key's hash over the weights (a user keeps its side, and changing
 * 95/5 to 90/10 moves only the users between 90 and 95), else smooth weighted round-robin. Built
 * once per runtime, so a reload that changes the weights takes effect for new requests only.
 */
export class TrafficSplit {
  private readonly sides: readonly Side[];
  private readonly rules: readonly Rule[];
  private readonly sticky: KeyReader | null;
  /** Upper bounds of each side's share of [0, total), for the sticky hash. */
  private readonly bounds: Uint32Array;
  private readonly total: number;
  private readonly scores: Float64Array;
  private readonly cfg: RouteSplitConfig;

  constructor(cfg: RouteSplitConfig, routeFor: (upstream: string) => CompiledRoute, counter: CounterFamily, routeName: string) {
    this.sides = cfg.sides.map((s) => ({
      route: routeFor(s.upstream),
      weight: s.weight,
      byMatch: counter.child(routeName, s.upstream, 'match'),
      bySticky: counter.child(routeName, s.upstream, 'sticky'),
      byWeight: counter.child(routeName, s.upstream, 'weight'),
    }));
    const rules: Rule[] = [];
    cfg.sides.forEach((s, i) => {
      for (const m of s.match ?? []) rules.push({ read: keyReader(m.header !== undefined ? `header:${m.header}` : `cookie:${m.cookie}`), value: m.value, side: this.sides[i] });
    });
    this.rules = rules;
    this.sticky = cfg.sticky === undefined ? null : keyReader(cfg.sticky);
    this.bounds = new Uint32Array(this.sides.length);
    let total = 0;
    this.sides.forEach((s, i) => (this.bounds[i] = total += s.weight));
    this.total = total;
    this.scores = new Float64Array(this.sides.length);
    this.cfg = cfg;
  }

  /** The sides with their weights, rules and requests by reason (since the gateway started), for the admin API. */
  status() {
    return {
      sticky: this.cfg.sticky ?? null,
      sides: this.sides.map((s, i) => {
        const up = s.route.upstream;
        return {
          upstream: up.name,
          weight: s.weight,
          share: this.total === 0 ? 0 : s.weight / this.total,
          match: this.cfg.sides[i].match ?? [],
          requests: { match: s.byMatch.value, sticky: s.bySticky.value, weight: s.byWeight.value },
          responses: s.route.metrics instanceof SplitSideMetrics ? s.route.metrics.responses() : null,
          available: up.targets.filter((t) => t.state.routable).length,
          targets: up.targets.length,
          panic: up.panicking,
        };
      }),
    };
  }

  /** The route, bound to one side's upstream, that forwards this request. */
  pick(ctx: RequestContext): CompiledRoute {
    const rules = this.rules;
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i];
      if (r.read(ctx) === r.value) {
        r.side.byMatch.inc();
        return r.side.route;
      }
    }
    if (this.sticky !== null) {
      const key = this.sticky(ctx);
      if (key !== undefined) {
        const at = hash32(key) % this.total;
        const bounds = this.bounds;
        let i = 0;
        while (at >= bounds[i]) i++;
        const side = this.sides[i];
        side.bySticky.inc();
        return side.route;
      }
    }
    const side = this.sides[this.next()];
    side.byWeight.inc();
    return side.route;
  }

  /** nginx's smooth weighted round-robin over the sides: exact shares, evenly interleaved. */
  private next(): number {
    const { sides, scores } = this;
    let best = 0;
    for (let i = 0; i < sides.length; i++) {
      scores[i] += sides[i].weight;
      if (scores[i] > scores[best]) best = i;
    }
    scores[best] -= this.total;
    return best;
  }
}
