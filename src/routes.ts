import type { RouteConfig } from './config/schema';
import type { Upstream } from './proxy/upstreams';
import { HeaderNames, REQUEST_DROP } from './proxy/headers';
import type { Step } from './chain';
import type { RouteMetrics } from './observability/metrics';
import type { ResponseTransform } from './proxy/relay';
import type { Mirror } from './proxy/mirror';
import type { TrafficSplit } from './proxy/split';

/** Builds the function that turns a matched, normalised path into the path sent upstream. */
function compileRewrite(cfg: RouteConfig): (path: string) => string {
  const prefix = cfg.match.prefix;
  const cut = prefix === '/' ? 0 : prefix.length;
  if (cfg.rewrite.stripPrefix) {
    return (path) => (path.length === cut ? '/' : path.slice(cut));
  }
  const replacement = cfg.rewrite.replacePrefix;
  if (replacement !== undefined) {
    const base = replacement === '/' ? '' : replacement.replace(/\/$/, '');
    return (path) => {
      const rest = path.slice(cut);
      if (rest === '') return base || '/';
      return base + (rest.charCodeAt(0) === 47 ? rest : '/' + rest);
    };
  }
  return (path) => path;
}

/** A route prepared at start-up: everything the hot path needs is computed once here. */
export class CompiledRoute {
  readonly name: string;
  readonly config: RouteConfig;
  readonly upstream: Upstream;
  readonly rewrite: (path: string) => string;
  readonly requestTimeoutMs: number;
  /** Client headers never forwarded on this route. */
  readonly dropRequestHeaders: HeaderNames;
  readonly metrics: RouteMetrics;
  /** The chain steps this route runs between routing and the relay, in order. */
  steps: Step[] = [];
  /** Rewrites the upstream's responses on this route (header rules, envelope); null on most routes. */
  responseTransform: ResponseTransform | null = null;
  /** A step answers CORS preflights, so an OPTIONS preflight is routed by the method it asks about. */
  answersPreflight = false;
  /** Chooses the upstream of each request on a split route (a copy of this route per side); null otherwise. */
  split: TrafficSplit | null = null;
  /** Copies this route's requests to a shadow upstream; null on most routes. */
  mirror: Mirror | null = null;
  /** Paths with ";" parameters in ordinary segments are forwarded (match.allowPathParameters). */
  readonly allowsPathParameters: boolean;
  /** Requests are relayed as gRPC over HTTP/2 (the route's protocol, else its upstream's). */
  readonly grpc: boolean;

  constructor(config: RouteConfig, upstream: Upstream, metrics: RouteMetrics) {
    this.metrics = metrics;
    this.name = config.name;
    this.config = config;
    this.upstream = upstream;
    this.rewrite = compileRewrite(config);
    this.allowsPathParameters = config.match.allowPathParameters;
    this.requestTimeoutMs = upstream.config.timeouts.requestMs;
    this.dropRequestHeaders = new HeaderNames(REQUEST_DROP);
    this.grpc = (config.protocol ?? upstream.config.protocol) === 'grpc';
  }

  /** This route forwarding to `upstream` instead: one side of its split, sharing its steps, transforms and metrics. */
  side(upstream: Upstream): CompiledRoute {
    if (upstream === this.upstream) return this;
    const copy = new CompiledRoute(this.config, upstream, this.metrics);
    copy.steps = this.steps;
    copy.responseTransform = this.responseTransform;
    copy.answersPreflight = this.answersPreflight;
    copy.mirror = this.mirror;
    return copy;
  }

  /** Chains `t` after the transforms already registered; the last body wrap returned wins. */
  addResponseTransform(t: ResponseTransform): void {
    const prev = this.responseTransform;
    this.responseTransform =
      prev === null
        ? t
        : (ctx, status, headers) => {
            const wrap = prev(ctx, status, headers);
            return t(ctx, status, headers) ?? wrap;
          };
  }
}
