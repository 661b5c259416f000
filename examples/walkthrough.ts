/**
 * The demo's walkthrough: one step per capability, each a command a newcomer pastes and what it shows.
 * The demo prints these; test/demo.test.ts runs the same command strings against a running demo, so
 * the walkthrough cannot drift from what the gateway does.
 */
export interface WalkthroughPorts {
  gateway: number;
  admin: number;
  control: number;
}

export interface Expectation {
  /** Status of the (last) response. */
  status: number;
  /** Statuses printed by a loop, in order (the `-w '%{http_code} '` steps). */
  statuses?: number[];
  /** Response headers that must be present, with the value they must start with ('' = any). */
  headers?: Record<string, string>;
  /** Text the body must contain. */
  body?: string;
}

export interface Step {
  /** What the step shows, one line. */
  title: string;
  /** The command, as printed; $TOKEN, $KEY and $ADMIN are the variables the walkthrough sets first. */
  command: string;
  /** What the reader should see. */
  shows: string;
  expect: Expectation;
}

export interface Section {
  heading: string;
  steps: Step[];
}

/** The demo API key: public, in examples/gateway.yaml as a hash, good for the demo only. */
export const DEMO_API_KEY = 'gk_demokeys_public-demo-key-do-not-use-outside-the-demo';

export function walkthrough(p: WalkthroughPorts): Section[] {
  const gw = `localhost:${p.gateway}`;
  const admin = `localhost:${p.admin}`;
  const control = `localhost:${p.control}`;
  return [
    {
      heading: 'Routing',
      steps: [
        {
          title: 'a route strips its prefix and the users service answers',
          command: `curl -i ${gw}/api/users/123`,
          shows: '200, X-Request-Id, and the path the service saw (/123)',
          expect: { status: 200, headers: { 'x-request-id': '' }, body: '"path":"/123"' },
        },
        {
          title: 'a method the route does not take',
          command: `curl -i -X DELETE ${gw}/api/orders`,
          shows: '405 with Allow: GET, POST, as application/problem+json',
          expect: { status: 405, headers: { allow: 'GET, POST' }, body: 'METHOD_NOT_ALLOWED' },
        },
      ],
    },
    {
      heading: 'Rate limiting (10 a minute per client IP on /api/users)',
      steps: [
        {
          title: 'ten more requests: the 11th of the minute is refused',
          command: `for i in $(seq 10); do curl -s -o /dev/null -w '%{http_code} ' ${gw}/api/users/1; done; echo`,
          shows: '200 nine times, then 429',
          expect: { status: 429, statuses: [200, 200, 200, 200, 200, 200, 200, 200, 200, 429] },
        },
        {
          title: 'the refusal says when to come back',
          command: `curl -i ${gw}/api/users/1`,
          shows: '429 with Retry-After, RateLimit-Policy and RateLimit headers',
          expect: { status: 429, headers: { 'retry-after': '', 'ratelimit-policy': '"ip-10per1m"', ratelimit: '"ip-10per1m";r=0' }, body: 'RATE_LIMITED' },
        },
      ],
    },
    {
      heading: 'JWT (the demo printed $TOKEN)',
      steps: [
        {
          title: 'no token',
          command: `curl -i ${gw}/api/orders`,
          shows: '401 with WWW-Authenticate: Bearer',
          expect: { status: 401, headers: { 'www-authenticate': 'Bearer' } },
        },
        {
          title: 'with the token: the service gets the verified identity',
          command: `curl -i -H "Authorization: Bearer $TOKEN" ${gw}/api/orders`,
          shows: '200, and the service saw x-consumer-id: alice',
          expect: { status: 200, body: '"x-consumer-id":"alice"' },
        },
        {
          title: 'a WebSocket upgrade runs the same chain, then the echo service takes over',
          command: `curl -i -N --max-time 2 -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H "Authorization: Bearer $TOKEN" ${gw}/api/orders/live`,
          shows: '101 Switching Protocols (curl then waits 2 s on the open socket; without the token: 401)',
          expect: { status: 101, headers: { upgrade: 'websocket', 'sec-websocket-accept': 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=' } },
        },
      ],
    },
    {
      heading: 'API keys (the demo printed $KEY)',
      steps: [
        {
          title: 'no key',
          command: `curl -i ${gw}/api/partners`,
          shows: '401',
          expect: { status: 401 },
        },
        {
          title: 'with the key: the consumer it belongs to reaches the service',
          command: `curl -i -H "X-API-Key: $KEY" ${gw}/api/partners`,
          shows: '200, and the service saw x-consumer-id: partner-co',
          expect: { status: 200, body: '"x-consumer-id":"partner-co"' },
        },
      ],
    },
    {
      heading: 'Response cache (the catalog service says max-age=30)',
      steps: [
        {
          title: 'first request',
          command: `curl -i ${gw}/api/catalog`,
          shows: 'X-Cache: MISS (the service counted it: servedByUpstream)',
          expect: { status: 200, headers: { 'x-cache': 'MISS' } },
        },
        {
          title: 'second request',
          command: `curl -i ${gw}/api/catalog`,
          shows: 'X-Cache: HIT with an Age header; the service was not called',
          expect: { status: 200, headers: { 'x-cache': 'HIT', age: '' } },
        },
        {
          title: 'purge the route through the admin API (the demo admin token is $ADMIN)',
          command: `curl -i -X POST -H "Authorization: Bearer $ADMIN" '${admin}/admin/cache/purge?route=catalog'`,
          shows: '200: the route\'s entries are gone on every replica',
          expect: { status: 200 },
        },
        {
          title: 'after the purge',
          command: `curl -i ${gw}/api/catalog`,
          shows: 'X-Cache: MISS again',
          expect: { status: 200, headers: { 'x-cache': 'MISS' } },
        },
      ],
    },
    {
      heading: 'Resilience (inventory has two targets, health-checked every second)',
      steps: [
        {
          title: 'requests alternate between the targets',
          command: `curl -s ${gw}/api/inventory`,
          shows: '"target":"inventory-a" or "inventory-b", in turn',
          expect: { status: 200, body: '"target":"inventory-' },
        },
        {
          title: 'stop inventory-b (a demo command, as if its pod died)',
          command: `curl -s -X POST ${control}/stop/inventory-b`,
          shows: 'stopped inventory-b',
          expect: { status: 200, body: 'stopped inventory-b' },
        },
        {
          title: 'clients see no error: a refused connection goes to the other target, then the breaker and health checks take b out',
          command: `for i in $(seq 6); do curl -s -o /dev/null -w '%{http_code} ' ${gw}/api/inventory; done; echo`,
          shows: '200 six times',
          expect: { status: 200, statuses: [200, 200, 200, 200, 200, 200] },
        },
        {
          title: 'what the gateway knows about each target',
          command: `curl -s -H "Authorization: Bearer $ADMIN" ${admin}/admin/upstreams`,
          shows: 'inventory-b with healthy: false or an open breaker, inventory-a routable',
          expect: { status: 200, body: '"inventory"' },
        },
        {
          title: 'bring it back: the health checks return it within a second or two',
          command: `curl -s -X POST ${control}/start/inventory-b`,
          shows: 'started inventory-b',
          expect: { status: 200, body: 'started inventory-b' },
        },
      ],
    },
    {
      heading: 'Where to see it all',
      steps: [
        {
          title: 'Prometheus metrics (requests by route and status code, limits, cache, upstreams)',
          command: `curl -s ${admin}/metrics`,
          shows: 'gateway_requests_total{route="users",method="GET",code="429",...}',
          expect: { status: 200, body: 'gateway_requests_total{route="users",method="GET",code="429"' },
        },
        {
          title: 'readiness, as a Kubernetes probe sees it',
          command: `curl -i ${admin}/readyz`,
          shows: '200 {"status":"ready",...}',
          expect: { status: 200, body: '"status":"ready"' },
        },
      ],
    },
  ];
}
