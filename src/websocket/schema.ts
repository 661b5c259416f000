import { Type } from '@sinclair/typebox';

const Ms = (description: string, def: number, minimum = 0) =>
  Type.Integer({ description: `${description} (milliseconds).`, default: def, minimum });

/**
 * `websocket` in a route. Upgrades are allowed by default (as in Kong and Traefik; Envoy asks for an
 * opt-in): an upgrade runs the route's whole chain first, so a route that admits a request admits
 * its WebSocket too, and a route that must not carry them says so.
 */
export const WebSocketRouteSchema = Type.Object(
  {
    enabled: Type.Boolean({
      description:
        'Proxy WebSocket upgrades (GET with Upgrade: websocket) on this route. Off, an upgrade gets 400 WEBSOCKET_NOT_ALLOWED instead of being proxied.',
      default: true,
    }),
    maxConnections: Type.Integer({
      description: 'Open WebSockets this route carries at once; an upgrade past it gets 503 with Retry-After. 0: no limit.',
      default: 10000,
      minimum: 0,
    }),
    idleTimeoutMs: Ms('A WebSocket with no bytes either way for this long is closed (close code 1001). 0: never', 300000),
    maxLifetimeMs: Ms('A WebSocket open this long is closed (close code 1001), so clients reconnect and rebalance. 0: no limit', 0),
    handshakeTimeoutMs: Ms(
      "How long the upstream has to answer the upgrade once connected (the connect itself is bounded by the upstream's timeouts.connectMs); past it 504",
      10000,
      1,
    ),
  },
  { additionalProperties: false, description: 'WebSocket upgrades on this route: whether they are proxied, and their limits.', default: {} },
);
