import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError, loadConfigFile, parseConfig } from '../src/config/load';

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
  t.ok(p.includes('listen.hots: unknown key'), p.join('\n'));
  t.ok(p.includes('listen.port: must be integer'), p.join('\n'));
  t.ok(p.includes('upstreams.a.targets: must NOT have fewer than 1 items'), p.join('\n'));
  t.ok(p.includes('routes[0].match.prefix: is required'), p.join('\n'));
  t.ok(p.includes('routes[0].extra: unknown key'), p.join('\n'));
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

t.test('YAML files: syntax errors and duplicate keys are reported', async (t) => {
  const f = join(dir, 'broken.yaml');
  writeFileSync(f, 'listen:\n  port: 1\n  port: 2\n');
  t.throws(() => loadConfigFile(f, {}), /YAML syntax/);
  t.throws(() => loadConfigFile(join(dir, 'missing.yaml'), {}), /cannot read file/);
});

t.test('gateway validate exits 0 on the example and 1 with every problem on a bad file', async (t) => {
  const ok = cli('validate', join(__dirname, '..', 'examples', 'gateway.yaml'));
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stdout, /valid \(2 routes, 2 upstreams\)/);
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
