import t from 'tap';
import { ConfigError, parseConfig } from '../src/config/load';

const upstreams = { up: { targets: ['http://127.0.0.1:3001'] } };

function problems(input: Record<string, unknown>): string[] {
  try {
    parseConfig({ upstreams, ...input }, { env: {} });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

const route = (policies: Record<string, unknown>) => ({ routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up', policies }] });

t.test('defaults: no policy is on unless configured', async (t) => {
  const cfg = parseConfig({ upstreams, routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up' }] }, { env: {} });
  t.same(cfg.policies.ipRules, { allow: [], deny: [] });
  t.equal(cfg.policies.cors, undefined);
  t.same(cfg.policies.limits, { maxHeaderBytes: 16384, headersTimeoutMs: 30000, requestTimeoutMs: 300000, firstByteTimeoutMs: 10000 });
  const p = cfg.routes[0].policies;
  t.equal(p.envelope, false);
  t.same(p.headers, { request: { remove: [], rename: {}, set: {}, add: {} }, response: { remove: [], rename: {}, set: {}, add: {} } });
  t.same(p.limits, {});
  t.equal(p.deprecation, undefined);
});

t.test('header rules: names, values, templates and reserved headers checked with their paths', async (t) => {
  const p = problems(
    route({
      headers: {
        request: {
          remove: ['X Bad', 'Host'],
          rename: { 'X-A': 'Content-Length' },
          set: { 'X-Inject': 'a\r\nX-Evil: 1', 'X-Tpl': '{requestId}-{tenant}', 'x-a': 'dup' },
          add: { 'X-Emoji': 'caf\u00e9 \u2615' },
        },
        response: { set: { 'Transfer-Encoding': 'gzip', 'X-Request-Id': 'mine' }, remove: ['Set-Cookie'] },
      },
    }),
  );
  const expect = [
    'routes[0].policies.headers.request.remove[0]: "X Bad" is not a valid header name',
    'routes[0].policies.headers.request.remove[1]: "Host" is managed by the gateway; header rules cannot change it',
    'routes[0].policies.headers.request.rename["X-A"]: "Content-Length" is managed by the gateway; header rules cannot change it',
    'routes[0].policies.headers.request.set["X-Inject"]: a header value may not contain CR, LF or other control characters, nor characters beyond Latin-1',
    'routes[0].policies.headers.request.set["X-Tpl"]: unknown placeholder {tenant}; use {requestId}, {consumerId}, {clientIp}, {route}',
    'routes[0].policies.headers.request.set["x-a"]: "x-a" already appears in another rule (routes[0].policies.headers.request.rename["X-A"]); a header may appear in one rule only',
    'routes[0].policies.headers.request.add["X-Emoji"]: a header value may not contain CR, LF or other control characters, nor characters beyond Latin-1',
    'routes[0].policies.headers.response.set["Transfer-Encoding"]: "Transfer-Encoding" is managed by the gateway; header rules cannot change it',
    'routes[0].policies.headers.response.set["X-Request-Id"]: "X-Request-Id" is managed by the gateway; header rules cannot change it',
  ];
  for (const e of expect) t.ok(p.includes(e), `${e}\n  in\n${p.join('\n')}`);
  t.equal(p.length, expect.length, p.join('\n'));
  t.same(problems(route({ headers: { request: { set: { 'X-Caf\u00e9': 'x' } } } })), [
    'routes[0].policies.headers.request.set["X-Caf\u00e9"]: "X-Caf\u00e9" is not a valid header name',
  ]);
  t.same(problems(route({ headers: { response: { set: { 'X-Ok': 'caf\u00e9 {route}' } } } })), [], 'Latin-1 values are fine');
});

t.test('IP rules, CORS, limits and deprecation', async (t) => {
  const p = problems({
    policies: {
      ipRules: { allow: ['10.0.0.0/33'], deny: ['2001:db8::/129', 'localhost', '192.168.1.1'] },
      cors: { origins: [] },
      limits: { headersTimeoutMs: 5000, requestTimeoutMs: 1000, maxHeaderBytes: 100 },
    },
    routes: [
      {
        name: 'r',
        match: { prefix: '/r' },
        upstream: 'up',
        policies: {
          ipRules: { deny: ['fe80::/10', '::1', 'nope/8'] },
          cors: {
            origins: ['*', 'https://app.example.com/path', 'ftp://x.example', 'https://*.example.com', 'http://localhost:99999'],
            credentials: true,
            exposeHeaders: ['Bad Header'],
          },
          deprecation: { date: '2025-06-30', sunset: '2024-01-01T00:00:00Z', link: 'javascript:alert(1)' },
        },
      },
      {
        name: 'r2',
        match: { prefix: '/r2' },
        upstream: 'up',
        policies: { deprecation: { date: '2025-06-30T00:00:00Z', sunset: '2025-01-01T00:00:00Z' }, limits: { maxBodyBytes: -1 } },
      },
    ],
  });
  const expect = [
    'policies.ipRules.allow[0]: "10.0.0.0/33" is not an IP address or CIDR',
    'policies.ipRules.deny[0]: "2001:db8::/129" is not an IP address or CIDR',
    'policies.ipRules.deny[1]: "localhost" is not an IP address or CIDR',
    'policies.cors.origins: list at least one origin (or "*" for any)',
    'policies.limits.maxHeaderBytes: expected at least 1024 (got 100)',
    'routes[0].policies.ipRules.deny[2]: "nope/8" is not an IP address or CIDR',
    'routes[0].policies.cors.origins[1]: "https://app.example.com/path" is not an origin (scheme://host[:port], no path) or a pattern such as https://*.example.com or http://localhost:*',
    'routes[0].policies.cors.origins[2]: "ftp://x.example" is not an origin (scheme://host[:port], no path) or a pattern such as https://*.example.com or http://localhost:*',
    'routes[0].policies.cors.origins[4]: "http://localhost:99999" is not an origin (scheme://host[:port], no path) or a pattern such as https://*.example.com or http://localhost:*',
    'routes[0].policies.cors.credentials: credentials cannot be allowed for any origin ("*"): list the origins',
    'routes[0].policies.cors.exposeHeaders[0]: "Bad Header" is not a valid header name',
    'routes[0].policies.deprecation.date: "2025-06-30" is not an ISO 8601 date-time with a zone, such as 2025-06-30T23:59:59Z',
    'routes[0].policies.deprecation.link: "javascript:alert(1)" is not an http(s) URL',
    'routes[1].policies.deprecation.sunset: must not be earlier than the deprecation date (RFC 9745)',
    'routes[1].policies.limits.maxBodyBytes: expected at least 0 (got -1)',
  ];
  for (const e of expect) t.ok(p.includes(e), `${e}\n  in\n${p.join('\n')}`);
  t.notOk(p.some((x) => x.includes('192.168.1.1') || x.includes('fe80') || x.includes('::1"')), 'plain addresses and IPv6 ranges are fine');

  const timeouts = problems({ policies: { limits: { headersTimeoutMs: 5000, requestTimeoutMs: 1000 } }, routes: [] });
  t.same(timeouts, ['policies.limits.headersTimeoutMs: must not exceed requestTimeoutMs (1000)']);
  t.same(problems({ policies: { limits: { headersTimeoutMs: 5000, requestTimeoutMs: 0 } }, routes: [] }), [], 'no request timeout: any head timeout');
  t.same(problems({ policies: { cors: { enabled: false } }, routes: [] }), [], 'a disabled policy needs no origins');
  t.same(problems(route({ unknownPolicy: true })), ['routes[0].policies.unknownPolicy: unknown key']);
});
