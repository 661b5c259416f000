import { Type } from '@sinclair/typebox';
import { HstsSchema } from '../../net/hsts-schema';

const Obj = Type.Object;

export const RouteHttpsSchema = Obj(
  {
    redirect: Type.Boolean({
      description:
        "Answer requests that arrived over plain HTTP with a redirect to the same path and query over HTTPS (host from the Host header). A request a trusted proxy marks X-Forwarded-Proto: https counts as HTTPS.",
      default: false,
    }),
    redirectStatus: Type.Union([Type.Literal(301), Type.Literal(308)], {
      description: 'Status of the redirect for GET and HEAD. Other methods always get 308, which keeps the method and body.',
      default: 308,
    }),
    redirectPort: Type.Optional(
      Type.Integer({ description: 'Port in the redirect. Default: listen.tls.port, or 443 without listen.tls (TLS terminated in front). 443 is left out of the URL.', minimum: 1, maximum: 65535 }),
    ),
    hsts: Type.Optional(HstsSchema),
  },
  { additionalProperties: false, description: 'HTTPS for this route: redirect plain HTTP, and the HSTS header (overrides listen.tls.hsts).' },
);

/** The configuration fields of the https plugin: `https` in a route (the listener-wide HSTS is listen.tls.hsts). */
export const httpsFields = { top: {}, route: { https: Type.Optional(RouteHttpsSchema) } };
