import type { Step } from '../../chain';
import type { RequestContext } from '../../context';
import { GatewayError } from '../../errors';
import { removeNamed } from '../../proxy/headers';
import type { CompiledRoute } from '../../routes';
import type { Plugin, PluginContext } from '../types';
import type { CorsConfig } from './schema';

const DEFAULT_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE';

/** scheme://host[:port] where the host may start with `*.` and the port may be `*`. */
export const ORIGIN_PATTERN = /^(https?):\/\/(\*\.)?([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)(?::(\d{1,5}|\*))?$/;

/**
 * `https://*.example.com` takes any subdomain (not the bare domain); `http://localhost:*` any port.
 * Built from a validated pattern, so the expression is linear and anchored.
 */
function patternToRegExp(pattern: string): RegExp {
  const [, scheme, wildcard, host, port] = ORIGIN_PATTERN.exec(pattern)!;
  const escapedHost = host.toLowerCase().replace(/\./g, '\\.');
  const sub = wildcard ? '[a-z0-9-]+(?:\\.[a-z0-9-]+)*\\.' : '';
  const portPart = port === undefined ? '' : port === '*' ? ':\\d{1,5}' : `:${port}`;
  return new RegExp(`^${scheme}://${sub}${escapedHost}${portPart}$`);
}

/** Response headers the gateway owns on a CORS route: the upstream's own are dropped. */
const OWNED = new Set([
  'access-control-allow-origin',
  'access-control-allow-credentials',
  'access-control-allow-methods',
  'access-control-allow-headers',
  'access-control-expose-headers',
  'access-control-max-age',
]);

function dropOwned(_ctx: RequestContext, _status: number, headers: string[]): null {
  removeNamed(headers, OWNED);
  return null;
}

/** One route's CORS policy, compiled at start-up. */
class CorsStep implements Step {
  readonly name = 'cors';
  private readonly anyOrigin: boolean;
  private readonly exact: Set<string>;
  private readonly patterns: RegExp[];
  private readonly credentials: boolean;
  private readonly exposeHeaders: string;
  private readonly methods: string;
  private readonly allowHeaders: string | null;
  private readonly maxAge: string;

  constructor(cfg: CorsConfig, routeMethods: readonly string[] | undefined) {
    this.anyOrigin = cfg.origins.includes('*');
    const explicit = cfg.origins.filter((o) => o !== '*');
    this.exact = new Set(explicit.filter((o) => !o.includes('*')).map((o) => o.toLowerCase()));
    this.patterns = explicit.filter((o) => o.includes('*')).map(patternToRegExp);
    this.credentials = cfg.credentials;
    this.exposeHeaders = cfg.exposeHeaders.join(', ');
    this.methods = cfg.methods.length ? cfg.methods.join(', ') : routeMethods?.join(', ') ?? DEFAULT_METHODS;
    this.allowHeaders = cfg.allowHeaders === undefined ? null : cfg.allowHeaders.join(', ');
    this.maxAge = String(cfg.maxAgeSeconds);
  }

  /** The Access-Control-Allow-Origin value for `origin`, or null when it is not allowed. */
  private allowOrigin(origin: string): string | null {
    if (this.anyOrigin) return '*';
    const lower = origin.toLowerCase();
    if (this.exact.has(lower)) return origin;
    for (const p of this.patterns) if (p.test(lower)) return origin;
    return null;
  }

  run(ctx: RequestContext): boolean {
    const headers = ctx.req.headers;
    const origin = headers.origin;
    const isPreflight = ctx.req.method === 'OPTIONS' && origin !== undefined && headers['access-control-request-method'] !== undefined;
    // The answer depends on Origin unless every origin gets `*`: shared caches must key on it.
    if (!this.anyOrigin) ctx.addResponseHeader('vary', 'Origin');
    if (origin === undefined) return true;
    const allowed = this.allowOrigin(origin);
    if (isPreflight) return this.preflight(ctx, allowed);
    if (allowed === null) return true;
    ctx.addResponseHeader('access-control-allow-origin', allowed);
    if (this.credentials) ctx.addResponseHeader('access-control-allow-credentials', 'true');
    if (this.exposeHeaders !== '') ctx.addResponseHeader('access-control-expose-headers', this.exposeHeaders);
    return true;
  }

  /** Answered here: the upstream never sees a preflight, and no credentials are asked for. */
  private preflight(ctx: RequestContext, allowed: string | null): false {
    if (allowed === null) {
      throw new GatewayError('FORBIDDEN', { detail: 'The origin is not allowed by the CORS policy of this route' });
    }
    const asked = ctx.req.headers['access-control-request-headers'];
    const out = [
      'access-control-allow-origin', allowed,
      'access-control-allow-methods', this.methods,
      'access-control-max-age', this.maxAge,
      'vary', 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
      'content-length', '0',
      'x-request-id', ctx.id,
    ];
    const allowHeaders = this.allowHeaders ?? asked;
    if (allowHeaders) out.push('access-control-allow-headers', allowHeaders);
    if (this.credentials) out.push('access-control-allow-credentials', 'true');
    ctx.res.writeHead(204, out);
    ctx.res.end();
    return false;
  }
}

/** CORS: the route's own policy, or the global one. Runs before authentication. */
export function corsPlugin(ctx: PluginContext): Plugin {
  const global = ctx.config.policies.cors;
  return {
    name: 'cors',
    stepFor(route: CompiledRoute): Step | null {
      const cfg = route.config.policies.cors ?? global;
      if (cfg === undefined || !cfg.enabled) return null;
      route.answersPreflight = true;
      route.addResponseTransform(dropOwned);
      return new CorsStep(cfg, route.config.match.methods);
    },
  };
}
