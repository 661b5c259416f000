import type { TLSSocket } from 'node:tls';
import type { Step } from '../../chain';
import type { RequestContext } from '../../context';
import { GatewayError } from '../../errors';
import { removeNamed } from '../../proxy/headers';
import type { CompiledRoute } from '../../routes';
import type { GatewayConfig, Plugin, PluginDescriptor } from '../types';
import { httpsFields } from './fields';

type Hsts = NonNullable<NonNullable<GatewayConfig['listen']['tls']>['hsts']>;

export function hstsValue(h: Hsts): string {
  return `max-age=${h.maxAgeSeconds}${h.includeSubDomains ? '; includeSubDomains' : ''}${h.preload ? '; preload' : ''}`;
}

/** A host name or IP literal, with an optional port: anything else cannot be put in a Location. */
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

const HSTS: ReadonlySet<string> = new Set(['strict-transport-security']);

/** Where the gateway sets HSTS its configuration is the authority: the upstream's own header goes. */
function dropUpstreamHsts(_ctx: RequestContext, _status: number, headers: string[]): null {
  removeNamed(headers, HSTS);
  return null;
}

function secure(ctx: RequestContext): boolean {
  if ((ctx.req.socket as TLSSocket).encrypted === true) return true;
  return ctx.peerTrusted && ctx.req.headers['x-forwarded-proto'] === 'https';
}

function step(hsts: string | null, redirect: { status: 301 | 308; port: string } | null): Step {
  return {
    name: 'https',
    run(ctx) {
      if (secure(ctx)) {
        if (hsts !== null && (ctx.req.socket as TLSSocket).encrypted === true) ctx.addResponseHeader('strict-transport-security', hsts);
        return true;
      }
      if (redirect === null) return true;
      const host = ctx.req.headers.host;
      if (host === undefined || !HOST.test(host)) throw new GatewayError('BAD_REQUEST', { detail: 'A redirect to HTTPS needs a valid Host header' });
      const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0];
      const method = ctx.req.method;
      const status = method === 'GET' || method === 'HEAD' ? redirect.status : 308;
      ctx.res.writeHead(status, { location: `https://${name}${redirect.port}${ctx.req.url ?? '/'}`, 'content-length': '0', 'cache-control': 'no-store' });
      ctx.res.end();
      return false;
    },
  };
}

/**
 * Redirect to HTTPS and HSTS: the route's `https`, and listen.tls.hsts for every route served over
 * TLS. Routes with neither run no step.
 */
export const httpsPlugin: PluginDescriptor<typeof httpsFields.top, typeof httpsFields.route> = {
  name: 'https',
  schema: httpsFields,
  check(cfg, problems) {
    const preload = (h: Hsts | undefined, path: string): void => {
      if (h?.preload && (!h.includeSubDomains || h.maxAgeSeconds < 31536000)) {
        problems.push({ path: `${path}.preload`, message: 'needs includeSubDomains and a maxAgeSeconds of at least 31536000 (the preload list requires both)' });
      }
    };
    preload(cfg.listen.tls?.hsts, 'listen.tls.hsts');
    cfg.routes.forEach((r, i) => preload(r.https?.hsts, `routes[${i}].https.hsts`));
  },
  create(ctx) {
    const listenHsts = ctx.config.listen.tls?.hsts;
    const tlsPort = ctx.config.listen.tls?.port ?? 443;
    if (!listenHsts && !ctx.config.routes.some((r) => r.https)) return {};
    const plugin: Plugin = {
      name: 'https',
      stepFor(route: CompiledRoute): Step | null {
        const cfg = route.config.https;
        const hsts = cfg?.hsts ?? listenHsts;
        const redirect = cfg?.redirect ? { status: cfg.redirectStatus, port: (cfg.redirectPort ?? tlsPort) === 443 ? '' : `:${cfg.redirectPort ?? tlsPort}` } : null;
        if (!hsts && !redirect) return null;
        if (hsts) route.addResponseTransform(dropUpstreamHsts);
        return step(hsts ? hstsValue(hsts) : null, redirect);
      },
    };
    // Before everything else: a plain-HTTP request is redirected before it is authenticated.
    return { access: [plugin] };
  },
};
