import type { Step } from './chain';
import type { GatewayConfig } from './config/schema';
import { ClientIpResolver } from './net/client-ip';
import { SingleHeaders } from './net/strict-http';
import type { GatewayMetrics } from './observability/metrics';
import type { UpstreamRegistry } from './proxy/upstreams';
import { Mirror } from './proxy/mirror';
import { TrafficSplit } from './proxy/split';
import { CompiledRoute } from './routes';
import { Router } from './routing/router';

/**
 * One version of the configuration, ready to serve: compiled routes and their router. A request
 * picks the current runtime when it arrives and keeps it to the end, so a reload never changes the
 * rules under a request in flight.
 */
export class Runtime {
  readonly routes: readonly CompiledRoute[];
  readonly router: Router<CompiledRoute>;
  readonly clientIp: ClientIpResolver;
  /** Host and credential headers a request may carry only once. */
  readonly singleHeaders: SingleHeaders;

  constructor(
    readonly config: Readonly<GatewayConfig>,
    upstreams: UpstreamRegistry,
    metrics: GatewayMetrics,
    /** This runtime's plugins in chain order (createPlugins), each asked once per route. */
    active: readonly { stepFor(route: CompiledRoute): Step | null }[],
  ) {
    this.routes = config.routes.map((r) => {
      const route = new CompiledRoute(r, upstreams.get(r.upstream), metrics.forRoute(r.name));
      for (const p of active) {
        const step = p.stepFor(route);
        if (step) route.steps.push(step);
      }
      if (r.mirror) route.mirror = new Mirror(r.mirror, upstreams.get(r.mirror.upstream), metrics.mirrorRequests, r.name);
      if (r.split) route.split = new TrafficSplit(r.split, (name) => route.side(upstreams.get(name), metrics.forSplitSide(r.name, name)), metrics.splitRequests, r.name);
      return route;
    });
    this.router = new Router(this.routes);
    this.clientIp = new ClientIpResolver(config.trustedProxies);
    this.singleHeaders = new SingleHeaders(config.auth.apiKeys.header);
  }
}
