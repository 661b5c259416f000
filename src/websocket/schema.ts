import { Type } from '@sinclair/typebox';

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
    idleTimeoutMs: Type.Integer({
      description: 'Time a WebSocket may carry no bytes either way (milliseconds); then both peers get close code 1001 and the sockets close. 0 turns it off.',
      default: 300000,
      minimum: 0,
    }),
    maxLifetimeMs: Type.Integer({
      description: 'Time a WebSocket may stay open however busy (milliseconds), so long-lived clients reconnect and rebalance; then both peers get close code 1001. 0 turns it off.',
      default: 0,
      minimum: 0,
    }),
    handshakeTimeoutMs: Type.Integer({
      description:
        "Time the upstream has to answer the upgrade once connected (milliseconds); past it the client gets 504. The connect itself is bounded by the upstream's timeouts.connectMs.",
      default: 10000,
      minimum: 1,
    }),
  },
  { additionalProperties: false, description: 'WebSocket upgrades on this route: whether they are proxied, and their limits.', default: {} },
);
