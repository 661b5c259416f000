import type { Step } from '../../chain';
import type { RequestContext } from '../../context';
import { removeNamed } from '../../proxy/headers';
import type { CompiledRoute } from '../../routes';
import type { Plugin } from '../types';
import type { DeprecationConfig } from './schema';

/** An ISO 8601 date-time with an explicit zone; anything looser is ambiguous about the day. */
export const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * The headers a deprecated route's responses carry:
 *   Deprecation: @1688169599                          (RFC 9745: a structured-field date, epoch seconds)
 *   Sunset: Sun, 30 Jun 2024 23:59:59 GMT             (RFC 8594: an HTTP-date)
 *   Link: <https://...>; rel="deprecation"; type="text/html"
 */
export function deprecationHeaders(cfg: DeprecationConfig): string[] {
  const out = ['deprecation', `@${Math.floor(Date.parse(cfg.date) / 1000)}`];
  if (cfg.sunset !== undefined) out.push('sunset', new Date(Date.parse(cfg.sunset)).toUTCString());
  if (cfg.link !== undefined) out.push('link', `<${cfg.link}>; rel="deprecation"; type="text/html"`);
  return out;
}

const OWNED: ReadonlySet<string> = new Set(['deprecation', 'sunset']);

/** The route's configuration is the authority: the upstream's own Deprecation and Sunset are replaced. */
function transform(pairs: readonly string[]) {
  return (_ctx: RequestContext, _status: number, headers: string[]): null => {
    removeNamed(headers, OWNED);
    for (const h of pairs) headers.push(h);
    return null;
  };
}

/** API versioning helper: a route marked deprecated announces it on every relayed response. */
export function deprecationPlugin(): Plugin {
  return {
    name: 'deprecation',
    stepFor(route: CompiledRoute): Step | null {
      const cfg = route.config.policies.deprecation;
      if (cfg !== undefined) route.addResponseTransform(transform(deprecationHeaders(cfg)));
      return null;
    },
  };
}
