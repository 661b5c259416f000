import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { closestKey, ConfigError, loadConfigFile, parseConfig } from '../src/config/load';
import { ConfigSchema } from '../src/config/schema';

const base = {
  upstreams: { users: { targets: ['http://127.0.0.1:3001'] } },
  routes: [{ name: 'users', match: { prefix: '/api/users' }, upstream: 'users' }],
};

function problems(input: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(input, { env });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

t.test('defaults fill every section and the result is frozen', async (t) => {
  const cfg = parseConfig(base, { env: {} });
  t.equal(cfg.listen.port, 8080);
  t.equal(cfg.admin.port, 9901);
  t.equal(cfg.admin.host, '127.0.0.1');
  t.equal(cfg.shutdown.drainDelayMs, 5000);
  t.equal(cfg.upstreams.users.pool.connections, 128);
  t.equal(cfg.upstreams.users.timeouts.headersMs, 30000);
  t.equal(cfg.upstreams.users.tls.rejectUnauthorized, true);
  t.equal(cfg.routes[0].rewrite.stripPrefix, false);
  t.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.routes[0].match) && Object.isFrozen(cfg.listen));
  t.ok(Object.isFrozen(cfg.upstreams.users.targets));
});

t.test('unknown upstream is reported with its path', async (t) => {
  const bad = { ...base, routes: [base.routes[0], base.routes[0], { name: 'orders', match: { prefix: '/o' }, upstream: 'oders' }] };
  const p = problems(bad);
  t.ok(p.includes('routes[2].upstream: unknown upstream "oders"'), p.join('\n'));
  t.ok(p.some((x) => x.startsWith('routes[1].name: duplicate route name')), p.join('\n'));
});

t.test('unknown keys, wrong types and missing fields all reported at once', async (t) => {
  const p = problems({
    listen: { port: 'eighty', hots: 'x' },
    upstreams: { a: { targets: [] } },
    routes: [{ name: 'r', match: {}, upstream: 'a', extra: 1 }],
    mystery: true,
  });
  t.ok(p.includes('mystery: unknown key'), p.join('\n'));
  t.ok(p.includes('listen.hots: unknown key (did you mean host?)'), p.join('\n'));
  t.ok(p.includes('listen.port: expected an integer (got "eighty")'), p.join('\n'));
  t.ok(p.includes('upstreams.a.targets: expected at least 1 item (got 0)'), p.join('\n'));
  t.ok(p.includes('routes[0].match.prefix: is required'), p.join('\n'));
  t.ok(p.includes('routes[0].extra: unknown key'), p.join('\n'));
});

t.test('schema problems and cross-field problems are reported together', async (t) => {
  const p = problems({
    upstreams: {
      users: { targets: ['http://127.0.0.1:3001'], breaker: { openMs: 90000, maxOpenMs: 'long' } },
      broken: { targets: [] },
    },
    routes: [
      { name: 'a', match: { prefix: '/a' }, upstream: 'users', preserveHost: 'yes' },
      { name: 'b', match: {}, upstream: 'users' },
      { name: 'c', match: { prefix: '/c' }, upstream: 'oders' },
      { name: 'd', match: { prefix: '/c' }, upstream: 'broken' },
      { name: 'a', match: { prefix: '/e/' }, upstream: 'users', rateLimit: { limits: [{ rate: 1, per: '1min' }] } },
    ],
    consumers: [{ id: 'x', routes: ['a', 'nope'] }],
  });
  t.same(p, [
    'upstreams.users.breaker.maxOpenMs: expected an integer (got "long")',
    'upstreams.broken.targets: expected at least 1 item (got 0)',
    'routes[0].preserveHost: expected true or false (got "yes")',
    'routes[1].match.prefix: is required',
    'routes[4].rateLimit.limits[0].per: expected a duration like 500ms, 1s, 5m, 1h, 1d, 1w, 1mo (got "1min")',
    // The cross-checks ran on the well-formed parts, with the paths of the file although routes[1] left the check.
    'routes[2].upstream: unknown upstream "oders"',
    'routes[3].match: overlaps routes[2] (same prefix, host and method)',
    'routes[4].name: duplicate route name "a" (also routes[0])',
    'routes[4].match.prefix: must not end with "/" (prefixes match at segment boundaries)',
    'consumers[0].routes[1]: unknown route "nope"',
  ], 'no "unknown upstream" for the malformed one, no breaker check against a value that is not there');
  t.same(problems({ ...base, admin: { token: '${ADMIN_TOKEN}' }, routes: [{ ...base.routes[0], upstream: 'usres' }] }), [
    'admin.token: environment variable ADMIN_TOKEN is not set and has no default',
    'routes[0].upstream: unknown upstream "usres"',
  ], 'an unset variable does not hide the rest either');
  t.same(problems({ upstreams: [{ users: { targets: ['http://a'] } }], routes: [base.routes[0], { ...base.routes[0], name: 'r2' }] }), [
    'upstreams: expected a mapping (got a list)',
    'routes[1].match: overlaps routes[0] (same prefix, host and method)',
  ], 'a malformed map leaves references into it unjudged');
});

t.test('problems say what is expected in words, never as a regular expression', async (t) => {
  const p = problems({
    listen: { port: 70000 },
    log: { level: 'loud' },
    admin: { token: 'short', tokens: [{ id: 'a b', token: 'x'.repeat(16) }] },
    upstreams: {
      'my upstream': { targets: ['http://a'] },
      b: { targets: ['http://b'], healthCheck: { expectedStatuses: ['2xx', 'ok', 99] }, retries: { methods: ['GET', 'get', 'GET'] } },
    },
    routes: [
      { name: 'r', match: { prefix: 'api', hosts: ['a b'] }, upstream: 'b', rateLimit: { limits: [{ rate: 0, per: '1min', by: 'user' }, { rate: '5s', per: '1s' }] } },
    ],
    store: { type: 'redis', redis: { url: 'http://r', nodes: ['nope'] } },
    consumers: [{ id: 'c', apiKeys: [{ prefix: 'key', sha256: 'abc' }] }],
  });
  const expected = [
    'listen.port: expected at most 65535 (got 70000)',
    'log.level: expected one of fatal, error, warn, info, debug, trace or silent (got "loud")',
    'admin.token: expected at least 16 characters (got 5)',
    'admin.tokens[0].id: expected an id of 1 to 64 letters, digits and _ . @ - (got "a b")',
    'upstreams["my upstream"]: expected a name of letters, digits and _ . - (got "my upstream")',
    'upstreams.b.healthCheck.expectedStatuses[1]: expected a status code from 100 to 599 or a class such as 2xx (got "ok")',
    'upstreams.b.healthCheck.expectedStatuses[2]: expected a status code from 100 to 599 or a class such as 2xx (got 99)',
    'upstreams.b.retries.methods[1]: expected an HTTP method in upper case, such as GET (got "get")',
    'upstreams.b.retries.methods: expected no duplicates (got "GET" as items 0 and 2)',
    'routes[0].match.prefix: expected a path starting with / (got "api")',
    'routes[0].match.hosts[0]: expected a host name such as api.example.com, or *.example.com (got "a b")',
    'routes[0].rateLimit.limits[0].rate: expected at least 1 (got 0)',
    'routes[0].rateLimit.limits[0].per: expected a duration like 500ms, 1s, 5m, 1h, 1d, 1w, 1mo (got "1min")',
    'routes[0].rateLimit.limits[0].by: expected ip, consumer, apiKey, route or header:<name> (got "user")',
    'routes[0].rateLimit.limits[1].rate: expected an integer (got "5s")',
    'store.redis.url: expected a redis:// or rediss:// URL (got "http://r")',
    'store.redis.nodes[0]: expected host:port, such as redis-1:6379 or [::1]:6379 (got "nope")',
    'consumers[0].apiKeys[0].prefix: expected a key prefix like gk_abcdefgh (ik_abcdefgh for an imported key) (got "key")',
    'consumers[0].apiKeys[0].sha256: expected 64 lower-case hex digits (got "abc")',
  ];
  for (const e of expected) t.ok(p.includes(e), `${e}\n---\n${p.join('\n')}`);
  t.notOk(p.some((x) => /must match|must be|\^|\$"|\[A-Z/.test(x)), p.join('\n'));
});

t.test('every pattern in the schema has words for its error message', async (t) => {
  const bare: string[] = [];
  const visit = (s: Record<string, unknown>, path: string): void => {
    if (typeof s.pattern === 'string' && typeof s.expected !== 'string') bare.push(path);
    if (s.patternProperties && s.additionalProperties === false && typeof s.expectedKey !== 'string') bare.push(`${path} (names)`);
    for (const [k, v] of Object.entries((s.properties as Record<string, Record<string, unknown>>) ?? {})) visit(v, `${path}.${k}`);
    for (const v of Object.values((s.patternProperties as Record<string, Record<string, unknown>>) ?? {})) visit(v, `${path}.<name>`);
    if (s.items) visit(s.items as Record<string, unknown>, `${path}[]`);
    ((s.anyOf as Record<string, unknown>[] | undefined) ?? []).forEach((b, i) => visit(b, `${path}|${i}`));
  };
  visit(ConfigSchema as unknown as Record<string, unknown>, '');
  t.same(bare, []);
});

t.test('an unknown key suggests a known one that is close', async (t) => {
  const p = problems({ ...base, Listen: {}, upstreams: { users: { targets: ['http://a'], timeout: {} } }, routes: [{ ...base.routes[0], upstreem: 'x', stripPrefix: true }] });
  t.ok(p.includes('Listen: unknown key (did you mean listen?)'), p.join('\n'));
  t.ok(p.includes('upstreams.users.timeout: unknown key (did you mean timeouts?)'), p.join('\n'));
  t.ok(p.includes('routes[0].upstreem: unknown key (did you mean upstream?)'), p.join('\n'));
  t.ok(p.includes('routes[0].stripPrefix: unknown key'), 'no guess when nothing is close');
  t.equal(closestKey('prot', ['host', 'port']), 'port', 'a transposition is one edit');
  t.equal(closestKey('x', ['db', 'id']), undefined, 'not a whole replacement');
});

t.test('semantic checks: targets, prefixes, rewrite, CIDRs', async (t) => {
  const p = problems({
    trustedProxies: ['10.0.0.0/8', 'nope', '10.0.0.0/33'],
    upstreams: { a: { targets: ['ftp://x', 'http://u:p@x', 'not a url'] } },
    routes: [
      { name: 'r1', match: { prefix: '/api/' }, upstream: 'a' },
      { name: 'r2', match: { prefix: '/api/../x' }, upstream: 'a', rewrite: { stripPrefix: true, replacePrefix: '/v' } },
    ],
  });
  for (const expected of [
    'trustedProxies[1]: "nope" is not an IP address or CIDR',
    'trustedProxies[2]: "10.0.0.0/33" is not an IP address or CIDR',
    'upstreams.a.targets[0]: protocol must be http: or https:, got ftp:',
    'upstreams.a.targets[1]: credentials do not belong in a target URL',
    'upstreams.a.targets[2]: "not a url" is not a URL',
    'routes[0].match.prefix: must not end with "/" (prefixes match at segment boundaries)',
    'routes[1].rewrite: stripPrefix and replacePrefix exclude each other',
  ]) {
    t.ok(p.includes(expected), `${expected}\n---\n${p.join('\n')}`);
  }
  t.ok(p.some((x) => x.startsWith('routes[1].match.prefix: must be a normalised path')));
});

t.test('overlapping routes are rejected', async (t) => {
  const p = problems({ ...base, routes: [base.routes[0], { ...base.routes[0], name: 'dup' }] });
  t.ok(p.includes('routes[1].match: overlaps routes[0] (same prefix, host and method)'), p.join('\n'));
  t.same(problems({ ...base, routes: [{ ...base.routes[0], match: { prefix: '/api/users', methods: ['GET'] } }, { ...base.routes[0], name: 'w', match: { prefix: '/api/users', methods: ['POST'] } }] }), []);
});

t.test('${ENV} and ${ENV:-default} substitution before validation', async (t) => {
  const cfg = parseConfig(
    {
      listen: { port: '${GW_PORT:-9000}', host: '${GW_HOST}' },
      upstreams: { users: { targets: ['http://${USERS_HOST:-localhost}:3001'] } },
      routes: [{ name: 'users', match: { prefix: '/api/$${literal}' }, upstream: 'users' }],
    },
    { env: { GW_HOST: '127.0.0.2' } },
  );
  t.equal(cfg.listen.port, 9000);
  t.equal(cfg.listen.host, '127.0.0.2');
  t.equal(cfg.upstreams.users.targets[0], 'http://localhost:3001');
  t.equal(cfg.routes[0].match.prefix, '/api/${literal}');
  t.same(problems({ ...base, admin: { token: '${ADMIN_TOKEN}' } }), ['admin.token: environment variable ADMIN_TOKEN is not set and has no default']);
});

t.test('PORT overrides listen.port and is validated', async (t) => {
  t.equal(parseConfig(base, { env: { PORT: '7777' } }).listen.port, 7777);
  t.same(problems(base, { PORT: 'x' }), ['listen.port: environment variable PORT="x" is not a port number']);
});

const dir = mkdtempSync(join(tmpdir(), 'gw-config-'));
const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(__dirname, '..', 'src', 'main.ts'), ...args], { encoding: 'utf8', env: { ...process.env, PORT: '' } });

function yamlProblems(text: string): string[] {
  const f = join(dir, 'file.yaml');
  writeFileSync(f, text);
  try {
    loadConfigFile(f, {});
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`.replace(/^: /, ''));
    throw err;
  }
  return [];
}

t.test('YAML files: a syntax error is reported once, with its line and a caret', async (t) => {
  t.same(yamlProblems('routes:\n  - name: a\n    match: { prefix: /a\n    upstream: users\n  - name: b\n    match: [\n'), [
    [
      'line 4, column 5: YAML syntax error: Flow map in block collection must be sufficiently indented and end with a }',
      '4 |     upstream: users',
      '  |     ^',
    ].join('\n'),
  ]);
  t.same(yamlProblems('listen:\n  host: a: b\n'), ['line 2, column 9: YAML syntax error: Nested mappings are not allowed in compact mappings\n2 |   host: a: b\n  |         ^']);
  t.same(yamlProblems('log:\n  level: "info\nlisten:\n  port: 1\n'), ['line 2, column 10: YAML syntax error: Missing closing "quote\n2 |   level: "info\n  |          ^'], 'an unclosed quote is shown where it opens');
  t.same(yamlProblems('listen:\n  port: 1\n  port: 2\nlog:\n  level: info\n  level: warn\n'), [
    'line 3, column 3: duplicate key "port"\n3 |   port: 2\n  |   ^',
    'line 6, column 3: duplicate key "level"\n6 |   level: warn\n  |   ^',
  ], 'duplicate keys are independent: each is reported');
  t.throws(() => loadConfigFile(join(dir, 'missing.yaml'), {}), /cannot read file/);
});

t.test('YAML files: a tab in the indentation gets its own message', async (t) => {
  t.same(yamlProblems('listen:\n\tport: 1\n'), ['line 2, column 1: tabs are not allowed in YAML indentation; use spaces\n2 |  port: 1\n  | ^']);
  t.same(yamlProblems('listen:\n  port: 1\n  \thost: x\nlog: { level: info }\n'), ['line 3, column 3: tabs are not allowed in YAML indentation; use spaces\n3 |    host: x\n  |   ^']);
  t.same(yamlProblems('listen:\n  host:\t127.0.0.1\n'), [], 'a tab after a colon is only a separator');
});

t.test('gateway validate exits 0 on the example and 1 with every problem on a bad file', async (t) => {
  const ok = cli('validate', join(__dirname, '..', 'examples', 'gateway.yaml'));
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stdout, /valid \(6 routes, 4 upstreams\)/);
  const f = join(dir, 'bad.yaml');
  writeFileSync(
    f,
    ['upstreams:', '  orders: { targets: [http://127.0.0.1:1] }', 'routes:', '  - { name: a, match: { prefix: /a }, upstream: orders }', '  - { name: b, match: { prefix: /b }, upstream: orders }', '  - { name: c, match: { prefix: /c }, upstream: oders, colour: red }', ''].join('\n'),
  );
  const bad = cli('validate', f);
  t.equal(bad.status, 1);
  t.match(bad.stderr, /routes\[2\]\.upstream: unknown upstream "oders"/);
  t.match(bad.stderr, /routes\[2\]\.colour: unknown key/);
  const start = cli('--config', f);
  t.equal(start.status, 1, 'start-up with an invalid file fails the same way');
  t.match(start.stderr, /routes\[2\]\.upstream: unknown upstream "oders"/);
});
