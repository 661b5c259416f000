import type { ConfigProblem, GatewayConfig } from '../types';

/** The two caches that look configured and store nothing: warned about at load and by `gateway validate`. */
export function cacheWarnings(cfg: Readonly<GatewayConfig>): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  cfg.routes.forEach((r, i) => {
    const c = r.cache;
    if (c === undefined) return;
    if (c.defaultTtl === 0) {
      out.push({
        path: `routes[${i}].cache.defaultTtl`,
        message:
          'only responses with explicit freshness (Cache-Control max-age or s-maxage, CDN-Cache-Control, Expires) are stored: if the upstream sends none, this cache stores nothing. Set defaultTtl to keep such responses that long.',
      });
    }
    if (r.auth !== undefined && c.scope === 'shared') {
      out.push({
        path: `routes[${i}].cache.scope`,
        message: `requests on this route carry credentials, so the shared cache stores only responses marked public or s-maxage; the others go upstream every time (X-Cache: BYPASS, counted as bypass with reason credentials). Use scope: consumer to cache per consumer${r.auth.required ? '' : ' (anonymous requests share entries either way)'}.`,
      });
    }
  });
  return out;
}
